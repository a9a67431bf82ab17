-- agent_model_configs in the shape operators of the blogwriter system know: the key
-- column is agent_id, each agent has a label, and rows say when they were made.
ALTER TABLE agent_model_configs RENAME COLUMN agent TO agent_id;
ALTER TABLE agent_model_configs ADD COLUMN agent_label text;
UPDATE agent_model_configs SET agent_label = CASE agent_id
    WHEN 'brand-voice-analyzer' THEN 'Brand Voice Analyzer'
    WHEN 'blog-writer' THEN 'Blog Writer'
    WHEN 'blog-editor' THEN 'Blog Editor'
    WHEN 'seo-specialist' THEN 'SEO Specialist'
    WHEN 'senior-editor' THEN 'Senior Editor'
    WHEN 'blog-reviewer' THEN 'Blog Reviewer'
    ELSE initcap(replace(agent_id, '-', ' ')) END;
ALTER TABLE agent_model_configs ALTER COLUMN agent_label SET NOT NULL;
ALTER TABLE agent_model_configs ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
-- The seeded rows were made when they were last updated.
UPDATE agent_model_configs SET created_at = updated_at;

-- A decision whose application failed says why, and is tried again after a backoff,
-- without holding up the decisions behind it.
ALTER TABLE approvals
    ADD COLUMN last_error text,
    ADD COLUMN apply_attempts int NOT NULL DEFAULT 0,
    ADD COLUMN apply_after timestamptz;
