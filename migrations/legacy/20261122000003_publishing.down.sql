DROP TABLE IF EXISTS publish_attempts;
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
-- NOT VALID: cache_refresh rows may remain; new ones are refused.
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing')) NOT VALID;
