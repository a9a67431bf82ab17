REVOKE INSERT (tenant_id, name, role, prefix, secret_sha256, expires_at), UPDATE (revoked_at)
    ON api_tokens FROM copydesk_api;
REVOKE INSERT ON audit_log FROM copydesk_api;
REVOKE UPDATE (status, attempts, run_at, finished_at, locked_by, locked_until, last_error, updated_at)
    ON jobs FROM copydesk_api;
REVOKE INSERT (id) ON jobs FROM copydesk_tenant;
DROP INDEX jobs_attention_idx;
ALTER TABLE jobs ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION copydesk_uuid_v7();
DROP FUNCTION copydesk_error_group(text);
