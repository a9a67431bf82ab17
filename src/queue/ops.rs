//! What operators do to jobs: list, show, retry, cancel, stats. The CLI and (later) the
//! HTTP API call these same functions.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Error, Job, Result, sql};

/// One job with everything attached to it.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub runs: Vec<Value>,
    pub artifacts: Vec<Value>,
    pub approvals: Vec<Value>,
}

/// A job with its runs, artifacts and approvals.
pub async fn show(pool: &PgPool, id: Uuid) -> Result<JobDetail> {
    let job = sql::job_get(pool, id).await?.ok_or(Error::NotFound(id))?;
    let rows = |q: &'static str| async move {
        sqlx::query_scalar::<_, Value>(q)
            .bind(id)
            .fetch_all(pool)
            .await
    };
    Ok(JobDetail {
        runs: rows(
            "SELECT to_jsonb(r) - 'job_id' FROM runs r WHERE job_id = $1 ORDER BY created_at",
        )
        .await?,
        artifacts: rows(
            "SELECT jsonb_build_object('id', id, 'kind', kind, 'channel', channel, 'version', version,
                    'source', source, 'title', title, 'created_at', created_at)
             FROM artifacts WHERE job_id = $1 ORDER BY created_at",
        )
        .await?,
        approvals: rows(
            "SELECT to_jsonb(a) - 'job_id' FROM approvals a WHERE job_id = $1 ORDER BY created_at",
        )
        .await?,
        job,
    })
}

/// A failed or cancelled job back to `queued`, attempts reset; wakes its workers.
pub async fn retry(pool: &PgPool, id: Uuid) -> Result<Job> {
    let mut tx = pool.begin().await?;
    let Some(job) = sql::job_retry(&mut *tx, id).await? else {
        let status = current_status(&mut tx, id).await?;
        return Err(Error::WrongState {
            id,
            status,
            action: "retry",
            needs: "failed or cancelled",
        });
    };
    sql::job_notify(&mut *tx, &[job.kind.as_str()]).await?;
    tx.commit().await?;
    Ok(job)
}

/// A queued job to `cancelled` at once; a running one too, its result discarded when
/// its worker reports (the fence no longer matches).
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<Job> {
    let mut tx = pool.begin().await?;
    let Some(job) = sql::job_cancel(&mut *tx, id).await? else {
        let status = current_status(&mut tx, id).await?;
        return Err(Error::WrongState {
            id,
            status,
            action: "cancel",
            needs: "queued or running",
        });
    };
    tx.commit().await?;
    Ok(job)
}

async fn current_status(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<String> {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound(id))
}

/// `queue stats`: counts per kind and status, the oldest ready job's age, and what
/// finished in the last five minutes.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub rows: Vec<sql::StatsRow>,
    pub oldest_ready_secs: Option<f64>,
    pub done_last_5m: i64,
    pub failed_last_5m: i64,
}

pub async fn stats(pool: &PgPool) -> Result<QueueStats> {
    let rows = sql::queue_stats(pool).await?;
    let oldest_ready_secs = rows
        .iter()
        .filter_map(|r| r.oldest_ready_secs)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let sum = |status: &str| {
        rows.iter()
            .filter(|r| r.status == status)
            .map(|r| r.finished_last_5m)
            .sum()
    };
    Ok(QueueStats {
        oldest_ready_secs,
        done_last_5m: sum("done"),
        failed_last_5m: sum("failed"),
        rows,
    })
}
