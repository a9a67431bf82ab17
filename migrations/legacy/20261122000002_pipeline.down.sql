DROP INDEX IF EXISTS approvals_one_pending_idx;
DROP TRIGGER IF EXISTS approvals_notify ON approvals;
DROP FUNCTION IF EXISTS approvals_notify();
DROP TRIGGER IF EXISTS approvals_decided ON approvals;
DROP FUNCTION IF EXISTS approvals_decided();
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
-- NOT VALID: rows of the pipeline's kinds may remain; new ones are refused.
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN ('noop', 'cleanup')) NOT VALID;
