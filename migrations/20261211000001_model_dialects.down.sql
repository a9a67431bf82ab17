-- Rows in the native mode have no older name: they go (llm_modes is relearned) or
-- forget their mode (runs keep everything else).
DELETE FROM llm_modes WHERE mode = 'native';
UPDATE runs SET structured_mode = NULL WHERE structured_mode = 'native';
ALTER TABLE runs DROP CONSTRAINT runs_structured_mode_known;
ALTER TABLE runs ADD CONSTRAINT runs_structured_mode_known
    CHECK (structured_mode IS NULL
           OR structured_mode = ANY (ARRAY['json_schema', 'json_object', 'prompt']));
ALTER TABLE runs DROP COLUMN dialect;
ALTER TABLE llm_modes DROP CONSTRAINT llm_modes_mode_check;
ALTER TABLE llm_modes ADD CONSTRAINT llm_modes_mode_check
    CHECK (mode = ANY (ARRAY['json_schema', 'json_object', 'prompt']));
ALTER TABLE llm_modes DROP COLUMN dialect;
