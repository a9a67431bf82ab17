-- The list of kinds moves from a CHECK kept by hand to the engine's job_kinds table,
-- which the registry fills (crates/queue/migrations/…_kinds). Tenants' inserts look
-- the kind up there.
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_kind_known;
GRANT SELECT ON job_kinds TO copydesk_tenant;
