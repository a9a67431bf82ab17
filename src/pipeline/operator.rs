//! What an operator does to a job by hand, each recorded in `audit_log` with who did
//! it, in the same transaction as the change: retry a failed or cancelled job, cancel
//! a queued or running one. The CLI and the HTTP API call these.

use crate::db::Db;
use copydesk_queue::{Job, ops};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use crate::store;

/// A failed or cancelled job back to `queued`, attempts reset, as done `by`.
pub async fn retry(pool: &Db, id: Uuid, by: &str) -> Result<Job> {
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let job = retry_in(&mut tx, id, by).await?;
    tx.commit().await.map_err(store::Error::from)?;
    Ok(job)
}

/// [`retry`] inside the caller's transaction.
pub async fn retry_in(conn: &mut PgConnection, id: Uuid, by: &str) -> Result<Job> {
    let job = ops::retry_in(&mut *conn, id).await?;
    record(conn, &job, "job.retried", by).await?;
    Ok(job)
}

/// A queued or running job cancelled, as done `by`.
pub async fn cancel(pool: &Db, id: Uuid, by: &str) -> Result<Job> {
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let job = cancel_in(&mut tx, id, by).await?;
    tx.commit().await.map_err(store::Error::from)?;
    Ok(job)
}

/// [`cancel`] inside the caller's transaction.
pub async fn cancel_in(conn: &mut PgConnection, id: Uuid, by: &str) -> Result<Job> {
    let job = ops::cancel_in(&mut *conn, id).await?;
    record(conn, &job, "job.cancelled", by).await?;
    Ok(job)
}

async fn record(conn: &mut PgConnection, job: &Job, action: &str, by: &str) -> Result<()> {
    store::audit::record(
        conn,
        &store::audit::Entry {
            tenant: Some(job.tenant_id),
            actor: by,
            action,
            target_table: Some("jobs"),
            target_id: Some(job.id),
            details: json!({"kind": job.kind, "status": job.status, "last_error": job.last_error}),
        },
    )
    .await?;
    Ok(())
}
