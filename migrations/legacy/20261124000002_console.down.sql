DROP INDEX jobs_failed_group_idx;
DROP TABLE review_links;
