-- Claims that do not walk the row versions a held horizon keeps.
--
-- While any transaction keeps an old snapshot (an idle session, a report in REPEATABLE
-- READ, a long SELECT, a replica's hot_standby_feedback), vacuum may not remove the
-- versions of jobs claimed since, and `jobs_queued_idx` keeps an entry for each: the
-- `queued` version every finished job once had. A claim from the head of the index
-- visits every one of them before it finds a ready job (100,000 entries: 23 ms a
-- claim). A worker remembers, per priority of its kind, where its last claim ended (a
-- floor: the `run_at` of the last job it took); `copydesk_claim_from` starts each
-- known priority's scan at its floor, so the entries behind it are never read. A
-- priority the worker has no floor for (it never took one, or it forgot them all) is
-- read from its head, in the priority order, as before.
CREATE FUNCTION copydesk_claim_from(p_kind text, p_limit integer, p_worker text, p_lease_ms bigint,
                                    p_priorities integer[], p_floors timestamp with time zone[])
RETURNS TABLE(
    id uuid, kind text, tenant_id uuid, project_id uuid, input jsonb, parent_id uuid, priority integer, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, locked_by text)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    -- `p_priorities` in descending order, each with its floor in `p_floors`.
    ids    uuid[] := '{}';
    known  int := coalesce(cardinality(p_priorities), 0);
    -- The gap between two known priorities: strictly below `above`, strictly above
    -- `below` (bigints, so every integer priority fits between the outer bounds).
    above  bigint := 2147483648;
    below  bigint;
BEGIN
    FOR i IN 1 .. known + 1 LOOP
        EXIT WHEN cardinality(ids) >= p_limit;
        below := CASE WHEN i <= known THEN p_priorities[i] ELSE -2147483649 END;
        -- Priorities with no floor: from their head.
        ids := ids || ARRAY(
            SELECT q.id FROM jobs q
            WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
              AND q.priority < above AND q.priority > below
            ORDER BY q.priority DESC, q.run_at, q.id
            LIMIT p_limit - cardinality(ids)
            FOR UPDATE SKIP LOCKED);
        EXIT WHEN i > known OR cardinality(ids) >= p_limit;
        -- A known priority: from its floor.
        ids := ids || ARRAY(
            SELECT q.id FROM jobs q
            WHERE q.status = 'queued' AND q.kind = p_kind AND q.priority = p_priorities[i]
              AND q.run_at >= p_floors[i] AND q.run_at <= now()
            ORDER BY q.run_at, q.id
            LIMIT p_limit - cardinality(ids)
            FOR UPDATE SKIP LOCKED);
        above := p_priorities[i];
    END LOOP;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE jobs j
    SET status = 'running', locked_by = p_worker,
        locked_until = now() + p_lease_ms * interval '1 millisecond',
        attempts = j.attempts + 1, started_at = now(), updated_at = now(),
        waiting_for = NULL
    WHERE j.id = ANY(ids)
    RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.parent_id,
              j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at, j.locked_by;
END
$$;

-- What lets a worker keep its floors honest: besides the wake-up on `copydesk_jobs`
-- (payload: the kind, for jobs ready now), every statement that inserts queued jobs
-- says, on `copydesk_jobs_ready`, for each kind and priority it inserted, the earliest
-- `run_at` (`<kind> <priority> <microseconds since the epoch>`), ready now or not: a
-- job whose transaction began before a later one's job was claimed, or that commits
-- after its `run_at` has passed, lands behind that worker's floor, and the worker
-- lowers the floor to it. (A separate channel: workers of the version before listen to
-- `copydesk_jobs` alone and read its payload as a kind.)
CREATE OR REPLACE FUNCTION jobs_notify_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.kind, n.priority, min(n.run_at) AS run_at FROM new_rows n
             WHERE n.status = 'queued'
             GROUP BY n.kind, n.priority ORDER BY n.kind LOOP
        IF r.run_at <= now() THEN
            PERFORM pg_notify('copydesk_jobs', r.kind);
        END IF;
        PERFORM pg_notify('copydesk_jobs_ready',
            r.kind || ' ' || r.priority || ' ' || floor(extract(epoch FROM r.run_at) * 1000000)::bigint);
    END LOOP;
    RETURN NULL;
END;
$$;

-- A job set back to `queued` by an UPDATE (a retry, a wait, a rescue, jobs given back
-- or released, or a person by plain SQL), made earlier, or moved to another priority or
-- kind, says the same, and wakes its kind's workers when it is ready now. The
-- condition is checked before anything is queued, so claims and finishes to `done`,
-- which never meet it, pay nothing.
CREATE FUNCTION jobs_notify_requeued() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.run_at <= now() THEN
        PERFORM pg_notify('copydesk_jobs', NEW.kind);
    END IF;
    PERFORM pg_notify('copydesk_jobs_ready',
        NEW.kind || ' ' || NEW.priority || ' ' || floor(extract(epoch FROM NEW.run_at) * 1000000)::bigint);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_requeued AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.status = 'queued'
          AND (OLD.status <> 'queued' OR NEW.run_at < OLD.run_at
               OR NEW.priority <> OLD.priority OR NEW.kind <> OLD.kind))
    EXECUTE FUNCTION jobs_notify_requeued();

-- Running rows by lease, not by worker. Finishes and heartbeats name their jobs by id;
-- with an index on `locked_by` the planner, counting only live running rows, read it
-- for them instead of the primary key, and under a held horizon that meant every
-- version this worker ever ran (12 ms a finish after three minutes). The rescue reads
-- this one from where its last look ended (`job_rescue_expired`).
DROP INDEX jobs_running_idx;
CREATE INDEX jobs_running_idx ON jobs USING btree (locked_until) WHERE (status = 'running'::text);

-- Whether a ready job of `p_kind` belongs to another group (project, else tenant) than
-- `p_group`: the two ranges of `jobs_queued_group_idx` either side of it, so the
-- entries of `p_group` itself (all a held horizon keeps while one project has the queue
-- to itself) are never read. Sorting is off inside: the planner, counting only live
-- rows, otherwise now and then reads the kind's whole queued index and sorts what it
-- finds, which under a held horizon is every version claimed since.
CREATE FUNCTION copydesk_other_group_ready(p_kind text, p_group uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET enable_sort = off
    AS $$
    SELECT EXISTS (SELECT 1 FROM jobs q WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
                     AND coalesce(q.project_id, q.tenant_id) < p_group
                   ORDER BY q.kind DESC, coalesce(q.project_id, q.tenant_id) DESC LIMIT 1)
        OR EXISTS (SELECT 1 FROM jobs q WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
                     AND coalesce(q.project_id, q.tenant_id) > p_group
                   ORDER BY q.kind, coalesce(q.project_id, q.tenant_id) LIMIT 1)
$$;
