-- One index over running rows instead of two. The rescue (`locked_until < now()`) reads
-- every running row anyway, and they are few (at most the workers' concurrency plus
-- prefetch), so a lease index bought nothing but an index insert on every claim
-- (PERFORMANCE.md). Keying by `locked_by` alone also lets a heartbeat, which changes
-- only `locked_until`, be a HOT update that touches no index.
DROP INDEX IF EXISTS jobs_running_lease_idx;
DROP INDEX IF EXISTS jobs_running_idx;
CREATE INDEX jobs_running_idx ON jobs (locked_by) WHERE status = 'running';
