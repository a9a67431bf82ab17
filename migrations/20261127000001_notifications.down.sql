DROP TRIGGER approvals_decided_notify ON approvals;
DROP FUNCTION copydesk_approval_decided_notify();
DROP TRIGGER approvals_waiting_notify ON approvals;
DROP FUNCTION copydesk_approval_notify();
DROP FUNCTION copydesk_approval_subject(uuid);
DROP TRIGGER jobs_failed_notify ON jobs;
DROP FUNCTION copydesk_job_failed_notify();
DROP FUNCTION copydesk_notify(uuid, uuid, uuid, text, text, text, text, text, jsonb);
DROP TABLE notifications;
