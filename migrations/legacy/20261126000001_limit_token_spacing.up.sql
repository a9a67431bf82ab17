-- Jobs sent away to wait for a tokens-per-minute limit were spaced by their call's
-- whole estimate (prompt and max_tokens), so a key whose bucket filled in a burst sent
-- its waiting jobs back about one every max_tokens/tpm minutes (2.4 s for a blog
-- writer's 8,000 of 200,000) long after the bucket had room again (measured by `cargo
-- bench --bench pipeline`: 2 calls a second against a limit of 10). They are now at most 100 ms
-- apart; one that comes back before there is room waits again.
--
-- And a request now leaves its key's window a tenth of the window (at most 100 ms)
-- after `per`: the limiter grants it a moment before it reaches the server, and at the
-- window's edge the server counted one more than the limiter (the same bench: one 429
-- in 3,000 calls through a key of 600 a minute matching the server's).
CREATE OR REPLACE FUNCTION copydesk_limit_take(
    p_keys text[], p_requests int[], p_per_ms bigint[], p_tpm int[], p_concurrency int[],
    p_tokens int, p_job uuid, p_lease_ms bigint)
RETURNS TABLE (wait_ms bigint, blocked_by text, slots uuid[])
LANGUAGE plpgsql AS $$
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
        -- A request stays in the window a little longer than `per` (a tenth of it, at
        -- most 100 ms): it reaches the server a moment after it was granted here.
        win := per * interval '1 millisecond'
               + least(interval '100 milliseconds', per * interval '100 microseconds');
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
                            WHERE t > now_ts - win ORDER BY t);
            n := cardinality(recent);
            IF n >= req THEN
                -- Free when the request `n - req + 1` from the oldest leaves the window.
                wait := greatest(wait, recent[n - req + 1] + win - now_ts);
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
        -- A request stays in the window a little longer than `per` (a tenth of it, at
        -- most 100 ms): it reaches the server a moment after it was granted here.
        win := per * interval '1 millisecond'
               + least(interval '100 milliseconds', per * interval '100 microseconds');
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
