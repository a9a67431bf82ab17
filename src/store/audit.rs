//! `audit_log`: who did what to which row, and when. Append-only: the database refuses
//! any UPDATE, DELETE or TRUNCATE, the owner's included. The CLI records `--by` or the
//! OS user; the HTTP API will record the token's name.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;

/// One action to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Whose row it was (`None`: the writer's tenant, `default` for the owner).
    pub tenant: Option<Uuid>,
    pub actor: &'a str,
    /// What was done, e.g. `approval.approved`, `job.retried`, `token.created`.
    pub action: &'a str,
    pub target_table: Option<&'a str>,
    pub target_id: Option<Uuid>,
    pub details: Value,
}

/// Records an action (inside the caller's transaction, with the action itself). Ids are
/// time-ordered, so actions of one transaction (which share its `now()`) list in the
/// order they were recorded.
pub async fn record(db: impl PgExecutor<'_>, e: &Entry<'_>) -> Result<()> {
    crate::db::query(
        "INSERT INTO audit_log (id, tenant_id, actor, action, target_table, target_id, details)
         VALUES ($7, $1, $2, $3, $4, $5, $6)",
    )
    .bind(e.tenant)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.target_table)
    .bind(e.target_id)
    .bind(&e.details)
    .bind(Uuid::now_v7())
    .execute(db)
    .await?;
    Ok(())
}

/// One recorded action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Recorded {
    pub id: Uuid,
    pub tenant: String,
    pub actor: String,
    pub action: String,
    pub target_table: Option<String>,
    pub target_id: Option<Uuid>,
    pub details: Value,
    pub at: DateTime<Utc>,
}

/// Recorded actions, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Recorded>> {
    Ok(crate::db::query_as(
        "SELECT a.id, t.slug AS tenant, a.actor, a.action, a.target_table, a.target_id, a.details, a.at
         FROM audit_log a JOIN tenants t ON t.id = a.tenant_id
         WHERE ($1::uuid IS NULL OR a.tenant_id = $1) AND ($2::timestamptz IS NULL OR a.at >= $2)
           AND ($4::timestamptz IS NULL OR (a.at, a.id) < ($4, $5))
         ORDER BY a.at DESC, a.id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(since)
    .bind(limit)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .fetch_all(db)
    .await?)
}
