-- The application's layer as it stood on 2026-12-06, in one migration: everything the
-- migrations in migrations/legacy/ made, less the engine's tables and functions (the
-- engine's own baseline, crates/queue/migrations, creates those first). On a database
-- those migrations made, this one is recorded as applied and not run. It was written
-- from the schema they leave (pg_dump), so its order is the dump's: functions, tables,
-- keys, indexes, triggers, row security, privileges. Read the legacy migrations for why
-- each thing is as it is.

-- SQL functions name tables created below.
SET LOCAL check_function_bodies = off;

-- The two roles belong to the cluster: another database may have made them already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copydesk_tenant') THEN
        CREATE ROLE copydesk_tenant NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'copydesk_api') THEN
        CREATE ROLE copydesk_api NOLOGIN;
    END IF;
END
$$;
GRANT copydesk_tenant TO copydesk_api;
-- The owner may switch a transaction to the API role (the HTTP server does).
GRANT copydesk_api TO CURRENT_USER;

-- The application's columns on the engine's table.
ALTER TABLE jobs ADD COLUMN input_artifact_id uuid, ADD COLUMN output_artifact_id uuid;
-- The owner's own inserts land in the default tenant; anyone else's are placed by the
-- jobs_tenant trigger (below) or refused.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE jobs ALTER COLUMN tenant_id SET DEFAULT
                    CASE WHEN current_user = %L THEN ''00000000-0000-0000-0000-000000000001''::uuid END',
                   current_user);
END
$$;
ALTER VIEW queue_overview SET (security_invoker = true);
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
ALTER TABLE job_steps FORCE ROW LEVEL SECURITY;

-- Functions (their bodies are checked when called: tables come later)

CREATE FUNCTION approvals_decided() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION approvals_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('copydesk_approvals', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE FUNCTION approvals_same_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.artifact_id <> OLD.artifact_id
       AND copydesk_artifact_tenant(NEW.artifact_id) IS DISTINCT FROM NEW.tenant_id THEN
        RAISE EXCEPTION 'approval % of tenant % cannot refer to artifact % of another tenant',
            NEW.id, NEW.tenant_id, NEW.artifact_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE FUNCTION by_artifact_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.artifact_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.artifact_id),
                                              TG_TABLE_NAME, 'artifact ' || NEW.artifact_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION by_job_and_artifact_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.job_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.job_id),
                                              TG_TABLE_NAME, 'job ' || NEW.job_id);
    END IF;
    NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.artifact_id),
                                          TG_TABLE_NAME, 'artifact ' || NEW.artifact_id);
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION by_project_or_job_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.project_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                              TG_TABLE_NAME, 'project ' || NEW.project_id);
    END IF;
    IF NEW.job_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.job_id),
                                              TG_TABLE_NAME, 'job ' || NEW.job_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION by_project_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                          TG_TABLE_NAME, 'project ' || NEW.project_id);
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION copydesk_approval_decided_notify() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
BEGIN
    UPDATE notifications SET read_at = now(), read_by = coalesce(NEW.decided_by, 'a decision')
     WHERE tenant_id = NEW.tenant_id AND kind IN ('approval_waiting', 'approval_reminder')
       AND cause = NEW.id::text AND read_at IS NULL;
    RETURN NULL;
END
$$;

CREATE FUNCTION copydesk_approval_notify() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION copydesk_approval_subject(p_artifact uuid) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
    SELECT CASE WHEN ar.kind = 'draft' THEN format('The %s draft', coalesce(ar.channel, ''))
                WHEN ar.kind = 'brand_voice' THEN 'The brand voice'
                ELSE format('A %s', ar.kind) END
           || coalesce(format(' of %s', p.name), '')
      FROM artifacts ar LEFT JOIN projects p ON p.id = ar.project_id
     WHERE ar.id = p_artifact
$$;

CREATE FUNCTION copydesk_artifact_tenant(id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $_$
    SELECT tenant_id FROM artifacts WHERE artifacts.id = $1
$_$;

CREATE FUNCTION copydesk_create_login_role(role text, password text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', role, password);
END;
$$;

CREATE FUNCTION copydesk_integration_tenant(id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $_$
    SELECT tenant_id FROM integrations WHERE integrations.id = $1
$_$;

CREATE FUNCTION copydesk_job_failed_notify() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
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

CREATE FUNCTION copydesk_job_tenant(id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $_$
    SELECT tenant_id FROM jobs WHERE jobs.id = $1
$_$;

CREATE FUNCTION copydesk_limit_take(p_keys text[], p_requests integer[], p_per_ms bigint[], p_tpm integer[], p_concurrency integer[], p_tokens integer, p_job uuid, p_lease_ms bigint) RETURNS TABLE(wait_ms bigint, blocked_by text, slots uuid[])
    LANGUAGE plpgsql
    AS $$
DECLARE
    now_ts   timestamptz := clock_timestamp();
    r        record;
    req      int;
    per      bigint;
    win      interval;
    tpm      int;
    conc     int;
    need     interval;
    wait     interval;
    longest  interval := interval '0';
    blocker  text;
    spacing  interval;
    busy     int;
    taken    uuid[] := '{}';
    slot     uuid;
    recent   timestamptz[];
    n        int;
    last     timestamptz;
    free     timestamptz;
    cand     timestamptz;
    near     boolean;
BEGIN
    -- A row for every key with a limit (a key with none needs one only once paused).
    INSERT INTO limits (key)
    SELECT w.key FROM unnest(p_keys, p_requests, p_tpm, p_concurrency) AS w(key, req, tpm, conc)
    WHERE w.req IS NOT NULL OR w.tpm IS NOT NULL OR w.conc IS NOT NULL
    ORDER BY w.key
    ON CONFLICT (key) DO NOTHING;

    -- First pass, rows locked in key order: may every key give what the call needs?
    FOR r IN
        SELECT l.*, w.req AS d_req, w.per AS d_per, w.tpm AS d_tpm, w.conc AS d_conc
        FROM limits l
        JOIN unnest(p_keys, p_requests, p_per_ms, p_tpm, p_concurrency)
             AS w(key, req, per, tpm, conc) ON w.key = l.key
        ORDER BY l.key FOR UPDATE OF l
    LOOP
        req := coalesce(r.requests, r.d_req);
        per := coalesce(r.per_ms, r.d_per);
        -- A request stays in the window a little longer than `per` (a fortieth of it, at
        -- most 100 ms): it reaches the server a moment after it was granted here.
        win := per * interval '1 millisecond'
               + least(interval '100 milliseconds', per * interval '25 microseconds');
        tpm := coalesce(r.tokens_per_minute, r.d_tpm);
        conc := coalesce(r.concurrency, r.d_conc);
        wait := interval '0';
        spacing := interval '0';
        near := false;
        IF r.paused_until > now_ts THEN
            wait := r.paused_until - now_ts;
        END IF;
        IF req IS NOT NULL AND per IS NOT NULL THEN
            recent := ARRAY(SELECT t FROM unnest(r.request_log) t
                            WHERE t > now_ts - win ORDER BY t);
            n := cardinality(recent);
            IF n >= req AND recent[n - req + 1] + win - now_ts
                            <= least(win / (4 * req), interval '100 milliseconds') THEN
                -- A slot comes free in a moment: wait for it, not behind the jobs
                -- promised later slots. This is how a job sent away comes back when the
                -- request before it in its slot went out a little later than promised;
                -- sent to the back instead, it left the slot unused until the next
                -- promise came due.
                wait := greatest(wait, recent[n - req + 1] + win - now_ts);
                near := true;
            ELSIF n >= req THEN
                -- The times slots come free are known: each of the window's last `req`
                -- requests leaves it `win` after it was granted, and the request that
                -- takes its place `win` after that. A job sent away gets the first
                -- such time after the one promised to the job sent away before it, so
                -- waiting jobs come back one to a slot, each when its slot is free
                -- (spaced evenly instead, they drifted off the slots and a tight limit
                -- ran at three quarters of its rate).
                last := greatest(now_ts, coalesce(r.promised_at, now_ts));
                free := NULL;
                FOR j IN (n - req + 1)..n LOOP
                    cand := recent[j] + win;
                    IF cand <= last THEN
                        cand := cand + (floor(extract(epoch FROM last - cand)
                                              / extract(epoch FROM win)) + 1)::float8 * win;
                    END IF;
                    free := least(free, cand);
                END LOOP;
                wait := greatest(wait, free - now_ts);
            END IF;
        END IF;
        IF tpm IS NOT NULL AND p_tokens > 0 THEN
            -- Full bucket: token_tat <= now. Taking p_tokens moves it forward by their
            -- share of a minute; it may lead now by at most a minute.
            need := (least(p_tokens, tpm)::float8 / tpm) * interval '1 minute';
            IF coalesce(r.token_tat, now_ts) + need > now_ts + interval '1 minute' THEN
                wait := greatest(wait, r.token_tat + need - interval '1 minute' - now_ts);
                -- A call's estimate counts its whole max_tokens, which few use: spaced
                -- by it, jobs sent away would come back far slower than the bucket
                -- refills. A tenth of a second apart at most; one that comes back too
                -- early waits again.
                spacing := greatest(spacing, least(need, interval '100 milliseconds'));
            END IF;
        END IF;
        IF conc IS NOT NULL THEN
            DELETE FROM limit_slots s WHERE s.key = r.key AND s.expires_at <= now_ts;
            SELECT count(*) INTO busy FROM limit_slots s WHERE s.key = r.key;
            IF busy >= conc THEN
                -- No telling when a call ends: look again soon.
                wait := greatest(wait, interval '250 milliseconds');
                spacing := greatest(spacing, interval '50 milliseconds');
            END IF;
        END IF;
        IF wait > interval '0' THEN
            -- Come back after the jobs already sent away to wait for this key (unless
            -- only a slot's next moment is awaited).
            IF near AND wait = recent[n - req + 1] + win - now_ts THEN
                UPDATE limits SET waited = waited + 1 WHERE key = r.key;
            ELSE
                IF r.promised_at > now_ts + wait THEN
                    wait := r.promised_at - now_ts;
                END IF;
                UPDATE limits SET promised_at = now_ts + wait + spacing, waited = waited + 1
                WHERE key = r.key;
            END IF;
            IF wait > longest THEN
                longest := wait;
                blocker := r.key;
            END IF;
        END IF;
    END LOOP;

    IF blocker IS NOT NULL THEN
        RETURN QUERY SELECT (extract(epoch FROM longest) * 1000)::bigint, blocker, '{}'::uuid[];
        RETURN;
    END IF;

    -- Second pass: take from every key.
    FOR r IN
        SELECT l.*, w.req AS d_req, w.per AS d_per, w.tpm AS d_tpm, w.conc AS d_conc
        FROM limits l
        JOIN unnest(p_keys, p_requests, p_per_ms, p_tpm, p_concurrency)
             AS w(key, req, per, tpm, conc) ON w.key = l.key
        ORDER BY l.key
    LOOP
        req := coalesce(r.requests, r.d_req);
        per := coalesce(r.per_ms, r.d_per);
        -- A request stays in the window a little longer than `per` (a fortieth of it, at
        -- most 100 ms): it reaches the server a moment after it was granted here.
        win := per * interval '1 millisecond'
               + least(interval '100 milliseconds', per * interval '25 microseconds');
        tpm := coalesce(r.tokens_per_minute, r.d_tpm);
        conc := coalesce(r.concurrency, r.d_conc);
        UPDATE limits SET
            request_log = CASE WHEN req IS NOT NULL AND per IS NOT NULL
                THEN ARRAY(SELECT t FROM unnest(request_log) t
                           WHERE t > now_ts - win ORDER BY t) || now_ts
                ELSE '{}' END,
            token_tat = CASE WHEN tpm IS NOT NULL AND p_tokens > 0
                THEN greatest(token_tat, now_ts) + (least(p_tokens, tpm)::float8 / tpm) * interval '1 minute'
                ELSE token_tat END,
            granted = granted + 1
        WHERE key = r.key;
        IF conc IS NOT NULL THEN
            INSERT INTO limit_slots (key, job_id, expires_at)
            VALUES (r.key, p_job, now_ts + p_lease_ms * interval '1 millisecond')
            RETURNING id INTO slot;
            taken := taken || slot;
        END IF;
    END LOOP;
    RETURN QUERY SELECT 0::bigint, NULL::text, taken;
END
$$;

CREATE FUNCTION copydesk_notify(p_tenant uuid, p_project uuid, p_job uuid, p_severity text, p_kind text, p_cause text, p_title text, p_body text, p_data jsonb) RETURNS uuid
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION copydesk_project_tenant(id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $_$
    SELECT tenant_id FROM projects WHERE projects.id = $1
$_$;

CREATE FUNCTION copydesk_same_tenant(given uuid, owner uuid, what text, ref text) RETURNS uuid
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF given IS NOT NULL AND owner IS NOT NULL AND given <> owner THEN
        RAISE EXCEPTION '% of tenant % refers to % of tenant %', what, given, ref, owner
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN coalesce(given, owner);
END;
$$;

CREATE FUNCTION copydesk_session_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN current_user = 'copydesk_api'
                THEN nullif(current_setting('copydesk.tenant_id', true), '')::uuid
                ELSE (SELECT tenant_id FROM tenant_roles WHERE role_name = current_user) END
$$;

CREATE FUNCTION copydesk_writer_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN current_user = 'copydesk_api'
                THEN nullif(current_setting('copydesk.tenant_id', true), '')::uuid
                ELSE coalesce((SELECT tenant_id FROM tenant_roles WHERE role_name = current_user),
                              '00000000-0000-0000-0000-000000000001'::uuid) END
$$;

CREATE FUNCTION jobs_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.tenant_id = '00000000-0000-0000-0000-000000000001' THEN
        NEW.tenant_id := NULL;
    END IF;
    IF NEW.project_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_project_tenant(NEW.project_id),
                                              'job', 'project ' || NEW.project_id);
    END IF;
    IF NEW.parent_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_job_tenant(NEW.parent_id),
                                              'job', 'parent job ' || NEW.parent_id);
    END IF;
    IF NEW.input_artifact_id IS NOT NULL THEN
        NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_artifact_tenant(NEW.input_artifact_id),
                                              'job', 'artifact ' || NEW.input_artifact_id);
    END IF;
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION projects_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

CREATE FUNCTION runs_add_cost() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE projects p SET spent_usd = p.spent_usd + s.cost
    FROM (SELECT project_id, sum(cost_usd) AS cost FROM new_rows
          WHERE project_id IS NOT NULL AND cost_usd <> 0 GROUP BY project_id) s
    WHERE p.id = s.project_id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION tenants_in_use() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM jobs WHERE tenant_id = OLD.id) THEN
        RAISE EXCEPTION 'tenant % (%) still has jobs', OLD.slug, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$;

CREATE FUNCTION writer_tenant() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.tenant_id := coalesce(NEW.tenant_id, copydesk_writer_tenant());
    RETURN NEW;
END;
$$;

SET default_tablespace = '';

SET default_table_access_method = heap;

-- Tables

CREATE TABLE agent_model_configs (
    agent_id text NOT NULL,
    model_id text NOT NULL,
    temperature real NOT NULL,
    max_tokens integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    agent_label text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    fallback_model_ids text[] DEFAULT '{}'::text[] NOT NULL,
    tenant_id uuid,
    CONSTRAINT agent_model_configs_max_tokens_check CHECK ((max_tokens > 0)),
    CONSTRAINT agent_model_configs_temperature_check CHECK (((temperature >= (0)::double precision) AND (temperature <= (2)::double precision)))
);

ALTER TABLE ONLY agent_model_configs FORCE ROW LEVEL SECURITY;

CREATE TABLE api_tokens (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    prefix text NOT NULL,
    secret_sha256 bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone,
    last_used_at timestamp with time zone,
    revoked_at timestamp with time zone,
    CONSTRAINT api_tokens_name_check CHECK ((name <> ''::text)),
    CONSTRAINT api_tokens_role_known CHECK ((role = ANY (ARRAY['viewer'::text, 'approver'::text, 'operator'::text, 'admin'::text]))),
    CONSTRAINT api_tokens_secret_sha256_check CHECK ((length(secret_sha256) = 32))
);

ALTER TABLE ONLY api_tokens FORCE ROW LEVEL SECURITY;

CREATE TABLE app_settings (
    key text NOT NULL,
    value text,
    secret bytea,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    tenant_id uuid,
    CONSTRAINT app_settings_check CHECK (((value IS NULL) <> (secret IS NULL)))
);

ALTER TABLE ONLY app_settings FORCE ROW LEVEL SECURITY;

CREATE TABLE approvals (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    job_id uuid,
    artifact_id uuid NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    decided_by text,
    notes text,
    decided_at timestamp with time zone,
    applied_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    last_error text,
    apply_attempts integer DEFAULT 0 NOT NULL,
    apply_after timestamp with time zone,
    tenant_id uuid NOT NULL,
    CONSTRAINT approvals_status_known CHECK ((status = ANY (ARRAY['pending'::text, 'approved'::text, 'rejected'::text])))
);

ALTER TABLE ONLY approvals FORCE ROW LEVEL SECURITY;

CREATE TABLE artifacts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id uuid,
    job_id uuid,
    kind text NOT NULL,
    channel text,
    version integer DEFAULT 1 NOT NULL,
    based_on_id uuid,
    source text DEFAULT 'ai'::text NOT NULL,
    title text,
    content text DEFAULT ''::text NOT NULL,
    data jsonb DEFAULT '{}'::jsonb NOT NULL,
    search tsvector GENERATED ALWAYS AS ((setweight(to_tsvector('english'::regconfig, COALESCE(title, ''::text)), 'A'::"char") || setweight(to_tsvector('english'::regconfig, content), 'B'::"char"))) STORED,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    tenant_id uuid NOT NULL,
    image_file_id uuid,
    CONSTRAINT artifacts_channel_known CHECK (((channel IS NULL) OR (channel = ANY (ARRAY['blog'::text, 'linkedin'::text, 'x'::text, 'facebook'::text])))),
    CONSTRAINT artifacts_kind_known CHECK ((kind = ANY (ARRAY['brand_voice'::text, 'draft'::text, 'evaluation'::text, 'publication'::text, 'source'::text]))),
    CONSTRAINT artifacts_source_check CHECK ((source = ANY (ARRAY['ai'::text, 'human'::text, 'system'::text]))),
    CONSTRAINT artifacts_version_check CHECK ((version >= 1))
);

ALTER TABLE ONLY artifacts FORCE ROW LEVEL SECURITY;

CREATE TABLE audit_log (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target_table text,
    target_id uuid,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE ONLY audit_log FORCE ROW LEVEL SECURITY;

CREATE TABLE brand_voice_cache (
    url text NOT NULL,
    analysis jsonb NOT NULL,
    artifact_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone DEFAULT (now() + '7 days'::interval) NOT NULL,
    tenant_id uuid NOT NULL
);

ALTER TABLE ONLY brand_voice_cache FORCE ROW LEVEL SECURITY;

CREATE TABLE catalog_items (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    external_id text NOT NULL,
    name text NOT NULL,
    designer text,
    description text,
    price numeric(12,2),
    image_url text,
    category text,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    raw jsonb DEFAULT '{}'::jsonb NOT NULL,
    fetched_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone DEFAULT (now() + '24:00:00'::interval) NOT NULL,
    tenant_id uuid NOT NULL
);

ALTER TABLE ONLY catalog_items FORCE ROW LEVEL SECURITY;

CREATE TABLE files (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    project_id uuid,
    kind text NOT NULL,
    name text NOT NULL,
    sha256 text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    storage_key text NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT files_kind_known CHECK ((kind = ANY (ARRAY['image'::text, 'sample'::text, 'export'::text]))),
    CONSTRAINT files_name_plain CHECK (((name <> ''::text) AND (POSITION(('/'::text) IN (name)) = 0) AND (length(name) <= 255))),
    CONSTRAINT files_sha256_hex CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT files_size_positive CHECK ((size > 0))
);

ALTER TABLE ONLY files FORCE ROW LEVEL SECURITY;

CREATE TABLE integrations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id uuid NOT NULL,
    platform text NOT NULL,
    credentials bytea NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    status text DEFAULT 'connected'::text NOT NULL,
    last_error text,
    last_sync_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    tenant_id uuid NOT NULL,
    CONSTRAINT integrations_platform_known CHECK ((platform = ANY (ARRAY['wordpress'::text, 'shopify'::text, 'linkedin'::text, 'x'::text, 'facebook'::text]))),
    CONSTRAINT integrations_status_check CHECK ((status = ANY (ARRAY['connected'::text, 'disconnected'::text, 'error'::text])))
);

ALTER TABLE ONLY integrations FORCE ROW LEVEL SECURITY;

CREATE TABLE limit_slots (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    key text NOT NULL,
    job_id uuid,
    expires_at timestamp with time zone NOT NULL
);

CREATE TABLE limits (
    key text NOT NULL,
    requests integer,
    per_ms bigint,
    tokens_per_minute integer,
    concurrency integer,
    paused_until timestamp with time zone,
    request_log timestamp with time zone[] DEFAULT '{}'::timestamp with time zone[] NOT NULL,
    token_tat timestamp with time zone,
    promised_at timestamp with time zone,
    granted bigint DEFAULT 0 NOT NULL,
    waited bigint DEFAULT 0 NOT NULL,
    throttled bigint DEFAULT 0 NOT NULL,
    updated_by text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT limits_concurrency_check CHECK ((concurrency > 0)),
    CONSTRAINT limits_key_check CHECK (((key ~ '^llm:[^/\s]+(/\S+)?$'::text) OR (key ~ '^platform:(wordpress|shopify|linkedin|x|facebook)(:[0-9a-f-]{36})?$'::text))),
    CONSTRAINT limits_per_ms_check CHECK ((per_ms > 0)),
    CONSTRAINT limits_requests_check CHECK ((requests > 0)),
    CONSTRAINT limits_tokens_per_minute_check CHECK ((tokens_per_minute > 0))
);

CREATE TABLE llm_model_health (
    base_url text NOT NULL,
    model text NOT NULL,
    failures integer DEFAULT 0 NOT NULL,
    cooldown_until timestamp with time zone,
    last_error text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE llm_modes (
    base_url text NOT NULL,
    model text NOT NULL,
    mode text NOT NULL,
    learned_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT llm_modes_mode_check CHECK ((mode = ANY (ARRAY['json_schema'::text, 'json_object'::text, 'prompt'::text])))
);

CREATE TABLE llm_reservations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    project_id uuid NOT NULL,
    job_id uuid,
    amount_usd numeric(14,6) NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    tenant_id uuid NOT NULL,
    CONSTRAINT llm_reservations_amount_usd_check CHECK ((amount_usd >= (0)::numeric))
);

ALTER TABLE ONLY llm_reservations FORCE ROW LEVEL SECURITY;

CREATE TABLE notification_channels (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    project_id uuid,
    kind text NOT NULL,
    target text NOT NULL,
    url bytea,
    min_severity text DEFAULT 'info'::text NOT NULL,
    secret bytea,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT notification_channels_kind_known CHECK ((kind = ANY (ARRAY['webhook'::text, 'email'::text]))),
    CONSTRAINT notification_channels_severity_known CHECK ((min_severity = ANY (ARRAY['info'::text, 'warning'::text, 'error'::text]))),
    CONSTRAINT notification_channels_webhook_sealed CHECK (((kind <> 'webhook'::text) OR ((url IS NOT NULL) AND (secret IS NOT NULL))))
);

ALTER TABLE ONLY notification_channels FORCE ROW LEVEL SECURITY;

CREATE TABLE notification_deliveries (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    channel_id uuid NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    answer_status integer,
    answer text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    CONSTRAINT notification_deliveries_status_known CHECK ((status = ANY (ARRAY['pending'::text, 'delivered'::text, 'failed'::text])))
);

ALTER TABLE ONLY notification_deliveries FORCE ROW LEVEL SECURITY;

CREATE TABLE notifications (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    project_id uuid,
    job_id uuid,
    severity text NOT NULL,
    kind text NOT NULL,
    cause text NOT NULL,
    title text NOT NULL,
    body text DEFAULT ''::text NOT NULL,
    data jsonb DEFAULT '{}'::jsonb NOT NULL,
    count integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_at timestamp with time zone DEFAULT now() NOT NULL,
    read_at timestamp with time zone,
    read_by text,
    CONSTRAINT notifications_read_by_whom CHECK (((read_at IS NULL) = (read_by IS NULL))),
    CONSTRAINT notifications_severity_known CHECK ((severity = ANY (ARRAY['info'::text, 'warning'::text, 'error'::text])))
);

ALTER TABLE ONLY notifications FORCE ROW LEVEL SECURITY;

CREATE TABLE projects (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    store_url text,
    settings jsonb DEFAULT '{}'::jsonb NOT NULL,
    budget_usd numeric(12,4),
    archived_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    spent_usd numeric(14,6) DEFAULT 0 NOT NULL,
    reserved_usd numeric(14,6) DEFAULT 0 NOT NULL,
    tenant_id uuid NOT NULL,
    CONSTRAINT projects_budget_usd_check CHECK (((budget_usd IS NULL) OR (budget_usd >= (0)::numeric))),
    CONSTRAINT projects_name_check CHECK ((name <> ''::text)),
    CONSTRAINT projects_reserved_usd_check CHECK ((reserved_usd >= (0)::numeric)),
    CONSTRAINT projects_settings_check CHECK ((jsonb_typeof(settings) = 'object'::text))
);

ALTER TABLE ONLY projects FORCE ROW LEVEL SECURITY;

CREATE TABLE publish_attempts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    job_id uuid NOT NULL,
    attempt integer NOT NULL,
    artifact_id uuid NOT NULL,
    integration_id uuid,
    platform text NOT NULL,
    lookup_key text NOT NULL,
    state text DEFAULT 'sending'::text NOT NULL,
    external_id text,
    url text,
    error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    tenant_id uuid NOT NULL,
    content_hash text,
    CONSTRAINT publish_attempts_state_known CHECK ((state = ANY (ARRAY['sending'::text, 'sent'::text, 'not_sent'::text])))
);

ALTER TABLE ONLY publish_attempts FORCE ROW LEVEL SECURITY;

CREATE TABLE review_links (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    tenant_id uuid NOT NULL,
    approval_id uuid NOT NULL,
    name text NOT NULL,
    created_by text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    used_action text,
    revoked_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT review_links_action_known CHECK (((used_action IS NULL) OR (used_action = ANY (ARRAY['approved'::text, 'rejected'::text, 'edited'::text])))),
    CONSTRAINT review_links_name_length CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT review_links_used_whole CHECK (((used_at IS NULL) = (used_action IS NULL)))
);

ALTER TABLE ONLY review_links FORCE ROW LEVEL SECURITY;

CREATE TABLE runs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    job_id uuid,
    project_id uuid,
    attempt integer DEFAULT 1 NOT NULL,
    agent text,
    provider text NOT NULL,
    model text,
    prompt_tokens integer DEFAULT 0 NOT NULL,
    completion_tokens integer DEFAULT 0 NOT NULL,
    cost_usd numeric(12,6) DEFAULT 0 NOT NULL,
    duration_ms integer DEFAULT 0 NOT NULL,
    status text NOT NULL,
    error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    structured_mode text,
    cached_tokens integer DEFAULT 0 NOT NULL,
    reasoning_tokens integer DEFAULT 0 NOT NULL,
    cost_source text,
    notes text,
    tenant_id uuid NOT NULL,
    CONSTRAINT runs_cost_source_known CHECK (((cost_source IS NULL) OR (cost_source = ANY (ARRAY['provider'::text, 'price_table'::text, 'unpriced'::text])))),
    CONSTRAINT runs_status_check CHECK ((status = ANY (ARRAY['ok'::text, 'error'::text]))),
    CONSTRAINT runs_structured_mode_known CHECK (((structured_mode IS NULL) OR (structured_mode = ANY (ARRAY['json_schema'::text, 'json_object'::text, 'prompt'::text]))))
);

ALTER TABLE ONLY runs FORCE ROW LEVEL SECURITY;

CREATE TABLE tenant_roles (
    role_name text NOT NULL,
    tenant_id uuid NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE ONLY tenant_roles FORCE ROW LEVEL SECURITY;

CREATE TABLE tenants (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    slug text NOT NULL,
    name text NOT NULL,
    settings jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT tenants_name_check CHECK ((name <> ''::text)),
    CONSTRAINT tenants_settings_check CHECK ((jsonb_typeof(settings) = 'object'::text)),
    CONSTRAINT tenants_slug_check CHECK ((slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'::text))
);

ALTER TABLE ONLY tenants FORCE ROW LEVEL SECURITY;

-- Views

CREATE VIEW project_budgets WITH (security_invoker='true') AS
 SELECT projects.id AS project_id,
    projects.name,
    projects.budget_usd,
    projects.spent_usd,
    projects.reserved_usd,
        CASE
            WHEN (projects.budget_usd IS NULL) THEN NULL::numeric
            ELSE GREATEST(((projects.budget_usd - projects.spent_usd) - projects.reserved_usd), (0)::numeric)
        END AS left_usd
   FROM projects;

-- Keys

ALTER TABLE ONLY agent_model_configs
    ADD CONSTRAINT agent_model_configs_agent_key UNIQUE NULLS NOT DISTINCT (tenant_id, agent_id);

ALTER TABLE ONLY api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (id);

ALTER TABLE ONLY api_tokens
    ADD CONSTRAINT api_tokens_prefix_key UNIQUE (prefix);

ALTER TABLE ONLY app_settings
    ADD CONSTRAINT app_settings_key UNIQUE NULLS NOT DISTINCT (tenant_id, key);

ALTER TABLE ONLY approvals
    ADD CONSTRAINT approvals_pkey PRIMARY KEY (id);

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);

ALTER TABLE ONLY brand_voice_cache
    ADD CONSTRAINT brand_voice_cache_pkey PRIMARY KEY (tenant_id, url);

ALTER TABLE ONLY catalog_items
    ADD CONSTRAINT catalog_items_pkey PRIMARY KEY (id);

ALTER TABLE ONLY catalog_items
    ADD CONSTRAINT catalog_items_tenant_external_id_key UNIQUE (tenant_id, external_id);

ALTER TABLE ONLY files
    ADD CONSTRAINT files_once_per_tenant UNIQUE (tenant_id, sha256);

ALTER TABLE ONLY files
    ADD CONSTRAINT files_pkey PRIMARY KEY (id);

ALTER TABLE ONLY integrations
    ADD CONSTRAINT integrations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY integrations
    ADD CONSTRAINT integrations_project_id_platform_key UNIQUE (project_id, platform);

ALTER TABLE ONLY limit_slots
    ADD CONSTRAINT limit_slots_pkey PRIMARY KEY (id);

ALTER TABLE ONLY limits
    ADD CONSTRAINT limits_pkey PRIMARY KEY (key);

ALTER TABLE ONLY llm_model_health
    ADD CONSTRAINT llm_model_health_pkey PRIMARY KEY (base_url, model);

ALTER TABLE ONLY llm_modes
    ADD CONSTRAINT llm_modes_pkey PRIMARY KEY (base_url, model);

ALTER TABLE ONLY llm_reservations
    ADD CONSTRAINT llm_reservations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY notification_channels
    ADD CONSTRAINT notification_channels_pkey PRIMARY KEY (id);

ALTER TABLE ONLY notification_deliveries
    ADD CONSTRAINT notification_deliveries_pkey PRIMARY KEY (id);

ALTER TABLE ONLY notifications
    ADD CONSTRAINT notifications_pkey PRIMARY KEY (id);

ALTER TABLE ONLY projects
    ADD CONSTRAINT projects_pkey PRIMARY KEY (id);

ALTER TABLE ONLY publish_attempts
    ADD CONSTRAINT publish_attempts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY review_links
    ADD CONSTRAINT review_links_pkey PRIMARY KEY (id);

ALTER TABLE ONLY runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tenant_roles
    ADD CONSTRAINT tenant_roles_pkey PRIMARY KEY (role_name);

ALTER TABLE ONLY tenants
    ADD CONSTRAINT tenants_pkey PRIMARY KEY (id);

ALTER TABLE ONLY tenants
    ADD CONSTRAINT tenants_slug_key UNIQUE (slug);

-- Indexes

CREATE INDEX api_tokens_tenant_idx ON api_tokens USING btree (tenant_id, created_at);

CREATE INDEX approvals_job_idx ON approvals USING btree (job_id) WHERE (job_id IS NOT NULL);

CREATE UNIQUE INDEX approvals_one_pending_idx ON approvals USING btree (artifact_id) WHERE (status = 'pending'::text);

CREATE INDEX approvals_status_idx ON approvals USING btree (status, created_at);

CREATE INDEX approvals_tenant_idx ON approvals USING btree (tenant_id, status, created_at);

CREATE INDEX approvals_unapplied_idx ON approvals USING btree (decided_at) WHERE ((status <> 'pending'::text) AND (applied_at IS NULL));

CREATE INDEX artifacts_based_on_idx ON artifacts USING btree (based_on_id) WHERE (based_on_id IS NOT NULL);

CREATE INDEX artifacts_image_file_idx ON artifacts USING btree (image_file_id) WHERE (image_file_id IS NOT NULL);

CREATE INDEX artifacts_job_idx ON artifacts USING btree (job_id) WHERE (job_id IS NOT NULL);

CREATE INDEX artifacts_project_kind_idx ON artifacts USING btree (project_id, kind, channel, created_at);

CREATE INDEX artifacts_search_idx ON artifacts USING gin (search);

CREATE INDEX artifacts_tenant_idx ON artifacts USING btree (tenant_id, created_at);

CREATE INDEX audit_log_tenant_idx ON audit_log USING btree (tenant_id, at);

CREATE INDEX brand_voice_cache_expires_idx ON brand_voice_cache USING btree (expires_at);

CREATE INDEX catalog_items_expires_idx ON catalog_items USING btree (expires_at);

CREATE INDEX files_tenant_created_idx ON files USING btree (tenant_id, created_at DESC);

CREATE INDEX integrations_tenant_idx ON integrations USING btree (tenant_id);

CREATE INDEX limit_slots_key_idx ON limit_slots USING btree (key, expires_at);

CREATE INDEX llm_reservations_project_idx ON llm_reservations USING btree (project_id, expires_at);

CREATE INDEX notification_channels_tenant_idx ON notification_channels USING btree (tenant_id);

CREATE INDEX notification_deliveries_channel_idx ON notification_deliveries USING btree (channel_id, created_at DESC);

CREATE INDEX notification_deliveries_notification_idx ON notification_deliveries USING btree (notification_id);

CREATE INDEX notifications_job_idx ON notifications USING btree (job_id) WHERE ((read_at IS NULL) AND (job_id IS NOT NULL));

CREATE INDEX notifications_tenant_idx ON notifications USING btree (tenant_id, last_at DESC, id DESC);

CREATE UNIQUE INDEX notifications_unread_cause_idx ON notifications USING btree (tenant_id, kind, cause) WHERE (read_at IS NULL);

CREATE INDEX projects_tenant_idx ON projects USING btree (tenant_id, created_at);

CREATE INDEX publish_attempts_content_idx ON publish_attempts USING btree (integration_id, content_hash, created_at DESC) WHERE ((content_hash IS NOT NULL) AND (state <> 'not_sent'::text));

CREATE INDEX publish_attempts_job_idx ON publish_attempts USING btree (job_id, created_at);

CREATE INDEX publish_attempts_unknown_idx ON publish_attempts USING btree (created_at) WHERE (state = 'sending'::text);

CREATE INDEX review_links_approval_idx ON review_links USING btree (approval_id);

CREATE INDEX review_links_tenant_idx ON review_links USING btree (tenant_id, created_at);

CREATE INDEX runs_job_idx ON runs USING btree (job_id, created_at);

CREATE INDEX runs_project_idx ON runs USING btree (project_id, created_at);

CREATE INDEX runs_tenant_idx ON runs USING btree (tenant_id, created_at);

-- Triggers

CREATE TRIGGER approvals_decided BEFORE UPDATE ON approvals FOR EACH ROW EXECUTE FUNCTION approvals_decided();

CREATE TRIGGER approvals_decided_notify AFTER UPDATE OF status ON approvals FOR EACH ROW WHEN (((old.status = 'pending'::text) AND (new.status <> 'pending'::text))) EXECUTE FUNCTION copydesk_approval_decided_notify();

CREATE TRIGGER approvals_notify AFTER UPDATE OF status ON approvals FOR EACH ROW WHEN (((old.status = 'pending'::text) AND (new.status <> 'pending'::text))) EXECUTE FUNCTION approvals_notify();

CREATE TRIGGER approvals_same_tenant BEFORE UPDATE OF artifact_id ON approvals FOR EACH ROW EXECUTE FUNCTION approvals_same_tenant();

CREATE TRIGGER approvals_tenant BEFORE INSERT ON approvals FOR EACH ROW EXECUTE FUNCTION by_job_and_artifact_tenant();

CREATE TRIGGER approvals_waiting_notify AFTER INSERT ON approvals FOR EACH ROW WHEN ((new.status = 'pending'::text)) EXECUTE FUNCTION copydesk_approval_notify();

CREATE TRIGGER artifacts_tenant BEFORE INSERT ON artifacts FOR EACH ROW EXECUTE FUNCTION by_project_or_job_tenant();

CREATE TRIGGER audit_log_append_only BEFORE DELETE OR UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_tenant BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION writer_tenant();

CREATE TRIGGER brand_voice_cache_tenant BEFORE INSERT ON brand_voice_cache FOR EACH ROW EXECUTE FUNCTION by_artifact_tenant();

CREATE TRIGGER catalog_items_tenant BEFORE INSERT ON catalog_items FOR EACH ROW EXECUTE FUNCTION writer_tenant();

CREATE TRIGGER integrations_tenant BEFORE INSERT ON integrations FOR EACH ROW EXECUTE FUNCTION by_project_tenant();

CREATE TRIGGER jobs_failed_notify AFTER UPDATE OF status ON jobs FOR EACH ROW WHEN (((new.status = 'failed'::text) AND (old.status IS DISTINCT FROM 'failed'::text))) EXECUTE FUNCTION copydesk_job_failed_notify();

CREATE TRIGGER jobs_tenant BEFORE INSERT ON jobs FOR EACH ROW WHEN (((new.tenant_id IS NULL) OR (new.project_id IS NOT NULL) OR (new.parent_id IS NOT NULL) OR (new.input_artifact_id IS NOT NULL))) EXECUTE FUNCTION jobs_tenant();

CREATE TRIGGER llm_reservations_tenant BEFORE INSERT ON llm_reservations FOR EACH ROW EXECUTE FUNCTION by_project_tenant();

CREATE TRIGGER projects_tenant BEFORE INSERT ON projects FOR EACH ROW EXECUTE FUNCTION projects_tenant();

CREATE TRIGGER publish_attempts_tenant BEFORE INSERT ON publish_attempts FOR EACH ROW EXECUTE FUNCTION by_job_and_artifact_tenant();

CREATE TRIGGER runs_add_cost AFTER INSERT ON runs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION runs_add_cost();

CREATE TRIGGER runs_tenant BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION by_project_or_job_tenant();

CREATE TRIGGER tenants_in_use BEFORE DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION tenants_in_use();

-- Foreign keys

ALTER TABLE ONLY agent_model_configs
    ADD CONSTRAINT agent_model_configs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY api_tokens
    ADD CONSTRAINT api_tokens_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY app_settings
    ADD CONSTRAINT app_settings_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY approvals
    ADD CONSTRAINT approvals_artifact_id_fkey FOREIGN KEY (artifact_id) REFERENCES artifacts(id) ON DELETE CASCADE;

ALTER TABLE ONLY approvals
    ADD CONSTRAINT approvals_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE SET NULL;

ALTER TABLE ONLY approvals
    ADD CONSTRAINT approvals_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_based_on_id_fkey FOREIGN KEY (based_on_id) REFERENCES artifacts(id) ON DELETE SET NULL;

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_image_file_id_fkey FOREIGN KEY (image_file_id) REFERENCES files(id) ON DELETE RESTRICT;

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_job_fk FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE SET NULL;

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY artifacts
    ADD CONSTRAINT artifacts_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY audit_log
    ADD CONSTRAINT audit_log_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY brand_voice_cache
    ADD CONSTRAINT brand_voice_cache_artifact_id_fkey FOREIGN KEY (artifact_id) REFERENCES artifacts(id) ON DELETE SET NULL;

ALTER TABLE ONLY brand_voice_cache
    ADD CONSTRAINT brand_voice_cache_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY catalog_items
    ADD CONSTRAINT catalog_items_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY files
    ADD CONSTRAINT files_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE SET NULL;

ALTER TABLE ONLY files
    ADD CONSTRAINT files_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY integrations
    ADD CONSTRAINT integrations_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY integrations
    ADD CONSTRAINT integrations_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_input_artifact_id_fkey FOREIGN KEY (input_artifact_id) REFERENCES artifacts(id) ON DELETE SET NULL;

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_output_artifact_id_fkey FOREIGN KEY (output_artifact_id) REFERENCES artifacts(id) ON DELETE SET NULL;

ALTER TABLE ONLY jobs
    ADD CONSTRAINT jobs_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY limit_slots
    ADD CONSTRAINT limit_slots_key_fkey FOREIGN KEY (key) REFERENCES limits(key) ON DELETE CASCADE;

ALTER TABLE ONLY llm_reservations
    ADD CONSTRAINT llm_reservations_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY llm_reservations
    ADD CONSTRAINT llm_reservations_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY notification_channels
    ADD CONSTRAINT notification_channels_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY notification_channels
    ADD CONSTRAINT notification_channels_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY notification_deliveries
    ADD CONSTRAINT notification_deliveries_channel_id_fkey FOREIGN KEY (channel_id) REFERENCES notification_channels(id) ON DELETE CASCADE;

ALTER TABLE ONLY notification_deliveries
    ADD CONSTRAINT notification_deliveries_notification_id_fkey FOREIGN KEY (notification_id) REFERENCES notifications(id) ON DELETE CASCADE;

ALTER TABLE ONLY notification_deliveries
    ADD CONSTRAINT notification_deliveries_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY notifications
    ADD CONSTRAINT notifications_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY notifications
    ADD CONSTRAINT notifications_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

ALTER TABLE ONLY projects
    ADD CONSTRAINT projects_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY publish_attempts
    ADD CONSTRAINT publish_attempts_artifact_id_fkey FOREIGN KEY (artifact_id) REFERENCES artifacts(id) ON DELETE CASCADE;

ALTER TABLE ONLY publish_attempts
    ADD CONSTRAINT publish_attempts_integration_id_fkey FOREIGN KEY (integration_id) REFERENCES integrations(id) ON DELETE SET NULL;

ALTER TABLE ONLY publish_attempts
    ADD CONSTRAINT publish_attempts_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE;

ALTER TABLE ONLY publish_attempts
    ADD CONSTRAINT publish_attempts_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY review_links
    ADD CONSTRAINT review_links_approval_id_fkey FOREIGN KEY (approval_id) REFERENCES approvals(id) ON DELETE CASCADE;

ALTER TABLE ONLY review_links
    ADD CONSTRAINT review_links_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY runs
    ADD CONSTRAINT runs_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE SET NULL;

ALTER TABLE ONLY runs
    ADD CONSTRAINT runs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);

ALTER TABLE ONLY tenant_roles
    ADD CONSTRAINT tenant_roles_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE;

-- Row security

ALTER TABLE agent_model_configs ENABLE ROW LEVEL SECURITY;

ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;

ALTER TABLE app_settings ENABLE ROW LEVEL SECURITY;

ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;

ALTER TABLE artifacts ENABLE ROW LEVEL SECURITY;

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;

ALTER TABLE brand_voice_cache ENABLE ROW LEVEL SECURITY;

ALTER TABLE catalog_items ENABLE ROW LEVEL SECURITY;

ALTER TABLE files ENABLE ROW LEVEL SECURITY;

ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;

ALTER TABLE job_steps ENABLE ROW LEVEL SECURITY;

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;

ALTER TABLE llm_reservations ENABLE ROW LEVEL SECURITY;

ALTER TABLE notification_channels ENABLE ROW LEVEL SECURITY;

ALTER TABLE notification_deliveries ENABLE ROW LEVEL SECURITY;

ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;

ALTER TABLE publish_attempts ENABLE ROW LEVEL SECURITY;

ALTER TABLE review_links ENABLE ROW LEVEL SECURITY;

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;

ALTER TABLE tenant_roles ENABLE ROW LEVEL SECURITY;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;

-- Policies

CREATE POLICY owner_all ON agent_model_configs TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON api_tokens TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON app_settings TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON approvals TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON artifacts TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON audit_log TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON brand_voice_cache TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON catalog_items TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON files TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON integrations TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON job_steps TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON jobs TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON llm_reservations TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON notification_channels TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON notification_deliveries TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON notifications TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON projects TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON publish_attempts TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON review_links TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON runs TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON tenant_roles TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY owner_all ON tenants TO CURRENT_USER USING (true) WITH CHECK (true);

CREATE POLICY tenant_own ON api_tokens TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON approvals TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON artifacts TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON audit_log TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON brand_voice_cache TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON catalog_items TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON files TO copydesk_tenant USING ((tenant_id = copydesk_session_tenant())) WITH CHECK ((tenant_id = copydesk_session_tenant()));

CREATE POLICY tenant_own ON integrations TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON jobs TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON llm_reservations TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON notification_channels TO copydesk_tenant USING ((tenant_id = copydesk_session_tenant())) WITH CHECK ((tenant_id = copydesk_session_tenant()));

CREATE POLICY tenant_own ON notification_deliveries TO copydesk_tenant USING ((tenant_id = copydesk_session_tenant())) WITH CHECK ((tenant_id = copydesk_session_tenant()));

CREATE POLICY tenant_own ON notifications TO copydesk_tenant USING ((tenant_id = copydesk_session_tenant())) WITH CHECK ((tenant_id = copydesk_session_tenant()));

CREATE POLICY tenant_own ON projects TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON publish_attempts TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON review_links TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON runs TO copydesk_tenant USING ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))) WITH CHECK ((tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_own ON tenant_roles FOR SELECT TO copydesk_tenant USING ((role_name = CURRENT_USER));

CREATE POLICY tenant_own ON tenants FOR SELECT TO copydesk_tenant USING ((id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant)));

CREATE POLICY tenant_read ON agent_model_configs FOR SELECT TO copydesk_tenant USING (((tenant_id IS NULL) OR (tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))));

CREATE POLICY tenant_read ON app_settings FOR SELECT TO copydesk_tenant USING (((tenant_id IS NULL) OR (tenant_id = ( SELECT copydesk_session_tenant() AS copydesk_session_tenant))));

CREATE POLICY tenant_read ON job_steps FOR SELECT TO copydesk_tenant USING ((job_id IN ( SELECT jobs.id
   FROM jobs)));

-- Privileges

GRANT USAGE ON SCHEMA public TO copydesk_tenant;

REVOKE ALL ON FUNCTION copydesk_approval_subject(p_artifact uuid) FROM PUBLIC;

GRANT ALL ON FUNCTION copydesk_artifact_tenant(id uuid) TO copydesk_tenant;

REVOKE ALL ON FUNCTION copydesk_create_login_role(role text, password text) FROM PUBLIC;

GRANT ALL ON FUNCTION copydesk_integration_tenant(id uuid) TO copydesk_tenant;

GRANT ALL ON FUNCTION copydesk_job_tenant(id uuid) TO copydesk_tenant;

REVOKE ALL ON FUNCTION copydesk_notify(p_tenant uuid, p_project uuid, p_job uuid, p_severity text, p_kind text, p_cause text, p_title text, p_body text, p_data jsonb) FROM PUBLIC;

GRANT ALL ON FUNCTION copydesk_project_tenant(id uuid) TO copydesk_tenant;

GRANT ALL ON FUNCTION copydesk_same_tenant(given uuid, owner uuid, what text, ref text) TO copydesk_tenant;

GRANT ALL ON FUNCTION copydesk_session_tenant() TO copydesk_tenant;

GRANT ALL ON FUNCTION copydesk_time_ordered_id() TO copydesk_tenant;

GRANT ALL ON FUNCTION copydesk_writer_tenant() TO copydesk_tenant;

GRANT SELECT ON TABLE agent_model_configs TO copydesk_tenant;

GRANT SELECT(id) ON TABLE api_tokens TO copydesk_tenant;

GRANT SELECT(tenant_id) ON TABLE api_tokens TO copydesk_tenant;
GRANT INSERT(tenant_id) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(name) ON TABLE api_tokens TO copydesk_tenant;
GRANT INSERT(name) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(role) ON TABLE api_tokens TO copydesk_tenant;
GRANT INSERT(role) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(prefix) ON TABLE api_tokens TO copydesk_tenant;
GRANT INSERT(prefix) ON TABLE api_tokens TO copydesk_api;

GRANT INSERT(secret_sha256) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(created_at) ON TABLE api_tokens TO copydesk_tenant;

GRANT SELECT(expires_at) ON TABLE api_tokens TO copydesk_tenant;
GRANT INSERT(expires_at) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(last_used_at) ON TABLE api_tokens TO copydesk_tenant;

GRANT SELECT(revoked_at) ON TABLE api_tokens TO copydesk_tenant;
GRANT UPDATE(revoked_at) ON TABLE api_tokens TO copydesk_api;

GRANT SELECT(key) ON TABLE app_settings TO copydesk_tenant;

GRANT SELECT(value) ON TABLE app_settings TO copydesk_tenant;

GRANT SELECT(updated_at) ON TABLE app_settings TO copydesk_tenant;

GRANT SELECT(tenant_id) ON TABLE app_settings TO copydesk_tenant;

GRANT SELECT ON TABLE approvals TO copydesk_tenant;

GRANT UPDATE(artifact_id) ON TABLE approvals TO copydesk_tenant;

GRANT UPDATE(status) ON TABLE approvals TO copydesk_tenant;

GRANT UPDATE(decided_by) ON TABLE approvals TO copydesk_tenant;

GRANT UPDATE(notes) ON TABLE approvals TO copydesk_tenant;

GRANT SELECT ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(project_id) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(job_id) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(kind) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(channel) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(version) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(based_on_id) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(source) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(title) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(content) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(data) ON TABLE artifacts TO copydesk_tenant;

GRANT INSERT(tenant_id) ON TABLE artifacts TO copydesk_tenant;

GRANT SELECT(image_file_id) ON TABLE artifacts TO copydesk_tenant;

GRANT SELECT ON TABLE audit_log TO copydesk_tenant;
GRANT INSERT ON TABLE audit_log TO copydesk_api;

GRANT SELECT ON TABLE brand_voice_cache TO copydesk_tenant;

GRANT SELECT ON TABLE catalog_items TO copydesk_tenant;

GRANT SELECT ON TABLE files TO copydesk_tenant;

GRANT SELECT(id) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(project_id) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(platform) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(metadata) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(status) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(last_error) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(last_sync_at) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(created_at) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(updated_at) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(tenant_id) ON TABLE integrations TO copydesk_tenant;

GRANT SELECT(job_id) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT(name) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT(attempt) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT(created_at) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT(replays) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT(last_replayed_at) ON TABLE job_steps TO copydesk_tenant;

GRANT SELECT ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(id) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(kind) ON TABLE jobs TO copydesk_tenant;

GRANT UPDATE(status) ON TABLE jobs TO copydesk_api;

GRANT INSERT(project_id) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(input) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(input_artifact_id) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(parent_id) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(priority) ON TABLE jobs TO copydesk_tenant;

GRANT INSERT(run_at) ON TABLE jobs TO copydesk_tenant;
GRANT UPDATE(run_at) ON TABLE jobs TO copydesk_api;

GRANT UPDATE(attempts) ON TABLE jobs TO copydesk_api;

GRANT INSERT(max_attempts) ON TABLE jobs TO copydesk_tenant;

GRANT UPDATE(locked_by) ON TABLE jobs TO copydesk_api;

GRANT UPDATE(locked_until) ON TABLE jobs TO copydesk_api;

GRANT UPDATE(last_error) ON TABLE jobs TO copydesk_api;

GRANT INSERT(idempotency_key) ON TABLE jobs TO copydesk_tenant;

GRANT UPDATE(finished_at) ON TABLE jobs TO copydesk_api;

GRANT UPDATE(updated_at) ON TABLE jobs TO copydesk_api;

GRANT INSERT(tenant_id) ON TABLE jobs TO copydesk_tenant;

GRANT UPDATE(waiting_for) ON TABLE jobs TO copydesk_api;

GRANT SELECT ON TABLE llm_reservations TO copydesk_tenant;

GRANT SELECT(id) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(tenant_id) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(project_id) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(kind) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(target) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(min_severity) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(created_by) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT(created_at) ON TABLE notification_channels TO copydesk_tenant;

GRANT SELECT ON TABLE notification_deliveries TO copydesk_tenant;

GRANT SELECT ON TABLE notifications TO copydesk_tenant;

GRANT UPDATE(read_at) ON TABLE notifications TO copydesk_tenant;

GRANT UPDATE(read_by) ON TABLE notifications TO copydesk_tenant;

GRANT SELECT ON TABLE projects TO copydesk_tenant;

GRANT INSERT(name) ON TABLE projects TO copydesk_tenant;

GRANT INSERT(store_url) ON TABLE projects TO copydesk_tenant;

GRANT INSERT(settings) ON TABLE projects TO copydesk_tenant;

GRANT INSERT(budget_usd) ON TABLE projects TO copydesk_tenant;

GRANT INSERT(tenant_id) ON TABLE projects TO copydesk_tenant;

GRANT SELECT ON TABLE project_budgets TO copydesk_tenant;

GRANT SELECT ON TABLE publish_attempts TO copydesk_tenant;

GRANT SELECT ON TABLE queue_overview TO copydesk_tenant;

GRANT SELECT ON TABLE review_links TO copydesk_tenant;

GRANT INSERT(tenant_id) ON TABLE review_links TO copydesk_api;

GRANT INSERT(approval_id) ON TABLE review_links TO copydesk_api;

GRANT INSERT(name) ON TABLE review_links TO copydesk_api;

GRANT INSERT(created_by) ON TABLE review_links TO copydesk_api;

GRANT INSERT(expires_at) ON TABLE review_links TO copydesk_api;

GRANT UPDATE(used_at) ON TABLE review_links TO copydesk_api;

GRANT UPDATE(used_action) ON TABLE review_links TO copydesk_api;

GRANT UPDATE(revoked_at) ON TABLE review_links TO copydesk_api;

GRANT SELECT ON TABLE runs TO copydesk_tenant;

GRANT SELECT ON TABLE tenant_roles TO copydesk_tenant;

GRANT SELECT ON TABLE tenants TO copydesk_tenant;

-- Rows every database starts with.
INSERT INTO tenants (id, slug, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default');
INSERT INTO agent_model_configs (agent_id, agent_label, model_id, temperature, max_tokens) VALUES
    ('brand-voice-analyzer', 'Brand Voice Analyzer', 'anthropic/claude-sonnet-4', 0.5, 4000),
    ('blog-writer',          'Blog Writer',          'anthropic/claude-sonnet-4', 0.8, 8000),
    ('blog-editor',          'Blog Editor',          'anthropic/claude-sonnet-4', 0.5, 8000),
    ('seo-specialist',       'SEO Specialist',       'anthropic/claude-sonnet-4', 0.4, 2000),
    ('senior-editor',        'Senior Editor',        'anthropic/claude-sonnet-4', 0.5, 8000),
    ('blog-reviewer',        'Blog Reviewer',        'anthropic/claude-sonnet-4', 0.3, 3000);
