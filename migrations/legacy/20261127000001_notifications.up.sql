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

-- Delivering them: a tenant's channels (a webhook; optionally one project's, and a
-- minimum severity), and one delivery row per notification and channel, carried out by
-- a `notify` job.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing',
    'cache_refresh', 'notify'));

CREATE TABLE notification_channels (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id    uuid REFERENCES projects (id) ON DELETE CASCADE,
    kind          text NOT NULL CONSTRAINT notification_channels_kind_known CHECK (kind IN ('webhook')),
    -- Where to, as shown: the webhook URL's origin, its path hidden (a Slack or Teams
    -- webhook URL is itself a credential).
    target        text NOT NULL,
    -- The whole URL, encrypted with COPYDESK_FERNET_KEYS.
    url           bytea NOT NULL,
    min_severity  text NOT NULL DEFAULT 'info'
                  CONSTRAINT notification_channels_severity_known
                  CHECK (min_severity IN ('info', 'warning', 'error')),
    -- The signing secret (`whsec_…`), encrypted with COPYDESK_FERNET_KEYS.
    secret        bytea NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_channels_tenant_idx ON notification_channels (tenant_id);

CREATE TABLE notification_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel_id       uuid NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT notification_deliveries_status_known
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         int NOT NULL DEFAULT 0,
    -- The receiver's last answer: its HTTP status (none when it could not be reached)
    -- and the start of its body, or why it could not be reached.
    answer_status    int,
    answer           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX notification_deliveries_notification_idx ON notification_deliveries (notification_id);
CREATE INDEX notification_deliveries_channel_idx ON notification_deliveries (channel_id, created_at DESC);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notification_channels', 'notification_deliveries'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY owner_all ON %I TO CURRENT_USER USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY tenant_own ON %I TO copydesk_tenant
                        USING (tenant_id = copydesk_session_tenant())
                        WITH CHECK (tenant_id = copydesk_session_tenant())', t);
    END LOOP;
END
$$;
GRANT SELECT (id, tenant_id, project_id, kind, target, min_severity, created_by, created_at)
    ON notification_channels TO copydesk_tenant;
GRANT SELECT ON notification_deliveries TO copydesk_tenant;

-- Raises a notification, or folds it into the unread one of the same kind and cause;
-- returns its id. A new one (not a repeat) also gets a delivery for each channel of
-- its tenant that takes it (the project's or the tenant's, at its severity or above)
-- and a `notify` job for each, in the same transaction.
CREATE FUNCTION copydesk_notify(
    p_tenant uuid, p_project uuid, p_job uuid, p_severity text, p_kind text, p_cause text,
    p_title text, p_body text, p_data jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    nid      uuid;
    inserted boolean;
    levels   text[] := ARRAY['info', 'warning', 'error'];
BEGIN
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
    RETURNING id, (xmax = 0) INTO nid, inserted;
    IF inserted THEN
        WITH d AS (
            INSERT INTO notification_deliveries (tenant_id, notification_id, channel_id)
            SELECT p_tenant, nid, c.id FROM notification_channels c
             WHERE c.tenant_id = p_tenant
               AND (c.project_id IS NULL OR c.project_id = p_project)
               AND array_position(levels, c.min_severity) <= array_position(levels, p_severity)
            RETURNING id)
        INSERT INTO jobs (kind, input, tenant_id, project_id, max_attempts)
        SELECT 'notify', jsonb_build_object('delivery_id', d.id), p_tenant, p_project, 6 FROM d;
    END IF;
    RETURN nid;
END
$$;
REVOKE ALL ON FUNCTION copydesk_notify(uuid, uuid, uuid, text, text, text, text, text, jsonb) FROM PUBLIC;

-- A job failed for good (its last attempt, or a permanent error, or a bad input),
-- however it was moved there. A `notify` job that ran out of attempts marks its
-- delivery failed and raises nothing (that would go to the same channel again).
-- Otherwise, failures of one kind with the same error (ids and
-- numbers masked, as the console groups them) fold together. A job whose reason is
-- already told by a more precise notification naming it (credentials refused, a post
-- that may have gone out) raises nothing more.
CREATE FUNCTION copydesk_job_failed_notify() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.kind = 'notify' THEN
        UPDATE notification_deliveries SET status = 'failed'
         WHERE id = (NEW.input->>'delivery_id')::uuid AND status = 'pending';
        RETURN NULL;
    END IF;
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
