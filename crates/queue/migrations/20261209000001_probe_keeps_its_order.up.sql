-- The probe of 20261208000001 asked `EXISTS (… ORDER BY … LIMIT 1)`; the planner drops
-- the ORDER BY and the LIMIT of an EXISTS, and with the function's generic plan it then
-- read the whole table (23 ms a probe on 50,000 queued jobs of one project, where the
-- two index ranges take 0.14 ms). Scalar subqueries keep both.
CREATE OR REPLACE FUNCTION copydesk_other_group_ready(p_kind text, p_group uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET enable_sort = off
    AS $$
    SELECT (SELECT 1 FROM jobs q WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
              AND coalesce(q.project_id, q.tenant_id) < p_group
            ORDER BY q.kind DESC, coalesce(q.project_id, q.tenant_id) DESC LIMIT 1) IS NOT NULL
        OR (SELECT 1 FROM jobs q WHERE q.status = 'queued' AND q.kind = p_kind AND q.run_at <= now()
              AND coalesce(q.project_id, q.tenant_id) > p_group
            ORDER BY q.kind, coalesce(q.project_id, q.tenant_id) LIMIT 1) IS NOT NULL
$$;
