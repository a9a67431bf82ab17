DROP FUNCTION copydesk_give_back(text, uuid[]);
DROP FUNCTION copydesk_extend_leases(text, uuid[], bigint, bigint);
DROP FUNCTION copydesk_finish(text, uuid[], integer[], text[], bigint[], text[], jsonb[]);
