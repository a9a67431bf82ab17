ALTER TABLE job_kinds DROP COLUMN alias_of;
DROP TABLE job_kind_versions;
