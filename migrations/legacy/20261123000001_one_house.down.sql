ALTER TABLE approvals
    DROP COLUMN apply_after,
    DROP COLUMN apply_attempts,
    DROP COLUMN last_error;
ALTER TABLE agent_model_configs DROP COLUMN created_at;
ALTER TABLE agent_model_configs DROP COLUMN agent_label;
ALTER TABLE agent_model_configs RENAME COLUMN agent_id TO agent;
