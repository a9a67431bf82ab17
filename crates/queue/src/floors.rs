//! Where a kind's ready jobs start, as one worker knows it: per priority, the `run_at`
//! of the last job its claims took (a floor). A claim given floors reads each known
//! priority of `jobs_queued_idx` from its floor (`copydesk_claim_from`), never the
//! entries behind it: the `queued` versions of jobs already claimed, which vacuum may
//! not remove while a transaction holds the horizon back, and which a claim from the
//! head would visit one by one.
//!
//! A floor is a promise that no ready job of its priority lies behind it; what could
//! break the promise, and what keeps it:
//!
//! - a job inserted by a transaction that began before a later job was claimed (its
//!   `run_at` is its transaction's start): the insert trigger says the earliest `run_at`
//!   of every statement on `copydesk_jobs_ready`, and the floor is lowered to it; and
//!   since a claim under way may not see that job (its snapshot may predate the
//!   commit) yet take later ones, committed before, the floor it leaves is no later
//!   than any job announced while it ran, even one announced ahead of the floor then
//!   (two finishes committing their follow-up jobs in the other order than they began
//!   left a job behind the floor this way, found only by the sweep);
//! - a job set back to `queued` (given back with its old `run_at`, retried, rescued,
//!   released, or by hand), made earlier, or moved to another priority: the requeue
//!   trigger says where it starts on the same channel;
//! - a notification lost (LISTEN reconnected) or a claim that failed: the floors are
//!   forgotten and the next claim reads from the head;
//! - and what nothing above covers (a LISTEN connection that stops delivering without
//!   an error): every [`SWEEP_EVERY`] a task of the worker process looks behind each
//!   floor for a ready job (`sweep`), apart from the claims, and lowers the floor to
//!   what it finds. Under a held horizon that look reads every entry behind the floor,
//!   as a claim from the head would, dragging the whole table through the buffer cache,
//!   so it is rare, and no claim waits for it.
//!
//! Behind a pooler with no LISTEN nothing can be said, so a worker keeps no floors and
//! claims from the head, as before.
//!
//! A priority with no floor is read from its head, in priority order: floors change
//! where a claim starts reading, never the order jobs are taken in.
//!
//! Reading every priority costs a claim more than reading one (a PL/pgSQL function
//! with a scan per gap between known priorities, against one statement: 2.1–3.0 ms
//! against 1.6–2.3 ms a claim of 32 in pgbench). While a worker has only ever taken
//! one priority of its kind, and nothing has told it of another, its claims read that
//! priority alone from its floor ([`Start::alone`]); every priority is read again
//! when a claim comes back short of what it asked (the priority ran dry: lower ones
//! may be waiting), when a job of another priority is announced, and at least every
//! [`FULL_EVERY`] (a job of another priority inserted long before with a later
//! `run_at` becomes ready without anyone saying so: it waits at most that long behind
//! a backlog of lower priority).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use crate::ClaimedJob;

/// How often a worker process looks behind its floors for ready jobs nobody told it of
/// (the first look comes at a random point within it, so processes started together
/// do not look together).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long a worker's claims may read its one known priority alone before they read
/// every priority again (see the module's documentation).
pub const FULL_EVERY: Duration = Duration::from_secs(1);

/// The NOTIFY channel on which inserts say where their ready jobs start (payload:
/// `<kind> <priority> <microseconds since the epoch>`).
pub const READY_CHANNEL: &str = "copydesk_jobs_ready";

/// One kind's floors in one worker.
#[derive(Debug, Default)]
pub struct Floors {
    /// Keeps no floors at all (no LISTEN can tell it of jobs behind them).
    off: bool,
    at: BTreeMap<i32, DateTime<Utc>>,
    /// Bumped whenever every floor is forgotten: a claim that began before sets none.
    forgotten: u64,
    /// Bumped whenever a job of a priority with no floor is announced: a claim that
    /// began before did not read every priority there is now.
    announced: u64,
    /// When the next claim must read every priority (`None`: it must now, because
    /// none has yet, the last ran dry, or another priority was announced since).
    full_due: Option<Instant>,
    /// The claims under way, by number: for each, per priority, the earliest `run_at`
    /// announced since it began. Its snapshot may predate those jobs, so the floor it
    /// leaves passes none of them, whether or not the floor stood behind them.
    heard: BTreeMap<u64, BTreeMap<i32, DateTime<Utc>>>,
    claims: u64,
}

/// The floors a claim starts from, and when it took them.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Highest priority first.
    pub floors: Vec<(i32, DateTime<Utc>)>,
    claim: u64,
    forgotten: u64,
    announced: u64,
    /// The claim may read its one priority alone.
    alone: bool,
    at: Instant,
}

impl Start {
    /// The one priority, and its floor, that the claim may read alone, without looking
    /// at any other priority; `None`: it reads every priority.
    pub fn alone(&self) -> Option<(i32, DateTime<Utc>)> {
        self.floors.first().copied().filter(|_| self.alone)
    }
}

impl Floors {
    /// No floors yet: the first claim reads from the head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Floors that are never kept: every claim reads from the head.
    pub fn off() -> Self {
        Self {
            off: true,
            ..Self::default()
        }
    }

    /// Where the next claim starts: each known priority's floor. The claim is under way
    /// from now until [`Floors::claimed`], [`Floors::ended`] or [`Floors::failed`] is
    /// given its `Start`.
    pub fn start(&mut self) -> Start {
        self.start_at(Instant::now())
    }

    /// [`Floors::start`] at `now`.
    pub fn start_at(&mut self, now: Instant) -> Start {
        self.claims += 1;
        if !self.off {
            self.heard.insert(self.claims, BTreeMap::new());
        }
        Start {
            floors: self.known(),
            claim: self.claims,
            forgotten: self.forgotten,
            announced: self.announced,
            alone: self.at.len() == 1 && self.full_due.is_some_and(|d| now < d),
            at: now,
        }
    }

    /// Each priority's floor, highest priority first (what the next claim would start
    /// from).
    pub fn known(&self) -> Vec<(i32, DateTime<Utc>)> {
        self.at.iter().rev().map(|(p, at)| (*p, *at)).collect()
    }

    /// A claim that started at `start` and asked for `asked` jobs took `jobs`: each
    /// priority it took from starts, from now on, at the last job taken (the claim took
    /// them in order, so every ready job before it that its snapshot saw was taken, by
    /// this claim or one running beside it), or at the earliest job of that priority
    /// announced since the claim began, if earlier (its snapshot may predate that job).
    /// If every floor was forgotten meanwhile, it sets none.
    pub fn claimed(&mut self, start: &Start, jobs: &[ClaimedJob], asked: usize) {
        let heard = self.heard.remove(&start.claim).unwrap_or_default();
        if self.off || start.forgotten != self.forgotten {
            return;
        }
        if !start.alone && start.announced == self.announced {
            // It read every priority, and no other was announced meanwhile.
            self.full_due = Some(start.at + FULL_EVERY);
        }
        if jobs.len() < asked {
            // What it read ran dry: the next claim reads every priority.
            self.full_due = None;
        }
        let mut last: BTreeMap<i32, DateTime<Utc>> = BTreeMap::new();
        for j in jobs {
            let at = last.entry(j.priority).or_insert(j.run_at);
            *at = (*at).max(j.run_at);
        }
        for (p, took) in last {
            let to = heard.get(&p).map_or(took, |h| took.min(*h));
            self.at.insert(p, to);
        }
    }

    /// A claim that says nothing of where ready jobs start (a fair claim over several
    /// projects took each one's first jobs, not the kind's) ended: it sets no floor.
    pub fn ended(&mut self, start: &Start) {
        self.heard.remove(&start.claim);
    }

    /// A claim failed: rows it locked may have been skipped by claims beside it, so
    /// every floor is forgotten.
    pub fn failed(&mut self, start: &Start) {
        self.heard.remove(&start.claim);
        self.forget();
    }

    /// A job of `priority` is ready from `at`: the floor comes down to it if it stood
    /// past it, and no claim under way leaves it past it. A priority with no floor is
    /// read from its head anyway, by the next claim that reads every priority, which is
    /// the next one.
    pub fn lower(&mut self, priority: i32, at: DateTime<Utc>) {
        for heard in self.heard.values_mut() {
            let earliest = heard.entry(priority).or_insert(at);
            *earliest = (*earliest).min(at);
        }
        match self.at.get_mut(&priority) {
            Some(floor) => *floor = (*floor).min(at),
            None => {
                self.full_due = None;
                self.announced += 1;
            }
        }
    }

    /// Forgets every floor: the next claim reads from the head.
    pub fn forget(&mut self) {
        self.at.clear();
        self.forgotten += 1;
    }
}

/// Looks behind each floor of `floors` (one kind's) for a ready job, and lowers the
/// floor to the first one found. Errors are logged; the next sweep looks again.
pub async fn sweep(pool: &crate::db::Db, kind: &str, floors: &std::sync::Mutex<Floors>) {
    let known = floors.lock().unwrap_or_else(|e| e.into_inner()).known();
    for (priority, floor) in known {
        match crate::sql::job_ready_behind(pool, kind, priority, floor).await {
            Ok(Some(at)) => {
                tracing::info!(kind, priority, %at, "a ready job behind the claims' floor: going back for it");
                floors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .lower(priority, at);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(kind, error = %e, "looking behind the floors failed; will look again")
            }
        }
    }
}

/// Reads a [`READY_CHANNEL`] payload: the kind, the priority, and the earliest `run_at`.
pub fn parse_ready(payload: &str) -> Option<(&str, i32, DateTime<Utc>)> {
    let mut parts = payload.rsplitn(3, ' ');
    let micros: i64 = parts.next()?.parse().ok()?;
    let priority: i32 = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    Some((kind, priority, DateTime::from_timestamp_micros(micros)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use uuid::Uuid;

    fn job(priority: i32, secs: i64) -> ClaimedJob {
        ClaimedJob {
            id: Uuid::now_v7(),
            kind: "k".into(),
            tenant_id: Uuid::nil(),
            project_id: None,
            input: Value::Null,
            parent_id: None,
            priority,
            attempts: 1,
            max_attempts: 3,
            run_at: t(secs),
            created_at: t(secs),
            locked_by: "w".into(),
            traceparent: None,
            tracestate: None,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_claim_moves_each_priority_it_took_from_to_its_last_job() {
        let mut f = Floors::new();
        let s = f.start();
        assert!(s.floors.is_empty(), "the first claim reads from the head");
        f.claimed(&s, &[job(5, 3), job(0, 1), job(5, 7), job(0, 2)], 4);
        let s = f.start();
        assert_eq!(
            s.floors,
            vec![(5, t(7)), (0, t(2))],
            "highest priority first"
        );
    }

    #[test]
    fn a_job_behind_a_floor_lowers_it_and_a_claim_under_way_does_not_raise_it_back() {
        let mut f = Floors::new();
        let s = f.start();
        f.claimed(&s, &[job(0, 10)], 1);
        let under_way = f.start();
        f.lower(0, t(4));
        f.lower(0, t(6)); // later than the floor now: nothing changes
        f.claimed(&under_way, &[job(0, 12)], 1);
        assert_eq!(f.known(), vec![(0, t(4))]);
        // The next claim, begun after, moves it on.
        let s = f.start();
        f.claimed(&s, &[job(0, 5)], 1);
        assert_eq!(f.known(), vec![(0, t(5))]);
    }

    #[test]
    fn a_job_announced_ahead_of_the_floor_while_a_claim_ran_is_not_passed_by_it() {
        // The floor stands at 1. A claim begins; a job whose transaction began at 4
        // commits after the claim's snapshot was taken and is announced (ahead of the
        // floor: nothing to lower); the claim takes a job at 6, committed earlier.
        let mut f = Floors::new();
        let s = f.start();
        f.claimed(&s, &[job(0, 1)], 1);
        let under_way = f.start();
        f.lower(0, t(4));
        assert_eq!(f.known(), vec![(0, t(1))]);
        f.claimed(&under_way, &[job(0, 6)], 1);
        assert_eq!(
            f.known(),
            vec![(0, t(4))],
            "the next claim reads from the job at 4"
        );
        // A claim begun after the announcement saw that job: it moves the floor on.
        let s = f.start();
        f.claimed(&s, &[job(0, 4), job(0, 7)], 2);
        assert_eq!(f.known(), vec![(0, t(7))]);
    }

    #[test]
    fn two_claims_under_way_each_keep_to_what_was_announced_since_it_began() {
        let mut f = Floors::new();
        let s = f.start();
        f.claimed(&s, &[job(0, 1)], 1);
        let first = f.start();
        f.lower(0, t(5));
        let second = f.start();
        f.lower(0, t(8));
        f.claimed(&second, &[job(0, 9)], 1);
        assert_eq!(f.known(), vec![(0, t(8))]);
        f.claimed(&first, &[job(0, 7)], 1);
        assert_eq!(f.known(), vec![(0, t(5))]);
        assert!(f.heard.is_empty(), "a claim that ended is forgotten");
    }

    #[test]
    fn a_claim_begun_before_a_new_priority_was_announced_sets_its_first_floor_no_later_than_that_job()
     {
        // A job of priority 1, whose transaction began at 4, commits after a claim began
        // (its snapshot does not see it) that takes a priority-1 job of a transaction
        // begun later and committed earlier (run_at 9). The announcement comes in first.
        let mut f = Floors::new();
        let s = f.start();
        f.claimed(&s, &[job(0, 10)], 1);
        let under_way = f.start();
        f.lower(1, t(4));
        f.claimed(&under_way, &[job(1, 9)], 1);
        let next = f.start();
        assert_eq!(next.floors, vec![(1, t(4)), (0, t(10))]);
        assert_eq!(next.alone(), None, "the next claim reads every priority");
        f.claimed(&next, &[job(1, 4), job(1, 9)], 2);
        assert_eq!(f.known(), vec![(1, t(9)), (0, t(10))]);
    }

    #[test]
    fn forgotten_floors_are_not_set_again_by_a_claim_begun_before() {
        let mut f = Floors::new();
        let s = f.start();
        f.claimed(&s, &[job(0, 10)], 1);
        let under_way = f.start();
        f.forget();
        f.claimed(&under_way, &[job(0, 11)], 1);
        assert!(f.known().is_empty());
        let s = f.start();
        f.claimed(&s, &[job(0, 12)], 1);
        assert_eq!(f.known(), vec![(0, t(12))]);
    }

    #[test]
    fn one_known_priority_is_read_alone_until_it_runs_dry_another_is_announced_or_time_passes() {
        let now = Instant::now();
        let mut f = Floors::new();
        let s = f.start_at(now);
        assert_eq!(s.alone(), None, "the first claim reads every priority");
        f.claimed(&s, &[job(0, 1), job(0, 2)], 2);
        assert_eq!(f.start_at(now).alone(), Some((0, t(2))));
        // Past FULL_EVERY every priority is read again (a later job of another priority
        // may have become ready unannounced).
        assert_eq!(f.start_at(now + FULL_EVERY).alone(), None);

        // A claim of one priority alone that came back short: the next reads them all.
        let s = f.start_at(now);
        f.claimed(&s, &[job(0, 3)], 2);
        let s = f.start_at(now);
        assert_eq!(s.alone(), None);
        f.claimed(&s, &[job(0, 4), job(0, 5)], 2);
        assert_eq!(f.start_at(now).alone(), Some((0, t(5))));

        // A job of the same priority behind the floor lowers it and keeps it alone.
        f.lower(0, t(4));
        assert_eq!(f.start_at(now).alone(), Some((0, t(4))));

        // Another priority announced: every priority is read until a claim begun after
        // the announcement has read them all.
        f.lower(7, t(9));
        let under_way = f.start_at(now);
        assert_eq!(under_way.alone(), None);
        f.lower(7, t(10));
        f.claimed(&under_way, &[job(0, 6), job(0, 7)], 2);
        let s = f.start_at(now);
        assert_eq!(s.alone(), None, "announced while the claim read");
        f.claimed(&s, &[job(0, 8), job(0, 9)], 2);
        assert_eq!(f.start_at(now).alone(), Some((0, t(9))));

        // Two priorities known: never alone.
        let s = f.start_at(now);
        f.claimed(&s, &[job(0, 9)], 1);
        let s = f.start_at(now);
        f.claimed(&s, &[job(7, 10), job(0, 10)], 2);
        assert_eq!(f.start_at(now).floors.len(), 2);
        assert_eq!(f.start_at(now).alone(), None);
    }

    #[test]
    fn ready_payloads_are_read_from_the_right() {
        assert_eq!(
            parse_ready("publish_post -3 1800000000000000"),
            Some(("publish_post", -3, t(0)))
        );
        assert_eq!(parse_ready("noop 0"), None);
        assert_eq!(parse_ready("noop x 1"), None);
    }
}
