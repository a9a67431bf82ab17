CREATE OR REPLACE FUNCTION copydesk_other_group_ready(p_kind text, p_group uuid) RETURNS boolean
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
