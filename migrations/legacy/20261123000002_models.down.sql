DROP VIEW project_budgets;
DROP TABLE llm_reservations;
DROP TRIGGER runs_add_cost ON runs;
DROP FUNCTION runs_add_cost();
ALTER TABLE projects DROP COLUMN reserved_usd, DROP COLUMN spent_usd;
DROP TABLE llm_model_health;
DROP TABLE llm_modes;
ALTER TABLE runs
    DROP COLUMN notes,
    DROP COLUMN cost_source,
    DROP COLUMN reasoning_tokens,
    DROP COLUMN cached_tokens,
    DROP COLUMN structured_mode;
ALTER TABLE agent_model_configs DROP COLUMN fallback_model_ids;
