//! `approvals`: a person's yes or no between two steps, and the queue of decisions the
//! workers apply (decided, not yet applied). Only `pipeline` calls the writers here.

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::ApprovalStatus;

/// The NOTIFY channel a decision wakes (sent by the `approvals_notify` trigger).
pub const CHANNEL: &str = "copydesk_approvals";

/// One approval, as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Approval {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub job_id: Option<Uuid>,
    pub artifact_id: Uuid,
    pub status: ApprovalStatus,
    pub decided_by: Option<String>,
    pub notes: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub applied_at: Option<DateTime<Utc>>,
    /// Why applying the decision failed last time (it is tried again later).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, job_id, artifact_id, status, decided_by, notes, decided_at, applied_at, last_error, created_at";

/// A pending approval of `artifact` for the waiting `job`.
pub async fn create_pending(db: impl PgExecutor<'_>, job: Uuid, artifact: Uuid) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO approvals (job_id, artifact_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(job)
    .bind(artifact)
    .fetch_one(db)
    .await?)
}

/// An approval given by the configuration rather than a person (already applied).
pub async fn create_approved(
    db: impl PgExecutor<'_>,
    job: Uuid,
    artifact: Uuid,
    by: &str,
    notes: &str,
) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO approvals (job_id, artifact_id, status, decided_by, notes, decided_at, applied_at)
         VALUES ($1, $2, 'approved', $3, $4, now(), now()) RETURNING id",
    )
    .bind(job)
    .bind(artifact)
    .bind(by)
    .bind(notes)
    .fetch_one(db)
    .await?)
}

/// Records a decision on a pending approval, exactly as another service's UPDATE would.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    status: ApprovalStatus,
    by: &str,
    notes: Option<&str>,
) -> Result<Approval> {
    let row: Option<Approval> = crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE approvals SET status = $2, decided_by = $3, notes = coalesce($4, notes)
         WHERE id = $1 AND status = 'pending'
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(status)
    .bind(by)
    .bind(notes)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(a) = row {
        return Ok(a);
    }
    Err(match get(conn, id).await? {
        None => Error::NotFound {
            what: "approval",
            id,
        },
        Some(a) => Error::WrongState {
            what: "approval",
            id,
            state: a.status.to_string(),
            action: "a decision",
            needs: "pending",
        },
    })
}

/// One approval.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Approval>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM approvals WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Approvals, newest first, optionally of one status, project and tenant.
pub async fn list(
    pool: &Db,
    status: Option<ApprovalStatus>,
    project: Option<Uuid>,
    tenant: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Approval>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM approvals a
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id AND j.project_id = $2))
           AND ($4::uuid IS NULL OR tenant_id = $4)
         ORDER BY created_at DESC LIMIT $3"
    )))
    .bind(status)
    .bind(project)
    .bind(limit)
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// A page of approvals of one status (all without it) and project, by creation time
/// (oldest first when `oldest_first`, the inbox's order; else newest first), starting
/// after the approval created `after.0` with id `after.1`.
pub async fn page(
    db: impl PgExecutor<'_>,
    status: Option<ApprovalStatus>,
    project: Option<Uuid>,
    oldest_first: bool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Approval>> {
    let (cmp, dir) = if oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM approvals a
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id AND j.project_id = $2))
           AND ($3::timestamptz IS NULL OR (created_at, id) {cmp} ($3, $4))
         ORDER BY created_at {dir}, id {dir} LIMIT $5"
    )))
    .bind(status)
    .bind(project)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// One approval with the artifact it is about, as JSON.
pub async fn show(db: impl PgExecutor<'_>, id: Uuid) -> Result<Value> {
    crate::db::query_scalar(
        "SELECT to_jsonb(p) || jsonb_build_object('artifact',
                (SELECT jsonb_build_object('kind', kind, 'channel', channel, 'version', version,
                        'title', title, 'content', content) FROM artifacts WHERE id = p.artifact_id))
         FROM approvals p WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound {
        what: "approval",
        id,
    })
}

/// A decided approval waiting to be applied, with the job that waits for it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Decided {
    pub id: Uuid,
    pub status: ApprovalStatus,
    pub notes: Option<String>,
    pub artifact_id: Uuid,
    pub apply_attempts: i32,
    pub job_id: Option<Uuid>,
    pub job_kind: Option<String>,
    pub job_input: Option<Value>,
    pub project_id: Option<Uuid>,
}

/// Claims up to `limit` decided, unapplied approvals that are due (row locks held by
/// the caller's transaction; others skip them).
pub async fn claim_decided(conn: &mut PgConnection, limit: i64) -> Result<Vec<Decided>> {
    Ok(crate::db::query_as(
        "SELECT a.id, a.status, a.notes, a.artifact_id, a.apply_attempts, a.job_id,
                j.kind AS job_kind, j.input AS job_input, j.project_id
         FROM approvals a LEFT JOIN jobs j ON j.id = a.job_id
         WHERE a.status <> 'pending' AND a.applied_at IS NULL
           AND (a.apply_after IS NULL OR a.apply_after <= now())
         ORDER BY a.decided_at, a.id
         LIMIT $1
         FOR UPDATE OF a SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The decision has been applied: it is not claimed again.
pub async fn mark_applied(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    crate::db::query("UPDATE approvals SET applied_at = now(), last_error = NULL WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Applying the decision failed: say why on the row and try again after `retry_in`.
pub async fn record_apply_error(
    db: impl PgExecutor<'_>,
    id: Uuid,
    error: &str,
    retry_in: std::time::Duration,
) -> Result<()> {
    crate::db::query(
        "UPDATE approvals SET last_error = $2, apply_attempts = apply_attempts + 1,
                apply_after = now() + $3 * interval '1 millisecond'
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_in.as_millis() as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// A pending approval of `from` now refers to `to` (a person edited the draft).
pub async fn repoint_pending(db: impl PgExecutor<'_>, from: Uuid, to: Uuid) -> Result<u64> {
    Ok(crate::db::query(
        "UPDATE approvals SET artifact_id = $2 WHERE artifact_id = $1 AND status = 'pending'",
    )
    .bind(from)
    .bind(to)
    .execute(db)
    .await?
    .rows_affected())
}
