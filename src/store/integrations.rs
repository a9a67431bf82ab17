//! `integrations`: a project's account on one destination. Credentials are stored as
//! Fernet tokens (`keys.rs` encrypts and decrypts them, outside this module); every row
//! type here is the non-secret part.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::{Channel, IntegrationStatus, Platform};

/// An integration as anyone may see it: no credentials.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub platform: Platform,
    pub metadata: Value,
    pub status: IntegrationStatus,
    pub last_error: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Integration {
    /// A non-empty metadata string field.
    pub fn meta(&self, field: &str) -> Option<&str> {
        self.metadata
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

const COLUMNS: &str =
    "id, tenant_id, project_id, platform, metadata, status, last_error, last_sync_at, updated_at";

/// The connected integrations with `platform`, of every tenant.
pub async fn connected(db: impl PgExecutor<'_>, platform: Platform) -> Result<Vec<Uuid>> {
    Ok(crate::db::query_scalar(
        "SELECT id FROM integrations WHERE platform = $1 AND status = 'connected' ORDER BY id",
    )
    .bind(platform)
    .fetch_all(db)
    .await?)
}

/// Stores (or replaces) a project's integration with a platform; status `connected`.
pub async fn upsert(
    db: impl PgExecutor<'_>,
    project: Uuid,
    platform: Platform,
    credentials: &[u8],
    metadata: &Value,
) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO integrations (project_id, platform, credentials, metadata)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (project_id, platform) DO UPDATE
           SET credentials = excluded.credentials, metadata = excluded.metadata,
               status = 'connected', last_error = NULL, updated_at = now()
         RETURNING id",
    )
    .bind(project)
    .bind(platform)
    .bind(credentials)
    .bind(metadata)
    .fetch_one(db)
    .await?)
}

/// Integrations, of one project and/or tenant or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    project: Option<Uuid>,
    tenant: Option<Uuid>,
) -> Result<Vec<Integration>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE ($1::uuid IS NULL OR project_id = $1)
           AND ($2::uuid IS NULL OR tenant_id = $2)
         ORDER BY project_id, platform"
    )))
    .bind(project)
    .bind(tenant)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Integration> {
    crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound {
        what: "integration",
        id,
    })
}

/// The encrypted credentials of an integration.
pub async fn credentials(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<u8>> {
    crate::db::query_scalar("SELECT credentials FROM integrations WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound {
            what: "integration",
            id,
        })
}

/// Replaces the encrypted credentials (a refreshed token pair, a key rotation).
pub async fn set_credentials(db: impl PgExecutor<'_>, id: Uuid, credentials: &[u8]) -> Result<()> {
    crate::db::query("UPDATE integrations SET credentials = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(credentials)
        .execute(db)
        .await?;
    Ok(())
}

/// Every integration's encrypted credentials, locked for the caller's transaction.
pub async fn all_credentials_for_update(conn: &mut PgConnection) -> Result<Vec<(Uuid, Vec<u8>)>> {
    Ok(
        crate::db::query_as("SELECT id, credentials FROM integrations ORDER BY id FOR UPDATE")
            .fetch_all(conn)
            .await?,
    )
}

/// The project's integration for a channel (WordPress before Shopify for blogs).
pub async fn for_channel(
    db: impl PgExecutor<'_>,
    project: Uuid,
    channel: Channel,
) -> Result<Option<(Uuid, Platform)>> {
    let platforms = Platform::for_channel(channel);
    Ok(crate::db::query_as(
        "SELECT id, platform FROM integrations WHERE project_id = $1 AND platform = ANY($2)
         ORDER BY array_position($2, platform) LIMIT 1",
    )
    .bind(project)
    .bind(platforms)
    .fetch_optional(db)
    .await?)
}

/// Marks the integration broken (401/403, token errors), with the platform's words,
/// and raises `credentials_refused` for its tenant in the same statement (naming `job`,
/// the job that met the refusal, if any).
pub async fn mark_error(
    db: impl PgExecutor<'_>,
    id: Uuid,
    error: &str,
    job: Option<Uuid>,
) -> Result<()> {
    crate::db::query(
        "WITH i AS (
             UPDATE integrations SET status = 'error', last_error = $2, updated_at = now()
              WHERE id = $1
             RETURNING id, tenant_id, project_id, platform)
         SELECT copydesk_notify(i.tenant_id, i.project_id, $3, 'error', 'credentials_refused',
                    i.id::text,
                    format('%s refused the credentials of the integration of %s', i.platform,
                           coalesce(p.name, 'a project')),
                    $2, jsonb_build_object('integration_id', i.id, 'platform', i.platform))
           FROM i LEFT JOIN projects p ON p.id = i.project_id",
    )
    .bind(id)
    .bind(error)
    .bind(job)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the integration working after a successful authenticated call.
pub async fn mark_ok(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    crate::db::query(
        "UPDATE integrations SET status = 'connected', last_error = NULL, last_sync_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Every integration of a project is `disconnected`, with `why` as its last error.
pub async fn disconnect_project(db: impl PgExecutor<'_>, project: Uuid, why: &str) -> Result<u64> {
    Ok(crate::db::query(
        "UPDATE integrations SET status = 'disconnected', last_error = $2, updated_at = now()
         WHERE project_id = $1",
    )
    .bind(project)
    .bind(why)
    .execute(db)
    .await?
    .rows_affected())
}

/// Deletes every integration of a project.
pub async fn delete_project(db: impl PgExecutor<'_>, project: Uuid) -> Result<u64> {
    Ok(
        crate::db::query("DELETE FROM integrations WHERE project_id = $1")
            .bind(project)
            .execute(db)
            .await?
            .rows_affected(),
    )
}
