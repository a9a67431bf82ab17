-- The queue page groups a tenant's failed jobs by their masked error, and under
-- row-level security the first version of this index was never used: the tenant's rows
-- are found by `tenant_id`, which it lacked, and the planner costed the two regular
-- expressions like an addition, so it read every failed job from the heap and masked
-- each one (50 ms for 9,000 jobs, as `copydesk_api`).
--
-- The function becomes PL/pgSQL (SQL functions are inlined, and an inlined function's
-- COST is lost) with a cost near what it takes (a few microseconds a call, about 1,000
-- times a comparison); the same results, NULL for NULL. The index leads with
-- `tenant_id` and includes what the page shows (`last_error`, which the planner needs
-- for an index-only scan of an expression, `kind`, `finished_at`): one index-only scan
-- in group order counts each group and picks its latest jobs (8-10 ms for the same
-- jobs, in one group or 676).
DROP INDEX jobs_failed_group_idx;

CREATE OR REPLACE FUNCTION copydesk_error_group(error text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 1000 AS $$
BEGIN
    RETURN regexp_replace(
        regexp_replace(error, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
        '[0-9]+', '<n>', 'g');
END
$$;

CREATE INDEX jobs_failed_group_idx ON jobs (tenant_id, copydesk_error_group(last_error), id)
    INCLUDE (last_error, kind, finished_at) WHERE status = 'failed';
