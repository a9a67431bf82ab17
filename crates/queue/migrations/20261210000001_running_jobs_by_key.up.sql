-- The three statements that name running jobs by id (a worker's batched finish, its
-- heartbeat, its give-back of jobs it never started) become functions that reach each
-- job by the primary key, whatever the planner's statistics say.
--
-- Written plainly (`id = ANY(ids) AND status = 'running'`), the planner chose by its
-- counts of live rows, and chose wrong either way: it read `jobs_running_idx` whole,
-- which under a held horizon also holds the running version of every job finished
-- since (a finish of 906 jobs: 40,677 buffers, 1.1 s on CPU); or, with that index ruled
-- out, it scanned the table (a finish of 1,000 jobs among 50,000 queued read all
-- 50,000). So the lease is tested as `(status || '') = 'running'`, the same test, from
-- which no partial index's predicate follows, and each function turns off, for its one
-- statement, the sequential scan and the hash and merge joins: what is left is a loop
-- over the ids into the primary key (PERFORMANCE.md, the `repeatable` holder). Planned
-- inside a function today, the statement does not see how many ids it is given and
-- loops anyway; the settings keep it so where it is planned knowing them (a custom plan
-- from the plan cache, as Postgres 18 makes for SQL functions).

-- Finishes the jobs of `p_ids` (with the attempt, outcome, retry delay, error and output
-- at the same index of the other arrays), each fenced on `p_worker`'s lease and attempt.
-- Outcomes: done, failed, needs_approval, retry (queued again, or failed when the
-- attempts are used up), wait (queued again, the attempt given back, the error written
-- to `waiting_for`). Returns each job written with its new status.
CREATE FUNCTION copydesk_finish(p_worker text, p_ids uuid[], p_attempts integer[],
                                p_outcomes text[], p_delays_ms bigint[], p_errors text[],
                                p_outputs jsonb[])
    RETURNS TABLE (job_id uuid, job_kind text, job_status text)
    LANGUAGE sql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
    AS $$
    UPDATE jobs j SET
        status = CASE WHEN u.outcome = 'wait' THEN 'queued'
                      WHEN u.outcome <> 'retry' THEN u.outcome
                      WHEN j.attempts < j.max_attempts THEN 'queued'
                      ELSE 'failed' END,
        attempts = CASE WHEN u.outcome = 'wait' THEN j.attempts - 1 ELSE j.attempts END,
        run_at = CASE WHEN u.outcome = 'wait'
                        OR (u.outcome = 'retry' AND j.attempts < j.max_attempts)
                      THEN now() + u.delay_ms * interval '1 millisecond'
                      ELSE j.run_at END,
        finished_at = CASE WHEN u.outcome = 'wait'
                             OR (u.outcome = 'retry' AND j.attempts < j.max_attempts)
                           THEN NULL ELSE now() END,
        last_error = CASE WHEN u.outcome = 'wait' THEN j.last_error
                          ELSE coalesce(u.error, j.last_error) END,
        waiting_for = CASE WHEN u.outcome = 'wait' THEN u.error END,
        output = coalesce(u.output, j.output),
        locked_by = NULL, locked_until = NULL, updated_at = now()
    FROM unnest(p_ids, p_attempts, p_outcomes, p_delays_ms, p_errors, p_outputs)
         AS u(id, attempts, outcome, delay_ms, error, output)
    WHERE j.id = u.id AND (j.status || '') = 'running' AND j.locked_by = p_worker
      AND j.attempts = u.attempts
    RETURNING j.id, j.kind, j.status
$$;

-- Extends to `p_lease_ms` the leases `p_worker` holds on `p_ids` with less than
-- `p_renew_below_ms` left. Rows a finish holds are skipped (the next beat extends any
-- whose finish failed): a heartbeat never waits for a finish, so the two, which lock
-- the same rows in no common order, cannot deadlock. Returns how many.
CREATE FUNCTION copydesk_extend_leases(p_worker text, p_ids uuid[], p_lease_ms bigint,
                                       p_renew_below_ms bigint)
    RETURNS bigint
    LANGUAGE sql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
    AS $$
    WITH extended AS (
        UPDATE jobs SET locked_until = now() + p_lease_ms * interval '1 millisecond'
        WHERE id = ANY(ARRAY(
            SELECT id FROM jobs
            WHERE id = ANY(p_ids) AND (status || '') = 'running' AND locked_by = p_worker
              AND locked_until < now() + p_renew_below_ms * interval '1 millisecond'
            FOR UPDATE SKIP LOCKED))
        RETURNING 1)
    SELECT count(*) FROM extended
$$;

-- Hands back to the queue the jobs of `p_ids` that `p_worker` claimed and never
-- started, as they were before the claim (the attempt given back, `run_at` kept; the
-- requeue trigger says where they start). Returns each job given back.
CREATE FUNCTION copydesk_give_back(p_worker text, p_ids uuid[])
    RETURNS TABLE (job_id uuid, job_kind text)
    LANGUAGE sql
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
    AS $$
    UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0),
                    locked_by = NULL, locked_until = NULL, updated_at = now()
    WHERE id = ANY(p_ids) AND (status || '') = 'running' AND locked_by = p_worker
    RETURNING id, kind
$$;
