-- Any OpenAI-compatible server: fallback models per agent, what each model call used
-- and cost, what each server accepts (shared by every process), models cooling down
-- after failures, and budgets reserved before a call and settled after it.

ALTER TABLE agent_model_configs
    ADD COLUMN fallback_model_ids text[] NOT NULL DEFAULT '{}';

ALTER TABLE runs
    -- How a structured answer was asked for: json_schema, json_object or prompt.
    ADD COLUMN structured_mode text
        CONSTRAINT runs_structured_mode_known
        CHECK (structured_mode IS NULL OR structured_mode IN ('json_schema', 'json_object', 'prompt')),
    ADD COLUMN cached_tokens int NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens int NOT NULL DEFAULT 0,
    -- Where cost_usd came from: the provider's usage.cost, the price table, or nowhere
    -- (a model with no price: it cost nothing as far as copydesk knows).
    ADD COLUMN cost_source text
        CONSTRAINT runs_cost_source_known
        CHECK (cost_source IS NULL OR cost_source IN ('provider', 'price_table', 'unpriced')),
    -- What copydesk did about the answer (repairs, a fallback, a mode step-down).
    ADD COLUMN notes text;

-- The strongest structured mode a server accepted for a model, learned by any process.
CREATE TABLE llm_modes (
    base_url    text NOT NULL,
    model       text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('json_schema', 'json_object', 'prompt')),
    learned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_url, model)
);

-- Models that keep failing are skipped by every job until cooldown_until.
CREATE TABLE llm_model_health (
    base_url        text NOT NULL,
    model           text NOT NULL,
    failures        int NOT NULL DEFAULT 0,
    cooldown_until  timestamptz,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_url, model)
);

-- Budgets: what the project's runs cost (kept by a trigger on runs, so a plain SQL
-- insert counts too) and what calls in flight may still cost. A call reserves its
-- worst case with one UPDATE of the project row that checks spent + reserved + cost
-- against budget_usd, so concurrent calls cannot all pass the check.
ALTER TABLE projects
    ADD COLUMN spent_usd numeric(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN reserved_usd numeric(14, 6) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0);
UPDATE projects p SET spent_usd = coalesce((SELECT sum(cost_usd) FROM runs r WHERE r.project_id = p.id), 0);

CREATE FUNCTION runs_add_cost() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projects p SET spent_usd = p.spent_usd + s.cost
    FROM (SELECT project_id, sum(cost_usd) AS cost FROM new_rows
          WHERE project_id IS NOT NULL AND cost_usd <> 0 GROUP BY project_id) s
    WHERE p.id = s.project_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER runs_add_cost AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION runs_add_cost();

-- One row per reservation in flight: settled (or released) when its call ends; one
-- whose process died expires and is swept back out of reserved_usd.
CREATE TABLE llm_reservations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    job_id      uuid,
    amount_usd  numeric(14, 6) NOT NULL CHECK (amount_usd >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX llm_reservations_project_idx ON llm_reservations (project_id, expires_at);

-- Spent, reserved and left per project, for anyone with psql.
CREATE VIEW project_budgets AS
SELECT id AS project_id, name, budget_usd, spent_usd, reserved_usd,
       CASE WHEN budget_usd IS NULL THEN NULL
            ELSE greatest(budget_usd - spent_usd - reserved_usd, 0) END AS left_usd
FROM projects;
