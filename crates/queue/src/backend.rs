//! The `jobs` table as an apalis backend. [`JobsBackend`] implements apalis-core's
//! `Backend` directly: it claims a batch with one statement when it has room, hands the
//! jobs to apalis one by one, and sleeps until a NOTIFY, the poll interval, freed room
//! or a job it sent back to wait coming due wakes it. [`JobService`] runs each job and
//! passes its result to the kind's [`finisher`], which commits results in batches on a
//! task of its own; [`keep_leases`] extends the leases of what each worker holds and
//! rescues what others abandoned.
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
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use crate::db::Db;
use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    task::{Task, builder::TaskBuilder, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::future::BoxFuture;
use tokio::sync::{Notify, futures::OwnedNotified, mpsc};
use uuid::Uuid;

use crate::{
    ClaimedJob, Error,
    config::{RetrySettings, WorkerSettings},
    floors::Floors,
    runner::{Finished, Runner, finish},
    sql,
};

/// The jobs a worker holds (claimed, running or finishing), shared between its backend
/// and its [`keep_leases`] task.
pub type InFlight = Arc<Held>;

/// What one kind's worker holds: the ids it claimed and has not finished, how many of
/// them ended and wait for their finish to commit, how its jobs have been running (the
/// evidence [`JobsBackend`] grows its claims on), and how many claims are under way (a
/// claim runs on a task of its own, so a worker stopping in the middle of one never
/// leaves a half-sent statement on a pooled connection; the worker waits for them before
/// it releases what it holds).
#[derive(Debug, Default)]
pub struct Held {
    ids: Mutex<HashSet<Uuid>>,
    claims: AtomicUsize,
    /// Of `ids`, the jobs that ended and wait for the finisher (changed under `ids`'s
    /// lock when they leave, so `ids.len() - finishing` never underflows).
    finishing: AtomicUsize,
    /// Jobs that ended since the backend last looked.
    ended: AtomicUsize,
    /// The kind's job time, a moving average over the jobs that ended (each weighs
    /// 1/8, as TCP weighs round trips): one slow job shows at once, a stray slow
    /// millisecond among fast jobs does not. Microseconds as `f64` bits.
    average_us: AtomicU64,
    /// A job waited for a limit since the backend last looked.
    waited: AtomicBool,
    /// Of `ids`, buffered jobs on their way back to the queue (see
    /// [`JobsBackend::hand_back`]).
    giving_back: AtomicUsize,
    /// When the jobs this worker sent back to wait (for a limit, or a retry with a
    /// known delay) are due again, soonest first (at most [`DUE_TIMES`]): the backend
    /// looks at each instead of at the next poll, so a job that waited resumes as soon
    /// as it may.
    due: Mutex<std::collections::BTreeSet<std::time::Instant>>,
}

impl Held {
    /// Claims still under way.
    pub fn claims(&self) -> usize {
        self.claims.load(Ordering::Acquire)
    }

    /// Records an attempt that ended and is on its way to the finisher.
    fn ended(&self, f: &Finished) {
        if matches!(f.outcome, crate::Outcome::Wait { .. }) {
            self.waited.store(true, Ordering::Release);
        }
        let us = f.elapsed.as_secs_f64() * 1e6;
        let _ = self
            .average_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let average = f64::from_bits(bits);
                Some((average + (us - average) / 8.0).to_bits())
            });
        self.ended.fetch_add(1, Ordering::AcqRel);
        self.finishing.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the kind's jobs are slow: their moving average is above [`FAST_JOB`], or
    /// one waited for a limit since the last [`Held::fast_since`].
    fn slow(&self) -> bool {
        self.waited.load(Ordering::Acquire)
            || f64::from_bits(self.average_us.load(Ordering::Acquire))
                > FAST_JOB.as_secs_f64() * 1e6
    }

    /// Whether jobs ended since the last call and the kind is not [`Held::slow`]: the
    /// evidence a full claim grows on. Starts the next period.
    fn fast_since(&self) -> bool {
        let slow = self.slow();
        let ended = self.ended.swap(0, Ordering::AcqRel);
        self.waited.store(false, Ordering::Release);
        ended > 0 && !slow
    }

    /// Jobs claimed and not yet ended: buffered or running.
    fn unfinished(&self) -> usize {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.len()
            .saturating_sub(self.finishing.load(Ordering::Acquire))
            .saturating_sub(self.giving_back.load(Ordering::Acquire))
    }

    /// Jobs that ended and wait for their finish to commit.
    fn finishing(&self) -> usize {
        self.finishing.load(Ordering::Acquire)
    }

    /// Notes, once their finish has committed, when jobs sent back to wait are due: the
    /// commit's `run_at` is `now()` of its transaction plus the wait, so waking the
    /// wait after the commit is never early.
    fn waiting_until(&self, batch: &[Finished]) {
        let mut waits = batch.iter().filter_map(|f| match &f.outcome {
            // (A job given back is not this worker's to take again the moment it is due.)
            crate::Outcome::Wait { after, .. } => Some(*after),
            crate::Outcome::Retry {
                after: Some(after), ..
            } => Some(*after),
            _ => None,
        });
        // Most batches (fast jobs) hold none: no lock for them.
        let Some(first) = waits.next() else {
            return;
        };
        let now = std::time::Instant::now();
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        for after in std::iter::once(first).chain(waits) {
            due.insert(now + after);
            if due.len() > DUE_TIMES {
                // The latest go: the poll interval still finds those jobs.
                due.pop_last();
            }
        }
    }

    /// Forgets the due times that have come.
    fn take_due(&self, now: std::time::Instant) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        while due.first().is_some_and(|at| *at <= now) {
            due.pop_first();
        }
    }

    /// When the soonest job this worker sent back to wait is due.
    fn due(&self) -> Option<std::time::Instant> {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .copied()
    }
}

/// Jobs whose moving average stays within this are "fast": while a kind's are, and its
/// queue is deep, its claims grow (see [`JobsBackend`]).
pub const FAST_JOB: std::time::Duration = std::time::Duration::from_millis(2);

/// The lease keeper of a worker process: every heartbeat interval it extends the leases
/// of the jobs each of `workers` holds, then returns jobs whose lease ran out (any
/// process's) to the queue. One task per process, running until aborted, so leases do
/// not depend on how busy any worker's task is.
pub async fn keep_leases(pool: Db, settings: WorkerSettings, workers: Vec<(String, InFlight)>) {
    let mut beat = tokio::time::interval(settings.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Where the next rescue starts looking (`None`: everywhere, as at start).
    let mut since = None;
    // A lease taken or extended within the last half beat is left for the next beat,
    // which finds it with at least `lease - 1.5 × heartbeat` left.
    let renew_below = settings.lease().saturating_sub(settings.heartbeat() / 2);
    loop {
        beat.tick().await;
        for (worker, in_flight) in &workers {
            let ids: Vec<Uuid> = lock(in_flight).iter().copied().collect();
            match sql::job_heartbeat(&pool, worker, &ids, settings.lease(), renew_below).await {
                Ok(n) if n > 0 => tracing::trace!(worker = %worker, jobs = n, "leases extended"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker = %worker, error = %e, "heartbeat failed; will try again")
                }
            }
        }
        since = rescue_expired(&pool, since).await.or(since);
    }
}

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
    in_flight.ids.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most jobs one rescue returns to the queue.
const RESCUE_BATCH: i64 = 1000;

/// Returns jobs whose lease ran out at or after `since` to `queued` (or `failed`); the
/// requeue trigger wakes their workers. Returns where the next rescue may start: a
/// second before this one looked, unless this one had more than it could take (then
/// the next starts where this one did). Errors are logged: the next beat tries again.
pub async fn rescue_expired(
    pool: &Db,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    match sql::job_rescue_expired(pool, RESCUE_BATCH, since).await {
        Ok(rescued) => {
            for (id, kind, status) in &rescued.rows {
                tracing::warn!(job_id = %id, kind = %kind, status = %status, "rescued a job whose lease expired");
            }
            (rescued.rows.len() < RESCUE_BATCH as usize)
                .then(|| rescued.at - chrono::Duration::seconds(1))
        }
        Err(e) => {
            tracing::warn!(error = %e, "rescue of expired leases failed; will try again");
            None
        }
    }
}

/// A wake-up source shared by the LISTEN task and a backend: `notify_one` leaves a
/// permit, so a NOTIFY that arrives while the worker is busy is not lost.
pub type Wake = Arc<Notify>;

/// How many jobs a claim asked for, and what it got.
type ClaimResult = (usize, Result<Vec<ClaimedJob>, Error>);

/// The apalis backend of one kind: claims into a small buffer, never holding more than
/// the kind's concurrency plus `[worker] prefetch` jobs that have not ended (buffered or
/// running), so what it claims starts at once (and its leases, kept by [`keep_leases`],
/// cover only real work). Finishing is not its business: [`JobService`] hands each
/// finished attempt to the kind's [`finisher`], which commits them in batches on its
/// own task while this keeps claiming — claim and finish never wait for each other (up
/// to [`FINISH_BACKLOG`] batches of ended jobs may wait for their commit).
///
/// The claim adapts ([`Adapt`]): while a claim comes back full (the queue is deep) and
/// the moving average of the kind's job time is within [`FAST_JOB`] (and no job waited
/// for a limit since the claim before), the next claim asks for twice as many, up to
/// `[worker] max_batch_size`, the buffer may hold two claims' worth, and a second claim
/// runs while the first one's jobs run. A claim that comes back short puts back
/// `batch_size`, `prefetch` and one claim at a time, and so do slower jobs as soon as
/// they end, handing back to the queue whatever the grown buffer holds beyond
/// `prefetch`; after giving jobs back, the claims keep the configured sizes for
/// [`STEADY_AFTER_SLOW`].
/// So slow jobs are held at most concurrency + prefetch per kind and process (ended
/// jobs waiting for their finish's commit are not counted), beyond those a grown buffer
/// held when they turned slow, until the first of them ends.
pub struct JobsBackend<C> {
    runner: Runner<C>,
    kind: String,
    adapt: Adapt,
    /// Most ended jobs waiting for their finish before claims stop.
    finish_backlog: usize,
    /// No growing before this: the kind's jobs were slow not long ago.
    steady_until: std::time::Instant,
    in_flight: InFlight,
    buffer: VecDeque<Task<ClaimedJob>>,
    /// Claims under way, oldest first, with how many jobs each asked for: one at the
    /// configured sizes, two while grown (one runs while the other's jobs run).
    claiming: VecDeque<(usize, tokio::task::JoinHandle<ClaimResult>)>,
    /// The last claim found fewer jobs than it asked for: wait for a wake before the next.
    drained: bool,
    wake: Wake,
    notified: Pin<Box<OwnedNotified>>,
    room: Wake,
    room_notified: Pin<Box<OwnedNotified>>,
    poll: tokio::time::Interval,
    /// Armed for the soonest job this worker sent back to wait ([`Held::due`]).
    due_timer: Option<(std::time::Instant, Pin<Box<tokio::time::Sleep>>)>,
    fairness: Arc<std::sync::Mutex<Fairness>>,
    /// Where this kind's ready jobs start, as far as this worker knows (shared with the
    /// LISTEN task, which lowers them).
    floors: SharedFloors,
}

/// One kind's [`Floors`], shared by its backend and the process's LISTEN task.
pub type SharedFloors = Arc<Mutex<Floors>>;

/// Most due times of waiting jobs a worker keeps (see [`Held::due`]).
const DUE_TIMES: usize = 1024;

/// How long a kind whose grown buffer had to give jobs back keeps the configured sizes
/// before its claims may grow again, so a kind that mixes fast and slow jobs does not
/// take slow ones into a grown buffer again and again. (A slow average alone only stops
/// growing until the average is fast again: one slow first job does not hold a kind
/// back for long.)
pub const STEADY_AFTER_SLOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Ended jobs (in finish batches) that may wait for their commit while the backend
/// keeps claiming.
pub const FINISH_BACKLOG: usize = 2;

/// How much one kind's backend claims at once and holds: the configured `batch_size`
/// and concurrency + `prefetch`, or more while the kind's jobs are fast and its queue
/// deep (see [`JobsBackend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapt {
    base_batch: usize,
    base_limit: usize,
    concurrency: usize,
    max_batch: usize,
    /// Most jobs the next claim asks for.
    pub batch: usize,
    /// Most jobs held that have not ended.
    pub limit: usize,
}

impl Adapt {
    /// The configured sizes: claims of up to `batch_size`, concurrency + `prefetch` held,
    /// growing to claims of `max_batch_size`.
    pub fn new(concurrency: usize, batch_size: usize, prefetch: usize, max_batch: usize) -> Self {
        let base_limit = concurrency.max(1) + prefetch;
        let base_batch = batch_size.max(1).min(base_limit);
        Self {
            base_batch,
            base_limit,
            concurrency: concurrency.max(1),
            // Growing is off when the most is not above the configured batch.
            max_batch: if max_batch > batch_size {
                max_batch
            } else {
                base_batch
            },
            batch: base_batch,
            limit: base_limit,
        }
    }

    /// A full claim while the kind's jobs are fast: the next asks for twice as many, and
    /// the buffer may hold two of them beside the running jobs (nothing grows when
    /// `max_batch_size` is not above `batch_size`).
    pub fn grow(&mut self) {
        if self.max_batch <= self.base_batch {
            return;
        }
        self.batch = (self.batch * 2).min(self.max_batch);
        self.limit = self.base_limit.max(self.concurrency + 2 * self.batch);
    }

    /// Back to the configured sizes.
    pub fn reset(&mut self) {
        self.batch = self.base_batch;
        self.limit = self.base_limit;
    }

    /// Whether the sizes are beyond the configured ones.
    pub fn grown(&self) -> bool {
        self.limit > self.base_limit
    }

    /// Most jobs held that have not ended, at the configured sizes.
    pub fn base_limit(&self) -> usize {
        self.base_limit
    }
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
    /// The one project (or tenant) the last fair claim found ready jobs for.
    only: Option<Uuid>,
}

/// The project (or tenant, for jobs with none) all of `jobs` belong to, if one.
fn only_group(jobs: &[ClaimedJob]) -> Option<Uuid> {
    let group = |j: &ClaimedJob| j.project_id.unwrap_or(j.tenant_id);
    let first = group(jobs.first()?);
    jobs.iter().all(|j| group(j) == first).then_some(first)
}

/// How often a kind whose ready jobs were all one project's looks for others.
pub const FAIRNESS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

// No field is pinned structurally (the futures it polls are boxed), so the backend may
// move whatever the application's context is.
impl<C> Unpin for JobsBackend<C> {}

impl<C: Clone + Send + Sync + 'static> JobsBackend<C> {
    /// A backend claiming `kind` jobs, woken by `wake` (NOTIFY), `room` (its finisher
    /// freed slots) and every poll interval; what it claims goes into `in_flight`.
    pub fn new(
        runner: Runner<C>,
        kind: &str,
        (wake, floors): (Wake, SharedFloors),
        room: Wake,
        in_flight: InFlight,
    ) -> Self {
        let w = &runner.config.worker;
        let adapt = Adapt::new(
            w.concurrency_for(kind),
            w.batch_size,
            w.prefetch,
            w.max_batch_size,
        );
        let finish_backlog = FINISH_BACKLOG * w.finish_batch.max(1) * w.finishers.max(1);
        let mut poll = tokio::time::interval(w.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let notified = Box::pin(wake.clone().notified_owned());
        let room_notified = Box::pin(room.clone().notified_owned());
        Self {
            runner,
            kind: kind.to_owned(),
            adapt,
            finish_backlog,
            steady_until: std::time::Instant::now(),
            in_flight,
            buffer: VecDeque::new(),
            claiming: VecDeque::new(),
            drained: false,
            wake,
            notified,
            room,
            room_notified,
            poll,
            due_timer: None,
            fairness: Arc::new(std::sync::Mutex::new(Fairness {
                many_projects: true,
                next_check: std::time::Instant::now(),
                only: None,
            })),
            floors,
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
        // A job this worker sent back to wait is due: look now, not at the next poll.
        if let Some(at) = self.in_flight.due()
            && self.due_timer.as_ref().is_none_or(|(t, _)| *t != at)
        {
            let deadline = tokio::time::Instant::from_std(at);
            self.due_timer = Some((at, Box::pin(tokio::time::sleep_until(deadline))));
        }
        if let Some((_, timer)) = self.due_timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            self.due_timer = None;
            self.in_flight.take_due(std::time::Instant::now());
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
        in_flight.claims.fetch_add(1, Ordering::AcqRel);
        let (fairness, floors) = (self.fairness.clone(), self.floors.clone());
        let now = std::time::Instant::now();
        let (fair, probe) = {
            let f = fairness.lock().unwrap_or_else(|e| e.into_inner());
            let check = f.many_projects || now >= f.next_check;
            // One project had the queue: ask whether another has ready jobs now, without
            // reading that project's entries (all a held horizon keeps).
            (check && f.only.is_none(), f.only.filter(|_| check))
        };
        let start = floors.lock().unwrap_or_else(|e| e.into_inner()).start();
        tokio::spawn(async move {
            let fair = match probe {
                Some(group) => match sql::job_other_group_ready(&pool, &kind, group).await {
                    Ok(others) => {
                        let mut f = fairness.lock().unwrap_or_else(|e| e.into_inner());
                        f.next_check = std::time::Instant::now() + FAIRNESS_CHECK;
                        if others {
                            f.only = None;
                        }
                        others
                    }
                    Err(_) => true,
                },
                None => fair,
            };
            // Whether what the claim took tells where the kind's ready jobs start: a
            // fair claim over several projects took each one's first jobs, not the
            // kind's first (even when those of one project were all it could lock).
            let mut in_order = !fair;
            let result = if fair {
                sql::job_claim_counting(&pool, &worker, &kind, n as i64, lease)
                    .await
                    .map(|(jobs, projects)| {
                        in_order = projects <= 1;
                        let mut f = fairness.lock().unwrap_or_else(|e| e.into_inner());
                        f.many_projects = projects > 1;
                        if jobs.is_empty() {
                            // Nothing ready says nothing: look again at the next claim
                            // (the one project known so far is kept for the look).
                            f.next_check = std::time::Instant::now();
                        } else {
                            f.only = only_group(&jobs).filter(|_| projects == 1);
                            f.next_check = std::time::Instant::now() + FAIRNESS_CHECK;
                        }
                        jobs
                    })
            } else {
                sql::job_claim_start(&pool, &worker, &kind, n as i64, lease, &start)
                    .await
                    .inspect(|jobs| {
                        if !jobs.is_empty() && only_group(jobs).is_none() {
                            // Another project's jobs came up: fair claims from now on.
                            let mut f = fairness.lock().unwrap_or_else(|e| e.into_inner());
                            f.many_projects = true;
                            f.only = None;
                        }
                    })
            };
            {
                let mut f = floors.lock().unwrap_or_else(|e| e.into_inner());
                match &result {
                    Ok(jobs) if in_order => f.claimed(&start, jobs, n),
                    Ok(_) => f.ended(&start),
                    Err(_) => f.failed(&start),
                }
            }
            if let Ok(jobs) = &result {
                lock(&in_flight).extend(jobs.iter().map(|j| j.id));
                if !jobs.is_empty() {
                    metrics::counter!("copydesk_jobs_claimed_total", "kind" => kind)
                        .increment(jobs.len() as u64);
                }
            }
            in_flight.claims.fetch_sub(1, Ordering::AcqRel);
            (n, result)
        })
    }
}

impl<C: Clone + Send + Sync + 'static> JobsBackend<C> {
    /// Gives back to the queue the buffered jobs beyond what the configured sizes allow
    /// (the kind turned out slow while its buffer was grown), newest claimed first, on a
    /// task of its own; other workers are woken for them. If that fails they stay
    /// `running` under this worker without a heartbeat until their lease runs out and
    /// they are rescued. Returns how many it gives back.
    fn hand_back(&mut self, worker: &str) -> usize {
        let excess = self
            .in_flight
            .unfinished()
            .saturating_sub(self.adapt.base_limit())
            .min(self.buffer.len());
        if excess == 0 {
            return 0;
        }
        let ids: Vec<Uuid> = self
            .buffer
            .split_off(self.buffer.len() - excess)
            .into_iter()
            .map(|t| t.args.id)
            .collect();
        self.in_flight
            .giving_back
            .fetch_add(ids.len(), Ordering::AcqRel);
        let (pool, worker, in_flight, room) = (
            self.runner.pool.clone(),
            worker.to_owned(),
            self.in_flight.clone(),
            self.room.clone(),
        );
        tokio::spawn(async move {
            match sql::job_unclaim(&pool, &worker, &ids).await {
                Ok(rows) => {
                    tracing::debug!(worker = %worker, jobs = rows.len(),
                        "handed back jobs a grown buffer held (the kind's jobs are slow)");
                    let kinds: Vec<&str> = rows.iter().map(|(_, k)| k.as_str()).collect();
                    let _ = sql::job_notify(&pool, &kinds).await;
                }
                Err(e) => tracing::warn!(worker = %worker, error = %e, jobs = ids.len(),
                    "could not hand back buffered jobs; their leases will expire and they will be rescued"),
            }
            {
                let mut set = lock(&in_flight);
                for id in &ids {
                    set.remove(id);
                }
                in_flight.giving_back.fetch_sub(ids.len(), Ordering::AcqRel);
            }
            // The backend may be waiting for room that only this frees.
            room.notify_one();
        });
        excess
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
            // A claim that has answered lands first, so a slow kind's check below
            // sees everything claimed.
            if let Some((_, claim)) = self.claiming.front_mut()
                && let Poll::Ready(joined) = Pin::new(claim).poll(cx)
            {
                self.claiming.pop_front();
                let (asked, result) = joined.unwrap_or_else(|e| {
                    (
                        1,
                        Err(Error::Sql(sqlx::Error::Protocol(format!(
                            "the claim task failed: {e}"
                        )))),
                    )
                });
                let fast =
                    self.in_flight.fast_since() && std::time::Instant::now() >= self.steady_until;
                match result {
                    Ok(jobs) => {
                        self.drained = jobs.len() < asked;
                        if self.drained {
                            self.adapt.reset();
                        } else if fast {
                            self.adapt.grow();
                        }
                        self.buffer.extend(jobs.into_iter().map(|job| {
                            let id = TaskId::from_uuid(job.id);
                            TaskBuilder::new(job).task_id(id).build()
                        }));
                    }
                    Err(e) => {
                        tracing::warn!(kind = %self.kind, error = %e, "claim failed; will try again");
                        self.drained = true;
                        self.adapt.reset();
                    }
                }
                continue;
            }
            // Slow jobs: back to the configured sizes, and the buffer's excess (from
            // claims made while grown) back to the queue, once no claim is under way
            // (one still running could take the same jobs again).
            if !self.buffer.is_empty() && self.claiming.is_empty() && self.in_flight.slow() {
                self.adapt.reset();
                if self.hand_back(worker.name()) > 0 {
                    self.steady_until = std::time::Instant::now() + STEADY_AFTER_SLOW;
                }
            }
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            // The buffer is empty and no claim has an answer yet.
            let asked: usize = self.claiming.iter().map(|(n, _)| n).sum();
            let room = self
                .adapt
                .limit
                .saturating_sub(self.in_flight.unfinished() + asked);
            let backlog = self.in_flight.finishing() >= self.finish_backlog;
            let claims = if self.adapt.grown() { 2 } else { 1 };
            if room > 0 && !backlog && !self.drained && self.claiming.len() < claims {
                let n = room.min(self.adapt.batch);
                self.claiming.push_back((n, self.claim(worker.name(), n)));
                continue;
            }
            if !self.claiming.is_empty() {
                // The oldest claim wakes us when it answers.
                return Poll::Pending;
            }
            if room == 0 || backlog {
                // Full: the finisher wakes us when it has committed some.
                if self.roomier(cx) {
                    continue;
                }
                return Poll::Pending;
            }
            // Nothing was ready: sleep until a NOTIFY or the poll interval (freed room
            // alone is no reason to look again).
            if self.woken(cx) {
                self.drained = false;
                continue;
            }
            return Poll::Pending;
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
    pool: Db,
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
        if result.is_ok() {
            in_flight.waiting_until(&batch);
        }
        {
            let mut set = lock(&in_flight);
            for f in &batch {
                set.remove(&f.id);
            }
            in_flight.finishing.fetch_sub(batch.len(), Ordering::AcqRel);
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
    pub in_flight: InFlight,
}

impl<C: Clone> Clone for JobService<C> {
    fn clone(&self) -> Self {
        Self {
            runner: self.runner.clone(),
            finished: self.finished.clone(),
            in_flight: self.in_flight.clone(),
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
        let (runner, finished, in_flight) = (
            self.runner.clone(),
            self.finished.clone(),
            self.in_flight.clone(),
        );
        Box::pin(async move {
            let f = runner.execute(task.args).await;
            in_flight.ended(&f);
            if finished.send(f).is_err() {
                // Only after the finisher is gone (a shutdown past its grace): the
                // job's lease runs out and it is rescued.
                tracing::error!("finisher gone; the job's result is dropped");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Adapt;

    #[test]
    fn claims_double_up_to_the_most_and_reset_to_the_configured_sizes() {
        let mut a = Adapt::new(64, 32, 8, 1024);
        assert_eq!((a.batch, a.limit, a.grown()), (32, 72, false));
        a.grow();
        assert_eq!((a.batch, a.limit, a.grown()), (64, 192, true));
        for _ in 0..10 {
            a.grow();
        }
        assert_eq!((a.batch, a.limit), (1024, 64 + 2048));
        a.reset();
        assert_eq!((a.batch, a.limit, a.grown()), (32, 72, false));
    }

    #[test]
    fn nothing_grows_when_the_most_is_the_batch_size() {
        let mut a = Adapt::new(4, 32, 2, 32);
        // A batch never exceeds what may be held.
        assert_eq!((a.batch, a.limit), (6, 6));
        a.grow();
        assert_eq!((a.batch, a.limit, a.grown()), (6, 6, false));
    }
}
