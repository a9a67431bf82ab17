//! The `jobs` table as an apalis backend. [`JobsBackend`] implements apalis-core's
//! `Backend` directly: it claims a batch with one statement when it has room, hands the
//! jobs to apalis one by one, and sleeps until a NOTIFY, the poll interval or freed room
//! wakes it. [`JobService`] runs each job and passes its result to the kind's
//! [`finisher`], which commits results in batches on a task of its own; [`keep_leases`]
//! extends the leases of what each worker holds and rescues what others abandoned.
//!
//! apalis-core's `Persisted` state machine was the first backend: it serialises fetching
//! and finishing (nothing is claimed while a batch of finishes commits) and stops
//! processing events while claimed jobs wait in its buffer, which capped throughput and
//! starved long jobs' heartbeats. See PERFORMANCE.md.
//!
//! One backend serves one kind, so the claim reads one slice of the queued index in
//! order and each kind gets its own concurrency. A transient database error never kills
//! the worker: a failed claim is tried again on the next wake, a heartbeat on the next
//! beat, and finishing retries (fenced, so retrying is safe) — and if all of that fails,
//! the lease runs out and the job is rescued.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::{Notify, futures::OwnedNotified, mpsc};
use uuid::Uuid;

use crate::{
    ClaimedJob, Error, JobStatus,
    config::{RetrySettings, WorkerSettings},
    runner::{Finished, Runner, finish},
    sql,
};

/// The jobs a worker holds (claimed, running or finishing), shared between its backend
/// and its [`keep_leases`] task.
pub type InFlight = Arc<Held>;

/// What one kind's worker holds: the ids it claimed and has not finished, and how many
/// claims are under way (a claim runs on a task of its own, so a worker stopping in the
/// middle of one never leaves a half-sent statement on a pooled connection; the worker
/// waits for them before it releases what it holds).
#[derive(Debug, Default)]
pub struct Held {
    ids: Mutex<HashSet<Uuid>>,
    claims: std::sync::atomic::AtomicUsize,
}

impl Held {
    /// Claims still under way.
    pub fn claims(&self) -> usize {
        self.claims.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The lease keeper of a worker process: every heartbeat interval it extends the leases
/// of the jobs each of `workers` holds, then returns jobs whose lease ran out (any
/// process's) to the queue. One task per process, running until aborted, so leases do
/// not depend on how busy any worker's task is.
pub async fn keep_leases(pool: PgPool, settings: WorkerSettings, workers: Vec<(String, InFlight)>) {
    let mut beat = tokio::time::interval(settings.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        for (worker, in_flight) in &workers {
            let ids: Vec<Uuid> = lock(in_flight).iter().copied().collect();
            match sql::job_heartbeat(&pool, worker, &ids, settings.lease()).await {
                Ok(n) if n > 0 => tracing::trace!(worker = %worker, jobs = n, "leases extended"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker = %worker, error = %e, "heartbeat failed; will try again")
                }
            }
        }
        rescue_expired(&pool).await;
    }
}

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    in_flight.ids.lock().unwrap_or_else(|e| e.into_inner())
}

/// Returns jobs whose lease ran out to `queued` (or `failed`) and wakes their workers.
/// Errors are logged: the next beat tries again.
pub async fn rescue_expired(pool: &PgPool) {
    match sql::job_rescue_expired(pool, 1000).await {
        Ok(rows) if !rows.is_empty() => {
            for (id, kind, status) in &rows {
                tracing::warn!(job_id = %id, kind = %kind, status = %status, "rescued a job whose lease expired");
            }
            let kinds: Vec<&str> = rows
                .iter()
                .filter(|r| r.2 == JobStatus::Queued)
                .map(|r| r.1.as_str())
                .collect();
            let _ = sql::job_notify(pool, &kinds).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "rescue of expired leases failed; will try again"),
    }
}

/// A wake-up source shared by the LISTEN task and a backend: `notify_one` leaves a
/// permit, so a NOTIFY that arrives while the worker is busy is not lost.
pub type Wake = Arc<Notify>;

/// How many jobs a claim asked for, and what it got.
type ClaimResult = (usize, Result<Vec<ClaimedJob>, Error>);

/// The apalis backend of one kind: claims into a small buffer, never holding more than
/// the kind's concurrency plus `[worker] prefetch` unfinished jobs, so what it claims
/// starts at once (and its leases, kept by [`keep_leases`], cover only real work).
/// Finishing is not its business: [`JobService`] hands each finished attempt to the
/// kind's [`finisher`], which commits them in batches on its own task while this keeps
/// claiming — claim and finish never wait for each other.
pub struct JobsBackend<C> {
    runner: Runner<C>,
    kind: String,
    /// Most jobs one claim asks for.
    batch: usize,
    /// Most unfinished jobs held (running, buffered, or waiting to be committed).
    capacity: usize,
    in_flight: InFlight,
    buffer: VecDeque<Task<ClaimedJob>>,
    claiming: Option<tokio::task::JoinHandle<ClaimResult>>,
    /// The last claim found fewer jobs than it asked for: wait for a wake before the next.
    drained: bool,
    wake: Wake,
    notified: Pin<Box<OwnedNotified>>,
    room: Wake,
    room_notified: Pin<Box<OwnedNotified>>,
    poll: tokio::time::Interval,
    fairness: Arc<std::sync::Mutex<Fairness>>,
}

/// Whether this kind's claims need turns between projects. The fair claim costs more
/// than the plain one (about 0.6 ms a claim, PERFORMANCE.md); it is used while more than one project
/// has ready jobs, and tried again every [`FAIRNESS_CHECK`] while one has them all, so
/// a project that gets a ready job behind another's backlog waits at most that long
/// before claims take turns.
#[derive(Debug)]
struct Fairness {
    many_projects: bool,
    next_check: std::time::Instant,
}

/// How often a kind whose ready jobs were all one project's looks for others.
pub const FAIRNESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

// No field is pinned structurally (the futures it polls are boxed), so the backend may
// move whatever the application's context is.
impl<C> Unpin for JobsBackend<C> {}

impl<C: Clone + Send + Sync + 'static> JobsBackend<C> {
    /// A backend claiming `kind` jobs, woken by `wake` (NOTIFY), `room` (its finisher
    /// freed slots) and every poll interval; what it claims goes into `in_flight`.
    pub fn new(runner: Runner<C>, kind: &str, wake: Wake, room: Wake, in_flight: InFlight) -> Self {
        let w = &runner.config.worker;
        let concurrency = w.concurrency_for(kind);
        let capacity = concurrency + w.prefetch;
        let batch = w.batch_size.max(1).min(capacity);
        let mut poll = tokio::time::interval(w.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let notified = Box::pin(wake.clone().notified_owned());
        let room_notified = Box::pin(room.clone().notified_owned());
        Self {
            runner,
            kind: kind.to_owned(),
            batch,
            capacity,
            in_flight,
            buffer: VecDeque::new(),
            claiming: None,
            drained: false,
            wake,
            notified,
            room,
            room_notified,
            poll,
            fairness: Arc::new(std::sync::Mutex::new(Fairness {
                many_projects: true,
                next_check: std::time::Instant::now(),
            })),
        }
    }

    /// Whether a NOTIFY or the poll interval says to look again; re-arms both.
    fn woken(&mut self, cx: &mut Context<'_>) -> bool {
        let mut woke = false;
        if self.notified.as_mut().poll(cx).is_ready() {
            self.notified = Box::pin(self.wake.clone().notified_owned());
            // Register the new waiter with this context too.
            let _ = self.notified.as_mut().poll(cx);
            woke = true;
        }
        if self.poll.poll_tick(cx).is_ready() {
            woke = true;
        }
        woke
    }

    /// Whether the finisher freed slots since the last look; re-arms.
    fn roomier(&mut self, cx: &mut Context<'_>) -> bool {
        if self.room_notified.as_mut().poll(cx).is_ready() {
            self.room_notified = Box::pin(self.room.clone().notified_owned());
            let _ = self.room_notified.as_mut().poll(cx);
            return true;
        }
        false
    }

    /// Starts a claim of up to `n` jobs on a task of its own (see [`Held`]).
    fn claim(&self, worker: &str, n: usize) -> tokio::task::JoinHandle<ClaimResult> {
        let (pool, worker, kind) = (
            self.runner.pool.clone(),
            worker.to_owned(),
            self.kind.clone(),
        );
        let lease = self.runner.config.worker.lease();
        let in_flight = self.in_flight.clone();
        in_flight
            .claims
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let fairness = self.fairness.clone();
        let fair = {
            let f = fairness.lock().unwrap_or_else(|e| e.into_inner());
            f.many_projects || std::time::Instant::now() >= f.next_check
        };
        tokio::spawn(async move {
            let result = if fair {
                sql::job_claim_counting(&pool, &worker, &kind, n as i64, lease)
                    .await
                    .map(|(jobs, projects)| {
                        let mut f = fairness.lock().unwrap_or_else(|e| e.into_inner());
                        // Nothing ready says nothing: look again at the next claim.
                        f.many_projects = projects > 1;
                        f.next_check = std::time::Instant::now()
                            + if jobs.is_empty() {
                                std::time::Duration::ZERO
                            } else {
                                FAIRNESS_CHECK
                            };
                        jobs
                    })
            } else {
                sql::job_claim_plain(&pool, &worker, &kind, n as i64, lease).await
            };
            if let Ok(jobs) = &result {
                lock(&in_flight).extend(jobs.iter().map(|j| j.id));
                if !jobs.is_empty() {
                    metrics::counter!("copydesk_jobs_claimed_total", "kind" => kind)
                        .increment(jobs.len() as u64);
                }
            }
            in_flight
                .claims
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            (n, result)
        })
    }
}

impl<C: Clone + Send + Sync + 'static> Backend for JobsBackend<C> {
    type Task = Task<ClaimedJob>;
    type Error = Error;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<ClaimedJob>, Error>>> {
        loop {
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            if let Some(claim) = self.claiming.as_mut() {
                let joined = std::task::ready!(Pin::new(claim).poll(cx));
                self.claiming = None;
                let (asked, result) = joined.unwrap_or_else(|e| {
                    (
                        1,
                        Err(Error::Sql(sqlx::Error::Protocol(format!(
                            "the claim task failed: {e}"
                        )))),
                    )
                });
                match result {
                    Ok(jobs) => {
                        self.drained = jobs.len() < asked;
                        self.buffer.extend(jobs.into_iter().map(|job| {
                            let id = TaskId::from_uuid(job.id);
                            TaskBuilder::new(job).task_id(id).build()
                        }));
                    }
                    Err(e) => {
                        tracing::warn!(kind = %self.kind, error = %e, "claim failed; will try again");
                        self.drained = true;
                    }
                }
                continue;
            }
            let held = lock(&self.in_flight).len();
            let room = self.capacity.saturating_sub(held);
            if room == 0 {
                // Full: the finisher wakes us when it has committed some.
                if self.roomier(cx) {
                    continue;
                }
                return Poll::Pending;
            }
            if self.drained {
                // Nothing was ready: sleep until a NOTIFY or the poll interval (freed
                // room alone is no reason to look again).
                if self.woken(cx) {
                    self.drained = false;
                    continue;
                }
                return Poll::Pending;
            }
            self.claiming = Some(self.claim(worker.name(), room.min(self.batch)));
        }
    }

    fn poll_close(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        // Buffered jobs were never started: the worker releases them (still `running`
        // under our name) after every worker has stopped.
        Poll::Ready(Ok(()))
    }
}

impl<C: Clone + Send + Sync + 'static> BackendConfig for JobsBackend<C> {
    type Args = ClaimedJob;
    type Id = uuid::Uuid;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = tower::layer::util::Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        tower::layer::util::Identity::new()
    }
}

/// Commits the finished attempts of one kind's worker in batches: waits for one, takes
/// every other one already waiting (up to `max`), commits them in one transaction (each
/// fenced on its own lease), forgets them from `in_flight` and wakes the backend, which
/// has room again. Runs until every sender is gone and the channel is empty, so a
/// worker's shutdown commits every result its jobs produced.
pub async fn finisher(
    pool: PgPool,
    worker: String,
    retry: RetrySettings,
    finished: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished>>>,
    in_flight: InFlight,
    room: Wake,
    max: usize,
) {
    let mut batch: Vec<Finished> = Vec::with_capacity(max);
    // Several finishers may share one channel: each takes a batch and commits it while
    // the next one gathers the following batch.
    while finished
        .lock()
        .await
        .recv_many(&mut batch, max.max(1))
        .await
        > 0
    {
        let result = finish(&pool, &worker, &batch, &retry).await;
        {
            let mut set = lock(&in_flight);
            for f in &batch {
                set.remove(&f.id);
            }
        }
        room.notify_one();
        if let Err(e) = result {
            tracing::error!(error = %e, jobs = batch.len(),
                "could not record finished jobs; their leases will expire and they will run again");
        }
        batch.clear();
    }
}

/// The tower service apalis calls for each claimed job: runs it through the [`Runner`]
/// and hands the result to the kind's [`finisher`].
pub struct JobService<C> {
    pub runner: Runner<C>,
    pub finished: mpsc::UnboundedSender<Finished>,
}

impl<C: Clone> Clone for JobService<C> {
    fn clone(&self) -> Self {
        Self {
            runner: self.runner.clone(),
            finished: self.finished.clone(),
        }
    }
}

impl<C: Clone + Send + Sync + 'static> tower::Service<Task<ClaimedJob>> for JobService<C> {
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let (runner, finished) = (self.runner.clone(), self.finished.clone());
        Box::pin(async move {
            let f = runner.execute(task.args).await;
            if finished.send(f).is_err() {
                // Only after the finisher is gone (a shutdown past its grace): the
                // job's lease runs out and it is rescued.
                tracing::error!("finisher gone; the job's result is dropped");
            }
            Ok(())
        })
    }
}
