//! The `jobs` table as an apalis backend: [`JobsPersistence`] implements apalis-core's
//! `Persistence` (register, heartbeat, fetch, re-enqueue abandoned, handle events), and
//! [`JobsBackend`] drives it, waking on NOTIFY and on a poll interval.
//!
//! One backend serves one kind, so the claim reads one slice of the queued index in
//! order and each kind gets its own concurrency. A transient database error never kills
//! the worker: fetch returns nothing and tries again on the next wake, heartbeat tries
//! again on the next beat, and finishing retries (fenced, so retrying is safe) — and if
//! all of that fails, the lease runs out and the job is rescued.

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{
        Backend, BackendConfig,
        codec::Codec,
        finalize::Ephemeral,
        persistence::{Persisted, Persistence, State, TaskEvent, TaskPersistLayer},
    },
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::{Notify, futures::OwnedNotified};
use uuid::Uuid;

use crate::config::WorkerSettings;

use super::{
    ClaimedJob, Error, NewJob,
    runner::{Finished, Runner, finish},
    sql,
};

/// Carries a finished attempt through apalis's event channel unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

impl Codec<Arc<Finished>> for Passthrough {
    type Error = Infallible;
    type Compact = Arc<Finished>;
    fn encode(&self, val: &Arc<Finished>) -> Result<Arc<Finished>, Infallible> {
        Ok(val.clone())
    }
    fn decode(&self, val: &Arc<Finished>) -> Result<Arc<Finished>, Infallible> {
        Ok(val.clone())
    }
}

/// The persistence of one kind's worker over the `jobs` table.
#[derive(Clone)]
pub struct JobsPersistence {
    runner: Runner,
    kind: String,
    batch: i64,
    /// The jobs this worker holds and is still going to finish: the only leases its
    /// heartbeat extends. A claim whose answer was lost (the connection broke after
    /// the commit) is not in here, so its lease runs out and it is rescued.
    in_flight: InFlight,
}

/// The jobs a worker holds (claimed, running or finishing), shared between its backend
/// and its [`keep_leases`] task.
pub type InFlight = Arc<Mutex<HashSet<Uuid>>>;

/// The lease keeper of a worker process: every heartbeat interval it extends the leases
/// of the jobs each of `workers` holds, then returns jobs whose lease ran out (any
/// process's) to the queue. One task per process, running until aborted; apalis's own
/// heartbeat is not used because `Persisted` pauses it while claimed jobs wait in its
/// buffer for a free slot.
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
    in_flight.lock().unwrap_or_else(|e| e.into_inner())
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
                .filter(|r| r.2 == "queued")
                .map(|r| r.1.as_str())
                .collect();
            let _ = sql::job_notify(pool, &kinds).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "rescue of expired leases failed; will try again"),
    }
}

impl Persistence for JobsPersistence {
    type Compact = ClaimedJob;
    type Response = Arc<Finished>;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        tracing::debug!(worker = worker.name(), "worker registered");
        rescue_expired(&self.runner.pool).await;
        Ok(())
    }

    /// Leases are kept by [`keep_leases`], a task of its own: apalis's `Persisted` stops
    /// beating while claimed jobs wait in its buffer for a free slot, which is exactly
    /// when long jobs need their leases extended.
    async fn heartbeat(&mut self, _worker: &WorkerContext) -> Result<(), Error> {
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<ClaimedJob>>, Error> {
        let lease = self.runner.settings.worker.lease();
        match sql::job_claim(
            &self.runner.pool,
            worker.name(),
            &self.kind,
            self.batch,
            lease,
        )
        .await
        {
            Ok(jobs) => {
                lock(&self.in_flight).extend(jobs.iter().map(|j| j.id));
                if !jobs.is_empty() {
                    metrics::counter!("copydesk_jobs_claimed_total", "kind" => self.kind.clone())
                        .increment(jobs.len() as u64);
                }
                Ok(jobs
                    .into_iter()
                    .map(|job| {
                        TaskBuilder::new(job.clone())
                            .task_id(TaskId::from_uuid(job.id))
                            .build()
                    })
                    .collect())
            }
            Err(e) => {
                tracing::warn!(kind = %self.kind, error = %e, "claim failed; will try again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(Vec::new())
            }
        }
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<ClaimedJob>>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.args.id).collect();
        self.forget(&ids);
        let released =
            sql::job_release(&self.runner.pool, &[worker.name().to_owned()], Some(&ids)).await;
        match released {
            Ok(rows) => {
                let kinds: Vec<&str> = rows.iter().map(|(_, k)| k.as_str()).collect();
                let _ = sql::job_notify(&self.runner.pool, &kinds).await;
                Ok(rows.len() as u64)
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = ids.len(), "could not release claimed jobs; their leases will expire");
                Ok(0)
            }
        }
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Arc<Finished>>>,
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        let batch: Vec<Finished> = events
            .into_iter()
            .filter_map(|e| match e {
                TaskEvent::Complete(r) => match r.result {
                    Ok(f) => Some(Arc::unwrap_or_clone(f)),
                    Err(e) => {
                        // Our service never fails; a job here is left to its lease.
                        tracing::error!(task = ?r.task_id, error = %e, "job ended without a result");
                        None
                    }
                },
                _ => None,
            })
            .collect();
        let result = finish(
            &self.runner.pool,
            worker.name(),
            &batch,
            &self.runner.settings.retry,
        )
        .await;
        // Finished or given up on: either way no longer ours to keep leased.
        self.forget(&batch.iter().map(|f| f.id).collect::<Vec<_>>());
        if let Err(e) = result {
            tracing::error!(error = %e, jobs = batch.len(),
                "could not record finished jobs; their leases will expire and they will run again");
        }
        Ok(())
    }

    async fn push_tasks(&mut self, tasks: Vec<Task<ClaimedJob>>) -> Result<(), Error> {
        let jobs: Vec<NewJob> = tasks
            .into_iter()
            .map(|t| NewJob::new(t.args.kind, t.args.input))
            .collect();
        let mut conn = self.runner.pool.acquire().await?;
        super::enqueue_many(&mut conn, &jobs).await?;
        Ok(())
    }
}

impl JobsPersistence {
    fn forget(&self, ids: &[Uuid]) {
        let mut set = lock(&self.in_flight);
        for id in ids {
            set.remove(id);
        }
    }
}

/// A wake-up source shared by the LISTEN task and a backend: `notify_one` leaves a
/// permit, so a NOTIFY that arrives while the worker is busy is not lost.
pub type Wake = Arc<Notify>;

/// The apalis backend of one kind.
pub struct JobsBackend {
    persisted: Persisted<JobsPersistence>,
    wake: Wake,
    notified: Pin<Box<OwnedNotified>>,
    poll: tokio::time::Interval,
    heartbeat: Duration,
    batch: usize,
}

impl JobsBackend {
    /// A backend claiming `kind` jobs, woken by `wake` and every poll interval; the
    /// jobs it claims are recorded in `in_flight` for [`keep_leases`].
    pub fn new(runner: Runner, kind: &str, wake: Wake, in_flight: InFlight) -> Self {
        let w = &runner.settings.worker;
        let batch = w.batch_size.max(1).min(w.concurrency_for(kind).max(1) * 2);
        let mut poll = tokio::time::interval(w.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat = w.heartbeat();
        let notified = Box::pin(wake.clone().notified_owned());
        Self {
            persisted: Persisted::new(JobsPersistence {
                runner,
                kind: kind.to_owned(),
                batch: batch as i64,
                in_flight,
            }),
            wake,
            notified,
            poll,
            heartbeat,
            batch,
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
}

impl Backend for JobsBackend {
    type Task = Task<ClaimedJob>;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.persisted.poll_ready(cx, worker, self.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<ClaimedJob>, Error>>> {
        loop {
            if let Poll::Ready(next) = self.persisted.poll_next(cx, worker) {
                return Poll::Ready(next);
            }
            // Pending with the state back at Ready means the fetch found nothing:
            // sleep until a NOTIFY or the poll interval, then fetch again.
            if matches!(self.persisted.state(), State::Ready) && self.woken(cx) {
                continue;
            }
            return Poll::Pending;
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl BackendConfig for JobsBackend {
    type Args = ClaimedJob;
    type Id = uuid::Uuid;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = TaskPersistLayer<Passthrough, Arc<Finished>>;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        self.persisted
            .layer(Passthrough, self.batch)
            .persist_results(true)
            .lock_tasks(false)
    }
}

/// The tower service apalis calls for each claimed job: runs it through the [`Runner`].
#[derive(Clone)]
pub struct JobService {
    pub runner: Runner,
}

impl tower::Service<Task<ClaimedJob>> for JobService {
    type Response = Arc<Finished>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Arc<Finished>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<ClaimedJob>) -> Self::Future {
        let runner = self.runner.clone();
        Box::pin(async move { Ok(Arc::new(runner.execute(task.args).await)) })
    }
}
