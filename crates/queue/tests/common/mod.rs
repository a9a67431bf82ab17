//! Test support for the engine alone: one embedded Postgres cluster per test binary
//! (started on first use, stopped at exit) and a fresh database per test, cloned from a
//! template that has the engine's migrations and nothing else but `marks`, the table
//! the tests' effects write (an application's tables stand there). The kinds are the
//! tests' own (`registry()`); the handlers' context is `()`.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use copydesk_cluster::Cluster;
use copydesk_queue::{
    Catalog, ClaimedJob, JobError, NewJob, Outcome, Registry, Runner,
    config::{QueueConfig, RetrySettings, WorkerSettings},
    db::Db,
    schema,
    worker::{self, WorkerOptions, WorkerSummary},
};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use uuid::Uuid;

const TEMPLATE: &str = "queue_template";

/// The test binary's cluster, its template holding the engine's schema, the tests'
/// kinds and `marks`.
pub fn cluster() -> &'static Cluster {
    copydesk_cluster::testing::cluster(TEMPLATE, |options| {
        Box::pin(async move {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            schema::migrate(&pool).await.unwrap();
            schema::register_kinds(&pool, &registry().catalog())
                .await
                .unwrap();
            // What a test's effects write, standing for an application's tables.
            sqlx::query("CREATE TABLE marks (key text PRIMARY KEY)")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        })
    })
}

pub struct TestDb {
    pub pool: Db,
    pub name: String,
    pub url: String,
}

/// A fresh database with the engine's schema and the tests' kinds.
pub async fn test_db() -> TestDb {
    let c = cluster();
    let name = format!("q_{}", Uuid::new_v4().simple());
    c.create_database_from(&name, Some(TEMPLATE)).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(c.connect_options(&name))
        .await
        .unwrap();
    TestDb {
        pool: Db::new(pool),
        url: c.url(&name),
        name,
    }
}

/// An empty database of the test binary's cluster.
pub async fn empty_db() -> TestDb {
    let c = cluster();
    let name = format!("e_{}", Uuid::new_v4().simple());
    c.create_database(&name).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(c.connect_options(&name))
        .await
        .unwrap();
    TestDb {
        pool: Db::new(pool),
        url: c.url(&name),
        name,
    }
}

/// Settings for fast tests: short leases and polls, tiny retry delays.
pub fn fast_settings() -> QueueConfig {
    QueueConfig {
        worker: WorkerSettings {
            concurrency: 8,
            batch_size: 32,
            max_batch_size: 1024,
            prefetch: 8,
            finish_batch: 1000,
            finishers: 2,
            lease_secs: 5,
            heartbeat_secs: 1,
            poll_interval_ms: 200,
            shutdown_grace_secs: 5,
            migrate_on_start: false,
            unreadable_after_secs: 3600,
            kinds: BTreeMap::new(),
        },
        retry: RetrySettings {
            base_delay_ms: 10,
            max_delay_secs: 1,
        },
    }
}

const NOOP_SCHEMA: &str = r#"{
  "type": "object",
  "properties": { "sleep_ms": { "type": "integer", "minimum": 0, "maximum": 600000 } },
  "additionalProperties": false
}"#;

/// The tests' kinds: `noop` (done after an optional `sleep_ms`), `explode` (panics),
/// `flaky` (always a transient error), `patient` (waits for a limit on its first three
/// runs, then is done).
pub fn registry() -> Registry<()> {
    Registry::new()
        .with("noop", Some(NOOP_SCHEMA), |ctx| {
            Box::pin(async move {
                if let Some(ms) = ctx.job.input["sleep_ms"].as_u64().filter(|ms| *ms > 0) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok(Outcome::done())
            })
        })
        .with("explode", None, |_ctx| Box::pin(async { panic!("boom") }))
        .with("flaky", None, |_ctx| {
            Box::pin(async { Err::<Outcome, _>(JobError::transient("upstream said 503")) })
        })
        .with("patient", None, |ctx| {
            Box::pin(async move {
                let runs: i64 = sqlx::query_scalar(
                    "UPDATE jobs SET output = jsonb_build_object('runs', coalesce((output->>'runs')::int, 0) + 1)
                     WHERE id = $1 RETURNING (output->>'runs')::bigint",
                )
                .bind(ctx.job.id)
                .fetch_one(&ctx.pool)
                .await
                .unwrap();
                if runs <= 3 {
                    Err(JobError::wait(
                        "waiting for limit llm:h",
                        Duration::from_millis(300),
                    ))
                } else {
                    Ok(Outcome::done())
                }
            })
        })
}

/// The tests' kinds' contracts (what `enqueue` checks against).
pub fn catalog() -> Catalog {
    registry().catalog()
}

/// A runner of `registry`'s kinds over the test's database.
pub fn runner(db: &TestDb, config: QueueConfig, registry: Registry<()>) -> Runner<()> {
    Runner::new(db.pool.clone(), config, registry, ())
}

/// Options running only `k`.
pub fn kinds(k: &[&str]) -> WorkerOptions {
    WorkerOptions {
        kinds: Some(k.iter().map(|s| s.to_string()).collect()),
        ..WorkerOptions::default()
    }
}

/// Starts an in-process worker; sending on (or dropping) the returned sender stops it.
pub fn start_worker(
    runner: Runner<()>,
    opts: WorkerOptions,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<copydesk_queue::Result<WorkerSummary>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker::run(runner, opts, async move {
        let _ = rx.await;
    }));
    (tx, handle)
}

/// Enqueues `n` noop jobs and claims them all as `worker`.
pub async fn claim_noops(db: &TestDb, worker: &str, n: usize) -> Vec<ClaimedJob> {
    let mut conn = db.pool.acquire().await.unwrap();
    copydesk_queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({})); n],
    )
    .await
    .unwrap();
    copydesk_queue::ops::claim(&db.pool, worker, "noop", n as i64, Duration::from_secs(60))
        .await
        .unwrap()
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn status_of(pool: &Db, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn count(pool: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A job's `(attempts, last_error)`.
pub async fn attempts_and_error(pool: &Db, id: Uuid) -> (i32, Option<String>) {
    sqlx::query_as("SELECT attempts, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until exactly `n` jobs are running.
pub async fn wait_running(pool: &Db, n: i64, timeout: Duration) {
    wait_for(timeout, &format!("{n} jobs running"), || async {
        count(pool, "SELECT count(*) FROM jobs WHERE status = 'running'").await == n
    })
    .await;
}
