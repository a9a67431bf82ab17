-- Tenants. Every tenant-owned row carries tenant_id; row-level security, enabled and
-- forced, lets a session see and change only its tenant's rows, the tenant being
-- decided by who the session is (current_user), never by anything it can set:
--   * a role listed in tenant_roles (a member of the group copydesk_tenant) is that
--     tenant;
--   * copydesk_api, which the HTTP server switches each request's transaction to with
--     SET LOCAL ROLE, is the tenant named by the transaction-local setting
--     copydesk.tenant_id (no setting: no tenant, no rows);
--   * the owner (the role that ran this migration: workers, migrations, the CLI) sees
--     every tenant, and writes to the `default` tenant unless told otherwise.
-- A single-company user never meets any of it: the owner's plain INSERT INTO jobs
-- (kind, input) still works and lands in `default`.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (name <> ''),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, slug, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default');

-- Database roles mapped to a tenant (`copydesk tenants create --db-role`, `grant-role`).
CREATE TABLE tenant_roles (
    role_name   text PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copydesk_tenant') THEN
        CREATE ROLE copydesk_tenant NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copydesk_api') THEN
        CREATE ROLE copydesk_api NOLOGIN;
    END IF;
END
$$;
GRANT copydesk_tenant TO copydesk_api;
-- The owner may switch a transaction to the API role (the HTTP server does).
GRANT copydesk_api TO CURRENT_USER;

-- The old, unused text column makes way for the real one.
DROP INDEX IF EXISTS projects_tenant_idx;
ALTER TABLE projects DROP COLUMN tenant_id;

-- Every existing row belongs to `default` (a fast default: no table rewrite), then
-- the column has no default: the triggers decide.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations'] LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN tenant_id uuid NOT NULL
                        DEFAULT ''00000000-0000-0000-0000-000000000001'' %s', t,
                       CASE WHEN t = 'jobs' THEN '' ELSE 'REFERENCES tenants (id)' END);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN tenant_id DROP DEFAULT', t);
    END LOOP;
END
$$;
-- Jobs are the hot table. Their tenant_id has no foreign key: its check is a locking
-- read of the tenant's row for every job inserted (it made enqueueing 40% slower, and
-- every producer would lock the same `default` row). Jobs get their tenant only from
-- the column default, the trigger below (from the rows they refer to, or the writer)
-- or, for a tenant session, their own (WITH CHECK); and a tenant with jobs cannot be
-- deleted (tenants_in_use).
CREATE FUNCTION tenants_in_use() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM jobs WHERE tenant_id = OLD.id) THEN
        RAISE EXCEPTION 'tenant % (%) still has jobs', OLD.slug, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER tenants_in_use BEFORE DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION tenants_in_use();

-- Their commonest insert, the owner's job that names no
-- tenant and refers to nothing (a single company's plain INSERT), takes `default` from a
-- column default that costs a comparison and fires no trigger. Any other session gets
-- NULL here, and the trigger below decides.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE jobs ALTER COLUMN tenant_id SET DEFAULT
                    CASE WHEN current_user = %L THEN ''00000000-0000-0000-0000-000000000001''::uuid END',
                   current_user);
END
$$;

-- Creates a LOGIN role with a password without the password ever being part of a
-- statement's text (it arrives as a bound parameter). The owner's only.
CREATE FUNCTION copydesk_create_login_role(role text, password text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', role, password);
END;
$$;
REVOKE ALL ON FUNCTION copydesk_create_login_role(text, text) FROM PUBLIC;

-- The tenant a tenant session is bound to (NULL for any other session).
CREATE FUNCTION copydesk_session_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_user = 'copydesk_api'
                THEN nullif(current_setting('copydesk.tenant_id', true), '')::uuid
                ELSE (SELECT tenant_id FROM tenant_roles WHERE role_name = current_user) END
$$;

-- The tenant a row written by this session belongs to when nothing else says: the
-- session's tenant, the `default` tenant for the owner, none (refused) for the API role
-- outside a request.
CREATE FUNCTION copydesk_writer_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_user = 'copydesk_api'
                THEN nullif(current_setting('copydesk.tenant_id', true), '')::uuid
                ELSE coalesce((SELECT tenant_id FROM tenant_roles WHERE role_name = current_user),
                              '00000000-0000-0000-0000-000000000001'::uuid) END
$$;

-- Whose a referenced row is, seen past row-level security (a tenant session must not
-- be able to borrow another tenant's project by its id: the row then gets that
-- tenant, and the session's WITH CHECK refuses it).
CREATE FUNCTION copydesk_project_tenant(id uuid) RETURNS uuid LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM projects WHERE projects.id = $1
$$;
CREATE FUNCTION copydesk_job_tenant(id uuid) RETURNS uuid LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM jobs WHERE jobs.id = $1
$$;
CREATE FUNCTION copydesk_artifact_tenant(id uuid) RETURNS uuid LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM artifacts WHERE artifacts.id = $1
$$;
CREATE FUNCTION copydesk_integration_tenant(id uuid) RETURNS uuid LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM integrations WHERE integrations.id = $1
$$;

-- A row's tenant given what it refers to: the referenced row's tenant when the writer
-- gave none; the given one when it agrees; refused when they disagree (a row never
-- refers to another tenant's project, job or artifact).
CREATE FUNCTION copydesk_same_tenant(given uuid, owner uuid, what text, ref text) RETURNS uuid
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF given IS NOT NULL AND owner IS NOT NULL AND given <> owner THEN
        RAISE EXCEPTION '% of tenant % refers to % of tenant %', what, given, ref, owner
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN coalesce(given, owner);
END;
$$;

-- Each table's tenant: from the rows it refers to (a project, a job, an artifact), else
-- the writer's (the session's tenant; `default` for the owner). The lookups run only
-- for the references a row has: a plain job without project or parent costs none.
CREATE FUNCTION projects_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- A job's `default` tenant (the owner's column default, or said outright) yields to
-- the tenant of what the job refers to.
CREATE FUNCTION jobs_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = '00000000-0000-0000-0000-000000000001' THEN
        NEW.tenant_id := NULL;
    END IF;
    IF NEW.project_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                              'job', 'project ' || NEW.project_id);
    END IF;
    IF NEW.parent_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.parent_id),
                                              'job', 'parent job ' || NEW.parent_id);
    END IF;
    IF NEW.input_artifact_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.input_artifact_id),
                                              'job', 'artifact ' || NEW.input_artifact_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- Artifacts and runs: their project's tenant, their job's, else the writer's.
CREATE FUNCTION by_project_or_job_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.project_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                              TG_TABLE_NAME, 'project ' || NEW.project_id);
    END IF;
    IF NEW.job_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.job_id),
                                              TG_TABLE_NAME, 'job ' || NEW.job_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- Approvals and publish attempts: their job's and their artifact's tenant.
CREATE FUNCTION by_job_and_artifact_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.job_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.job_id),
                                              TG_TABLE_NAME, 'job ' || NEW.job_id);
    END IF;
    NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.artifact_id),
                                          TG_TABLE_NAME, 'artifact ' || NEW.artifact_id);
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- Integrations and budget reservations: their project's.
CREATE FUNCTION by_project_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                          TG_TABLE_NAME, 'project ' || NEW.project_id);
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- The brand-voice cache: the analysis artifact's.
CREATE FUNCTION by_artifact_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.artifact_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.artifact_id),
                                              TG_TABLE_NAME, 'artifact ' || NEW.artifact_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

-- The catalogue and the audit log: the writer's, unless given.
CREATE FUNCTION writer_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE TRIGGER projects_tenant BEFORE INSERT ON projects FOR EACH ROW EXECUTE FUNCTION projects_tenant();
-- A job that has its tenant and refers to nothing skips the trigger altogether (the
-- WHEN clause is evaluated without calling PL/pgSQL).
CREATE TRIGGER jobs_tenant BEFORE INSERT ON jobs FOR EACH ROW
    WHEN (NEW.tenant_id IS NULL OR NEW.project_id IS NOT NULL OR NEW.parent_id IS NOT NULL
          OR NEW.input_artifact_id IS NOT NULL)
    EXECUTE FUNCTION jobs_tenant();
CREATE TRIGGER artifacts_tenant BEFORE INSERT ON artifacts FOR EACH ROW EXECUTE FUNCTION by_project_or_job_tenant();
CREATE TRIGGER approvals_tenant BEFORE INSERT ON approvals FOR EACH ROW EXECUTE FUNCTION by_job_and_artifact_tenant();
CREATE TRIGGER runs_tenant BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION by_project_or_job_tenant();
CREATE TRIGGER integrations_tenant BEFORE INSERT ON integrations FOR EACH ROW EXECUTE FUNCTION by_project_tenant();
CREATE TRIGGER llm_reservations_tenant BEFORE INSERT ON llm_reservations FOR EACH ROW EXECUTE FUNCTION by_project_tenant();
CREATE TRIGGER publish_attempts_tenant BEFORE INSERT ON publish_attempts FOR EACH ROW EXECUTE FUNCTION by_job_and_artifact_tenant();
CREATE TRIGGER brand_voice_cache_tenant BEFORE INSERT ON brand_voice_cache FOR EACH ROW EXECUTE FUNCTION by_artifact_tenant();
CREATE TRIGGER catalog_items_tenant BEFORE INSERT ON catalog_items FOR EACH ROW EXECUTE FUNCTION writer_tenant();

-- A pending approval may move to a person's edit of its draft, never to another
-- tenant's artifact.
CREATE FUNCTION approvals_same_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.artifact_id <> OLD.artifact_id
       AND copydesk_artifact_tenant(NEW.artifact_id) IS DISTINCT FROM NEW.tenant_id THEN
        RAISE EXCEPTION 'approval % of tenant % cannot refer to artifact % of another tenant',
            NEW.id, NEW.tenant_id, NEW.artifact_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER approvals_same_tenant BEFORE UPDATE OF artifact_id ON approvals
    FOR EACH ROW EXECUTE FUNCTION approvals_same_tenant();

-- Where tenant sessions' queries need it (the workers' paths read other indexes). Not
-- on jobs: every index there is paid by every claim and finish (each is a non-HOT
-- update); a tenant's job listing reads what `jobs list` reads (the table, kept small
-- by retention) or a project's jobs through `jobs_project_idx`.
CREATE INDEX projects_tenant_idx ON projects (tenant_id, created_at);
CREATE INDEX artifacts_tenant_idx ON artifacts (tenant_id, created_at);
CREATE INDEX approvals_tenant_idx ON approvals (tenant_id, status, created_at);
CREATE INDEX runs_tenant_idx ON runs (tenant_id, created_at);
CREATE INDEX integrations_tenant_idx ON integrations (tenant_id);

-- Caches are per tenant: an analysis may include a tenant's private samples, and a
-- catalogue is a tenant's own.
ALTER TABLE brand_voice_cache DROP CONSTRAINT brand_voice_cache_pkey;
ALTER TABLE brand_voice_cache ADD PRIMARY KEY (tenant_id, url);
ALTER TABLE catalog_items DROP CONSTRAINT catalog_items_external_id_key;
ALTER TABLE catalog_items ADD CONSTRAINT catalog_items_tenant_external_id_key UNIQUE (tenant_id, external_id);

-- Global rows (tenant_id NULL) and per-tenant overrides, read in that order.
ALTER TABLE agent_model_configs ADD COLUMN tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE;
ALTER TABLE agent_model_configs DROP CONSTRAINT agent_model_configs_pkey;
ALTER TABLE agent_model_configs ADD CONSTRAINT agent_model_configs_agent_key
    UNIQUE NULLS NOT DISTINCT (tenant_id, agent_id);
ALTER TABLE app_settings ADD COLUMN tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE;
ALTER TABLE app_settings DROP CONSTRAINT app_settings_pkey;
ALTER TABLE app_settings ADD CONSTRAINT app_settings_key UNIQUE NULLS NOT DISTINCT (tenant_id, key);

-- API tokens: only a SHA-256 of the secret is kept; the prefix finds the row.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (name <> ''),
    role          text NOT NULL CONSTRAINT api_tokens_role_known
                  CHECK (role IN ('viewer', 'approver', 'operator', 'admin')),
    prefix        text NOT NULL UNIQUE,
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, created_at);

-- Who did what to which row, and when. Append-only: a trigger refuses UPDATE, DELETE
-- and TRUNCATE for every role, the owner included.
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    actor        text NOT NULL,
    action       text NOT NULL,
    target_table text,
    target_id    uuid,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, at);
CREATE TRIGGER audit_log_tenant BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION writer_tenant();
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Row-level security, enabled and forced. The owner's policy admits every row (so the
-- workers' statements pay nothing for it); tenant sessions see and write their
-- tenant's rows only.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations',
                             'api_tokens', 'audit_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY owner_all ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY tenant_own ON %I TO copydesk_tenant
                        USING (tenant_id = copydesk_session_tenant())
                        WITH CHECK (tenant_id = copydesk_session_tenant())', t);
    END LOOP;
    -- Global rows are everyone's to read; overrides only their tenant's.
    FOREACH t IN ARRAY ARRAY['agent_model_configs', 'app_settings'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY owner_all ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY tenant_read ON %I FOR SELECT TO copydesk_tenant
                        USING (tenant_id IS NULL OR tenant_id = copydesk_session_tenant())', t);
    END LOOP;
END
$$;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON tenants TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON tenants FOR SELECT TO copydesk_tenant USING (id = copydesk_session_tenant());
ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_roles FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON tenant_roles TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON tenant_roles FOR SELECT TO copydesk_tenant USING (role_name = current_user);

-- Least privilege for tenant sessions: read everything of their tenant (never an
-- integration's credentials nor a setting's secret, never a token's hash), enqueue jobs
-- (never their lease, status or attempts), create projects, decide approvals and edit
-- drafts (a new version; a pending approval may move to it).
GRANT USAGE ON SCHEMA public TO copydesk_tenant;
GRANT SELECT ON tenants, tenant_roles, projects, artifacts, jobs, approvals, runs, publish_attempts,
    brand_voice_cache, catalog_items, agent_model_configs, audit_log, llm_reservations TO copydesk_tenant;
GRANT SELECT (id, tenant_id, project_id, platform, metadata, status, last_error, last_sync_at,
              created_at, updated_at) ON integrations TO copydesk_tenant;
GRANT SELECT (key, value, tenant_id, updated_at) ON app_settings TO copydesk_tenant;
GRANT SELECT (id, tenant_id, name, role, prefix, created_at, expires_at, last_used_at, revoked_at)
    ON api_tokens TO copydesk_tenant;
GRANT INSERT (kind, input, project_id, input_artifact_id, parent_id, priority, run_at,
              max_attempts, idempotency_key, tenant_id) ON jobs TO copydesk_tenant;
GRANT INSERT (name, store_url, settings, budget_usd, tenant_id) ON projects TO copydesk_tenant;
GRANT INSERT (project_id, job_id, kind, channel, version, based_on_id, source, title, content,
              data, tenant_id) ON artifacts TO copydesk_tenant;
GRANT UPDATE (status, decided_by, notes, artifact_id) ON approvals TO copydesk_tenant;
GRANT EXECUTE ON FUNCTION copydesk_session_tenant(), copydesk_writer_tenant(),
    copydesk_project_tenant(uuid), copydesk_job_tenant(uuid), copydesk_artifact_tenant(uuid),
    copydesk_integration_tenant(uuid), copydesk_same_tenant(uuid, uuid, text, text) TO copydesk_tenant;

-- The views read as the session reading them, so tenant sessions count their own rows.
ALTER VIEW queue_overview SET (security_invoker = true);
ALTER VIEW project_budgets SET (security_invoker = true);
GRANT SELECT ON queue_overview, project_budgets TO copydesk_tenant;
