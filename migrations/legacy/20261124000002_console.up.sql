-- Client review links: a URL that lets a person with no account see one approval and
-- decide it, once, until it expires. The URL carries the link's id and an HMAC-SHA256
-- of it made with the server's COPYDESK_LINK_KEY; the row holds what the URL cannot:
-- whether it was used or revoked. Nothing secret is stored here.
CREATE TABLE review_links (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    approval_id  uuid NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    -- Whom the link is for ("Acme marketing"); the audit log names decisions by it.
    name         text NOT NULL CONSTRAINT review_links_name_length CHECK (length(name) BETWEEN 1 AND 200),
    created_by   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    -- approved, rejected or edited, once.
    used_at      timestamptz,
    used_action  text CONSTRAINT review_links_action_known
                 CHECK (used_action IS NULL OR used_action IN ('approved', 'rejected', 'edited')),
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT review_links_used_whole CHECK ((used_at IS NULL) = (used_action IS NULL))
);
CREATE INDEX review_links_approval_idx ON review_links (approval_id);
CREATE INDEX review_links_tenant_idx ON review_links (tenant_id, created_at);

ALTER TABLE review_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE review_links FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON review_links TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON review_links TO copydesk_tenant
    USING (tenant_id = (SELECT copydesk_session_tenant()))
    WITH CHECK (tenant_id = (SELECT copydesk_session_tenant()));

GRANT SELECT ON review_links TO copydesk_tenant;
-- Approvers make links through the API; a link's use and its revocation are updates.
GRANT INSERT (tenant_id, approval_id, name, created_by, expires_at),
      UPDATE (used_at, used_action, revoked_at) ON review_links TO copydesk_api;

-- The console's queue page groups failed jobs by their masked error and reads each
-- group's latest jobs newest first from this index (`last_error` is included so that
-- the planner may count from the index alone; whether it does was not checked, and
-- the page was not measurably faster for it).
CREATE INDEX jobs_failed_group_idx ON jobs (copydesk_error_group(last_error), id)
    INCLUDE (last_error) WHERE status = 'failed';
