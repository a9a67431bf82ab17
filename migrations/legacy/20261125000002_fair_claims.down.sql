DROP FUNCTION copydesk_claim(text, int, text, bigint);
DROP INDEX jobs_queued_group_idx;
