-- The kinds a `jobs` row may name, filled by the registry of every worker that starts
-- (and by the application's migrate): a kind registered in code is enqueued and run with
-- no migration, and an INSERT naming any other kind fails at once, naming it. Rows are
-- never deleted by the engine: a kind whose code is gone still names its old jobs.
CREATE TABLE job_kinds (
    name          text PRIMARY KEY CHECK (name <> ''),
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_kinds IS 'The kinds a job may name: registered by the workers'' registries at start';

-- The kinds already in the table are known.
INSERT INTO job_kinds (name) SELECT DISTINCT kind FROM jobs ON CONFLICT DO NOTHING;

-- One look per INSERT statement, not per row: the rows it inserted whose kind is not
-- registered. The error is the CHECK's it replaces (23514, constraint jobs_kind_known).
CREATE FUNCTION jobs_kind_known() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    unknown text;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        unknown := NEW.kind;
        IF EXISTS (SELECT 1 FROM job_kinds k WHERE k.name = unknown) THEN
            RETURN NEW;
        END IF;
    ELSE
        SELECT n.kind INTO unknown FROM new_rows n
         WHERE NOT EXISTS (SELECT 1 FROM job_kinds k WHERE k.name = n.kind)
         LIMIT 1;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'unknown job kind %', quote_literal(unknown)
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'jobs_kind_known',
              TABLE = 'jobs',
              COLUMN = 'kind',
              DETAIL = format('Known kinds: %s.',
                              (SELECT coalesce(string_agg(name, ', ' ORDER BY name), 'none')
                                 FROM job_kinds)),
              HINT = 'A kind is known once a worker whose registry has it starts, or after copydesk migrate.';
END
$$;

CREATE TRIGGER jobs_kind_known AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_kind_known();
CREATE TRIGGER jobs_kind_changed BEFORE UPDATE OF kind ON jobs
    FOR EACH ROW WHEN (NEW.kind IS DISTINCT FROM OLD.kind)
    EXECUTE FUNCTION jobs_kind_known();
