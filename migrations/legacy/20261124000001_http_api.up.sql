-- The HTTP API. Each request's transaction runs as copydesk_api with the token's tenant
-- set locally (`SET LOCAL ROLE`, `set_config(..., true)`), so row-level security keeps
-- it to that tenant's rows; the server checks the token's role (viewer, approver,
-- operator, admin) before it acts. What copydesk_api may do beyond a tenant role is
-- granted here: what operators and admins do through the API.

-- Jobs inserted by plain SQL get time-ordered ids too (as the engine's do), so a
-- newest-first listing walks the primary key instead of sorting the table. The first 64
-- bits are the time in 1/65,536 ms: the first 48 are Unix milliseconds, as in the
-- engine's UUIDv7 ids, and the next 16 the fraction of the millisecond, so the rows of
-- one INSERT ... SELECT keep their order. The rest is random. (Not an RFC 9562 version:
-- a v7 keeps 4 of those bits for its version, and writing them needs the time twice,
-- which costs a function call per row: 9.1 us against 2.6 us for this one, inlined.)
CREATE FUNCTION copydesk_time_ordered_id() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(overlay(uuid_send(gen_random_uuid())
                          PLACING int8send((extract(epoch FROM clock_timestamp()) * 65536000)::bigint)
                          FROM 1 FOR 8), 'hex')::uuid
$$;
ALTER TABLE jobs ALTER COLUMN id SET DEFAULT copydesk_time_ordered_id();
GRANT EXECUTE ON FUNCTION copydesk_time_ordered_id() TO copydesk_tenant;

-- Jobs that need a person (failed, cancelled, waiting for an approval), newest first.
-- A row enters this index only when it gets there, so claims and finishes of healthy
-- jobs never write it.
CREATE INDEX jobs_attention_idx ON jobs (id) WHERE status IN ('failed', 'cancelled', 'needs_approval');

-- The same failure on many jobs reads the same once ids and numbers are masked: the
-- API's `error_group` filter (listings and bulk retry) compares with this.
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

-- Row-level security asks for the session's tenant once per statement, not once per
-- row: the policies compare with `(SELECT copydesk_session_tenant())`, an initplan whose
-- value an index scan can use. Calling the function per row cost 5 s on a count over
-- 1,000,000 jobs in an API request.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'artifacts', 'jobs', 'approvals', 'runs', 'integrations',
                             'publish_attempts', 'brand_voice_cache', 'catalog_items', 'llm_reservations',
                             'api_tokens', 'audit_log'] LOOP
        EXECUTE format('ALTER POLICY tenant_own ON %I
                        USING (tenant_id = (SELECT copydesk_session_tenant()))
                        WITH CHECK (tenant_id = (SELECT copydesk_session_tenant()))', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['agent_model_configs', 'app_settings'] LOOP
        EXECUTE format('ALTER POLICY tenant_read ON %I
                        USING (tenant_id IS NULL OR tenant_id = (SELECT copydesk_session_tenant()))', t);
    END LOOP;
END
$$;
ALTER POLICY tenant_own ON tenants USING (id = (SELECT copydesk_session_tenant()));
