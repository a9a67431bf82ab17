-- Back to one company. The roles copydesk_tenant and copydesk_api stay: they belong to
-- the cluster, and other databases may use them; here they lose every privilege.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM copydesk_tenant;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM copydesk_tenant;
REVOKE USAGE ON SCHEMA public FROM copydesk_tenant;
ALTER VIEW queue_overview RESET (security_invoker);
ALTER VIEW project_budgets RESET (security_invoker);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations',
                             'agent_model_configs', 'app_settings', 'tenants', 'tenant_roles'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS owner_all ON %I', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_own ON %I', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_read ON %I', t);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;

DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE api_tokens;

-- Per-tenant overrides and caches go; the global rows stay.
DELETE FROM app_settings WHERE tenant_id IS NOT NULL;
ALTER TABLE app_settings DROP CONSTRAINT app_settings_key;
ALTER TABLE app_settings DROP COLUMN tenant_id;
ALTER TABLE app_settings ADD PRIMARY KEY (key);
DELETE FROM agent_model_configs WHERE tenant_id IS NOT NULL;
ALTER TABLE agent_model_configs DROP CONSTRAINT agent_model_configs_agent_key;
ALTER TABLE agent_model_configs DROP COLUMN tenant_id;
ALTER TABLE agent_model_configs ADD PRIMARY KEY (agent_id);
DELETE FROM catalog_items WHERE tenant_id <> '00000000-0000-0000-0000-000000000001';
ALTER TABLE catalog_items DROP CONSTRAINT catalog_items_tenant_external_id_key;
ALTER TABLE catalog_items ADD CONSTRAINT catalog_items_external_id_key UNIQUE (external_id);
DELETE FROM brand_voice_cache WHERE tenant_id <> '00000000-0000-0000-0000-000000000001';
ALTER TABLE brand_voice_cache DROP CONSTRAINT brand_voice_cache_pkey;
ALTER TABLE brand_voice_cache ADD PRIMARY KEY (url);

DROP TRIGGER approvals_same_tenant ON approvals;
DROP FUNCTION approvals_same_tenant();
DROP TRIGGER projects_tenant ON projects;
DROP TRIGGER jobs_tenant ON jobs;
DROP TRIGGER artifacts_tenant ON artifacts;
DROP TRIGGER approvals_tenant ON approvals;
DROP TRIGGER runs_tenant ON runs;
DROP TRIGGER integrations_tenant ON integrations;
DROP TRIGGER llm_reservations_tenant ON llm_reservations;
DROP TRIGGER publish_attempts_tenant ON publish_attempts;
DROP TRIGGER brand_voice_cache_tenant ON brand_voice_cache;
DROP TRIGGER catalog_items_tenant ON catalog_items;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations'] LOOP
        EXECUTE format('ALTER TABLE %I DROP COLUMN tenant_id', t);
    END LOOP;
END
$$;
ALTER TABLE projects ADD COLUMN tenant_id text;
CREATE INDEX projects_tenant_idx ON projects (tenant_id) WHERE tenant_id IS NOT NULL;

DROP FUNCTION projects_tenant();
DROP FUNCTION jobs_tenant();
DROP FUNCTION by_job_and_artifact_tenant();
DROP FUNCTION by_project_or_job_tenant();
DROP FUNCTION by_project_tenant();
DROP FUNCTION by_artifact_tenant();
DROP FUNCTION writer_tenant();
DROP FUNCTION copydesk_same_tenant(uuid, uuid, text, text);
DROP FUNCTION copydesk_project_tenant(uuid);
DROP FUNCTION copydesk_job_tenant(uuid);
DROP FUNCTION copydesk_artifact_tenant(uuid);
DROP FUNCTION copydesk_integration_tenant(uuid);
DROP FUNCTION copydesk_writer_tenant();
DROP FUNCTION copydesk_session_tenant();
DROP FUNCTION copydesk_create_login_role(text, text);
DROP TRIGGER tenants_in_use ON tenants;
DROP FUNCTION tenants_in_use();
DROP TABLE tenant_roles;
DROP TABLE tenants;
