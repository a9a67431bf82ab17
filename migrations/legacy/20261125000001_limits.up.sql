-- Rate limits shared by every worker process: one row per limit key, holding the
-- operator's override (NULL: the configured default, passed in by the caller) and the
-- limiter's state, computed from the database clock. Keys name what the limit is on:
--   llm:HOST[:PORT]              a model server
--   llm:HOST[:PORT]/MODEL        one model on it
--   platform:PLATFORM            a platform, all integrations together (a per-app quota)
--   platform:PLATFORM:ID         one integration (a store, a user, a page)
-- A call takes from its most specific key and from every wider one.
CREATE TABLE limits (
    key               text PRIMARY KEY CHECK (
        key ~ '^llm:[^/\s]+(/\S+)?$'
        OR key ~ '^platform:(wordpress|shopify|linkedin|x|facebook)(:[0-9a-f-]{36})?$'),
    -- The operator's override; each NULL falls back to the configured default.
    requests          int CHECK (requests > 0),
    per_ms            bigint CHECK (per_ms > 0),
    tokens_per_minute int CHECK (tokens_per_minute > 0),
    concurrency       int CHECK (concurrency > 0),
    -- A throttled answer stops every call under this key until then.
    paused_until      timestamptz,
    -- Limiter state. Requests: when each request of the last `per` went (a sliding
    -- log: at most `requests` in any window of `per`, bursts allowed). Tokens: when the
    -- bucket (a minute's worth) is full again. `promised_at`: the time told to the
    -- latest job sent away to wait, so waiting jobs come back one by one.
    request_log       timestamptz[] NOT NULL DEFAULT '{}',
    token_tat         timestamptz,
    promised_at       timestamptz,
    -- Counters for `limits list`.
    granted           bigint NOT NULL DEFAULT 0,
    waited            bigint NOT NULL DEFAULT 0,
    throttled         bigint NOT NULL DEFAULT 0,
    updated_by        text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Calls in flight under a key with a concurrency limit. A slot is released when its
-- call ends; a process that dies leaves it to expire.
CREATE TABLE limit_slots (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key        text NOT NULL REFERENCES limits (key) ON DELETE CASCADE,
    job_id     uuid,
    expires_at timestamptz NOT NULL
);
CREATE INDEX limit_slots_key_idx ON limit_slots (key, expires_at);

-- Why a queued job is not running though its attempt was given back.
ALTER TABLE jobs ADD COLUMN waiting_for text;
GRANT UPDATE (waiting_for) ON jobs TO copydesk_api;

-- Takes what one call needs from every key it falls under, all or nothing, in one
-- statement. `p_*` arrays give each key's configured default (NULL: none); a row's
-- override wins. Returns wait_ms 0 and the slots taken, or how long to wait and the
-- key that stopped it (nothing taken).
CREATE FUNCTION copydesk_limit_take(
    p_keys text[], p_requests int[], p_per_ms bigint[], p_tpm int[], p_concurrency int[],
    p_tokens int, p_job uuid, p_lease_ms bigint)
RETURNS TABLE (wait_ms bigint, blocked_by text, slots uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    now_ts   timestamptz := clock_timestamp();
    r        record;
    req      int;
    per      bigint;
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
        tpm := coalesce(r.tokens_per_minute, r.d_tpm);
        conc := coalesce(r.concurrency, r.d_conc);
        wait := interval '0';
        spacing := interval '0';
        IF r.paused_until > now_ts THEN
            wait := r.paused_until - now_ts;
        END IF;
        IF req IS NOT NULL AND per IS NOT NULL THEN
            spacing := (per::float8 / req) * interval '1 millisecond';
            recent := ARRAY(SELECT t FROM unnest(r.request_log) t
                            WHERE t > now_ts - per * interval '1 millisecond' ORDER BY t);
            n := cardinality(recent);
            IF n >= req THEN
                -- Free when the request `n - req + 1` from the oldest leaves the window.
                wait := greatest(wait, recent[n - req + 1] + per * interval '1 millisecond' - now_ts);
            END IF;
        END IF;
        IF tpm IS NOT NULL AND p_tokens > 0 THEN
            -- Full bucket: token_tat <= now. Taking p_tokens moves it forward by their
            -- share of a minute; it may lead now by at most a minute.
            need := (least(p_tokens, tpm)::float8 / tpm) * interval '1 minute';
            IF coalesce(r.token_tat, now_ts) + need > now_ts + interval '1 minute' THEN
                wait := greatest(wait, r.token_tat + need - interval '1 minute' - now_ts);
                spacing := greatest(spacing, need);
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
            -- Come back after the jobs already sent away to wait for this key.
            IF r.promised_at > now_ts + wait THEN
                wait := r.promised_at - now_ts;
            END IF;
            UPDATE limits SET promised_at = now_ts + wait + spacing, waited = waited + 1
            WHERE key = r.key;
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
        tpm := coalesce(r.tokens_per_minute, r.d_tpm);
        conc := coalesce(r.concurrency, r.d_conc);
        UPDATE limits SET
            request_log = CASE WHEN req IS NOT NULL AND per IS NOT NULL
                THEN ARRAY(SELECT t FROM unnest(request_log) t
                           WHERE t > now_ts - per * interval '1 millisecond' ORDER BY t) || now_ts
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
