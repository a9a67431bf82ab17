//! Running one attempt of a job and committing its finish. Both the apalis backend and
//! [`run_once`] (one deterministic step, for tests and tools) go through here.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::db::Db;
use backon::BackoffBuilder;
use futures::FutureExt;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    ClaimedJob, JobStatus, Outcome, Result,
    config::{QueueConfig, RetrySettings},
    registry::{Catalog, JobContext, Registry},
    sql,
};

/// What a worker needs to run jobs: the pool, the engine's settings, the kinds it
/// knows, and the application's context `C`, handed to every handler.
pub struct Runner<C> {
    pub pool: Db,
    pub config: Arc<QueueConfig>,
    pub registry: Registry<C>,
    pub app: C,
    catalog: Catalog,
}

impl<C: Clone> Clone for Runner<C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
            registry: self.registry.clone(),
            app: self.app.clone(),
            catalog: self.catalog.clone(),
        }
    }
}

/// One attempt that has ended, on its way to the finish transaction.
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: Uuid,
    pub kind: String,
    pub attempts: i32,
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The trace of this run (its span's, or the job's own when no span is exported):
    /// the jobs its effects enqueue belong to it.
    pub trace: Option<crate::trace::TraceContext>,
}

/// How a finish ended for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The row now has this status.
    Status(JobStatus),
    /// The lease was lost (rescued, cancelled, or released): nothing was written.
    LostLease,
}

impl<C: Clone + Send + Sync + 'static> Runner<C> {
    /// A runner of `registry`'s kinds with `app` as every handler's context.
    pub fn new(pool: Db, config: QueueConfig, registry: Registry<C>, app: C) -> Self {
        let catalog = registry.catalog();
        Self {
            pool,
            config: Arc::new(config),
            registry,
            app,
            catalog,
        }
    }

    /// The input contracts of the runner's kinds (what `enqueue` checks against).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Runs one attempt: checks the input, calls the handler inside the job's span,
    /// turns a panic into a failed attempt. Never panics and never errors.
    pub async fn execute(&self, job: ClaimedJob) -> Finished {
        let span = job_span(&job);
        let trace = job.trace();
        crate::trace::adopt(&span, trace.as_ref());
        let run_trace = crate::trace::TraceContext::of_span(&span).or_else(|| trace.clone());
        let started = Instant::now();
        let (id, kind, attempts) = (job.id, job.kind.clone(), job.attempts);
        // How long it waited between becoming ready (its `run_at`, or its insert when
        // that came later) and starting here; the database's clock against this
        // process's, so skew between them shows here.
        let ready = job.run_at.max(job.created_at);
        let waited = (chrono::Utc::now() - ready).to_std().unwrap_or_default();
        metrics::histogram!("copydesk_job_wait_seconds", "kind" => kind.clone())
            .record(waited.as_secs_f64());
        let outcome = async {
            tracing::debug!("started");
            let outcome = crate::trace::running(trace, self.call(job)).await;
            if crate::trace::exporting() {
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                let span = tracing::Span::current();
                span.set_attribute("copydesk.job.outcome", outcome.label());
                if let Outcome::Retry { error, .. } | Outcome::Fail { error } = &outcome {
                    span.set_status(opentelemetry::trace::Status::error(error.clone()));
                }
            }
            match &outcome {
                Outcome::Retry { error, .. } => {
                    tracing::warn!(%error, "attempt failed, will retry if attempts remain")
                }
                Outcome::Fail { error } => tracing::error!(%error, "failed permanently"),
                Outcome::Wait { note, after } => {
                    tracing::info!(%note, after_ms = after.as_millis() as u64, "waiting, attempt not counted")
                }
                Outcome::GiveBack { note, after } => {
                    tracing::info!(%note, after_ms = after.as_millis() as u64, "given back for another worker, attempt not counted")
                }
                other => tracing::debug!(outcome = other.label(), "finished"),
            }
            outcome
        }
        .instrument(span)
        .await;
        Finished {
            id,
            kind,
            attempts,
            outcome,
            elapsed: started.elapsed(),
            trace: run_trace,
        }
    }

    async fn call(&self, job: ClaimedJob) -> Outcome {
        let Some(handler) = self.registry.handler(&job.kind) else {
            return Outcome::Fail {
                error: format!("no handler for kind {:?} in this worker", job.kind),
            };
        };
        if let Err(e) = self.catalog.validate(&job.kind, &job.input) {
            return self.unreadable(&job, e).await;
        }
        let ctx = JobContext {
            job,
            pool: self.pool.clone(),
            catalog: self.catalog.clone(),
            app: self.app.clone(),
        };
        match AssertUnwindSafe(handler(ctx)).catch_unwind().await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => e.into(),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".into());
                Outcome::Retry {
                    error: format!("handler panicked: {msg}"),
                    after: None,
                }
            }
        }
    }
}

/// The span of one run of `job`: its id, kind and attempt on every log line. When this
/// process exports traces, the span is also the run's OpenTelemetry span, named and
/// described as the messaging conventions say of a consumer's "process" span (its
/// attributes go to the trace only, not to every log line).
fn job_span(job: &ClaimedJob) -> tracing::Span {
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        target: crate::trace::SPANS,
        "job",
        job_id = %job.id,
        kind = %job.kind,
        attempt = job.attempts,
        otel.name = Empty,
        otel.kind = Empty,
    );
    if crate::trace::exporting() {
        span.record("otel.name", format!("process {}", job.kind));
        span.record("otel.kind", "consumer");
        span.set_attribute("messaging.system", "copydesk");
        span.set_attribute("messaging.operation.type", "process");
        span.set_attribute("messaging.destination.name", job.kind.clone());
        span.set_attribute("messaging.message.id", job.id.to_string());
        span.set_attribute("copydesk.job.attempt", i64::from(job.attempts));
        span.set_attribute("copydesk.tenant_id", job.tenant_id.to_string());
        if let Some(project) = job.project_id {
            span.set_attribute("copydesk.project_id", project.to_string());
        }
    }
    span
}

impl<C: Clone + Send + Sync + 'static> Runner<C> {
    /// A job whose input this worker's schema refuses. When a newer version of the
    /// kind's contract that the database knows (`job_kind_versions`, registered by a
    /// newer release's workers) takes the input, the job was written for a newer worker:
    /// it is given back without spending an attempt, for a worker that reads it, until
    /// `[worker] unreadable_after_secs` from its insert, then fails naming both
    /// versions. An input no known version takes is bad input and fails at once.
    async fn unreadable(&self, job: &ClaimedJob, refused: crate::Error) -> Outcome {
        let Some(contract) = self.catalog.contract(&job.kind) else {
            return Outcome::Fail {
                error: refused.to_string(),
            };
        };
        let kind = contract.alias_of.as_deref().unwrap_or(&job.kind);
        let mine = contract.version;
        let newer: Vec<(i32, Option<serde_json::Value>)> = match crate::db::query_as(
            "SELECT version, schema FROM job_kind_versions
             WHERE kind = $1 AND version > $2 ORDER BY version DESC",
        )
        .bind(kind)
        .bind(mine as i32)
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("could not read the newer contracts of {kind}: {e}"),
                    after: None,
                };
            }
        };
        let takes = |schema: &Option<serde_json::Value>| match schema {
            None => true,
            Some(s) => jsonschema::validator_for(s).is_ok_and(|v| v.is_valid(&job.input)),
        };
        let Some((theirs, _)) = newer.iter().find(|(_, schema)| takes(schema)) else {
            let error = match newer.first() {
                Some((newest, _)) => format!(
                    "{refused}; v{newest}, the newest {kind} contract this database knows, \
                     refuses it too"
                ),
                None => refused.to_string(),
            };
            return Outcome::Fail { error };
        };
        let waited = (chrono::Utc::now() - job.created_at)
            .to_std()
            .unwrap_or_default();
        let limit = self.config.worker.unreadable_after();
        if waited < limit {
            // Soon at first (a deploy's new workers are starting), then less often.
            let after = (waited / 4).clamp(GIVE_BACK_FIRST, GIVE_BACK_MOST);
            return Outcome::GiveBack {
                note: format!(
                    "a worker that reads {kind} input v{theirs} (this one reads v{mine})"
                ),
                after: after.min(limit - waited),
            };
        }
        Outcome::Fail {
            error: format!(
                "input of {kind} v{theirs} cannot be read by this worker, which reads v{mine}, and \
                 no worker that reads v{theirs} took it within {}s of its enqueue \
                 ([worker] unreadable_after_secs); v{mine} refuses it: {refused}",
                limit.as_secs()
            ),
        }
    }
}

/// How soon a job written for a newer worker is offered again: a quarter of the time
/// it has waited since its enqueue, within these bounds.
const GIVE_BACK_FIRST: Duration = Duration::from_secs(1);
const GIVE_BACK_MOST: Duration = Duration::from_secs(30);

/// The delay before the next attempt after `attempt` failed: exponential from
/// `base_delay_ms`, capped at `max_delay_secs`, with jitter (backon).
pub fn retry_delay(cfg: &RetrySettings, attempt: i32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(cfg.base_delay_ms))
        .with_max_delay(Duration::from_secs(cfg.max_delay_secs))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.max(1) as usize - 1)
        .unwrap_or(Duration::from_secs(cfg.max_delay_secs))
}

fn finish_row(f: &Finished, retry: &RetrySettings) -> sql::FinishRow {
    let (error, output, delay) = match &f.outcome {
        Outcome::Done { output, .. } | Outcome::NeedsApproval { output, .. } => {
            (None, output.clone(), Duration::ZERO)
        }
        Outcome::Retry { error, after } => {
            let backoff = retry_delay(retry, f.attempts);
            (
                Some(error.clone()),
                None,
                after.map_or(backoff, |a| a.max(backoff)),
            )
        }
        Outcome::Fail { error } => (Some(error.clone()), None, Duration::ZERO),
        // The note travels in the error field; the statement writes it to `waiting_for`.
        Outcome::Wait { note, after } | Outcome::GiveBack { note, after } => {
            (Some(note.clone()), None, *after)
        }
    };
    sql::FinishRow {
        id: f.id,
        attempts: f.attempts,
        outcome: f.outcome.label(),
        retry_delay: delay,
        error,
        output,
    }
}

/// Commits many attempts' finishes in one transaction, each fenced on its own lease.
/// A job whose effects fail is rolled back alone (to a savepoint) and retried later.
/// On a lost connection the whole batch is tried again: the fences make that safe.
pub async fn finish(
    pool: &Db,
    worker: &str,
    batch: &[Finished],
    retry: &RetrySettings,
) -> Result<Vec<(Uuid, Written)>> {
    use backon::Retryable;
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let tries = std::sync::atomic::AtomicU32::new(0);
    let written = (|| {
        tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        finish_once(pool, worker, batch, retry)
    })
    .retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(12),
    )
    .when(|e| matches!(e, crate::Error::Sql(s) if is_connection_error(s)))
    .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "finishing jobs failed; retrying"))
    .await?;
    // One lookup per job (batches run to `[worker] finish_batch`, 1,000 by default).
    let mut written: std::collections::HashMap<Uuid, Written> = written.into_iter().collect();
    let retried = tries.load(std::sync::atomic::Ordering::Relaxed) > 1;
    Ok(batch
        .iter()
        .map(|f| {
            let status = written.remove(&f.id).unwrap_or(Written::LostLease);
            let label = match &status {
                Written::Status(s) => s.as_str(),
                Written::LostLease => "lost_lease",
            };
            metrics::counter!("copydesk_jobs_finished_total", "kind" => f.kind.clone(), "status" => label.to_owned())
                .increment(1);
            metrics::histogram!("copydesk_job_duration_seconds", "kind" => f.kind.clone())
                .record(f.elapsed.as_secs_f64());
            if status == Written::LostLease {
                if retried {
                    // The connection broke during an earlier try: that try may well have
                    // committed, in which case this "lost lease" is our own finish.
                    tracing::info!(job_id = %f.id, kind = %f.kind, attempt = f.attempts,
                        "finish not written on retry: an earlier try whose answer was lost probably committed it");
                } else {
                    tracing::warn!(job_id = %f.id, kind = %f.kind, attempt = f.attempts,
                        "lost lease: the job was rescued, cancelled or released meanwhile; result discarded");
                }
            }
            (f.id, status)
        })
        .collect())
}

/// Whether a database error means the connection (not the statement) failed.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // admin_shutdown, crash_shutdown, cannot_connect_now, connection_failure
            c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
        }),
        _ => false,
    }
}

async fn finish_once(
    pool: &Db,
    worker: &str,
    batch: &[Finished],
    retry: &RetrySettings,
) -> Result<Vec<(Uuid, Written)>> {
    let mut written = Vec::with_capacity(batch.len());
    let mut requeued: Vec<String> = Vec::new();
    let mut tx = pool.begin().await?;
    let (plain, effectful): (Vec<&Finished>, Vec<&Finished>) =
        batch.iter().partition(|f| effects_of(&f.outcome).is_none());
    if !plain.is_empty() {
        let rows: Vec<sql::FinishRow> = plain.iter().map(|f| finish_row(f, retry)).collect();
        for (id, kind, status) in sql::job_finish_many(&mut *tx, worker, &rows).await? {
            if status == JobStatus::Queued {
                requeued.push(kind);
            }
            written.push((id, Written::Status(status)));
        }
    }
    for f in effectful {
        let effects = effects_of(&f.outcome).expect("partitioned on effects");
        let mut sp = sqlx::Acquire::begin(&mut *tx).await?;
        let rows = sql::job_finish_many(&mut *sp, worker, &[finish_row(f, retry)]).await?;
        let Some((id, _, status)) = rows.into_iter().next() else {
            sp.rollback().await?;
            continue;
        };
        // The jobs the effects enqueue belong to the run's trace (and no span of the
        // finisher's own is taken for it).
        let written_effects = crate::trace::running(f.trace.clone(), effects(&mut sp))
            .instrument(tracing::Span::none())
            .await;
        match written_effects {
            Ok(()) => {
                sp.commit().await?;
                written.push((id, Written::Status(status)));
            }
            Err(crate::Error::Sql(e)) if is_connection_error(&e) => return Err(e.into()),
            Err(e) => {
                sp.rollback().await?;
                let failed = Finished {
                    outcome: Outcome::Retry {
                        error: format!("writing the step's results failed: {e}"),
                        after: None,
                    },
                    ..f.clone()
                };
                for (id, kind, status) in
                    sql::job_finish_many(&mut *tx, worker, &[finish_row(&failed, retry)]).await?
                {
                    if status == JobStatus::Queued {
                        requeued.push(kind);
                    }
                    written.push((id, Written::Status(status)));
                }
            }
        }
    }
    let kinds: Vec<&str> = requeued.iter().map(String::as_str).collect();
    sql::job_notify(&mut *tx, &kinds).await?;
    tx.commit().await?;
    Ok(written)
}

fn effects_of(o: &Outcome) -> Option<&crate::Effects> {
    match o {
        Outcome::Done { effects, .. } | Outcome::NeedsApproval { effects, .. } => effects.as_ref(),
        _ => None,
    }
}

/// Claims one ready job of `kinds` (in order) and runs it to the end, finish included.
/// Returns the job and its new status, or `None` when nothing was ready.
pub async fn run_once<C: Clone + Send + Sync + 'static>(
    runner: &Runner<C>,
    kinds: &[&str],
) -> Result<Option<(Uuid, Written)>> {
    let worker = format!("run-once:{}", Uuid::new_v4());
    for kind in kinds {
        let lease = runner.config.worker.lease();
        let Some(job) = sql::job_claim(&runner.pool, &worker, kind, 1, lease)
            .await?
            .into_iter()
            .next()
        else {
            continue;
        };
        let done = runner.execute(job).await;
        let written = finish(&runner.pool, &worker, &[done], &runner.config.retry).await?;
        return Ok(written.into_iter().next());
    }
    Ok(None)
}
