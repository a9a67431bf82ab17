-- A notification channel for a project is that project's tenant's: a channel naming
-- another tenant's project is refused by name, as every other table with a project
-- refuses it (the CLI, the owner's, could write one before).
CREATE TRIGGER notification_channels_tenant BEFORE INSERT ON notification_channels
    FOR EACH ROW EXECUTE FUNCTION by_project_tenant();
