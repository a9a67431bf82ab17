-- Publishing and the catalogue cache: the cache_refresh kind, and the record of every
-- attempt to post, written before the request leaves so a retry never posts blindly.

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing',
    'cache_refresh'));

-- One row per attempt to create a post. `sending` is committed before the request is
-- sent; the attempt then becomes `sent` (with the external id), `not_sent` (the platform
-- refused it: nothing went out) or stays `sending` when the answer was lost (timeout,
-- 5xx, crash). A later attempt that finds a `sending` row reconciles with the platform
-- before it posts again.
CREATE TABLE publish_attempts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         int NOT NULL,
    artifact_id     uuid NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    integration_id  uuid REFERENCES integrations (id) ON DELETE SET NULL,
    platform        text NOT NULL,
    -- What identifies the post on the platform without its id: the slug or handle
    -- (WordPress, Shopify) or the exact text (LinkedIn, X, Facebook).
    lookup_key      text NOT NULL,
    state           text NOT NULL DEFAULT 'sending'
                    CONSTRAINT publish_attempts_state_known
                    CHECK (state IN ('sending', 'sent', 'not_sent')),
    external_id     text,
    url             text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX publish_attempts_job_idx ON publish_attempts (job_id, created_at);
-- Operators: attempts whose outcome is unknown, oldest first.
CREATE INDEX publish_attempts_unknown_idx ON publish_attempts (created_at) WHERE state = 'sending';
