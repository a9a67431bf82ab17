-- The duplicate guard: each publishing attempt records the SHA-256 of its text,
-- normalised (Unicode NFKC, lower case, runs of white space as one space), so the same
-- text going to the same integration again within `[publish] duplicate_window_days`
-- is found by one index probe.
ALTER TABLE publish_attempts ADD COLUMN content_hash text;
CREATE INDEX publish_attempts_content_idx ON publish_attempts (integration_id, content_hash, created_at DESC)
    WHERE content_hash IS NOT NULL AND state <> 'not_sent';
