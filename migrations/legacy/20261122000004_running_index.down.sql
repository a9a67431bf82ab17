DROP INDEX IF EXISTS jobs_running_idx;
CREATE INDEX jobs_running_idx ON jobs (locked_by, locked_until) WHERE status = 'running';
CREATE INDEX jobs_running_lease_idx ON jobs (locked_until) WHERE status = 'running';
