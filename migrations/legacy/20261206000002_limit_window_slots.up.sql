-- Jobs sent away to wait for a request window are given the time a slot of the window
-- comes free, one slot to each job in turn, instead of times spaced `per / requests`
-- apart from the last promise: a slot taken by a job already running (its next call)
-- pushed the even schedule off the slots, and with far more jobs than the window holds
-- (`cargo bench --bench pipeline -- --tight`: 40 projects at 3 requests a second) the
-- key was used at 2.25 requests a second. Token and concurrency waits keep their
-- spacing. A job that finds a slot coming free within a quarter of a slot's share of
-- the window (100 ms at most) waits for that moment, not behind later promises.
--
-- And a request stays in its window a fortieth of the window longer than `per` (was a
-- tenth; still 100 ms at most): at a window of a second the tenth cost a tenth of the
-- rate, and the grant-to-arrival gap it covers is milliseconds.
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
