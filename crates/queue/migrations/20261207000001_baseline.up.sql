-- The engine's schema as it stood when the engine took it over from the application
-- (copydesk before 2026-12-07 created all of it in the application's migrations). On a
-- database that already has `jobs`, this migration is recorded as applied and not run:
-- what it creates is there. Nothing here knows what a job does; the application adds its
-- own columns, keys, triggers and row security on top.
--
-- Tables: `jobs` (the queue and its history) and `job_steps` (a job's finished steps).
-- Functions: `copydesk_claim` (one claim, fair across groups), `jobs_notify_insert`
-- (NOTIFY copydesk_jobs at commit), `copydesk_time_ordered_id` (the id default) and
-- `copydesk_error_group` (an error with ids and numbers masked, for grouping failures).
-- `tenant_id` and `project_id` are opaque to the engine: claims take turns over
-- coalesce(project_id, tenant_id), and listings filter by them.

CREATE FUNCTION copydesk_time_ordered_id() RETURNS uuid
    LANGUAGE sql PARALLEL SAFE
    AS $$
    SELECT encode(overlay(uuid_send(gen_random_uuid())
                          PLACING int8send((extract(epoch FROM clock_timestamp()) * 65536000)::bigint)
                          FROM 1 FOR 8), 'hex')::uuid
$$;

CREATE FUNCTION copydesk_error_group(error text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT COST 1000 PARALLEL SAFE
    AS $$
BEGIN
    RETURN regexp_replace(
        regexp_replace(error, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
        '[0-9]+', '<n>', 'g');
END
$$;

CREATE TABLE jobs (
    id uuid DEFAULT copydesk_time_ordered_id() NOT NULL,
    kind text NOT NULL,
    status text DEFAULT 'queued'::text NOT NULL,
    project_id uuid,
    input jsonb DEFAULT '{}'::jsonb NOT NULL,
    output jsonb,
    parent_id uuid,
    priority integer DEFAULT 0 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 5 NOT NULL,
    locked_by text,
    locked_until timestamp with time zone,
    last_error text,
    idempotency_key text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    tenant_id uuid DEFAULT '00000000-0000-0000-0000-000000000000'::uuid NOT NULL,
    waiting_for text,
    CONSTRAINT jobs_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT jobs_status_known CHECK ((status = ANY (ARRAY['queued'::text, 'running'::text, 'done'::text, 'failed'::text, 'needs_approval'::text, 'cancelled'::text])))
)
WITH (fillfactor='85', autovacuum_vacuum_scale_factor='0.01', autovacuum_vacuum_insert_scale_factor='0.05', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='0');

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

CREATE INDEX jobs_attention_idx ON jobs USING btree (id) WHERE (status = ANY (ARRAY['failed'::text, 'cancelled'::text, 'needs_approval'::text]));

CREATE INDEX jobs_failed_group_idx ON jobs USING btree (tenant_id, copydesk_error_group(last_error), id) INCLUDE (last_error, kind, finished_at) WHERE (status = 'failed'::text);

CREATE INDEX jobs_finished_idx ON jobs USING btree (finished_at) WHERE (status = ANY (ARRAY['done'::text, 'failed'::text, 'cancelled'::text]));

CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs USING btree (idempotency_key) WHERE (idempotency_key IS NOT NULL);

CREATE INDEX jobs_parent_idx ON jobs USING btree (parent_id) WHERE (parent_id IS NOT NULL);

CREATE INDEX jobs_project_idx ON jobs USING btree (project_id, created_at) WHERE (project_id IS NOT NULL);

CREATE INDEX jobs_queued_group_idx ON jobs USING btree (kind, COALESCE(project_id, tenant_id), priority DESC, run_at, id) WHERE (status = 'queued'::text);

CREATE INDEX jobs_queued_idx ON jobs USING btree (kind, priority DESC, run_at, id) WHERE (status = 'queued'::text);

CREATE INDEX jobs_running_idx ON jobs USING btree (locked_by) WHERE (status = 'running'::text);

CREATE TABLE job_steps (
    job_id uuid NOT NULL,
    name text NOT NULL,
    request_sha256 bytea NOT NULL,
    output jsonb NOT NULL,
    attempt integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    replays integer DEFAULT 0 NOT NULL,
    last_replayed_at timestamp with time zone,
    CONSTRAINT job_steps_name_check CHECK ((name <> ''::text)),
    CONSTRAINT job_steps_request_sha256_check CHECK ((octet_length(request_sha256) = 32))
);

COMMENT ON TABLE job_steps IS 'A job''s finished steps, replayed to later runs of the same job instead of run again';

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT job_steps_pkey PRIMARY KEY (job_id, name, request_sha256);

ALTER TABLE ONLY job_steps
    ADD CONSTRAINT job_steps_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE;

CREATE VIEW queue_overview AS
 SELECT jobs.kind,
    jobs.status,
    count(*) AS jobs,
    min(jobs.run_at) FILTER (WHERE (jobs.status = 'queued'::text)) AS oldest_run_at,
    (now() - min(jobs.created_at) FILTER (WHERE ((jobs.status = 'queued'::text) AND (jobs.run_at <= now())))) AS oldest_ready_age,
    count(*) FILTER (WHERE (jobs.finished_at > (now() - '00:05:00'::interval))) AS finished_last_5m
   FROM jobs
  GROUP BY jobs.kind, jobs.status;

CREATE FUNCTION jobs_notify_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    k text;
BEGIN
    FOR k IN SELECT DISTINCT n.kind FROM new_rows n WHERE n.status = 'queued' AND n.run_at <= now() LOOP
        PERFORM pg_notify('copydesk_jobs', k);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_insert();

CREATE FUNCTION copydesk_claim(p_kind text, p_limit integer, p_worker text, p_lease_ms bigint) RETURNS TABLE(
    id uuid, kind text, tenant_id uuid, project_id uuid, input jsonb, parent_id uuid, priority integer, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, locked_by text, groups integer)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    -- Groups are found from a random point of the uuid order, wrapping once, so when
    -- there are more groups than one claim takes, none is always last.
    start   uuid := gen_random_uuid();
    found   uuid[] := '{}';
    -- (`found` holds them; `groups`, the output column, says how many.)
    g       uuid;
    after   uuid;
    upto    uuid;
    share   int;
    taken   int;
BEGIN
    -- From `start` to the end of the order, then from its beginning up to `start`.
    -- (The second phase's first look has no lower bound, so a group that is the nil
    -- uuid, the engine's default tenant, is found too.)
    FOR phase IN 1..2 LOOP
        after := CASE phase WHEN 1 THEN start END;
        upto := CASE phase WHEN 1 THEN 'ffffffff-ffff-ffff-ffff-ffffffffffff' ELSE start END;
        LOOP
            EXIT WHEN cardinality(found) >= p_limit;
            IF after IS NULL THEN
                SELECT coalesce(q.project_id, q.tenant_id) INTO g FROM jobs q
                WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
                  AND coalesce(q.project_id, q.tenant_id) <= upto
                ORDER BY coalesce(q.project_id, q.tenant_id) LIMIT 1;
            ELSE
                SELECT coalesce(q.project_id, q.tenant_id) INTO g FROM jobs q
                WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
                  AND coalesce(q.project_id, q.tenant_id) > after
                  AND coalesce(q.project_id, q.tenant_id) <= upto
                ORDER BY coalesce(q.project_id, q.tenant_id) LIMIT 1;
            END IF;
            EXIT WHEN g IS NULL;
            found := found || g;
            after := g;
        END LOOP;
    END LOOP;

    IF cardinality(found) = 0 THEN
        RETURN;
    END IF;
    taken := 0;
    IF cardinality(found) > 1 THEN
        -- Each group's best `share` jobs, then the batch in turns: every group's first,
        -- then every group's second, higher priority first.
        share := ceil(p_limit::float8 / cardinality(found))::int;
        RETURN QUERY
        UPDATE jobs j
        SET status = 'running', locked_by = p_worker,
            locked_until = now() + p_lease_ms * interval '1 millisecond',
            attempts = j.attempts + 1, started_at = now(), updated_at = now(),
            waiting_for = NULL
        WHERE j.id = ANY(ARRAY(
            SELECT c.id FROM (
                SELECT c.id, c.priority, c.run_at,
                       row_number() OVER (PARTITION BY gr.grp ORDER BY c.priority DESC, c.run_at, c.id) AS turn
                FROM unnest(found) AS gr(grp)
                CROSS JOIN LATERAL (
                    SELECT q.id, q.priority, q.run_at FROM jobs q
                    WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
                      AND coalesce(q.project_id, q.tenant_id) = gr.grp
                    ORDER BY q.priority DESC, q.run_at, q.id
                    LIMIT share
                    FOR UPDATE SKIP LOCKED) c) c
            ORDER BY c.priority DESC, c.turn, c.run_at, c.id
            LIMIT p_limit))
        RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.parent_id,
                  j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at, j.locked_by,
                  cardinality(found);
        GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;
    -- One group: the plain claim, best first. Several: groups with fewer ready jobs
    -- than their share leave room, filled best first.
    IF taken < p_limit THEN
        RETURN QUERY
        UPDATE jobs j
        SET status = 'running', locked_by = p_worker,
            locked_until = now() + p_lease_ms * interval '1 millisecond',
            attempts = j.attempts + 1, started_at = now(), updated_at = now(),
            waiting_for = NULL
        WHERE j.id = ANY(ARRAY(
            SELECT q.id FROM jobs q
            WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
            ORDER BY q.priority DESC, q.run_at, q.id
            LIMIT p_limit - taken
            FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.parent_id,
                  j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at, j.locked_by,
                  cardinality(found);
    END IF;
END
$$;
