DROP FUNCTION copydesk_claim(text, integer, text, bigint);
DROP FUNCTION copydesk_claim_from(text, integer, text, bigint, integer[], timestamp with time zone[]);

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

DROP TRIGGER jobs_inherit_trace ON jobs;
DROP FUNCTION jobs_inherit_trace();
ALTER TABLE jobs DROP COLUMN tracestate, DROP COLUMN traceparent;
