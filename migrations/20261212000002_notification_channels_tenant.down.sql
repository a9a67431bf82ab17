DROP TRIGGER IF EXISTS notification_channels_tenant ON notification_channels;
