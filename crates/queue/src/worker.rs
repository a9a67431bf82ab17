//! A worker process: one apalis worker per kind over [`JobsBackend`], one lease keeper,
//! one LISTEN connection waking them (and whatever else the application listens for),
//! periodic enqueues (apalis-cron), and graceful shutdown.
//!
//! Shutdown: when `shutdown` resolves, the workers stop claiming; in-flight jobs get
//! `[worker] shutdown_grace_secs` to finish and report; whatever is still running after
//! that is put back to `queued` (its attempt not counted) before `run` returns.

use std::{
    collections::HashMap,
    future::Future,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::db::Db;
use apalis_core::{
    error::BoxDynError, monitor::Monitor, task::data::Data, worker::builder::WorkerBuilder,
};
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::{
    Catalog, Error, NewJob, Result,
    backend::{InFlight, JobService, JobsBackend, SharedFloors, Wake, finisher, keep_leases},
    floors::{self, Floors},
    runner::Runner,
    sql,
};

/// One kind's floors, whoever panicked while holding them (they are only a hint).
fn lock(floors: &SharedFloors) -> std::sync::MutexGuard<'_, Floors> {
    floors.lock().unwrap_or_else(|e| e.into_inner())
}

/// Jobs enqueued on a cron schedule by every worker process that runs it; each job
/// should carry an idempotency key derived from the tick, so however many processes
/// tick, each tick enqueues once.
#[derive(Clone)]
pub struct Periodic {
    /// Names the schedule in logs and errors.
    pub name: String,
    /// Cron with seconds (`sec min hour day month weekday`).
    pub schedule: String,
    /// The jobs of one tick.
    pub jobs: Arc<dyn Fn(DateTime<Utc>) -> Vec<NewJob> + Send + Sync>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish()
    }
}

/// What to run in this process.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Kinds to claim; all registered kinds when `None`.
    pub kinds: Option<Vec<String>>,
    /// Overrides every kind's concurrency.
    pub concurrency: Option<usize>,
    /// Cron-scheduled enqueues.
    pub periodic: Vec<Periodic>,
    /// Other NOTIFY channels the process's LISTEN connection wakes: each wake is
    /// notified on every notification of its channel, and after a reconnect.
    pub channels: Vec<(String, Wake)>,
    /// Where the LISTEN connection goes when not through the runner's pool: a direct
    /// connection to Postgres when the pool goes through a pooler in transaction mode,
    /// which cannot hold a LISTEN (a session's state).
    pub listen: Option<sqlx::postgres::PgConnectOptions>,
    /// The release this process runs, as `copydesk_workers` shows it (the engine's
    /// version when `None`).
    pub version: Option<String>,
}

/// What a worker process did, reported when it stops.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    pub names: Vec<String>,
    pub released_on_shutdown: usize,
}

/// Runs workers until `shutdown` resolves, then drains and releases.
pub async fn run<C: Clone + Send + Sync + 'static>(
    mut runner: Runner<C>,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WorkerSummary> {
    let kinds = kinds_to_run(&runner, &opts)?;
    let schedules = schedules(&opts)?;
    // Every kind this process knows may be enqueued from now on, by plain SQL too.
    let new = crate::schema::register_kinds(&runner.pool, &runner.registry.catalog()).await?;
    if new > 0 {
        tracing::info!(new, "registered job kinds");
    }
    if let Some(c) = opts.concurrency {
        let mut config = (*runner.config).clone();
        config.worker.concurrency = c;
        config.worker.kinds.clear();
        runner.config = Arc::new(config);
    }
    let prefix = format!(
        "{}:{}:{:04x}",
        hostname(),
        std::process::id(),
        rand::random::<u16>()
    );
    // Alive for every process to see (`copydesk_workers`), refreshed every heartbeat.
    let version = opts
        .version
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let alive = tokio::spawn(stay_alive(
        runner.pool.clone(),
        prefix.clone(),
        kinds.clone(),
        version,
        runner.config.worker.heartbeat(),
    ));
    let wakes: HashMap<String, Wake> = kinds
        .iter()
        .map(|k| (k.clone(), Arc::new(Notify::new())))
        .collect();
    // With no LISTEN nothing can tell a worker of jobs made ready behind its floors: it
    // keeps none.
    let listen_through = listen_pool(&runner, &opts);
    let floors: HashMap<String, SharedFloors> = kinds
        .iter()
        .map(|k| {
            let f = if listen_through.is_some() {
                Floors::new()
            } else {
                Floors::off()
            };
            (k.clone(), Arc::new(Mutex::new(f)))
        })
        .collect();
    let sweeper = tokio::spawn(sweep_floors(
        runner.pool.clone(),
        floors.clone(),
        floors::SWEEP_EVERY,
    ));
    let listener = spawn_listener(
        &runner,
        &opts,
        listen_through,
        wakes.clone(),
        floors.clone(),
    );

    let mut monitor = Monitor::new();
    let mut names = Vec::new();
    let mut leased = Vec::new();
    let mut finishers = Vec::new();
    for kind in &kinds {
        let name = format!("{prefix}/{kind}");
        names.push(name.clone());
        let concurrency = runner.config.worker.concurrency_for(kind);
        let in_flight: InFlight = Arc::default();
        leased.push((name.clone(), in_flight.clone()));
        let room: Wake = Arc::new(Notify::new());
        let (finished_tx, finished_rx) = tokio::sync::mpsc::unbounded_channel();
        let finished_rx = Arc::new(tokio::sync::Mutex::new(finished_rx));
        for _ in 0..runner.config.worker.finishers.max(1) {
            finishers.push(tokio::spawn(finisher(
                runner.pool.clone(),
                name.clone(),
                runner.config.retry.clone(),
                finished_rx.clone(),
                in_flight.clone(),
                room.clone(),
                runner.config.worker.finish_batch.max(1),
            )));
        }
        let (runner, wake, kind) = (
            runner.clone(),
            (wakes[kind].clone(), floors[kind].clone()),
            kind.clone(),
        );
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
                    in_flight: in_flight.clone(),
                })
        });
    }
    let lease_keeper = tokio::spawn(keep_leases(
        runner.pool.clone(),
        runner.config.worker.clone(),
        leased.clone(),
    ));
    for (periodic, schedule) in schedules {
        let name = format!("{prefix}/periodic:{}", periodic.name);
        tracing::info!(worker = %name, schedule = %periodic.schedule, "starting periodic enqueues");
        let (pool, catalog) = (runner.pool.clone(), runner.catalog().clone());
        monitor = monitor.register(move |_| {
            WorkerBuilder::new(name.as_str())
                .backend(CronScheduler::new(schedule.clone()))
                .data(pool.clone())
                .data(catalog.clone())
                .data(periodic.clone())
                .build(enqueue_periodic)
        });
    }

    let grace = runner.config.worker.shutdown_grace();
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
    listener.abort();
    sweeper.abort();
    let released = drain_and_release(&runner.pool, &names, &leased, finishers).await;
    lease_keeper.abort();
    alive.abort();
    if let Err(e) = sql::worker_gone(&runner.pool, Some(&prefix)).await {
        tracing::warn!(error = %e, "could not remove this process from copydesk_workers; it ages out");
    }
    tracing::info!("worker stopped");
    Ok(WorkerSummary {
        names,
        released_on_shutdown: released,
    })
}

/// The kinds this process runs (`opts.kinds`, else every registered kind), each one the
/// registry has a handler for.
fn kinds_to_run<C: Clone + Send + Sync + 'static>(
    runner: &Runner<C>,
    opts: &WorkerOptions,
) -> Result<Vec<String>> {
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
        if runner.registry.handler(k).is_none() {
            return Err(Error::UnknownKind(
                k.clone(),
                runner.registry.names().join(", "),
            ));
        }
    }
    Ok(kinds)
}

/// Each periodic enqueue with its parsed schedule.
fn schedules(opts: &WorkerOptions) -> Result<Vec<(Periodic, cron::Schedule)>> {
    opts.periodic
        .iter()
        .map(|p| {
            cron::Schedule::from_str(&p.schedule)
                .map(|s| (p.clone(), s))
                .map_err(|e| Error::BadSchedule {
                    name: p.name.clone(),
                    schedule: p.schedule.clone(),
                    why: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()
}

/// Says this process is alive every `heartbeat` (for three heartbeats each time), until
/// aborted; first clears the rows of processes dead for a day.
async fn stay_alive(
    pool: Db,
    name: String,
    kinds: Vec<String>,
    version: String,
    heartbeat: Duration,
) {
    if let Err(e) = sql::worker_gone(&pool, None).await {
        tracing::debug!(error = %e, "could not clear long-dead workers");
    }
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sql::worker_alive(&pool, &name, &kinds, &version, heartbeat * 3).await {
            tracing::warn!(error = %e, "could not say this worker is alive; will try again");
        }
    }
}

/// Looks behind every kind's floors every `every`, until aborted.
async fn sweep_floors(pool: Db, floors: HashMap<String, SharedFloors>, every: Duration) {
    let first = every.mul_f64(rand::random::<f64>().max(0.1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (kind, f) in &floors {
            floors::sweep(&pool, kind, f).await;
        }
    }
}

/// The LISTEN task waking each kind's worker (and the application's channels): through
/// the pool, or its own connection from `opts.listen`; none behind a pooler without one.
fn spawn_listener<C: Clone + Send + Sync + 'static>(
    runner: &Runner<C>,
    opts: &WorkerOptions,
    pool: Option<sqlx::PgPool>,
    wakes: HashMap<String, Wake>,
    floors: HashMap<String, SharedFloors>,
) -> tokio::task::JoinHandle<()> {
    match pool {
        Some(pool) => tokio::spawn(listen(pool, wakes, floors, opts.channels.clone())),
        None => {
            // LISTEN holds a session, which a pooler in transaction mode does not keep.
            tracing::info!(
                poll_interval_ms = runner.config.worker.poll_interval_ms,
                "behind a pooler with no [database] listen_url: no LISTEN, workers poll for new jobs"
            );
            tokio::spawn(std::future::pending())
        }
    }
}

/// The connection LISTEN goes through: the pool's, or its own from `opts.listen`; none
/// behind a pooler without one.
fn listen_pool<C: Clone + Send + Sync + 'static>(
    runner: &Runner<C>,
    opts: &WorkerOptions,
) -> Option<sqlx::PgPool> {
    match &opts.listen {
        Some(direct) => {
            tracing::info!("LISTEN goes through its own connection ([database] listen_url)");
            // One connection, opened when the listener first connects.
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(direct.clone()),
            )
        }
        None if crate::db::pooled() => None,
        None => Some(runner.pool.pool().clone()),
    }
}

/// After the workers stopped: claims under way end, every finisher commits what is left,
/// then the jobs still held go back to the queue; returns how many went back.
async fn drain_and_release(
    pool: &Db,
    names: &[String],
    leased: &[(String, InFlight)],
    finishers: Vec<tokio::task::JoinHandle<()>>,
) -> usize {
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
    let released = release(pool, names).await;
    if released > 0 {
        tracing::warn!(jobs = released, "released unfinished jobs back to queued");
    }
    released
}

/// A periodic schedule's handler: the jobs of one tick, in one statement.
async fn enqueue_periodic(
    tick: Tick,
    pool: Data<Db>,
    catalog: Data<Catalog>,
    periodic: Data<Periodic>,
) -> Result<(), BoxDynError> {
    let at = DateTime::from_timestamp(tick.get_timestamp() as i64, 0).unwrap_or_default();
    let jobs = (periodic.jobs)(at);
    let mut tx = pool.begin().await?;
    let enqueued = crate::enqueue_many(&mut tx, &catalog, &jobs).await?;
    tx.commit().await?;
    let created = enqueued.iter().filter(|e| e.created).count();
    tracing::info!(schedule = %periodic.name, jobs = jobs.len(), created, tick = %at.to_rfc3339(),
        "periodic enqueue");
    Ok(())
}

async fn release(pool: &Db, names: &[String]) -> usize {
    for attempt in 0..5 {
        match sql::job_release(pool, names).await {
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

/// Holds one LISTEN connection and wakes the worker of the kind each NOTIFY names (and
/// the application's wakes of its other channels). After a reconnect everything is
/// woken, since notifications may have been missed.
async fn listen(
    pool: sqlx::PgPool,
    wakes: HashMap<String, Wake>,
    floors: HashMap<String, SharedFloors>,
    channels: Vec<(String, Wake)>,
) {
    // What was said while no connection listened is lost: every floor is forgotten.
    let wake_all = || {
        floors.values().for_each(|f| lock(f).forget());
        wakes.values().for_each(|w| w.notify_one());
        channels.iter().for_each(|(_, w)| w.notify_one());
    };
    let names: Vec<&str> = [sql::JOBS_CHANNEL, floors::READY_CHANNEL]
        .into_iter()
        .chain(channels.iter().map(|(c, _)| c.as_str()))
        .collect();
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all(names.iter().copied()).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        wake_all();
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == sql::JOBS_CHANNEL => {
                    if let Some(w) = wakes.get(n.payload()) {
                        w.notify_one();
                    }
                }
                Ok(Some(n)) if n.channel() == floors::READY_CHANNEL => {
                    match floors::parse_ready(n.payload()) {
                        Some((kind, priority, at)) => {
                            if let Some(f) = floors.get(kind) {
                                lock(f).lower(priority, at);
                            }
                        }
                        None => {
                            tracing::warn!(payload = n.payload(), "unreadable ready notification")
                        }
                    }
                }
                Ok(Some(n)) => channels
                    .iter()
                    .filter(|(c, _)| c == n.channel())
                    .for_each(|(_, w)| w.notify_one()),
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
