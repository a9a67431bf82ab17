DROP INDEX jobs_failed_group_idx;

CREATE OR REPLACE FUNCTION copydesk_error_group(error text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(
        regexp_replace(error, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'),
        '[0-9]+', '<n>', 'g')
$$;

CREATE INDEX jobs_failed_group_idx ON jobs (copydesk_error_group(last_error), id)
    INCLUDE (last_error) WHERE status = 'failed';
