DELETE FROM jobs WHERE kind = 'token_refresh';
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing',
    'cache_refresh', 'notify'));
