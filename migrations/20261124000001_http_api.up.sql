-- The HTTP API. Each request's transaction runs as copydesk_api with the token's tenant
-- set locally (`SET LOCAL ROLE`, `set_config(..., true)`), so row-level security keeps
-- it to that tenant's rows; the server checks the token's role (viewer, approver,
-- operator, admin) before it acts. What copydesk_api may do beyond a tenant role is
-- granted here: what operators and admins do through the API.

-- Jobs inserted by plain SQL get time-ordered ids too (as the engine's do), so a
-- newest-first listing walks the primary key instead of sorting the table. A UUIDv7:
-- 48 bits of Unix milliseconds, then (RFC 9562's method 3) 12 bits of the fraction of
-- the millisecond, so rows of one statement sort in the order they were made.
CREATE FUNCTION copydesk_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        overlay(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(t * 1000)::bigint) FROM 3) FROM 1 FOR 6)
            PLACING int2send((28672 + floor((t * 1000 - floor(t * 1000)) * 4096))::smallint) FROM 7 FOR 2),
        'hex')::uuid
    FROM (SELECT extract(epoch FROM clock_timestamp()) AS t) now
$$;
ALTER TABLE jobs ALTER COLUMN id SET DEFAULT copydesk_uuid_v7();
GRANT EXECUTE ON FUNCTION copydesk_uuid_v7() TO copydesk_tenant;

-- Jobs that need a person (failed, cancelled, waiting for an approval), newest first.
-- A row enters this index only when it gets there, so claims and finishes of healthy
-- jobs never write it.
CREATE INDEX jobs_attention_idx ON jobs (id) WHERE status IN ('failed', 'cancelled', 'needs_approval');

-- The same failure on many jobs reads the same once ids and numbers are masked: the
-- console groups failed jobs by this, and bulk actions filter on it.
CREATE FUNCTION copydesk_error_group(error text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(
        regexp_replace(error, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
        '[0-9]+', '<n>', 'g')
$$;

-- The engine's enqueue names time-ordered ids itself; tenant sessions may use it.
GRANT INSERT (id) ON jobs TO copydesk_tenant;
-- Operators retry and cancel jobs (never their input, kind or tenant).
GRANT UPDATE (status, attempts, run_at, finished_at, locked_by, locked_until, last_error, updated_at)
    ON jobs TO copydesk_api;
-- Every write through the API leaves an audit row in the same transaction.
GRANT INSERT ON audit_log TO copydesk_api;
-- Testing and setting an integration are checked as the tenant (the integration or
-- project must be the tenant's) and then done by the code the CLI runs, so
-- copydesk_api never reads a credential, not even encrypted.
-- Admins make and revoke their tenant's tokens.
GRANT INSERT (tenant_id, name, role, prefix, secret_sha256, expires_at), UPDATE (revoked_at)
    ON api_tokens TO copydesk_api;

-- Client review links: a signed URL that lets a person without an account see one
-- approval and decide it once, until it expires. The signature is an HMAC of the id and
-- expiry under COPYDESK_LINK_KEY; the row makes a link revocable and single-use.
CREATE TABLE review_links (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    approval_id uuid NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> ''),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX review_links_approval_idx ON review_links (approval_id);
-- A link's tenant is its approval's, seen past row-level security (as for the other
-- tables: naming another tenant's approval gives the row that tenant, which the
-- session's WITH CHECK then refuses).
CREATE FUNCTION copydesk_approval_tenant(id uuid) RETURNS uuid LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT tenant_id FROM approvals WHERE approvals.id = $1
$$;
GRANT EXECUTE ON FUNCTION copydesk_approval_tenant(uuid) TO copydesk_tenant;
CREATE FUNCTION review_links_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tenant_id := copydesk_same_tenant(NEW.tenant_id, copydesk_approval_tenant(NEW.approval_id),
                                          TG_TABLE_NAME, 'approval ' || NEW.approval_id);
    RETURN NEW;
END;
$$;
CREATE TRIGGER review_links_tenant BEFORE INSERT ON review_links
    FOR EACH ROW EXECUTE FUNCTION review_links_tenant();
ALTER TABLE review_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE review_links FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON review_links TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON review_links TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant())
    WITH CHECK (tenant_id = copydesk_session_tenant());
GRANT SELECT ON review_links TO copydesk_tenant;
GRANT INSERT (tenant_id, approval_id, name, created_by, expires_at), UPDATE (used_at, revoked_at)
    ON review_links TO copydesk_api;
