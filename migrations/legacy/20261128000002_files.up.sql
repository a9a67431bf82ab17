-- Files: images for posts, style samples, exported drafts. The bytes live in object
-- storage (`[files]`: a local folder or an S3-compatible store) under a key made from
-- the tenant and the SHA-256, so a tenant's copy of some bytes is stored once, and a
-- crash between writing the bytes and this row leaves nothing a second put does not
-- reuse. A row is written only after its bytes are stored.
CREATE TABLE files (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The project it was first put for (a file is the tenant's; any project may use it).
    project_id    uuid REFERENCES projects (id) ON DELETE SET NULL,
    kind          text NOT NULL CONSTRAINT files_kind_known
                  CHECK (kind IN ('image', 'sample', 'export')),
    -- The name it was put with (without folders), for uploads and downloads.
    name          text NOT NULL CONSTRAINT files_name_plain
                  CHECK (name <> '' AND position('/' in name) = 0 AND length(name) <= 255),
    sha256        text NOT NULL CONSTRAINT files_sha256_hex CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size          bigint NOT NULL CONSTRAINT files_size_positive CHECK (size > 0),
    content_type  text NOT NULL,
    storage_key   text NOT NULL,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT files_once_per_tenant UNIQUE (tenant_id, sha256)
);
CREATE INDEX files_tenant_created_idx ON files (tenant_id, created_at DESC);

ALTER TABLE files ENABLE ROW LEVEL SECURITY;
ALTER TABLE files FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON files TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY tenant_own ON files TO copydesk_tenant
    USING (tenant_id = copydesk_session_tenant())
    WITH CHECK (tenant_id = copydesk_session_tenant());
GRANT SELECT ON files TO copydesk_tenant;

-- A blog draft may name an image: published as the post's featured image (WordPress)
-- or the article's image (Shopify). Later versions of the draft inherit it.
ALTER TABLE artifacts ADD COLUMN image_file_id uuid REFERENCES files (id) ON DELETE RESTRICT;
CREATE INDEX artifacts_image_file_idx ON artifacts (image_file_id) WHERE image_file_id IS NOT NULL;
GRANT SELECT (image_file_id) ON artifacts TO copydesk_tenant;
