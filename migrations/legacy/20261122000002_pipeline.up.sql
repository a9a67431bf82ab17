-- The content pipeline's job kinds, and approvals as a queue of their own.

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing'));

-- A decision made by anyone (the CLI, another service's plain UPDATE) is stamped and
-- wakes the workers, which apply it once (applied_at) in one transaction.
CREATE FUNCTION approvals_decided() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status THEN
        IF OLD.status <> 'pending' THEN
            RAISE EXCEPTION 'approval % was already %: a decision cannot be changed', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.decided_at := coalesce(NEW.decided_at, now());
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER approvals_decided BEFORE UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION approvals_decided();

CREATE FUNCTION approvals_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('copydesk_approvals', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER approvals_notify AFTER UPDATE OF status ON approvals
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION approvals_notify();

-- One pending approval per artifact at most.
CREATE UNIQUE INDEX approvals_one_pending_idx ON approvals (artifact_id) WHERE status = 'pending';
