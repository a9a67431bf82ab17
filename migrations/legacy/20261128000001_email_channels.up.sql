-- Email channels: notifications sent to an address through the SMTP server of
-- `[notifications.email]`. The address is the channel's `target`; only a webhook has
-- an encrypted URL and a signing secret.
ALTER TABLE notification_channels DROP CONSTRAINT notification_channels_kind_known;
ALTER TABLE notification_channels ADD CONSTRAINT notification_channels_kind_known
    CHECK (kind IN ('webhook', 'email'));
ALTER TABLE notification_channels ALTER COLUMN url DROP NOT NULL;
ALTER TABLE notification_channels ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE notification_channels ADD CONSTRAINT notification_channels_webhook_sealed
    CHECK (kind <> 'webhook' OR (url IS NOT NULL AND secret IS NOT NULL));
