-- Jobs carry a W3C trace context (https://www.w3.org/TR/trace-context/): `traceparent`
-- and `tracestate`, as the request headers of the same names. Whoever enqueues may set
-- them (the API from the request's header, the CLI from TRACEPARENT, the clients from
-- the caller's active span, plain SQL by naming the columns); a job enqueued with a
-- parent and none of its own takes its parent's, so a whole pipeline is one trace
-- whoever wrote each follow-up. Retries, waits and rescues leave them as they are. A
-- worker that exports traces makes each run of the job a child of `traceparent`.
--
-- The checks are NOT VALID: every existing row is NULL, and validating would scan the
-- whole table under an exclusive lock; new and updated rows are checked.
ALTER TABLE jobs ADD COLUMN traceparent text, ADD COLUMN tracestate text;
ALTER TABLE jobs ADD CONSTRAINT jobs_traceparent_w3c CHECK (
    traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
    AND left(traceparent, 2) <> 'ff'
    AND substr(traceparent, 4, 32) <> repeat('0', 32)
    AND substr(traceparent, 37, 16) <> repeat('0', 16)) NOT VALID;
ALTER TABLE jobs ADD CONSTRAINT jobs_tracestate_with_parent CHECK (
    tracestate IS NULL OR (traceparent IS NOT NULL AND length(tracestate) <= 512)) NOT VALID;
COMMENT ON COLUMN jobs.traceparent IS 'W3C traceparent of the work that asked for this job (version-traceid-parentid-flags, lowercase hex); NULL: none, or the parent''s';
COMMENT ON COLUMN jobs.tracestate IS 'W3C tracestate that goes with traceparent (at most 512 characters)';

-- A follow-up takes its parent's trace when it names none. Only rows that have a parent
-- and no trace pay for the look-up (by the parent's primary key).
CREATE FUNCTION jobs_inherit_trace() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    SELECT p.traceparent, p.tracestate INTO NEW.traceparent, NEW.tracestate
      FROM jobs p WHERE p.id = NEW.parent_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_inherit_trace BEFORE INSERT ON jobs
    FOR EACH ROW WHEN (NEW.traceparent IS NULL AND NEW.parent_id IS NOT NULL)
    EXECUTE FUNCTION jobs_inherit_trace();

-- The claims return the trace with the job. (A changed result type needs the function
-- dropped first; a worker of the version before names the columns it reads, and still
-- reads them.)
DROP FUNCTION copydesk_claim(text, integer, text, bigint);
DROP FUNCTION copydesk_claim_from(text, integer, text, bigint, integer[], timestamp with time zone[]);

CREATE FUNCTION copydesk_claim(p_kind text, p_limit integer, p_worker text, p_lease_ms bigint) RETURNS TABLE(
    id uuid, kind text, tenant_id uuid, project_id uuid, input jsonb, parent_id uuid, priority integer, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, locked_by text, traceparent text, tracestate text, groups integer)
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
                  j.traceparent, j.tracestate,
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
                  j.traceparent, j.tracestate,
                  cardinality(found);
    END IF;
END
$$;

CREATE FUNCTION copydesk_claim_from(p_kind text, p_limit integer, p_worker text, p_lease_ms bigint,
                                    p_priorities integer[], p_floors timestamp with time zone[])
RETURNS TABLE(
    id uuid, kind text, tenant_id uuid, project_id uuid, input jsonb, parent_id uuid, priority integer, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, locked_by text, traceparent text, tracestate text)
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
              j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at, j.locked_by,
              j.traceparent, j.tracestate;
END
$$;
