//! `cleanup`: retention and housekeeping. Deletes finished jobs past their retention
//! (per status), expired cache rows, rescues expired leases and archives idle projects.
//! Every delete runs in batches of `[cleanup] batch_size`, each its own short
//! statement, so cleanup never holds long locks on the queue. `runs` rows are never
//! deleted: they are the cost history.
//!
//! The same function serves the `cleanup` job (enqueued by each worker's scheduler) and
//! `copydesk cleanup` (for an external cron).

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

use super::JobContext;
use crate::{
    config::CleanupSettings,
    queue::{self, JobError, Outcome, ResultExt, sql},
};

pub const KIND: &str = "cleanup";
pub const SCHEMA: &str = include_str!("../../jobs/cleanup/schema.json");

/// The input of a `cleanup` job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupArgs {
    /// The scheduler tick that enqueued it, when a scheduler did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
}

/// What one cleanup did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub deleted_done: u64,
    pub deleted_failed: u64,
    pub deleted_cancelled: u64,
    pub rescued_leases: u64,
    pub deleted_brand_voice_cache: u64,
    pub deleted_catalog_items: u64,
    pub archived_projects: u64,
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let _args: CleanupArgs = serde_json::from_value(ctx.job.input).permanent()?;
    let report = cleanup(&ctx.pool, &ctx.settings.cleanup, false)
        .await
        .retryable()?;
    tracing::info!(?report, "cleanup finished");
    Ok(Outcome::done_with(json!(report)))
}

/// Runs (or with `dry_run`, counts) one cleanup pass.
pub async fn cleanup(
    pool: &PgPool,
    cfg: &CleanupSettings,
    dry_run: bool,
) -> queue::Result<CleanupReport> {
    let mut r = CleanupReport {
        dry_run,
        ..CleanupReport::default()
    };
    let batch = cfg.batch_size.max(1);
    if dry_run {
        r.rescued_leases = sql::job_count_expired(pool).await?;
    } else {
        loop {
            let rescued = sql::job_rescue_expired(pool, batch).await?;
            r.rescued_leases += rescued.len() as u64;
            let kinds: Vec<&str> = rescued
                .iter()
                .filter(|(_, _, s)| s == "queued")
                .map(|(_, k, _)| k.as_str())
                .collect();
            sql::job_notify(pool, &kinds).await?;
            if (rescued.len() as i64) < batch {
                break;
            }
        }
    }
    for (status, days, slot) in [
        ("done", cfg.done_retention_days, &mut r.deleted_done),
        ("failed", cfg.failed_retention_days, &mut r.deleted_failed),
        (
            "cancelled",
            cfg.cancelled_retention_days,
            &mut r.deleted_cancelled,
        ),
    ] {
        *slot = if dry_run {
            sql::job_count_finished(pool, status, days).await?
        } else {
            let mut total = 0;
            loop {
                let n = sql::job_delete_finished(pool, status, days, batch).await?;
                total += n;
                if (n as i64) < batch {
                    break total;
                }
            }
        };
    }
    r.deleted_brand_voice_cache =
        expire_batched(pool, "brand_voice_cache", "url", batch, dry_run).await?;
    r.deleted_catalog_items = expire_batched(pool, "catalog_items", "id", batch, dry_run).await?;
    r.archived_projects =
        archive_idle_projects(pool, cfg.archive_idle_projects_days, dry_run).await?;
    Ok(r)
}

async fn expire_batched(
    pool: &PgPool,
    table: &'static str,
    key: &'static str,
    batch: i64,
    dry_run: bool,
) -> queue::Result<u64> {
    if dry_run {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE expires_at < now()"
        )))
        .fetch_one(pool)
        .await?;
        return Ok(n as u64);
    }
    let mut total = 0;
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {key} IN (
                 SELECT {key} FROM {table} WHERE expires_at < now()
                 LIMIT $1 FOR UPDATE SKIP LOCKED)"
        )))
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if (n as i64) < batch {
            return Ok(total);
        }
    }
}

/// Projects with no job in the last `days`, none in flight or waiting, and no change.
async fn archive_idle_projects(pool: &PgPool, days: i32, dry_run: bool) -> queue::Result<u64> {
    let idle = "FROM projects p
        WHERE p.archived_at IS NULL AND p.updated_at < now() - $1 * interval '1 day'
          AND NOT EXISTS (
              SELECT 1 FROM jobs j WHERE j.project_id = p.id
                AND (j.created_at > now() - $1 * interval '1 day'
                     OR j.status IN ('queued', 'running', 'needs_approval')))";
    if dry_run {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {idle}")))
            .bind(days)
            .fetch_one(pool)
            .await?;
        return Ok(n as u64);
    }
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE projects SET archived_at = now(), updated_at = now()
         WHERE id IN (SELECT p.id {idle})"
    )))
    .bind(days)
    .execute(pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_the_stored_example() {
        let stored = r#"{"tick":"2026-11-22T00:15:00+00:00"}"#;
        let args: CleanupArgs = serde_json::from_str(stored).unwrap();
        assert_eq!(serde_json::to_string(&args).unwrap(), stored);
    }
}
