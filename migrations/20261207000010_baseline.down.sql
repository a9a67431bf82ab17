-- Everything the baseline made, leaving the engine's schema as the engine's migrations
-- made it. The roles copydesk_tenant and copydesk_api stay: they belong to the cluster,
-- and other databases may use them; here they lose every privilege.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM copydesk_tenant, copydesk_api;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM copydesk_tenant, copydesk_api;
REVOKE USAGE ON SCHEMA public FROM copydesk_tenant;

DROP POLICY IF EXISTS owner_all ON jobs;
DROP POLICY IF EXISTS tenant_own ON jobs;
DROP POLICY IF EXISTS owner_all ON job_steps;
DROP POLICY IF EXISTS tenant_read ON job_steps;
ALTER TABLE jobs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE jobs DISABLE ROW LEVEL SECURITY;
ALTER TABLE job_steps NO FORCE ROW LEVEL SECURITY;
ALTER TABLE job_steps DISABLE ROW LEVEL SECURITY;
ALTER VIEW queue_overview RESET (security_invoker);
DROP TRIGGER IF EXISTS jobs_tenant ON jobs;
DROP TRIGGER IF EXISTS jobs_failed_notify ON jobs;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_project_id_fkey;
ALTER TABLE jobs DROP COLUMN input_artifact_id, DROP COLUMN output_artifact_id;
ALTER TABLE jobs ALTER COLUMN tenant_id SET DEFAULT '00000000-0000-0000-0000-000000000000'::uuid;

DROP VIEW IF EXISTS project_budgets;
DROP TABLE IF EXISTS
    agent_model_configs, api_tokens, app_settings, approvals, artifacts, audit_log,
    brand_voice_cache, catalog_items, files, integrations, limit_slots, limits,
    llm_model_health, llm_modes, llm_reservations, notification_channels,
    notification_deliveries, notifications, projects, publish_attempts, review_links,
    runs, tenant_roles, tenants
    CASCADE;
DROP FUNCTION IF EXISTS
    approvals_decided(), approvals_notify(), approvals_same_tenant(), audit_log_append_only(),
    by_artifact_tenant(), by_job_and_artifact_tenant(), by_project_or_job_tenant(),
    by_project_tenant(), copydesk_approval_decided_notify(), copydesk_approval_notify(),
    copydesk_approval_subject(uuid), copydesk_artifact_tenant(uuid),
    copydesk_create_login_role(text, text), copydesk_integration_tenant(uuid),
    copydesk_job_failed_notify(), copydesk_job_tenant(uuid),
    copydesk_limit_take(text[], integer[], bigint[], integer[], integer[], integer, uuid, bigint),
    copydesk_notify(uuid, uuid, uuid, text, text, text, text, text, jsonb),
    copydesk_project_tenant(uuid), copydesk_same_tenant(uuid, uuid, text, text),
    copydesk_session_tenant(), copydesk_writer_tenant(), jobs_tenant(), projects_tenant(),
    runs_add_cost(), tenants_in_use(), writer_tenant();
