-- Steps: the output of a piece of a job's work (a model call, a page fetch), kept when
-- it ends so that no later run of the same job (after a wait for a limit, a retry, a
-- rescued lease, a restart) pays for it again. The engine's table: it knows nothing of
-- what a step does. Keyed by the job, the step's name and the SHA-256 of what the step
-- was asked, so a changed request is a new step. Deleted with its job.
CREATE TABLE job_steps (
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name             text        NOT NULL CHECK (name <> ''),
    request_sha256   bytea       NOT NULL CHECK (octet_length(request_sha256) = 32),
    output           jsonb       NOT NULL,
    -- The attempt that ran it, and when it ended.
    attempt          integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- How often a later run got the output back instead of running the step.
    replays          integer     NOT NULL DEFAULT 0,
    last_replayed_at timestamptz,
    PRIMARY KEY (job_id, name, request_sha256)
);

COMMENT ON TABLE job_steps IS
    'A job''s finished steps, replayed to later runs of the same job instead of run again';

-- Tenants read the steps of the jobs they can read (jobs has row-level security of its
-- own, so the subquery admits exactly those); only the workers write.
ALTER TABLE job_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON job_steps TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_read ON job_steps FOR SELECT TO copydesk_tenant
    USING (job_id IN (SELECT id FROM jobs));
GRANT SELECT (job_id, name, attempt, created_at, replays, last_replayed_at)
    ON job_steps TO copydesk_tenant;
