//! What the application does to jobs beyond enqueueing them: get, list, count, retry,
//! cancel, end a job that waited for a person, stats, retention; and claims, finishes
//! and heartbeats, for tools, tests and benchmarks (workers make them through their
//! backend). The CLI, the HTTP API and the pipeline call these; the statements
//! themselves stay private to the engine.

use std::time::Duration;

use crate::db::Db;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub use crate::sql::{BulkAction, FinishRow, JobFilter, StatsRow};
use crate::{ClaimedJob, Error, Job, JobStatus, Result, sql};

/// One job by id.
pub async fn get(pool: &Db, id: Uuid) -> Result<Job> {
    sql::job_get(pool, id).await?.ok_or(Error::NotFound(id))
}

/// One job by id, if the caller may see it (inside the caller's transaction).
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Job>> {
    sql::job_get(db, id).await
}

/// Up to `limit` jobs matching `filter`, newest first, after the job `after`.
pub async fn page(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Job>> {
    sql::job_page(db, filter, after, limit).await
}

/// How many jobs match `filter` and are in one of `statuses`.
pub async fn count(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    statuses: &[JobStatus],
) -> Result<i64> {
    sql::job_count(db, filter, statuses).await
}

/// Ends a job waiting for a person (`needs_approval`) as `status`, with `error` as its
/// last error when given; whether the job was waiting.
pub async fn end_waiting(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: JobStatus,
    error: Option<&str>,
) -> Result<bool> {
    sql::job_end_waiting(db, id, status, error).await
}

/// Claims up to `limit` ready jobs of `kind` for `worker` as a worker's fair claim does
/// (taking from every project in turn), committing at once.
pub async fn claim(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    sql::job_claim(db, worker, kind, limit, lease).await
}

/// The plain claim: the best `limit` ready jobs of `kind`, whoever's they are.
pub async fn claim_plain(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    sql::job_claim_plain(db, worker, kind, limit, lease).await
}

/// The plain claim from floors, as a worker makes it (see [`crate::floors`]): each
/// priority in `floors` read from its floor (highest priority first), the others from
/// their head.
pub async fn claim_from(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
    floors: &[(i32, chrono::DateTime<chrono::Utc>)],
) -> Result<Vec<ClaimedJob>> {
    sql::job_claim_from(db, worker, kind, limit, lease, floors).await
}

/// The plain claim as a worker makes it from its floors: where `start` says (see
/// [`crate::floors::Start::alone`]).
pub async fn claim_start(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
    start: &crate::floors::Start,
) -> Result<Vec<ClaimedJob>> {
    sql::job_claim_start(db, worker, kind, limit, lease, start).await
}

/// Finishes `rows` for `worker` in one statement, as a worker's batched finish does (each
/// fenced on its own lease). Returns `(id, kind, new status)` of the rows written.
pub async fn finish(
    db: impl PgExecutor<'_>,
    worker: &str,
    rows: &[FinishRow],
) -> Result<Vec<(Uuid, String, JobStatus)>> {
    sql::job_finish_many(db, worker, rows).await
}

/// Extends to `lease` the leases of `ids` that `worker` holds with less than
/// `renew_below` left, as a worker's heartbeat does. Returns how many.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[Uuid],
    lease: Duration,
    renew_below: Duration,
) -> Result<u64> {
    sql::job_heartbeat(db, worker, ids, lease, renew_below).await
}

/// Hands claimed jobs that never started back to the queue, as a worker does with the
/// jobs its buffer holds when their kind turns out slow. Returns `(id, kind)` of each.
pub async fn unclaim(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>> {
    sql::job_unclaim(db, worker, ids).await
}

/// A failed or cancelled job back to `queued`, attempts reset; wakes its workers.
pub async fn retry(pool: &Db, id: Uuid) -> Result<Job> {
    let mut tx = pool.begin().await?;
    let job = retry_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job)
}

/// [`retry`] inside the caller's transaction (the wake is sent when it commits).
pub async fn retry_in(conn: &mut PgConnection, id: Uuid) -> Result<Job> {
    let Some(job) = sql::job_retry(&mut *conn, id).await? else {
        return Err(wrong_state(conn, id, "retry", "failed or cancelled").await);
    };
    sql::job_notify(&mut *conn, &[job.kind.as_str()]).await?;
    Ok(job)
}

/// A queued job to `cancelled` at once; a running one too, its result discarded when
/// its worker reports (the fence no longer matches).
pub async fn cancel(pool: &Db, id: Uuid) -> Result<Job> {
    let mut tx = pool.begin().await?;
    let job = cancel_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job)
}

/// [`cancel`] inside the caller's transaction.
pub async fn cancel_in(conn: &mut PgConnection, id: Uuid) -> Result<Job> {
    let Some(job) = sql::job_cancel(&mut *conn, id).await? else {
        return Err(wrong_state(conn, id, "cancel", "queued or running").await);
    };
    Ok(job)
}

/// Retries or cancels up to `limit` jobs matching `filter`, inside the caller's
/// transaction; retried kinds' workers are woken when it commits. Returns the ids.
pub async fn bulk_in(
    conn: &mut PgConnection,
    action: sql::BulkAction,
    filter: &sql::JobFilter,
    limit: i64,
) -> Result<Vec<Uuid>> {
    let done = sql::job_bulk(&mut *conn, action, filter, limit).await?;
    if action == sql::BulkAction::Retry && !done.is_empty() {
        let mut kinds: Vec<&str> = done.iter().map(|(_, k)| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        sql::job_notify(&mut *conn, &kinds).await?;
    }
    Ok(done.into_iter().map(|(id, _)| id).collect())
}

async fn wrong_state(
    conn: &mut PgConnection,
    id: Uuid,
    action: &'static str,
    needs: &'static str,
) -> Error {
    match sql::job_status(conn, id).await {
        Ok(Some(status)) => Error::WrongState {
            id,
            status,
            action,
            needs,
        },
        Ok(None) => Error::NotFound(id),
        Err(e) => e,
    }
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

pub async fn stats(db: impl sqlx::PgExecutor<'_>) -> Result<QueueStats> {
    let rows = sql::queue_stats(db).await?;
    let oldest_ready_secs = rows
        .iter()
        .filter_map(|r| r.oldest_ready_secs)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let sum = |status: JobStatus| {
        rows.iter()
            .filter(|r| r.status == status)
            .map(|r| r.finished_last_5m)
            .sum()
    };
    Ok(QueueStats {
        oldest_ready_secs,
        done_last_5m: sum(JobStatus::Done),
        failed_last_5m: sum(JobStatus::Failed),
        rows,
    })
}

/// Per kind with ready jobs, the wait of its oldest ready job in seconds (what a stall
/// check needs, without the counts of [`stats`]).
pub async fn oldest_ready(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<(String, f64)>> {
    sql::oldest_ready(db).await
}

/// Every worker process with a row in `copydesk_workers`, live ones first.
pub async fn workers(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<sql::WorkerRow>> {
    sql::workers(db).await
}

/// Every kind a job may name: its contract versions, what it stands for if it is a
/// former name, and the live processes claiming it.
pub async fn kinds(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<sql::KindRow>> {
    sql::kinds(db).await
}

/// How many live worker processes claim each kind (kinds none claims are absent).
pub async fn live_workers(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<(String, i64)>> {
    sql::live_workers(db).await
}

/// What [`delete_finished`] removed, per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// The steps the deleted jobs kept (deleted with them; not counted by a dry run).
    pub steps: u64,
}

/// Deletes finished jobs older than their status's retention (days), `batch` rows per
/// statement so the queue is never locked for long, each batch from where the last
/// ended; with `dry_run`, only counts them.
pub async fn delete_finished(
    pool: &Db,
    days: [(JobStatus, i32); 3],
    batch: i64,
    dry_run: bool,
) -> Result<Retention> {
    let mut r = Retention::default();
    for (status, days) in days {
        let n = if dry_run {
            sql::job_count_finished(pool, status, days).await?
        } else {
            let (mut total, mut from) = (0, None);
            loop {
                let gone = sql::job_delete_finished(pool, status, days, batch, from).await?;
                total += gone.jobs;
                r.steps += gone.steps;
                from = gone.last;
                if (gone.jobs as i64) < batch {
                    break total;
                }
            }
        };
        match status {
            JobStatus::Done => r.done += n,
            JobStatus::Failed => r.failed += n,
            _ => r.cancelled += n,
        }
    }
    Ok(r)
}

/// Returns every job whose lease ran out to the queue (`batch` per statement; the
/// requeue trigger wakes its workers); with `dry_run`, only counts them.
pub async fn rescue_expired(pool: &Db, batch: i64, dry_run: bool) -> Result<u64> {
    if dry_run {
        return sql::job_count_expired(pool).await;
    }
    let mut total = 0;
    loop {
        // The requeue trigger wakes the workers of what went back to the queue.
        let rescued = sql::job_rescue_expired(pool, batch, None).await?.rows;
        total += rescued.len() as u64;
        if (rescued.len() as i64) < batch {
            return Ok(total);
        }
    }
}
