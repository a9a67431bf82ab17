DELETE FROM notification_channels WHERE kind <> 'webhook';
ALTER TABLE notification_channels DROP CONSTRAINT notification_channels_webhook_sealed;
ALTER TABLE notification_channels ALTER COLUMN url SET NOT NULL;
ALTER TABLE notification_channels ALTER COLUMN secret SET NOT NULL;
ALTER TABLE notification_channels DROP CONSTRAINT notification_channels_kind_known;
ALTER TABLE notification_channels ADD CONSTRAINT notification_channels_kind_known
    CHECK (kind IN ('webhook'));
