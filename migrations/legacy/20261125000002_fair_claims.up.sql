-- Fair claims. Within a kind, ready jobs are grouped by their project (a job with no
-- project: by its tenant), and a claim takes from every group with ready jobs in turn:
-- a project with one ready job is not starved behind one with ten thousand. Higher
-- priority still goes first. When only one group has ready jobs, the claim is the
-- plain one (best first from `jobs_queued_idx`). `groups` in each row: how many groups
-- had ready jobs (at most p_limit counted); workers use the plain statement while it
-- is 1, and this function again every second (copydesk_queue::backend).
CREATE INDEX jobs_queued_group_idx ON jobs (kind, (coalesce(project_id, tenant_id)), priority DESC, run_at, id)
    WHERE status = 'queued';

CREATE FUNCTION copydesk_claim(p_kind text, p_limit int, p_worker text, p_lease_ms bigint)
RETURNS TABLE (id uuid, kind text, tenant_id uuid, project_id uuid, input jsonb,
               input_artifact_id uuid, parent_id uuid, priority int, attempts int,
               max_attempts int, run_at timestamptz, created_at timestamptz, locked_by text,
               groups int)
LANGUAGE plpgsql AS $$
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
    FOR phase IN 1..2 LOOP
        after := CASE phase WHEN 1 THEN start ELSE '00000000-0000-0000-0000-000000000000' END;
        upto := CASE phase WHEN 1 THEN 'ffffffff-ffff-ffff-ffff-ffffffffffff' ELSE start END;
        LOOP
            EXIT WHEN cardinality(found) >= p_limit;
            SELECT coalesce(q.project_id, q.tenant_id) INTO g FROM jobs q
            WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
              AND coalesce(q.project_id, q.tenant_id) > after
              AND coalesce(q.project_id, q.tenant_id) <= upto
            ORDER BY coalesce(q.project_id, q.tenant_id) LIMIT 1;
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
        RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.input_artifact_id,
                  j.parent_id, j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at,
                  j.locked_by, cardinality(found);
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
        RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.input_artifact_id,
                  j.parent_id, j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at,
                  j.locked_by, cardinality(found);
    END IF;
END
$$;
