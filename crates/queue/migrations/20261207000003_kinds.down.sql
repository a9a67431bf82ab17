DROP TRIGGER IF EXISTS jobs_kind_changed ON jobs;
DROP TRIGGER IF EXISTS jobs_kind_known ON jobs;
DROP FUNCTION IF EXISTS jobs_kind_known();
DROP TABLE IF EXISTS job_kinds;
