-- Notifications: what needs a person, as rows of its tenant, written in the same
-- transaction as their cause (so none is lost, and none is raised for something that
-- rolled back). Repeats of one cause fold into its unread row: `count` goes up and
-- `last_at` moves; once read, the next repeat starts a new row.
CREATE TABLE notifications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id  uuid REFERENCES projects (id) ON DELETE CASCADE,
    -- No foreign key: retention deletes jobs, their notifications stay.
    job_id      uuid,
    severity    text NOT NULL
                CONSTRAINT notifications_severity_known CHECK (severity IN ('info', 'warning', 'error')),
    kind        text NOT NULL,
    -- The cause, within its kind: what folds repeats together.
    cause       text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    count       int NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    read_by     text,
    CONSTRAINT notifications_read_by_whom CHECK ((read_at IS NULL) = (read_by IS NULL))
);
CREATE UNIQUE INDEX notifications_unread_cause_idx ON notifications (tenant_id, kind, cause)
    WHERE read_at IS NULL;
CREATE INDEX notifications_tenant_idx ON notifications (tenant_id, last_at DESC, id DESC);
-- The unread notifications naming a job (a job that failed for a reason already told
-- is not told again as a plain failure).
CREATE INDEX notifications_job_idx ON notifications (job_id)
    WHERE read_at IS NULL AND job_id IS NOT NULL;

ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON notifications TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON notifications TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant())
    WITH CHECK (tenant_id = copydesk_session_tenant());
-- Tenant sessions read their notifications and mark them read; raising is the owner's
-- (the triggers below run as it, whoever moved the row).
GRANT SELECT, UPDATE (read_at, read_by) ON notifications TO copydesk_tenant;

-- Raises a notification, or folds it into the unread one of the same kind and cause.
-- Returns its id.
CREATE FUNCTION copydesk_notify(
    p_tenant uuid, p_project uuid, p_job uuid, p_severity text, p_kind text, p_cause text,
    p_title text, p_body text, p_data jsonb)
RETURNS uuid LANGUAGE sql AS $$
    INSERT INTO notifications AS n
        (tenant_id, project_id, job_id, severity, kind, cause, title, body, data)
    VALUES (p_tenant, p_project, p_job, p_severity, p_kind, p_cause, p_title,
            coalesce(p_body, ''), coalesce(p_data, '{}'))
    ON CONFLICT (tenant_id, kind, cause) WHERE read_at IS NULL DO UPDATE SET
        count = n.count + 1,
        last_at = now(),
        project_id = coalesce(EXCLUDED.project_id, n.project_id),
        job_id = coalesce(EXCLUDED.job_id, n.job_id),
        severity = EXCLUDED.severity,
        title = EXCLUDED.title,
        body = EXCLUDED.body,
        data = EXCLUDED.data
    RETURNING id
$$;
REVOKE ALL ON FUNCTION copydesk_notify(uuid, uuid, uuid, text, text, text, text, text, jsonb) FROM PUBLIC;

-- A job failed for good (its last attempt, or a permanent error, or a bad input),
-- however it was moved there. Failures of one kind with the same error (ids and
-- numbers masked, as the console groups them) fold together. A job whose reason is
-- already told by a more precise notification naming it (credentials refused, a post
-- that may have gone out) raises nothing more.
CREATE FUNCTION copydesk_job_failed_notify() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM notifications
                WHERE job_id = NEW.id AND read_at IS NULL AND kind <> 'job_failed') THEN
        RETURN NULL;
    END IF;
    PERFORM copydesk_notify(
        NEW.tenant_id, NEW.project_id, NEW.id, 'error', 'job_failed',
        NEW.kind || ': ' || coalesce(copydesk_error_group(NEW.last_error), 'no error recorded'),
        format('A %s job failed for good', NEW.kind),
        coalesce(NEW.last_error, ''),
        jsonb_build_object('job_id', NEW.id, 'job_kind', NEW.kind, 'attempts', NEW.attempts));
    RETURN NULL;
END
$$;
-- Only the WHEN clause runs for other updates: the hot path pays a comparison.
CREATE TRIGGER jobs_failed_notify AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION copydesk_job_failed_notify();

-- What an approval is about, for a title: "The linkedin draft of Linen & Loom".
CREATE FUNCTION copydesk_approval_subject(p_artifact uuid) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT CASE WHEN ar.kind = 'draft' THEN format('The %s draft', coalesce(ar.channel, ''))
                WHEN ar.kind = 'brand_voice' THEN 'The brand voice'
                ELSE format('A %s', ar.kind) END
           || coalesce(format(' of %s', p.name), '')
      FROM artifacts ar LEFT JOIN projects p ON p.id = ar.project_id
     WHERE ar.id = p_artifact
$$;
REVOKE ALL ON FUNCTION copydesk_approval_subject(uuid) FROM PUBLIC;

-- An approval is waiting for a person.
CREATE FUNCTION copydesk_approval_notify() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    a record;
BEGIN
    SELECT ar.project_id, ar.kind, ar.channel INTO a FROM artifacts ar WHERE ar.id = NEW.artifact_id;
    PERFORM copydesk_notify(
        NEW.tenant_id, a.project_id, NEW.job_id, 'info', 'approval_waiting', NEW.id::text,
        copydesk_approval_subject(NEW.artifact_id) || ' waits for approval',
        '',
        jsonb_build_object('approval_id', NEW.id, 'artifact_id', NEW.artifact_id,
                           'artifact_kind', a.kind, 'channel', a.channel));
    RETURN NULL;
END
$$;
CREATE TRIGGER approvals_waiting_notify AFTER INSERT ON approvals
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION copydesk_approval_notify();

-- A decided approval no longer waits: its notifications (waiting, reminder) are read,
-- by whoever decided.
CREATE FUNCTION copydesk_approval_decided_notify() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE notifications SET read_at = now(), read_by = coalesce(NEW.decided_by, 'a decision')
     WHERE tenant_id = NEW.tenant_id AND kind IN ('approval_waiting', 'approval_reminder')
       AND cause = NEW.id::text AND read_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER approvals_decided_notify AFTER UPDATE OF status ON approvals
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION copydesk_approval_decided_notify();
