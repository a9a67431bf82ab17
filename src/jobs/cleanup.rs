//! `cleanup`: retention and housekeeping. Deletes finished jobs past their retention
//! (per status) with the steps they kept, expired cache rows, rescues expired leases,
//! archives idle projects and gives back budget reservations whose call's process died.
//! Every delete runs in batches of `[cleanup] batch_size`, each its own short
//! statement, so cleanup never holds long locks on the queue. `runs` rows are never
//! deleted: they are the cost history.
//!
//! The same function serves the `cleanup` job (enqueued on `[cleanup] schedule` by
//! every worker) and `copydesk cleanup` (for an external cron).

use crate::db::Db;
use copydesk_queue::{JobArgs, JobError, JobStatus, Outcome, ResultExt, ops};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::{
    config::CleanupSettings,
    store::{self, caches::Cache},
};

/// The input of a `cleanup` job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupArgs {
    /// The scheduler tick that enqueued it, when a scheduler did (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
}

impl JobArgs for CleanupArgs {
    const KIND: &'static str = "cleanup";
    const SCHEMA: &'static str = include_str!("../../jobs/cleanup/schema.json");
}

/// What one cleanup did (or, with `dry_run`, would do): the job's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub deleted_done: u64,
    pub deleted_failed: u64,
    pub deleted_cancelled: u64,
    /// The steps the deleted jobs had kept, deleted with them (0 in a dry run).
    #[serde(default)]
    pub deleted_job_steps: u64,
    pub rescued_leases: u64,
    pub deleted_brand_voice_cache: u64,
    pub deleted_catalog_items: u64,
    pub archived_projects: u64,
    /// Budget reservations of model calls whose process died, given back.
    #[serde(default)]
    pub released_reservations: u64,
    /// Approvals waiting past `approval_reminder_hours`, reminded of.
    #[serde(default)]
    pub reminded_approvals: u64,
    /// Lifecycle events past `event_retention_days` with no delivery pending.
    #[serde(default)]
    pub deleted_events: u64,
}

/// Errors of a cleanup pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Queue(#[from] copydesk_queue::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub async fn run(ctx: Ctx, _args: CleanupArgs) -> Result<Outcome, JobError> {
    let report = cleanup(&ctx.pool, &ctx.app.settings.cleanup, false)
        .await
        .retryable()?;
    tracing::info!(?report, "cleanup finished");
    Ok(Outcome::done_with(serde_json::json!(report)))
}

/// Runs (or with `dry_run`, counts) one cleanup pass.
pub async fn cleanup(
    pool: &Db,
    cfg: &CleanupSettings,
    dry_run: bool,
) -> Result<CleanupReport, Error> {
    let batch = cfg.batch_size.max(1);
    let rescued_leases = ops::rescue_expired(pool, batch, dry_run).await?;
    let deleted = ops::delete_finished(
        pool,
        [
            (JobStatus::Done, cfg.done_retention_days),
            (JobStatus::Failed, cfg.failed_retention_days),
            (JobStatus::Cancelled, cfg.cancelled_retention_days),
        ],
        batch,
        dry_run,
    )
    .await?;
    Ok(CleanupReport {
        dry_run,
        deleted_done: deleted.done,
        deleted_failed: deleted.failed,
        deleted_cancelled: deleted.cancelled,
        deleted_job_steps: deleted.steps,
        rescued_leases,
        deleted_brand_voice_cache: store::caches::expire(pool, Cache::BrandVoices, batch, dry_run)
            .await?,
        deleted_catalog_items: store::caches::expire(pool, Cache::CatalogItems, batch, dry_run)
            .await?,
        archived_projects: store::projects::archive_idle(
            pool,
            cfg.archive_idle_projects_days,
            dry_run,
        )
        .await?,
        released_reservations: if dry_run {
            0
        } else {
            store::budgets::sweep_expired(pool, None).await?
        },
        reminded_approvals: match cfg.approval_reminder_hours {
            0 => 0,
            hours => store::notifications::remind_approvals(pool, hours, dry_run).await?,
        },
        deleted_events: store::events::expire(pool, cfg.event_retention_days, batch, dry_run)
            .await?,
    })
}
