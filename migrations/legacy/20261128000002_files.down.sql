DROP INDEX artifacts_image_file_idx;
ALTER TABLE artifacts DROP COLUMN image_file_id;
DROP TABLE files;
