//! The engine against a real Postgres holding its own schema and nothing else: enqueue,
//! the kinds the database knows, claims (fair across projects, racing claimers), the
//! batched finish and its fencing, waits, retries and backoff, panics, cancel and retry,
//! leases kept and rescued, the NOTIFY wake-up, periodic enqueues, and the migrations.

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use common::*;
use copydesk_queue::{
    self as queue, Error, JobStatus, NewJob, Outcome,
    runner::{self, Finished, Written, run_once},
    worker::{Periodic, WorkerOptions},
};
use serde_json::json;
use uuid::Uuid;

/// A finished first attempt of a `noop` job.
fn finished(id: Uuid, outcome: Outcome) -> Finished {
    Finished {
        id,
        kind: "noop".into(),
        attempts: 1,
        outcome,
        elapsed: Duration::ZERO,
        trace: None,
    }
}

#[tokio::test]
async fn a_plain_sql_insert_is_picked_up_without_waiting_for_the_poll() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.poll_interval_ms = 60_000; // only NOTIFY can wake the worker in time
    let (stop, worker) = start_worker(runner(&db, settings, registry()), kinds(&["noop"]));

    // The first job proves the worker is up (its start-up fetch may find it).
    let first: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    wait_for(Duration::from_secs(10), "the first job", || async {
        status_of(&db.pool, first).await == "done"
    })
    .await;

    // Now the worker is idle until a wake-up; the poll is a minute away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tx = db.pool.begin().await.unwrap();
    let second: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let committed = std::time::Instant::now();
    wait_for(Duration::from_secs(5), "the NOTIFY-woken job", || async {
        status_of(&db.pool, second).await == "done"
    })
    .await;
    assert!(committed.elapsed() < Duration::from_secs(5));
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_idempotency_key_gives_back_the_existing_job() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let job = NewJob::new("noop", json!({})).idempotency_key("order-42");
    let a = queue::enqueue(&mut conn, &catalog(), &job).await.unwrap();
    let b = queue::enqueue(&mut conn, &catalog(), &job).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.id, b.id);

    // Within one batch too, and mixed with new keys.
    let batch = vec![
        NewJob::new("noop", json!({})).idempotency_key("order-42"),
        NewJob::new("noop", json!({})).idempotency_key("order-43"),
        NewJob::new("noop", json!({})).idempotency_key("order-43"),
        NewJob::new("noop", json!({})),
    ];
    let got = queue::enqueue_many(&mut conn, &catalog(), &batch)
        .await
        .unwrap();
    assert_eq!(
        got[0],
        queue::Enqueued {
            id: a.id,
            created: false
        }
    );
    assert!(got[1].created && !got[2].created);
    assert_eq!(got[1].id, got[2].id);
    assert!(got[3].created);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM jobs").await, 3);
}

#[tokio::test]
async fn the_database_refuses_an_unknown_kind_or_status() {
    let db = test_db().await;
    let err = sqlx::query("INSERT INTO jobs (kind, input) VALUES ('nope', '{}')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    let dbe = err.as_database_error().unwrap();
    assert_eq!(dbe.code().as_deref(), Some("23514"));
    assert_eq!(dbe.constraint(), Some("jobs_kind_known"));
    assert_eq!(dbe.message(), "unknown job kind 'nope'");
    // In a batch, the one bad row names itself and nothing is inserted.
    let err = sqlx::query("INSERT INTO jobs (kind, input) VALUES ('noop', '{}'), ('noop ', '{}')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().message(),
        "unknown job kind 'noop '"
    );
    // Nor may a job become another kind than a known one.
    let id: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let err = sqlx::query("UPDATE jobs SET kind = 'nope' WHERE id = $1")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().constraint(),
        Some("jobs_kind_known")
    );
    sqlx::query("DELETE FROM jobs")
        .execute(&db.pool)
        .await
        .unwrap();

    let err = sqlx::query("INSERT INTO jobs (kind, status) VALUES ('noop', 'paused')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().constraint(),
        Some("jobs_status_known")
    );

    // The library says so before reaching the database, naming the known kinds.
    let mut conn = db.pool.acquire().await.unwrap();
    let err = queue::enqueue(&mut conn, &catalog(), &NewJob::new("nope", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownKind(k, known) if k == "nope" && known.contains("noop")),
        "{err}"
    );
    let err = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({"sleep_ms": -1})),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("/sleep_ms"), "{err}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM jobs").await, 0);
}

#[tokio::test]
async fn a_kind_registered_in_code_is_enqueued_by_sql_and_run_with_no_migration() {
    let db = test_db().await;
    // Written once: its name here is all the database is told.
    let registry = registry().with("greet", None, |ctx| {
        Box::pin(async move {
            let name = ctx.job.input["name"]
                .as_str()
                .unwrap_or("nobody")
                .to_owned();
            Ok(Outcome::done_with(
                json!({ "greeting": format!("hello, {name}") }),
            ))
        })
    });
    let insert =
        "INSERT INTO jobs (kind, input) VALUES ('greet', '{\"name\": \"Ada\"}') RETURNING id";
    // Before any worker knows it, the database does not.
    let err = sqlx::query(insert).execute(&db.pool).await.unwrap_err();
    let dbe = err.as_database_error().unwrap();
    assert_eq!(dbe.message(), "unknown job kind 'greet'");

    let (stop, worker) = start_worker(runner(&db, fast_settings(), registry), kinds(&["greet"]));
    let id: Uuid = loop {
        match sqlx::query_scalar(insert).fetch_one(&db.pool).await {
            Ok(id) => break id,
            // The worker registers its kinds as it starts.
            Err(e) if e.to_string().contains("unknown job kind") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    wait_for(Duration::from_secs(10), "the greet job done", || {
        let pool = db.pool.clone();
        async move { status_of(&pool, id).await == "done" }
    })
    .await;
    let output: serde_json::Value = sqlx::query_scalar("SELECT output FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(output["greeting"], "hello, Ada");
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    // Known from now on, with no worker running.
    sqlx::query(insert).execute(&db.pool).await.unwrap();
}

#[tokio::test]
async fn invalid_input_fails_at_claim_alone_and_without_retry() {
    let db = test_db().await;
    let bad: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, priority) VALUES ('noop', '{\"sleep_ms\": \"soon\"}', 5) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let good: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let r = runner(&db, fast_settings(), registry());
    let (first, w1) = run_once(&r, &["noop"]).await.unwrap().unwrap();
    assert_eq!((first, w1), (bad, Written::Status(JobStatus::Failed)));
    let (second, w2) = run_once(&r, &["noop"]).await.unwrap().unwrap();
    assert_eq!((second, w2), (good, Written::Status(JobStatus::Done)));

    let (attempts, err) = attempts_and_error(&db.pool, bad).await;
    let err = err.unwrap_or_default();
    assert_eq!(attempts, 1, "a bad input is not retried");
    assert!(err.contains("/sleep_ms") && err.contains("noop"), "{err}");
    assert!(run_once(&r, &["noop"]).await.unwrap().is_none());
}

#[tokio::test]
async fn a_job_that_waits_for_a_limit_keeps_its_attempts_and_its_last_error() {
    let db = test_db().await;
    let r = runner(&db, fast_settings(), registry());
    // One attempt left, and an error from an earlier one.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, max_attempts, attempts, last_error)
         VALUES ('patient', '{}', 2, 1, 'upstream said 503') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    for _ in 0..3 {
        let worked = loop {
            if let Some(w) = run_once(&r, &["patient"]).await.unwrap() {
                break w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(worked, (id, Written::Status(JobStatus::Queued)));
        let (attempts, error, waiting, wait_ms): (i32, Option<String>, Option<String>, f64) =
            sqlx::query_as(
                "SELECT attempts, last_error, waiting_for,
                        extract(epoch FROM run_at - updated_at)::float8 * 1000
                 FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            (attempts, error.as_deref(), waiting.as_deref()),
            (
                1,
                Some("upstream said 503"),
                Some("waiting for limit llm:h")
            ),
            "the attempt is given back; the earlier error stays"
        );
        assert!(
            (290.0..=310.0).contains(&wait_ms),
            "run_at 300 ms on: {wait_ms}"
        );
        // The queue's counts tell it apart from a job merely queued.
        let stats = queue::ops::stats(&db.pool).await.unwrap();
        let row = stats.rows.iter().find(|r| r.kind == "patient").unwrap();
        assert_eq!(
            (row.status, row.jobs, row.waiting),
            (JobStatus::Queued, 1, 1)
        );
    }
    // Three waits spent none of its one attempt left: the fourth run is done.
    let worked = loop {
        if let Some(w) = run_once(&r, &["patient"]).await.unwrap() {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(worked, (id, Written::Status(JobStatus::Done)));
    let (attempts, waiting): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, waiting_for FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, waiting), (2, None));
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_attempt_and_the_worker_lives_on() {
    let db = test_db().await;
    let (stop, worker) = start_worker(
        runner(&db, fast_settings(), registry()),
        kinds(&["explode", "noop"]),
    );
    let boom: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, max_attempts) VALUES ('explode', '{}', 2) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(15),
        "the exploding job to fail",
        || async { status_of(&db.pool, boom).await == "failed" },
    )
    .await;
    // The same worker still runs other jobs afterwards.
    let mut conn = db.pool.acquire().await.unwrap();
    let ids: Vec<Uuid> = queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({})); 20],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.id)
    .collect();
    wait_for(
        Duration::from_secs(15),
        "noop jobs after the panic",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM jobs WHERE kind = 'noop' AND status = 'done'",
            )
            .await
                == 20
        },
    )
    .await;
    let (attempts, err) = attempts_and_error(&db.pool, boom).await;
    let err = err.unwrap_or_default();
    assert_eq!(attempts, 2);
    assert_eq!(err, "handler panicked: boom");
    assert_eq!(ids.len(), 20);
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_always_failing_job_backs_off_with_growing_gaps_then_fails() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.retry.base_delay_ms = 100;
    settings.retry.max_delay_secs = 60;
    let r = runner(&db, settings, registry());
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, max_attempts) VALUES ('flaky', '{}', 4) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut gaps = Vec::new();
    for attempt in 1..=4 {
        // Wait until the job is due, then run exactly one attempt.
        let worked = loop {
            if let Some(w) = run_once(&r, &["flaky"]).await.unwrap() {
                break w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (status, run_at, updated, attempts): (String, DateTime<Utc>, DateTime<Utc>, i32) =
            sqlx::query_as("SELECT status, run_at, updated_at, attempts FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(attempts, attempt);
        if attempt < 4 {
            assert_eq!(worked.1, Written::Status(JobStatus::Queued));
            assert_eq!(status, "queued");
            gaps.push((run_at - updated).num_milliseconds());
        } else {
            assert_eq!(status, "failed");
        }
    }
    // Exponential with jitter: attempt n waits in [100·2^(n-1), 2·100·2^(n-1)) ms.
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "gaps should grow: {gaps:?}"
    );
    assert!(
        (100..200).contains(&gaps[0]) && (400..800).contains(&gaps[2]),
        "{gaps:?}"
    );
    let err: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(err, "upstream said 503");
}

#[tokio::test]
async fn many_claimers_race_and_each_job_is_claimed_once() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({})); 3000],
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("racer-{w}");
            let mut mine = Vec::new();
            loop {
                let got = queue::ops::claim(&pool, &name, "noop", 37, Duration::from_secs(60))
                    .await
                    .unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 3000, "every job claimed");
    assert_eq!(unique.len(), 3000, "no job claimed twice");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'running' AND attempts = 1"
        )
        .await,
        3000
    );
}

#[tokio::test]
async fn cancel_stops_a_queued_job_and_discards_a_running_jobs_result() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let queued = queue::enqueue(&mut conn, &catalog(), &NewJob::new("noop", json!({})))
        .await
        .unwrap()
        .id;
    let running = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({})).priority(9),
    )
    .await
    .unwrap()
    .id;
    let claimed = queue::ops::claim(&db.pool, "w1", "noop", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed[0].id, running);

    assert_eq!(
        queue::ops::cancel(&db.pool, queued).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        queue::ops::cancel(&db.pool, running).await.unwrap().status,
        JobStatus::Cancelled
    );
    // Cancelling again names the state.
    let err = queue::ops::cancel(&db.pool, queued)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cancelled") && err.contains("queued or running"),
        "{err}"
    );

    // The running job's worker reports later: its fence no longer matches.
    let done = Finished {
        id: running,
        kind: "noop".into(),
        attempts: 1,
        outcome: Outcome::done(),
        elapsed: Duration::ZERO,
        trace: None,
    };
    let written = runner::finish(&db.pool, "w1", &[done], &fast_settings().retry)
        .await
        .unwrap();
    assert_eq!(written, vec![(running, Written::LostLease)]);
    assert_eq!(status_of(&db.pool, running).await, "cancelled");
    // And nothing claims a cancelled job.
    assert!(
        queue::ops::claim(&db.pool, "w2", "noop", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn retry_puts_a_failed_job_back_with_attempts_reset() {
    let db = test_db().await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, status, attempts, finished_at, last_error)
         VALUES ('noop', 'failed', 5, now(), 'gave up') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let job = queue::ops::retry(&db.pool, id).await.unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("queued", 0));
    assert!(job.finished_at.is_none());
    let err = queue::ops::retry(&db.pool, id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is queued") && err.contains("failed or cancelled"),
        "{err}"
    );
    let err = queue::ops::retry(&db.pool, Uuid::nil()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
}

#[tokio::test]
async fn a_lost_lease_drops_only_that_jobs_writes_in_a_batched_finish() {
    let db = test_db().await;
    let claimed = claim_noops(&db, "w1", 2).await;
    let (kept, lost) = (claimed[0].id, claimed[1].id);
    // The second job's lease runs out and another process rescues it.
    sqlx::query("UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = $1")
        .bind(lost)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        queue::ops::rescue_expired(&db.pool, 10, false)
            .await
            .unwrap(),
        1
    );

    let marker = |key: &'static str| -> queue::Effects {
        Arc::new(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO marks (key) VALUES ($1)")
                    .bind(key)
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
    };
    let written = runner::finish(
        &db.pool,
        "w1",
        &[
            finished(kept, Outcome::done().with_effects(marker("kept"))),
            finished(lost, Outcome::done().with_effects(marker("lost"))),
        ],
        &fast_settings().retry,
    )
    .await
    .unwrap();
    assert_eq!(written[0], (kept, Written::Status(JobStatus::Done)));
    assert_eq!(written[1], (lost, Written::LostLease));
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM marks ORDER BY key")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(keys, vec!["kept".to_string()]);
    assert_eq!(status_of(&db.pool, lost).await, "queued");
}

#[tokio::test]
async fn failing_effects_roll_back_alone_and_the_job_retries() {
    let db = test_db().await;
    let claimed = claim_noops(&db, "w1", 2).await;
    let bad: queue::Effects = Arc::new(|conn| {
        Box::pin(async move {
            sqlx::query("INSERT INTO marks (key) VALUES ('half')")
                .execute(&mut *conn)
                .await?;
            // Violates the primary key.
            sqlx::query("INSERT INTO marks (key) VALUES ('half')")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    });
    let batch = [
        finished(claimed[0].id, Outcome::done().with_effects(bad)),
        finished(claimed[1].id, Outcome::done()),
    ];
    let written = runner::finish(&db.pool, "w1", &batch, &fast_settings().retry)
        .await
        .unwrap();
    assert_eq!(written[0].1, Written::Status(JobStatus::Queued));
    assert_eq!(written[1].1, Written::Status(JobStatus::Done));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM marks").await,
        0,
        "no half step"
    );
    let err: String = sqlx::query_scalar("SELECT last_error FROM jobs WHERE id = $1")
        .bind(claimed[0].id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(err.contains("writing the step's results failed"), "{err}");
}

#[tokio::test]
async fn heartbeats_keep_a_long_job_leased_past_its_lease() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.lease_secs = 2;
    settings.worker.heartbeat_secs = 1;
    let (stop, worker) = start_worker(runner(&db, settings, registry()), kinds(&["noop"]));
    let mut conn = db.pool.acquire().await.unwrap();
    let id = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({"sleep_ms": 5000})),
    )
    .await
    .unwrap()
    .id;
    wait_for(
        Duration::from_secs(20),
        "the long job to finish",
        || async { status_of(&db.pool, id).await == "done" },
    )
    .await;
    let (attempts, err) = attempts_and_error(&db.pool, id).await;
    assert_eq!(
        (attempts, err),
        (1, None),
        "never rescued while its worker beat"
    );
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn leases_are_extended_while_claimed_jobs_wait_behind_a_busy_worker() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.lease_secs = 2;
    settings.worker.heartbeat_secs = 1;
    // One slot, two claimed at a time: one job runs while the next waits in the buffer.
    let opts = WorkerOptions {
        kinds: Some(vec!["noop".into()]),
        concurrency: Some(1),
        ..WorkerOptions::default()
    };
    let (stop, worker) = start_worker(runner(&db, settings, registry()), opts);
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({"sleep_ms": 3000})); 3],
    )
    .await
    .unwrap();
    wait_running(&db.pool, 2, Duration::from_secs(10)).await;
    // Past the 2-s lease of the running job and of the one waiting: another process's
    // rescue must find nothing, because the worker kept both leases alive.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let rescued = queue::ops::rescue_expired(&db.pool, 100, false)
        .await
        .unwrap();
    assert_eq!(rescued, 0, "leases ran out under a live worker");
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

/// `n` ready noop jobs of a new project of `tenant` (none: a tenant of its own), or with
/// no project at all; returns the group's jobs oldest first.
async fn backlog(
    db: &TestDb,
    tenant: Option<Uuid>,
    project: bool,
    n: i64,
    priority: i32,
) -> Vec<Uuid> {
    // To the engine a project and a tenant are ids it takes turns over, nothing more.
    let project = project.then(Uuid::new_v4);
    sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, project_id, tenant_id, priority)
         SELECT 'noop', '{}', $1, coalesce($2, '00000000-0000-0000-0000-000000000001'), $4
         FROM generate_series(1, $3) RETURNING id",
    )
    .bind(project)
    .bind(tenant)
    .bind(n)
    .bind(priority)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn claims_take_from_every_project_in_turn_and_priority_still_goes_first() {
    let db = test_db().await;
    let claim = |n: i64| {
        let pool = db.pool.clone();
        async move {
            queue::ops::claim(&pool, "w", "noop", n, Duration::from_secs(60))
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<Uuid>>()
        }
    };
    // A thousand ready jobs of one project, enqueued first; then one of another.
    let big = backlog(&db, None, true, 1_000, 0).await;
    let small = backlog(&db, None, true, 1, 0).await;
    let first = claim(10).await;
    assert_eq!(first.len(), 10);
    assert_eq!(
        &first[..2],
        &[big[0], small[0]],
        "turns: the big project's oldest, then the small one's"
    );
    assert_eq!(&first[2..], &big[1..9], "the rest of the batch best first");
    // A higher priority goes first, whoever has more.
    let urgent = backlog(&db, None, true, 1, 5).await;
    let next = claim(3).await;
    assert_eq!(next, [urgent[0], big[9], big[10]]);

    // More projects than a claim takes: each claim takes one job of as many projects,
    // and none waits behind the big one for long.
    let few: Vec<Uuid> = {
        let mut v = Vec::new();
        for _ in 0..30 {
            v.extend(backlog(&db, None, true, 1, 0).await);
        }
        v
    };
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let ready = count(
            &db.pool,
            "SELECT count(DISTINCT project_id) FROM jobs WHERE status = 'queued'",
        )
        .await;
        let got = claim(10).await;
        let projects: HashSet<Option<Uuid>> =
            sqlx::query_scalar("SELECT project_id FROM jobs WHERE id = ANY($1)")
                .bind(&got)
                .fetch_all(&db.pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(got.len(), 10, "a full batch");
        assert_eq!(
            projects.len() as i64,
            ready.min(10),
            "as many projects as a claim can take turns among: {got:?}"
        );
        seen.extend(got);
    }
    let small_ones = few.iter().filter(|id| seen.contains(id)).count();
    assert!(
        small_ones >= 30,
        "the 30 one-job projects ran within four claims of ten: {small_ones}"
    );
}

#[tokio::test]
async fn jobs_without_a_project_take_turns_by_tenant() {
    let db = test_db().await;
    let globex = Uuid::new_v4();
    let busy = backlog(&db, None, false, 500, 0).await;
    let quiet = backlog(&db, Some(globex), false, 1, 0).await;
    let got: Vec<Uuid> = queue::ops::claim(&db.pool, "w", "noop", 4, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, [busy[0], quiet[0], busy[1], busy[2]]);
}

#[tokio::test]
async fn a_worker_runs_a_small_projects_job_among_its_first_claims() {
    let db = test_db().await;
    let big = backlog(&db, None, true, 1_000, 0).await;
    let small = backlog(&db, None, true, 1, 0).await[0];
    let (stop, worker) = start_worker(runner(&db, fast_settings(), registry()), kinds(&["noop"]));
    wait_for(Duration::from_secs(60), "every job", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status <> 'done'").await == 0
    })
    .await;
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    let before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE started_at < (SELECT started_at FROM jobs WHERE id = $1)",
    )
    .bind(small)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let batch = fast_settings().worker.batch_size as i64;
    assert!(
        before < batch,
        "{before} of the big project's {} jobs started before the small project's one",
        big.len()
    );
}

#[tokio::test]
async fn a_project_that_gets_a_job_behind_anothers_backlog_waits_about_a_second_at_most() {
    let db = test_db().await;
    let big = Uuid::new_v4();
    // Five seconds of work for four slots, all one project's: plain claims.
    sqlx::query(
        "INSERT INTO jobs (kind, input, project_id)
         SELECT 'noop', '{\"sleep_ms\": 20}', $1 FROM generate_series(1, 1000)",
    )
    .bind(big)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut settings = fast_settings();
    settings.worker.kinds.insert("noop".into(), 4);
    let (stop, worker) = start_worker(runner(&db, settings, registry()), kinds(&["noop"]));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let small = backlog(&db, None, true, 1, 0).await[0];
    let enqueued = std::time::Instant::now();
    wait_for(
        Duration::from_secs(10),
        "the small project's job",
        || async { status_of(&db.pool, small).await == "done" },
    )
    .await;
    let waited = enqueued.elapsed();
    let left = count(
        &db.pool,
        "SELECT count(*) FROM jobs WHERE status = 'queued'",
    )
    .await;
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    assert!(
        left > 500,
        "it did not wait for the backlog: {left} jobs still queued"
    );
    assert!(
        waited < Duration::from_millis(2_500),
        "within the fairness check (1 s) and a claim: {waited:?}"
    );
}

#[tokio::test]
async fn claiming_a_job_that_waited_clears_its_note_on_either_claim() {
    let db = test_db().await;
    let waited = |n: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO jobs (kind, input, waiting_for)
                 SELECT 'noop', '{}', 'waiting for limit llm:h' FROM generate_series(1, $1)
                 RETURNING id",
            )
            .bind(n)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let lease = Duration::from_secs(60);
    let fair = waited(1).await;
    assert_eq!(
        queue::ops::claim(&db.pool, "w", "noop", 1, lease)
            .await
            .unwrap()
            .len(),
        1
    );
    let plain = waited(1).await;
    assert_eq!(
        queue::ops::claim_plain(&db.pool, "w", "noop", 1, lease)
            .await
            .unwrap()
            .len(),
        1
    );
    let notes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, waiting_for FROM jobs WHERE id = ANY($1)")
            .bind([fair[0], plain[0]])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(notes, vec![("running".to_owned(), None); 2]);
}

#[tokio::test]
async fn a_grown_buffer_gives_its_jobs_back_when_the_kind_turns_slow() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.batch_size = 8;
    settings.worker.max_batch_size = 512;
    settings.worker.prefetch = 2;
    // Instant jobs first (older run_at), then slow ones right behind them: claims grow
    // on the instant ones, and the last grown claims take slow ones into the buffer.
    sqlx::query(
        "INSERT INTO jobs (kind, input, run_at)
         SELECT 'noop', '{}'::jsonb, now() - interval '1 hour' FROM generate_series(1, 4000)
         UNION ALL
         SELECT 'noop', '{\"sleep_ms\": 100}'::jsonb, now() - interval '1 minute'
         FROM generate_series(1, 60)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let opts = WorkerOptions {
        concurrency: Some(2),
        ..kinds(&["noop"])
    };
    let (stop, worker) = start_worker(runner(&db, settings, registry()), opts);
    // Concurrency + prefetch jobs buffered or running, plus up to concurrency that have
    // ended and wait (still `running` in the table) for their finish to commit.
    let most = 2 + 2 + 2;
    let slow_held = "SELECT count(*) FROM jobs WHERE status = 'running' AND input ? 'sleep_ms'";
    let (mut peak_before, mut first_slow_done) = (0, None::<std::time::Instant>);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = count(&db.pool, slow_held).await;
        let done = count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'done' AND input ? 'sleep_ms'",
        )
        .await;
        match first_slow_done {
            None if done > 0 => first_slow_done = Some(std::time::Instant::now()),
            None => peak_before = peak_before.max(held),
            // Handing back takes one statement once the first slow job has ended.
            Some(t) if t.elapsed() > Duration::from_millis(500) => assert!(
                held <= most,
                "{held} slow jobs held after the first one ended (most {most})"
            ),
            Some(_) => {}
        }
        if done == 60 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow jobs did not finish: {done} of 60"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        peak_before > most,
        "the buffer never grew past {most} (peak {peak_before}): the test shows nothing"
    );
    // The jobs given back kept their attempt.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE attempts <> 1").await,
        0
    );
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
}

#[tokio::test]
async fn two_workers_schedulers_enqueue_one_job_per_tick() {
    let db = test_db().await;
    let every_second = Periodic {
        name: "tick".into(),
        schedule: "* * * * * *".into(),
        jobs: Arc::new(|at: DateTime<Utc>| {
            vec![
                NewJob::new("flaky", json!({"tick": at.to_rfc3339()}))
                    .idempotency_key(format!("tick:{}", at.timestamp())),
            ]
        }),
    };
    let opts = WorkerOptions {
        kinds: Some(vec!["noop".into()]), // leave the ticks' jobs queued, to count them
        periodic: vec![every_second],
        ..WorkerOptions::default()
    };
    let (s1, w1) = start_worker(runner(&db, fast_settings(), registry()), opts.clone());
    let (s2, w2) = start_worker(runner(&db, fast_settings(), registry()), opts);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s1.send(()).unwrap();
    s2.send(()).unwrap();
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();
    let ticks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT input->>'tick', count(*) FROM jobs WHERE kind = 'flaky' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        (2..=5).contains(&ticks.len()),
        "about one job per second: {ticks:?}"
    );
    assert!(
        ticks.iter().all(|(_, n)| *n == 1),
        "one job per tick: {ticks:?}"
    );
}

#[tokio::test]
async fn the_engines_migrations_revert_and_apply_again_on_a_database_of_its_own() {
    let db = empty_db().await;
    let pool = db.pool.pool();
    let total = queue::schema::migrator()
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count();
    assert_eq!(queue::schema::migrate(pool).await.unwrap(), total);
    assert_eq!(queue::schema::migrate(pool).await.unwrap(), 0);
    let exists = |table: &'static str| async move {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert!(exists("jobs").await && exists("job_steps").await && exists("job_kinds").await);
    queue::schema::migrator().undo(pool, 0).await.unwrap();
    assert!(!exists("jobs").await && !exists("job_steps").await && !exists("job_kinds").await);
    assert!(queue::schema::applied(pool).await.unwrap().is_empty());
    assert_eq!(queue::schema::migrate(pool).await.unwrap(), total);
    assert!(exists("jobs").await && exists("queue_overview").await);
}

#[tokio::test]
async fn an_application_column_is_refused_by_name_and_filled_by_type() {
    let db = test_db().await;
    sqlx::query("ALTER TABLE jobs ADD COLUMN app_ref uuid, ADD COLUMN app_note text")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = Uuid::new_v4();
    let mut conn = db.pool.acquire().await.unwrap();
    let jobs = vec![
        NewJob::new("noop", json!({})).column("app_ref", r),
        NewJob::new("noop", json!({})).column("app_note", "hello"),
        NewJob::new("noop", json!({})),
    ];
    let got = queue::enqueue_many(&mut conn, &catalog(), &jobs)
        .await
        .unwrap();
    let rows: Vec<(Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT app_ref, app_note FROM jobs WHERE id = ANY($1) ORDER BY array_position($1, id)",
    )
    .bind(got.iter().map(|e| e.id).collect::<Vec<_>>())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(Some(r), None), (None, Some("hello".into())), (None, None)]
    );
    for (name, why) in [
        ("status", "the engine's own column"),
        ("Bad-Name", "not a plain lower-case column name"),
        ("x; DROP TABLE jobs", "not a plain lower-case column name"),
    ] {
        let err = queue::enqueue(
            &mut conn,
            &catalog(),
            &NewJob::new("noop", json!({})).column(name, "x"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::Column { name: n, why: w } if n == name && w.starts_with(why)),
            "{err}"
        );
    }
    // A value the column's type cannot read fails the statement, naming the type.
    let err = queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("noop", json!({})).column("app_ref", "not a uuid"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("uuid"), "{err}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM jobs").await, 3);
}

#[tokio::test]
async fn a_worker_process_says_it_is_alive_for_its_kinds_and_leaves_when_it_stops() {
    let db = test_db().await;
    // A process that died a while ago: counted by nobody, its row cleared after a day.
    sqlx::query(
        "INSERT INTO copydesk_workers (name, kinds, version, alive_until) VALUES
           ('gone:1:aaaa', '{noop}', '0.0.1', now() - interval '5 minutes'),
           ('long-gone:2:bbbb', '{noop}', '0.0.1', now() - interval '2 days')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let opts = WorkerOptions {
        version: Some("9.9.9".into()),
        ..kinds(&["noop"])
    };
    let (stop, worker) = start_worker(runner(&db, fast_settings(), registry()), opts);
    wait_for(Duration::from_secs(10), "the worker's row", || async {
        copydesk_queue::ops::live_workers(&db.pool).await.unwrap() == vec![("noop".to_owned(), 1)]
    })
    .await;
    let rows = copydesk_queue::ops::workers(&db.pool).await.unwrap();
    let names: Vec<(&str, bool)> = rows.iter().map(|w| (w.name.as_str(), w.alive)).collect();
    assert_eq!(names.len(), 2, "the day-old row is cleared: {names:?}");
    assert!(rows[0].alive && rows[0].version == "9.9.9" && rows[0].kinds == ["noop"]);
    assert_eq!(names[1], ("gone:1:aaaa", false));
    stop.send(()).unwrap();
    let summary = worker.await.unwrap().unwrap();
    let rows = copydesk_queue::ops::workers(&db.pool).await.unwrap();
    assert!(
        rows.iter().all(|w| !summary.names[0].starts_with(&w.name)),
        "a process that stopped cleanly leaves: {rows:?}"
    );
    assert!(
        copydesk_queue::ops::live_workers(&db.pool)
            .await
            .unwrap()
            .is_empty()
    );
}
