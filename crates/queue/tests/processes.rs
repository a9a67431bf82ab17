//! Races between processes: worker processes of the engine alone (this test binary, run
//! again as `child_worker`) over one database. Four share a backlog and claim each job
//! once; a killed one's job is rescued after its lease by another; one stopped past its
//! grace period gives its unfinished jobs back.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use copydesk_queue::{NewJob, Runner, db::Db, worker};
use nix::sys::signal::{Signal, kill};
use serde_json::json;
use uuid::Uuid;

/// Where a child worker connects, and its settings (seconds).
const DB_VAR: &str = "COPYDESK_QUEUE_TEST_CHILD_DB";
const LEASE_VAR: &str = "COPYDESK_QUEUE_TEST_CHILD_LEASE";
const GRACE_VAR: &str = "COPYDESK_QUEUE_TEST_CHILD_GRACE";

/// Not a test of its own: the worker process the tests below start, running the tests'
/// `noop` kind against the database in `COPYDESK_QUEUE_TEST_CHILD_DB` until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process the other tests start"]
async fn child_worker() {
    let Ok(url) = std::env::var(DB_VAR) else {
        return;
    };
    let secs = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut config = fast_settings();
    config.worker.lease_secs = secs(LEASE_VAR, 5);
    config.worker.shutdown_grace_secs = secs(GRACE_VAR, 5);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let runner = Runner::new(Db::new(pool), config, registry(), ());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    worker::run(runner, kinds(&["noop"]), async move {
        term.recv().await;
    })
    .await
    .unwrap();
}

/// A child worker process, killed when dropped so a failing test leaves no orphan.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    fn spawn(db: &TestDb, env: &[(&str, &str)]) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_worker", "--quiet"])
            .env(DB_VAR, &db.url)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary starts again as a worker");
        Self(child)
    }

    fn signal(&self, sig: Signal) {
        kill(nix::unistd::Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn enqueue(db: &TestDb, jobs: Vec<NewJob>) -> Vec<Uuid> {
    let mut conn = db.pool.acquire().await.unwrap();
    copydesk_queue::enqueue_many(&mut conn, &catalog(), &jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Waits until `n` processes hold the LISTEN (each does once its worker is up).
async fn listening(db: &TestDb, n: i64) {
    wait_for(Duration::from_secs(60), "workers listening", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .await
            == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_claim_each_of_four_thousand_jobs_once() {
    let db = test_db().await;
    // Every claim is recorded: a second claim of any job would show, as would a job
    // given back by a worker that did not hold it.
    sqlx::raw_sql(
        "CREATE TABLE claims (job_id uuid, attempt int, worker text);
         CREATE TABLE given_back (job_id uuid, worker text);
         CREATE FUNCTION log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status = 'running' THEN
                 INSERT INTO claims VALUES (NEW.id, NEW.attempts, NEW.locked_by);
             ELSE
                 INSERT INTO given_back VALUES (OLD.id, OLD.locked_by);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER log_claim AFTER UPDATE OF status ON jobs FOR EACH ROW
             WHEN (NEW.status = 'running' OR (OLD.status = 'running' AND NEW.status = 'queued'))
             EXECUTE FUNCTION log_claim();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut workers: Vec<Proc> = (0..4).map(|_| Proc::spawn(&db, &[])).collect();
    listening(&db, 4).await;
    enqueue(&db, vec![NewJob::new("noop", json!({})); 4_000]).await;
    wait_for(Duration::from_secs(180), "4,000 jobs done", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 4_000
    })
    .await;
    for w in &workers {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(w.wait(Duration::from_secs(30)).success());
    }
    let given_back = count(&db.pool, "SELECT count(*) FROM given_back").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM claims").await,
        4_000 + given_back,
        "one claim per job, and one more per job given back unstarted"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM given_back g
             WHERE NOT EXISTS (SELECT 1 FROM claims c
                               WHERE c.job_id = g.job_id AND c.worker = g.worker)"
        )
        .await,
        0,
        "a job is given back only by the worker that held it"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE attempts <> 1").await,
        0
    );
    let processes = count(
        &db.pool,
        "SELECT count(DISTINCT split_part(worker, ':', 2)) FROM claims",
    )
    .await;
    assert!(processes >= 2, "the work was shared (got {processes})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_rescued_after_its_lease_and_completes() {
    let db = test_db().await;
    let lease = [(LEASE_VAR, "2")];
    let id = enqueue(&db, vec![NewJob::new("noop", json!({"sleep_ms": 4000}))]).await[0];
    let mut first = Proc::spawn(&db, &lease);
    wait_for(Duration::from_secs(20), "the job to start", || async {
        status_of(&db.pool, id).await == "running"
    })
    .await;
    first.signal(Signal::SIGKILL);
    first.wait(Duration::from_secs(10));
    assert_eq!(
        status_of(&db.pool, id).await,
        "running",
        "nobody released it"
    );

    let mut second = Proc::spawn(&db, &lease);
    wait_for(Duration::from_secs(30), "the rescued job done", || async {
        status_of(&db.pool, id).await == "done"
    })
    .await;
    let (attempts, err) = attempts_and_error(&db.pool, id).await;
    let err = err.unwrap_or_default();
    assert_eq!(attempts, 2);
    assert!(err.starts_with("lease expired"), "{err}");
    second.signal(Signal::SIGTERM);
    assert!(second.wait(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_past_its_grace_gives_its_jobs_back_and_one_within_it_finishes() {
    let db = test_db().await;
    // Within the grace period: the jobs in flight finish.
    let quick = enqueue(&db, vec![NewJob::new("noop", json!({"sleep_ms": 1500})); 3]).await;
    let mut w = Proc::spawn(&db, &[]);
    wait_running(&db.pool, 3, Duration::from_secs(20)).await;
    w.signal(Signal::SIGTERM);
    assert!(w.wait(Duration::from_secs(20)).success());
    for id in quick {
        assert_eq!(status_of(&db.pool, id).await, "done");
    }
    // Past it: they go back to the queue, their attempt given back.
    let slow = enqueue(
        &db,
        vec![NewJob::new("noop", json!({"sleep_ms": 60000})); 2],
    )
    .await;
    let mut w = Proc::spawn(&db, &[(GRACE_VAR, "1")]);
    wait_running(&db.pool, 2, Duration::from_secs(20)).await;
    w.signal(Signal::SIGTERM);
    assert!(w.wait(Duration::from_secs(20)).success());
    for id in slow {
        let row: (String, i32, Option<String>) =
            sqlx::query_as("SELECT status, attempts, locked_by FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!((row.0.as_str(), row.1, row.2), ("queued", 0, None));
    }
}
