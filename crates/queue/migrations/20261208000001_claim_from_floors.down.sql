DROP FUNCTION IF EXISTS copydesk_other_group_ready(text, uuid);
DROP TRIGGER IF EXISTS jobs_notify_requeued ON jobs;
DROP FUNCTION IF EXISTS jobs_notify_requeued();
DROP INDEX IF EXISTS jobs_running_idx;
CREATE INDEX jobs_running_idx ON jobs USING btree (locked_by) WHERE (status = 'running'::text);
DROP FUNCTION IF EXISTS copydesk_claim_from(text, integer, text, bigint, integer[], timestamp with time zone[]);

CREATE OR REPLACE FUNCTION jobs_notify_insert() RETURNS trigger
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
