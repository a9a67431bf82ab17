//! `notifications`: what needs a person, as rows of its tenant. They are raised in the
//! transaction of their cause — by the database's own triggers for a job that failed
//! for good and an approval waiting (so plain SQL raises them too), by [`raise`] for
//! causes the application sees — and repeats of one cause fold into its unread row
//! (`count`, `last_at`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;
use crate::domain::Severity;

/// A notification to raise.
#[derive(Debug, Clone)]
pub struct New<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub job: Option<Uuid>,
    pub severity: Severity,
    /// What happened, e.g. `job_failed`, `approval_waiting`.
    pub kind: &'a str,
    /// The cause within its kind: repeats of it fold into one unread row.
    pub cause: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub data: Value,
}

/// Raises `n` in the caller's transaction (or folds it into the unread one of its
/// cause); returns its id.
pub async fn raise(db: impl PgExecutor<'_>, n: &New<'_>) -> Result<Uuid> {
    Ok(
        crate::db::query_scalar("SELECT copydesk_notify($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(n.tenant)
            .bind(n.project)
            .bind(n.job)
            .bind(n.severity)
            .bind(n.kind)
            .bind(n.cause)
            .bind(n.title)
            .bind(n.body)
            .bind(&n.data)
            .fetch_one(db)
            .await?,
    )
}

/// One notification as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub tenant: String,
    pub project_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub severity: Severity,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub count: i32,
    pub created_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub read_by: Option<String>,
}

/// Notifications, latest first: of one tenant or all, unread ones only or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    unread: bool,
    limit: i64,
) -> Result<Vec<Notification>> {
    Ok(crate::db::query_as(
        "SELECT n.id, t.slug AS tenant, n.project_id, n.job_id, n.severity, n.kind, n.title,
                n.body, n.data, n.count, n.created_at, n.last_at, n.read_at, n.read_by
           FROM notifications n JOIN tenants t ON t.id = n.tenant_id
          WHERE ($1::uuid IS NULL OR n.tenant_id = $1) AND (NOT $2 OR n.read_at IS NULL)
          ORDER BY n.last_at DESC, n.id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(unread)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Marks one notification read by `by`; false when there is no such unread one (of
/// `tenant`, when given).
pub async fn read(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    id: Uuid,
    by: &str,
) -> Result<bool> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $3
          WHERE id = $1 AND read_at IS NULL AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Marks every unread notification (of `tenant`, when given) read by `by`; how many.
pub async fn read_all(db: impl PgExecutor<'_>, tenant: Option<Uuid>, by: &str) -> Result<u64> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $2
          WHERE read_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1)",
    )
    .bind(tenant)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected())
}

/// Raises `approval_reminder` for every approval still pending `hours` after it was
/// created and not reminded of before (or with `dry_run`, counts them: the CASE keeps
/// the raise from being evaluated); how many.
pub async fn remind_approvals(db: impl PgExecutor<'_>, hours: u32, dry_run: bool) -> Result<u64> {
    let n: i64 = crate::db::query_scalar(
        "SELECT count(*) FILTER (WHERE CASE WHEN $2 THEN true ELSE copydesk_notify(
                    a.tenant_id, ar.project_id, a.job_id, 'warning', 'approval_reminder', a.id::text,
                    format('%s has waited %s hours for approval',
                           copydesk_approval_subject(a.artifact_id),
                           floor(extract(epoch FROM now() - a.created_at) / 3600)),
                    '', jsonb_build_object('approval_id', a.id, 'waiting_since', a.created_at))
                  IS NOT NULL END)
           FROM approvals a JOIN artifacts ar ON ar.id = a.artifact_id
          WHERE a.status = 'pending' AND a.created_at < now() - $1 * interval '1 hour'
            AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.tenant_id = a.tenant_id AND n.kind = 'approval_reminder'
                               AND n.cause = a.id::text)",
    )
    .bind(f64::from(hours))
    .bind(dry_run)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}
