DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations',
                             'api_tokens', 'audit_log'] LOOP
        EXECUTE format('ALTER POLICY tenant_own ON %I
                        USING (tenant_id = copydesk_session_tenant())
                        WITH CHECK (tenant_id = copydesk_session_tenant())', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['agent_model_configs', 'app_settings'] LOOP
        EXECUTE format('ALTER POLICY tenant_read ON %I
                        USING (tenant_id IS NULL OR tenant_id = copydesk_session_tenant())', t);
    END LOOP;
END
$$;
ALTER POLICY tenant_own ON tenants USING (id = copydesk_session_tenant());
REVOKE INSERT (tenant_id, name, role, prefix, secret_sha256, expires_at), UPDATE (revoked_at)
    ON api_tokens FROM copydesk_api;
REVOKE INSERT ON audit_log FROM copydesk_api;
REVOKE UPDATE (status, attempts, run_at, finished_at, locked_by, locked_until, last_error, updated_at)
    ON jobs FROM copydesk_api;
REVOKE INSERT (id) ON jobs FROM copydesk_tenant;
DROP INDEX jobs_attention_idx;
ALTER TABLE jobs ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION copydesk_time_ordered_id();
DROP FUNCTION copydesk_error_group(text);
