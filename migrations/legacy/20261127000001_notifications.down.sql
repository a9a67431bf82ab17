DROP TRIGGER approvals_decided_notify ON approvals;
DROP FUNCTION copydesk_approval_decided_notify();
DROP TRIGGER approvals_waiting_notify ON approvals;
DROP FUNCTION copydesk_approval_notify();
DROP FUNCTION copydesk_approval_subject(uuid);
DROP TRIGGER jobs_failed_notify ON jobs;
DROP FUNCTION copydesk_job_failed_notify();
DROP FUNCTION copydesk_notify(uuid, uuid, uuid, text, text, text, text, text, jsonb);
DROP TABLE notification_deliveries;
DROP TABLE notification_channels;
DROP TABLE notifications;
DELETE FROM jobs WHERE kind = 'notify';
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_known;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_known CHECK (kind IN (
    'noop', 'cleanup', 'brand_voice_analysis', 'draft_generation', 'evaluation', 'publishing',
    'cache_refresh'));
