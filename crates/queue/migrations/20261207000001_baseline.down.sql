-- Everything the baseline created, and nothing else is left of the engine.
DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs;
DROP FUNCTION IF EXISTS jobs_notify_insert();
DROP FUNCTION IF EXISTS copydesk_claim(text, integer, text, bigint);
DROP VIEW IF EXISTS queue_overview;
DROP TABLE IF EXISTS job_steps;
DROP TABLE IF EXISTS jobs;
DROP FUNCTION IF EXISTS copydesk_error_group(text);
DROP FUNCTION IF EXISTS copydesk_time_ordered_id();
