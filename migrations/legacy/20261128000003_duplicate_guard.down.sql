DROP INDEX publish_attempts_content_idx;
ALTER TABLE publish_attempts DROP COLUMN content_hash;
