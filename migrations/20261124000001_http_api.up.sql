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
