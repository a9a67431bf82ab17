-- The versions of each kind's input contract, as the workers of every release that ran
-- against this database registered them: during a rolling deploy a worker of the
-- release before, whose schema refuses a job's input, checks the input against the
-- newest version here; if that one takes it, the job was written for a newer worker and
-- is given back (no attempt spent) until one takes it or `[worker] unreadable_after_secs`
-- passes. A kind's former name stays a row of `job_kinds` naming the kind it stands
-- for (`alias_of`), so queued jobs of the old name still run.
CREATE TABLE job_kind_versions (
    kind          text NOT NULL REFERENCES job_kinds (name),
    version       integer NOT NULL CHECK (version > 0),
    schema        jsonb,
    registered_at timestamp with time zone NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, version)
);
COMMENT ON TABLE job_kind_versions IS
    'each version of a kind''s input contract (JSON Schema), registered by the workers that read it';

ALTER TABLE job_kinds ADD COLUMN alias_of text REFERENCES job_kinds (name);
COMMENT ON COLUMN job_kinds.alias_of IS 'the kind this former name stands for: its jobs run as that kind';
