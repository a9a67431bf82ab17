-- `token_refresh`: the scheduled refresh of X OAuth 2.0 tokens ahead of their expiry.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing',
    'cache_refresh', 'notify', 'token_refresh'));
