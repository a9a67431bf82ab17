//! A worker process: one apalis worker per kind over [`JobsBackend`], one lease keeper,
//! one LISTEN connection waking them, the cleanup scheduler (apalis-cron), the optional
//! HTTP endpoints, and graceful shutdown.
//!
//! Shutdown: when `shutdown` resolves, the workers stop claiming; in-flight jobs get
//! `[worker] shutdown_grace_secs` to finish and report; whatever is still running after
//! that is put back to `queued` (its attempt not counted) before `run` returns.

use std::{
    collections::HashMap, future::Future, net::SocketAddr, str::FromStr, sync::Arc, time::Duration,
};

use apalis_core::{
    error::BoxDynError, monitor::Monitor, task::data::Data, worker::builder::WorkerBuilder,
};
use apalis_cron::{CronScheduler, Tick};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::Notify;

use super::{
    NewJob, Result,
    backend::{InFlight, JobService, JobsBackend, Wake, finisher, keep_leases},
    runner::Runner,
    sql,
};

/// What to run in this process.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Kinds to claim; all registered kinds when `None`.
    pub kinds: Option<Vec<String>>,
    /// Overrides every kind's concurrency.
    pub concurrency: Option<usize>,
    /// Serve /healthz, /readyz and /metrics here.
    pub http: Option<SocketAddr>,
    /// Run the cleanup scheduler (when `[cleanup] enabled` too).
    pub scheduler: bool,
}

/// What a worker process did, reported when it stops.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    pub names: Vec<String>,
    pub released_on_shutdown: usize,
}

/// Runs workers until `shutdown` resolves, then drains and releases.
pub async fn run(
    mut runner: Runner,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<WorkerSummary> {
    let kinds: Vec<String> = match &opts.kinds {
        Some(k) => k.clone(),
        None => runner
            .registry
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    for k in &kinds {
        if runner.registry.get(k).is_none() {
            anyhow::bail!(
                "unknown job kind {k:?} in --kinds: known kinds are {}",
                runner.registry.names().join(", ")
            );
        }
    }
    if let Some(c) = opts.concurrency {
        let mut s = (*runner.settings).clone();
        s.worker.concurrency = c;
        s.worker.kinds.clear();
        runner.settings = Arc::new(s);
    }
    let prefix = format!(
        "{}:{}:{:04x}",
        hostname(),
        std::process::id(),
        rand::random::<u16>()
    );
    let wakes: HashMap<String, Wake> = kinds
        .iter()
        .map(|k| (k.clone(), Arc::new(Notify::new())))
        .collect();
    let approvals_wake: Wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        runner.pool.clone(),
        wakes.clone(),
        approvals_wake.clone(),
    ));
    // Decisions are applied by every process that runs a step which asks for them.
    let applier = kinds
        .iter()
        .any(|k| k == "brand_voice_analysis" || k == "evaluation")
        .then(|| tokio::spawn(apply_approvals(runner.clone(), approvals_wake.clone())));
    let http = match opts.http {
        Some(addr) => Some(tokio::spawn(crate::http::serve(runner.pool.clone(), addr))),
        None => None,
    };

    let mut monitor = Monitor::new();
    let mut names = Vec::new();
    let mut leased = Vec::new();
    let mut finishers = Vec::new();
    for kind in &kinds {
        let name = format!("{prefix}/{kind}");
        names.push(name.clone());
        let concurrency = runner.settings.worker.concurrency_for(kind);
        let in_flight: InFlight = Arc::default();
        leased.push((name.clone(), in_flight.clone()));
        let room: Wake = Arc::new(Notify::new());
        let (finished_tx, finished_rx) = tokio::sync::mpsc::unbounded_channel();
        let finished_rx = Arc::new(tokio::sync::Mutex::new(finished_rx));
        for _ in 0..runner.settings.worker.finishers.max(1) {
            finishers.push(tokio::spawn(finisher(
                runner.pool.clone(),
                name.clone(),
                runner.settings.retry.clone(),
                finished_rx.clone(),
                in_flight.clone(),
                room.clone(),
                runner.settings.worker.finish_batch.max(1),
            )));
        }
        let (runner, wake, kind) = (runner.clone(), wakes[kind].clone(), kind.clone());
        tracing::info!(worker = %name, kind = %kind, concurrency, "starting worker");
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(name.as_str())
                .backend(JobsBackend::new(
                    runner.clone(),
                    &kind,
                    wake.clone(),
                    room.clone(),
                    in_flight.clone(),
                ))
                .layer(tower::limit::ConcurrencyLimitLayer::new(concurrency))
                .build(JobService {
                    runner: runner.clone(),
                    finished: finished_tx.clone(),
                })
        });
    }
    let lease_keeper = tokio::spawn(keep_leases(
        runner.pool.clone(),
        runner.settings.worker.clone(),
        leased.clone(),
    ));
    let cleanup = &runner.settings.cleanup;
    if opts.scheduler && cleanup.enabled {
        let schedule = cron::Schedule::from_str(&cleanup.schedule).map_err(|e| {
            anyhow::anyhow!(
                "[cleanup] schedule {:?} is not a cron expression: {e}",
                cleanup.schedule
            )
        })?;
        let pool = runner.pool.clone();
        let name = format!("{prefix}/scheduler");
        tracing::info!(worker = %name, schedule = %cleanup.schedule, "starting cleanup scheduler");
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(name.as_str())
                .backend(CronScheduler::new(schedule.clone()))
                .data(pool.clone())
                .build(enqueue_cleanup)
        });
    }
    let catalog = &runner.settings.catalog;
    if opts.scheduler && catalog.enabled {
        let schedule = cron::Schedule::from_str(&catalog.schedule).map_err(|e| {
            anyhow::anyhow!(
                "[catalog] schedule {:?} is not a cron expression: {e}",
                catalog.schedule
            )
        })?;
        let pool = runner.pool.clone();
        let with_catalog = !catalog.url.trim().is_empty();
        let name = format!("{prefix}/cache-scheduler");
        tracing::info!(worker = %name, schedule = %catalog.schedule, "starting cache refresh scheduler");
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(name.as_str())
                .backend(CronScheduler::new(schedule.clone()))
                .data(pool.clone())
                .data(CatalogConfigured(with_catalog))
                .build(enqueue_cache_refresh)
        });
    }

    let grace = runner.settings.worker.shutdown_grace();
    let result = monitor
        .shutdown_timeout(grace)
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: no new claims; waiting for jobs in flight"
            );
            Ok(())
        })
        .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "a worker stopped with an error");
    }
    // Claims under way finish first (their jobs are then released with the rest).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while leased.iter().any(|(_, held)| held.claims() > 0) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The monitor (and with it every sender) is gone: each finisher commits what is
    // left and ends, before anything unfinished is released.
    for f in finishers {
        if tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .is_err()
        {
            tracing::error!("a finisher did not drain within 30 s; those jobs' leases will expire");
        }
    }
    listener.abort();
    if let Some(a) = applier {
        a.abort();
    }
    if let Some(h) = http {
        h.abort();
    }
    let released = release(&runner.pool, &names).await;
    lease_keeper.abort();
    if released > 0 {
        tracing::warn!(jobs = released, "released unfinished jobs back to queued");
    }
    tracing::info!("worker stopped");
    Ok(WorkerSummary {
        names,
        released_on_shutdown: released,
    })
}

/// The scheduler's handler: one `cleanup` job per tick, however many processes tick.
async fn enqueue_cleanup(tick: Tick, pool: Data<PgPool>) -> Result<(), BoxDynError> {
    let at = chrono::DateTime::from_timestamp(tick.get_timestamp() as i64, 0)
        .unwrap_or_default()
        .to_rfc3339();
    let job = NewJob::new(
        crate::jobs::cleanup::KIND,
        serde_json::json!({ "tick": at }),
    )
    .idempotency_key(format!("cleanup:{at}"));
    let mut conn = pool.acquire().await?;
    let e = super::enqueue(&mut conn, &job).await?;
    tracing::info!(job_id = %e.id, created = e.created, tick = %at, "scheduled cleanup");
    Ok(())
}

#[derive(Clone, Copy)]
struct CatalogConfigured(bool);

/// The cache scheduler's handler: per tick, one `cache_refresh` of brand voices and,
/// when a catalogue is configured, one of the catalogue (idempotent per tick).
async fn enqueue_cache_refresh(
    tick: Tick,
    pool: Data<PgPool>,
    catalog: Data<CatalogConfigured>,
) -> Result<(), BoxDynError> {
    let at = chrono::DateTime::from_timestamp(tick.get_timestamp() as i64, 0)
        .unwrap_or_default()
        .to_rfc3339();
    let sources: &[&str] = if catalog.0.0 {
        &["catalog", "brand_voice"]
    } else {
        &["brand_voice"]
    };
    let jobs: Vec<NewJob> = sources
        .iter()
        .map(|s| {
            NewJob::new(
                crate::jobs::cache_refresh::KIND,
                serde_json::json!({ "source": s }),
            )
            .idempotency_key(format!("cache_refresh:{s}:{at}"))
        })
        .collect();
    let mut conn = pool.acquire().await?;
    let e = super::enqueue_many(&mut conn, &jobs).await?;
    tracing::info!(jobs = e.len(), tick = %at, "scheduled cache refresh");
    Ok(())
}

async fn release(pool: &PgPool, names: &[String]) -> usize {
    for attempt in 0..5 {
        match sql::job_release(pool, names, None).await {
            Ok(rows) => {
                let kinds: Vec<&str> = rows.iter().map(|(_, k)| k.as_str()).collect();
                let _ = sql::job_notify(pool, &kinds).await;
                return rows.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "releasing unfinished jobs failed");
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    tracing::error!(
        "could not release unfinished jobs; their leases will expire and they will be rescued"
    );
    0
}

/// Applies decided approvals whenever a decision is announced, and on the poll
/// interval (a decision made while no worker listened is still applied).
async fn apply_approvals(runner: Runner, wake: Wake) {
    let poll = runner.settings.worker.poll_interval();
    loop {
        match crate::pipeline::approvals::apply_decided(&runner.pool, &runner.settings, 50).await {
            Ok(done) => {
                for a in &done {
                    tracing::info!(approval_id = %a.approval_id, status = %a.status,
                        enqueued = a.enqueued.len(), job_status = %a.job_status, "applied an approval decision");
                }
                if done.len() == 50 {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "applying approval decisions failed; will try again")
            }
        }
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// Holds one LISTEN connection and wakes the worker of the kind each NOTIFY names (and
/// the approvals applier on decisions). After a reconnect every worker is woken, since
/// notifications may have been missed.
async fn listen(pool: PgPool, wakes: HashMap<String, Wake>, approvals: Wake) {
    let wake_all = || {
        wakes.values().for_each(|w| w.notify_one());
        approvals.notify_one();
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([sql::JOBS_CHANNEL, crate::pipeline::approvals::CHANNEL])
            .await
        {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == crate::pipeline::approvals::CHANNEL => {
                    approvals.notify_one();
                }
                Ok(Some(n)) => {
                    if let Some(w) = wakes.get(n.payload()) {
                        w.notify_one();
                    }
                }
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    wake_all();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
