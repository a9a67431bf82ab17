//! `files`: what a tenant has put in object storage, once per SHA-256. The bytes are
//! stored first; a row names them only after.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::FileKind;

/// A file's row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct File {
    pub id: Uuid,
    pub tenant: String,
    pub tenant_id: Uuid,
    pub project_id: Option<Uuid>,
    pub kind: FileKind,
    pub name: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    #[serde(skip)]
    pub storage_key: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A file to record, its bytes already stored under `storage_key`.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub kind: FileKind,
    pub name: &'a str,
    pub sha256: &'a str,
    pub size: i64,
    pub content_type: &'a str,
    pub storage_key: &'a str,
}

const COLUMNS: &str = "f.id, t.slug AS tenant, f.tenant_id, f.project_id, f.kind, f.name, f.sha256,
                       f.size, f.content_type, f.storage_key, f.created_by, f.created_at";

/// Records a file, or finds the tenant's row for the same bytes: (its id, whether this
/// call made it).
pub async fn record(db: impl PgExecutor<'_>, f: &NewFile<'_>, by: &str) -> Result<(Uuid, bool)> {
    // One statement: the insert, or the row a concurrent put of the same bytes made.
    Ok(crate::db::query_as(
        "WITH made AS (
             INSERT INTO files (tenant_id, project_id, kind, name, sha256, size, content_type,
                                storage_key, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, sha256) DO NOTHING
             RETURNING id)
         SELECT id, true FROM made
          UNION ALL
         SELECT id, false FROM files WHERE tenant_id = $1 AND sha256 = $5
          LIMIT 1",
    )
    .bind(f.tenant)
    .bind(f.project)
    .bind(f.kind)
    .bind(f.name)
    .bind(f.sha256)
    .bind(f.size)
    .bind(f.content_type)
    .bind(f.storage_key)
    .bind(by)
    .fetch_one(db)
    .await?)
}

/// One file (of `tenant`, when given).
pub async fn get(db: impl PgExecutor<'_>, tenant: Option<Uuid>, id: Uuid) -> Result<File> {
    crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM files f JOIN tenants t ON t.id = f.tenant_id
          WHERE f.id = $1 AND ($2::uuid IS NULL OR f.tenant_id = $2)"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound { what: "file", id })
}

/// Files (of one tenant or all; of one project or all), newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    project: Option<Uuid>,
    limit: i64,
) -> Result<Vec<File>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM files f JOIN tenants t ON t.id = f.tenant_id
          WHERE ($1::uuid IS NULL OR f.tenant_id = $1) AND ($2::uuid IS NULL OR f.project_id = $2)
          ORDER BY f.created_at DESC, f.id DESC LIMIT $3"
    )))
    .bind(tenant)
    .bind(project)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Names `file` as the image of blog draft `draft`: both of one tenant, the file an
/// image. The error names what does not fit.
pub async fn attach_image(db: impl PgExecutor<'_>, draft: Uuid, file: Uuid) -> Result<()> {
    let why: Option<String> = crate::db::query_scalar(
        "WITH a AS (SELECT id, tenant_id, kind, channel FROM artifacts WHERE id = $1),
              f AS (SELECT id, tenant_id, kind, content_type FROM files WHERE id = $2),
              checked AS (
                SELECT CASE
                         WHEN NOT EXISTS (SELECT 1 FROM a) THEN format('no artifact %s', $1)
                         WHEN NOT EXISTS (SELECT 1 FROM f) THEN format('no file %s', $2)
                         WHEN (SELECT tenant_id FROM a) <> (SELECT tenant_id FROM f)
                           THEN 'the file belongs to another tenant than the draft'
                         WHEN (SELECT kind FROM a) <> 'draft' OR (SELECT channel FROM a) IS DISTINCT FROM 'blog'
                           THEN format('artifact %s is not a blog draft (only blog posts carry an image)', $1)
                         WHEN (SELECT content_type FROM f) NOT LIKE 'image/%'
                           THEN format('file %s is %s, not an image', $2, (SELECT content_type FROM f))
                       END AS why),
              done AS (UPDATE artifacts SET image_file_id = $2
                        WHERE id = $1 AND (SELECT why FROM checked) IS NULL RETURNING id)
         SELECT why FROM checked, (SELECT count(*) FROM done) d",
    )
    .bind(draft)
    .bind(file)
    .fetch_one(db)
    .await?;
    match why {
        Some(why) => Err(Error::Invalid(why)),
        None => Ok(()),
    }
}

/// The image a draft publishes with: its own, else the nearest earlier version's.
pub async fn image_of(db: impl PgExecutor<'_>, draft: Uuid) -> Result<Option<File>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE chain AS (
             SELECT id, based_on_id, image_file_id, 0 AS depth FROM artifacts WHERE id = $1
              UNION ALL
             SELECT a.id, a.based_on_id, a.image_file_id, c.depth + 1
               FROM artifacts a JOIN chain c ON a.id = c.based_on_id
              WHERE c.image_file_id IS NULL AND c.depth < 100)
         SELECT {COLUMNS} FROM chain c JOIN files f ON f.id = c.image_file_id
           JOIN tenants t ON t.id = f.tenant_id
          ORDER BY c.depth LIMIT 1"
    )))
    .bind(draft)
    .fetch_optional(db)
    .await?)
}
