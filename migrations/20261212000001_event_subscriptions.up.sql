-- Lifecycle events for other services: a subscription (a tenant's webhook, optionally
-- for one project, optionally for some event types) receives each event of its tenant
-- as a Standard Webhooks message, through the same sending path as notifications'
-- webhooks but in tables of their own: a subscription is another system's, not a
-- person's channel, and an event is not read or folded like a notification.
--
-- The database raises the events, so a decision made by plain SQL is told like one
-- made by the CLI: an approval waiting and decided (approvals), a publication made
-- (a `publication` artifact) or failed for good (a `publishing` job failed), and a
-- channel of a pipeline finished (published, rejected or failed). An event is written
-- only when some subscription takes it, with one delivery per subscription and one
-- `deliver_event` job per delivery.

CREATE TABLE event_subscriptions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    project_id uuid REFERENCES projects(id) ON DELETE CASCADE,
    -- The URL as shown (its origin), the URL itself and the `whsec_` signing secret
    -- sealed with the Fernet keys, like a notification channel's.
    target     text NOT NULL,
    url        bytea NOT NULL,
    secret     bytea NOT NULL,
    -- The event types it takes; empty: every type.
    events     text[] NOT NULL DEFAULT '{}',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_subscriptions_events_known CHECK (events <@ ARRAY[
        'approval.waiting', 'approval.decided', 'publication.made', 'publication.failed',
        'pipeline.channel_finished']::text[])
);
COMMENT ON TABLE event_subscriptions IS 'Webhooks of other services: each event of the tenant (and project) as a Standard Webhooks message';
CREATE INDEX event_subscriptions_tenant_idx ON event_subscriptions (tenant_id);
-- A subscription for a project is that project's tenant's: another tenant's project
-- is refused by name (and, through the API, not found).
CREATE TRIGGER event_subscriptions_tenant BEFORE INSERT ON event_subscriptions
    FOR EACH ROW EXECUTE FUNCTION by_project_tenant();

CREATE TABLE events (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    project_id uuid,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE events IS 'Lifecycle events some subscription took; the message id is evt_<id>, the same on every retry';
CREATE INDEX events_created_idx ON events (created_at);

CREATE TABLE event_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_id        uuid NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL REFERENCES event_subscriptions(id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending'
                    CONSTRAINT event_deliveries_status_known
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    answer_status   integer,
    answer          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX event_deliveries_subscription_idx ON event_deliveries (subscription_id, created_at DESC);
CREATE INDEX event_deliveries_event_idx ON event_deliveries (event_id);

-- Raises one event: written (with its deliveries and their jobs) only when a
-- subscription of the tenant takes it. Returns the event's id, or NULL.
CREATE FUNCTION copydesk_emit(p_tenant uuid, p_project uuid, p_type text, p_data jsonb) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    eid  uuid;
    subs uuid[];
BEGIN
    -- The subscriptions that take it, read once (most causes find none).
    SELECT array_agg(s.id) INTO subs FROM event_subscriptions s
     WHERE s.tenant_id = p_tenant
       AND (s.project_id IS NULL OR s.project_id = p_project)
       AND (s.events = '{}' OR p_type = ANY (s.events));
    IF subs IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO events (tenant_id, project_id, type, data)
    VALUES (p_tenant, p_project, p_type, p_data)
    RETURNING id INTO eid;
    WITH d AS (
        INSERT INTO event_deliveries (tenant_id, event_id, subscription_id)
        SELECT p_tenant, eid, sub FROM unnest(subs) AS sub
        RETURNING id)
    INSERT INTO jobs (kind, input, tenant_id, project_id, max_attempts)
    SELECT 'deliver_event', jsonb_build_object('delivery_id', d.id), p_tenant, p_project, 8 FROM d;
    RETURN eid;
END
$$;
REVOKE ALL ON FUNCTION copydesk_emit(uuid, uuid, text, jsonb) FROM PUBLIC;

-- approval.waiting and approval.decided.
CREATE FUNCTION copydesk_approval_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    a record;
BEGIN
    SELECT ar.project_id, ar.kind, ar.channel, ar.version INTO a
      FROM artifacts ar WHERE ar.id = NEW.artifact_id;
    PERFORM copydesk_emit(
        NEW.tenant_id, a.project_id,
        CASE WHEN TG_OP = 'INSERT' THEN 'approval.waiting' ELSE 'approval.decided' END,
        jsonb_strip_nulls(jsonb_build_object(
            'approval_id', NEW.id, 'job_id', NEW.job_id, 'project_id', a.project_id,
            'artifact_id', NEW.artifact_id, 'artifact_kind', a.kind, 'channel', a.channel,
            'version', a.version, 'subject', copydesk_approval_subject(NEW.artifact_id),
            'status', NEW.status, 'decided_by', NEW.decided_by, 'notes', NEW.notes,
            'decided_at', NEW.decided_at)));
    RETURN NULL;
END
$$;

CREATE TRIGGER approvals_waiting_event AFTER INSERT ON approvals FOR EACH ROW
    WHEN (NEW.status = 'pending') EXECUTE FUNCTION copydesk_approval_event();
CREATE TRIGGER approvals_decided_event AFTER UPDATE OF status ON approvals FOR EACH ROW
    WHEN (OLD.status = 'pending' AND NEW.status <> 'pending') EXECUTE FUNCTION copydesk_approval_event();

-- publication.made, and the channel finished published.
CREATE FUNCTION copydesk_publication_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    body jsonb;
BEGIN
    body := jsonb_strip_nulls(jsonb_build_object(
        'publication_artifact_id', NEW.id, 'job_id', NEW.job_id, 'project_id', NEW.project_id,
        'channel', NEW.channel, 'draft_artifact_id', NEW.based_on_id,
        'platform', NEW.data->>'platform', 'integration_id', NEW.data->>'integration_id',
        'external_id', NEW.data->>'external_id', 'url', NEW.data->>'url',
        'scheduled_for', NEW.data->>'scheduled_for', 'how', NEW.data->>'how'));
    PERFORM copydesk_emit(NEW.tenant_id, NEW.project_id, 'publication.made', body);
    PERFORM copydesk_emit(NEW.tenant_id, NEW.project_id, 'pipeline.channel_finished',
                          body || jsonb_build_object('outcome', 'published'));
    RETURN NULL;
END
$$;

CREATE TRIGGER artifacts_publication_event AFTER INSERT ON artifacts FOR EACH ROW
    WHEN (NEW.kind = 'publication') EXECUTE FUNCTION copydesk_publication_event();

-- A pipeline job failed for good: publication.failed for a publishing job, and the
-- channel finished (rejected when a person's rejection ended it, else failed).
CREATE FUNCTION copydesk_job_failed_event() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    channel  text;
    rejected boolean;
    body     jsonb;
BEGIN
    IF NEW.kind = 'deliver_event' THEN
        UPDATE event_deliveries SET status = 'failed'
         WHERE id = (NEW.input->>'delivery_id')::uuid AND status = 'pending';
        RETURN NULL;
    END IF;
    channel := coalesce(NEW.input->>'channel',
                        (SELECT ar.channel FROM artifacts ar
                          WHERE ar.id = coalesce(NEW.input_artifact_id,
                                                 (NEW.input->>'artifact_id')::uuid)));
    body := jsonb_strip_nulls(jsonb_build_object(
        'job_id', NEW.id, 'job_kind', NEW.kind, 'project_id', NEW.project_id,
        'channel', channel, 'attempts', NEW.attempts, 'error', NEW.last_error,
        'draft_artifact_id', CASE WHEN NEW.kind = 'publishing' THEN NEW.input->>'artifact_id' END));
    IF NEW.kind = 'publishing' THEN
        PERFORM copydesk_emit(NEW.tenant_id, NEW.project_id, 'publication.failed', body);
    END IF;
    IF channel IS NOT NULL THEN
        rejected := EXISTS (SELECT 1 FROM approvals a WHERE a.job_id = NEW.id AND a.status = 'rejected');
        PERFORM copydesk_emit(NEW.tenant_id, NEW.project_id, 'pipeline.channel_finished',
                              body || jsonb_build_object('outcome',
                                  CASE WHEN rejected THEN 'rejected' ELSE 'failed' END));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_failed_event AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed'
          AND NEW.kind IN ('draft_generation', 'evaluation', 'publishing', 'deliver_event'))
    EXECUTE FUNCTION copydesk_job_failed_event();

-- Row security as for notification channels: the owner everything, a tenant its own.
ALTER TABLE event_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_subscriptions FORCE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE event_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON event_subscriptions TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON events TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY owner_all ON event_deliveries TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON event_subscriptions TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant()) WITH CHECK (tenant_id = copydesk_session_tenant());
CREATE POLICY tenant_own ON events TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant()) WITH CHECK (tenant_id = copydesk_session_tenant());
CREATE POLICY tenant_own ON event_deliveries TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant()) WITH CHECK (tenant_id = copydesk_session_tenant());
-- A tenant reads its subscriptions (never the sealed URL or secret), events and deliveries.
GRANT SELECT (id, tenant_id, project_id, target, events, created_by, created_at)
    ON event_subscriptions TO copydesk_tenant;
GRANT SELECT ON events, event_deliveries TO copydesk_tenant;
-- The API (an admin's token) subscribes and unsubscribes in its tenant.
GRANT INSERT (tenant_id, project_id, target, url, secret, events, created_by), DELETE
    ON event_subscriptions TO copydesk_api;
