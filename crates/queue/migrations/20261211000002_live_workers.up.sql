-- Worker processes say they are alive: one row each (`host:pid:tag`), with the kinds it
-- claims and the release it runs, refreshed every heartbeat. `alive_until` is the last
-- refresh plus three heartbeats of that process: a process that stopped cleanly deletes
-- its row, one that died is no longer counted once `alive_until` has passed (and its
-- row is deleted a day later by any process that starts). What `/metrics` counts per
-- kind (`copydesk_workers`): a kind whose jobs wait with no live worker serving it is
-- stalled for a reason an operator can see.
CREATE TABLE copydesk_workers (
    name text PRIMARY KEY,
    kinds text[] NOT NULL,
    version text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    seen_at timestamp with time zone DEFAULT now() NOT NULL,
    alive_until timestamp with time zone NOT NULL
);
COMMENT ON TABLE copydesk_workers IS
    'live worker processes: one row each, refreshed every heartbeat; counted while alive_until is ahead';
