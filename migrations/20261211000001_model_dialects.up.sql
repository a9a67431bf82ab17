-- Model servers' dialects of structured answers (`llm::dialect`): what was found of a
-- server is remembered with the mode that worked, and every run says which dialect and
-- mode its request used. `native` is a server's own constrained form (llama-server's
-- top-level `json_schema`, llama-cpp-python's `json_object` with `schema`, vLLM's
-- `structured_outputs`, TGI's `json` grammar).
--
-- `dialect` is plain text, no CHECK: a dialect a newer release knows must not make an
-- older worker's insert fail during a rolling deploy (each reads an unknown one as
-- unknown). The mode CHECKs are widened NOT VALID, then validated: the old rows hold
-- already, and validating does not block writes to `runs` the way a plain ADD would.
ALTER TABLE llm_modes ADD COLUMN dialect text;
COMMENT ON COLUMN llm_modes.dialect IS
    'the server family the base URL was found to be (openai, openrouter, llama_server, llama_cpp_python, vllm, ollama, lm_studio, tgi, generic)';
ALTER TABLE llm_modes DROP CONSTRAINT llm_modes_mode_check;
ALTER TABLE llm_modes ADD CONSTRAINT llm_modes_mode_check
    CHECK (mode = ANY (ARRAY['native', 'json_schema', 'json_object', 'prompt'])) NOT VALID;
ALTER TABLE llm_modes VALIDATE CONSTRAINT llm_modes_mode_check;

ALTER TABLE runs ADD COLUMN dialect text;
COMMENT ON COLUMN runs.dialect IS
    'the model server dialect the request was shaped for (see llm_modes.dialect); NULL for platform calls and the offline provider';
ALTER TABLE runs DROP CONSTRAINT runs_structured_mode_known;
ALTER TABLE runs ADD CONSTRAINT runs_structured_mode_known
    CHECK (structured_mode IS NULL
           OR structured_mode = ANY (ARRAY['native', 'json_schema', 'json_object', 'prompt'])) NOT VALID;
ALTER TABLE runs VALIDATE CONSTRAINT runs_structured_mode_known;
