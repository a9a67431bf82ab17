DROP FUNCTION copydesk_limit_take(text[], int[], bigint[], int[], int[], int, uuid, bigint);
REVOKE UPDATE (waiting_for) ON jobs FROM copydesk_api;
ALTER TABLE jobs DROP COLUMN waiting_for;
DROP TABLE limit_slots;
DROP TABLE limits;
