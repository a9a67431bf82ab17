-- copydesk schema: every table of the design, so later steps only add what they need.
-- Each table's role is documented in ARCHITECTURE.md; the jobs table is the contract
-- with other services (an INSERT with kind and input is a complete enqueue).

CREATE TABLE projects (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (name <> ''),
    store_url    text,
    tenant_id    text,
    settings     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    budget_usd   numeric(12, 4) CHECK (budget_usd IS NULL OR budget_usd >= 0),
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_tenant_idx ON projects (tenant_id) WHERE tenant_id IS NOT NULL;

CREATE TABLE artifacts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   uuid REFERENCES projects (id) ON DELETE CASCADE,
    job_id       uuid,
    kind         text NOT NULL
                 CONSTRAINT artifacts_kind_known
                 CHECK (kind IN ('brand_voice', 'draft', 'evaluation', 'publication', 'source')),
    channel      text CONSTRAINT artifacts_channel_known
                 CHECK (channel IS NULL OR channel IN ('blog', 'linkedin', 'x', 'facebook')),
    version      int NOT NULL DEFAULT 1 CHECK (version >= 1),
    based_on_id  uuid REFERENCES artifacts (id) ON DELETE SET NULL,
    source       text NOT NULL DEFAULT 'ai' CHECK (source IN ('ai', 'human', 'system')),
    title        text,
    content      text NOT NULL DEFAULT '',
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    search       tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
                     setweight(to_tsvector('english', content), 'B')
                 ) STORED,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_project_kind_idx ON artifacts (project_id, kind, channel, created_at);
CREATE INDEX artifacts_based_on_idx ON artifacts (based_on_id) WHERE based_on_id IS NOT NULL;
CREATE INDEX artifacts_job_idx ON artifacts (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX artifacts_search_idx ON artifacts USING gin (search);

-- The queue. Hot-path notes (see PERFORMANCE.md once measured):
-- * fillfactor 85 leaves room on each page so the claim and finish updates can often
--   place the new row version on the same page, which keeps the heap compact under churn;
-- * autovacuum runs after 1% of rows are dead instead of 20%, with no cost delay, because
--   every job leaves at least two dead versions behind and a bloated heap slows the claim;
-- * only queued and running rows are in the indexes the workers read (partial indexes):
--   finished rows never slow down the claim, however many are kept for retention.
CREATE TABLE jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind               text NOT NULL CONSTRAINT jobs_kind_known CHECK (kind IN ('noop', 'cleanup')),
    status             text NOT NULL DEFAULT 'queued'
                       CONSTRAINT jobs_status_known
                       CHECK (status IN ('queued', 'running', 'done', 'failed', 'needs_approval', 'cancelled')),
    project_id         uuid REFERENCES projects (id) ON DELETE CASCADE,
    input              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- What the step reported (counts, ids): a small JSON summary; artifacts hold content.
    output             jsonb,
    input_artifact_id  uuid REFERENCES artifacts (id) ON DELETE SET NULL,
    output_artifact_id uuid REFERENCES artifacts (id) ON DELETE SET NULL,
    parent_id          uuid,
    priority           int NOT NULL DEFAULT 0,
    run_at             timestamptz NOT NULL DEFAULT now(),
    attempts           int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts       int NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    locked_by          text,
    locked_until       timestamptz,
    last_error         text,
    idempotency_key    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
) WITH (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
-- The claim reads this index only: one kind at a time, best first.
CREATE INDEX jobs_queued_idx ON jobs (kind, priority DESC, run_at, id) WHERE status = 'queued';
-- Shutdown release (by lease holder) and rescue (by expired lease) read only running rows.
CREATE INDEX jobs_running_idx ON jobs (locked_by, locked_until) WHERE status = 'running';
CREATE INDEX jobs_running_lease_idx ON jobs (locked_until) WHERE status = 'running';
-- Retention deletes finished rows oldest first, in batches.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status IN ('done', 'failed', 'cancelled');
CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_project_idx ON jobs (project_id, created_at) WHERE project_id IS NOT NULL;

ALTER TABLE artifacts ADD CONSTRAINT artifacts_job_fk
    FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE SET NULL;

-- Wake workers when new work commits: one NOTIFY per statement and kind, sent by
-- Postgres at commit, so an enqueue inside a caller's transaction wakes nobody until
-- (and unless) that transaction commits. Rows due later are found by the poll.
CREATE FUNCTION jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    FOR k IN SELECT DISTINCT n.kind FROM new_rows n WHERE n.status = 'queued' AND n.run_at <= now() LOOP
        PERFORM pg_notify('copydesk_jobs', k);
    END LOOP;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_insert();

CREATE TABLE approvals (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id       uuid REFERENCES jobs (id) ON DELETE SET NULL,
    artifact_id  uuid NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'pending'
                 CONSTRAINT approvals_status_known CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by   text,
    notes        text,
    decided_at   timestamptz,
    applied_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Decided but not yet applied: the approvals queue the workers claim from.
CREATE INDEX approvals_unapplied_idx ON approvals (decided_at) WHERE status <> 'pending' AND applied_at IS NULL;
CREATE INDEX approvals_status_idx ON approvals (status, created_at);
CREATE INDEX approvals_job_idx ON approvals (job_id) WHERE job_id IS NOT NULL;

-- One row per external call (LLM or platform API). Kept when jobs are deleted: cost history.
CREATE TABLE runs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id             uuid,
    project_id         uuid REFERENCES projects (id) ON DELETE SET NULL,
    attempt            int NOT NULL DEFAULT 1,
    agent              text,
    provider           text NOT NULL,
    model              text,
    prompt_tokens      int NOT NULL DEFAULT 0,
    completion_tokens  int NOT NULL DEFAULT 0,
    cost_usd           numeric(12, 6) NOT NULL DEFAULT 0,
    duration_ms        int NOT NULL DEFAULT 0,
    status             text NOT NULL CHECK (status IN ('ok', 'error')),
    error              text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_job_idx ON runs (job_id, created_at);
CREATE INDEX runs_project_idx ON runs (project_id, created_at);

CREATE TABLE integrations (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    platform      text NOT NULL
                  CONSTRAINT integrations_platform_known
                  CHECK (platform IN ('wordpress', 'shopify', 'linkedin', 'x', 'facebook')),
    credentials   bytea NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status        text NOT NULL DEFAULT 'connected'
                  CHECK (status IN ('connected', 'disconnected', 'error')),
    last_error    text,
    last_sync_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, platform)
);

CREATE TABLE agent_model_configs (
    agent        text PRIMARY KEY,
    model_id     text NOT NULL,
    temperature  real NOT NULL CHECK (temperature >= 0 AND temperature <= 2),
    max_tokens   int NOT NULL CHECK (max_tokens > 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO agent_model_configs (agent, model_id, temperature, max_tokens) VALUES
    ('brand-voice-analyzer', 'anthropic/claude-sonnet-4', 0.5, 4000),
    ('blog-writer',          'anthropic/claude-sonnet-4', 0.8, 8000),
    ('blog-editor',          'anthropic/claude-sonnet-4', 0.5, 8000),
    ('seo-specialist',       'anthropic/claude-sonnet-4', 0.4, 2000),
    ('senior-editor',        'anthropic/claude-sonnet-4', 0.5, 8000),
    ('blog-reviewer',        'anthropic/claude-sonnet-4', 0.3, 3000);

CREATE TABLE brand_voice_cache (
    url          text PRIMARY KEY,
    analysis     jsonb NOT NULL,
    artifact_id  uuid REFERENCES artifacts (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL DEFAULT now() + interval '7 days'
);
CREATE INDEX brand_voice_cache_expires_idx ON brand_voice_cache (expires_at);

CREATE TABLE catalog_items (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id  text NOT NULL UNIQUE,
    name         text NOT NULL,
    designer     text,
    description  text,
    price        numeric(12, 2),
    image_url    text,
    category     text,
    tags         text[] NOT NULL DEFAULT '{}',
    raw          jsonb NOT NULL DEFAULT '{}'::jsonb,
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL DEFAULT now() + interval '24 hours'
);
CREATE INDEX catalog_items_expires_idx ON catalog_items (expires_at);

CREATE TABLE app_settings (
    key         text PRIMARY KEY,
    value       text,
    secret      bytea,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((value IS NULL) <> (secret IS NULL))
);

-- Counts per kind and status for anyone with psql; `copydesk queue stats` reads it too.
CREATE VIEW queue_overview AS
SELECT
    kind,
    status,
    count(*)::bigint AS jobs,
    min(run_at) FILTER (WHERE status = 'queued') AS oldest_run_at,
    now() - min(created_at) FILTER (WHERE status = 'queued' AND run_at <= now()) AS oldest_ready_age,
    count(*) FILTER (WHERE finished_at > now() - interval '5 minutes')::bigint AS finished_last_5m
FROM jobs
GROUP BY kind, status;
