//! The queue against a real Postgres, in process: enqueue, claim, finish, retry,
//! cancel, cleanup, the scheduler, and races between claimers.

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use common::*;
use copydesk::{
    app::{
        self,
        worker::{WorkerOptions, run as run_worker},
    },
    jobs::App,
    queue::{
        self, Error, JobError, JobStatus, NewJob, Outcome, Registry,
        runner::{self, Finished, Written, run_once},
    },
};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Starts an in-process worker; dropping or sending on the returned sender stops it.
fn start_worker(
    runner: copydesk::queue::Runner<copydesk::jobs::App>,
    opts: WorkerOptions,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<queue::worker::WorkerSummary, queue::Error>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_worker(runner, opts, async move {
        let _ = rx.await;
    }));
    (tx, handle)
}

/// A finished first attempt of a `noop` job.
fn finished(id: Uuid, outcome: Outcome) -> Finished {
    Finished {
        id,
        kind: "noop".into(),
        attempts: 1,
        outcome,
        elapsed: Duration::ZERO,
    }
}

/// Enqueues `n` noop jobs and claims them all as `worker`.
async fn claim_noops(db: &TestDb, worker: &str, n: usize) -> Vec<queue::ClaimedJob> {
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({})); n],
    )
    .await
    .unwrap();
    queue::ops::claim(&db.pool, worker, "noop", n as i64, Duration::from_secs(60))
        .await
        .unwrap()
}

fn kinds(k: &[&str]) -> WorkerOptions {
    WorkerOptions {
        kinds: Some(k.iter().map(|s| s.to_string()).collect()),
        ..WorkerOptions::default()
    }
}

#[tokio::test]
async fn a_plain_sql_insert_is_picked_up_without_waiting_for_the_poll() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.poll_interval_ms = 60_000; // only NOTIFY can wake the worker in time
    let (stop, worker) = start_worker(runner(&db, settings, app::registry()), kinds(&["noop"]));

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
async fn library_enqueue_and_plain_insert_give_the_same_defaults() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let lib = queue::enqueue(&mut conn, &catalog(), &NewJob::new("noop", json!({})))
        .await
        .unwrap();
    assert!(lib.created);
    let sql_id: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let row = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, i32, i32, Option<String>, bool)>(
                "SELECT status, priority, max_attempts, attempts, idempotency_key,
                        run_at <= now() FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(row(lib.id).await, row(sql_id).await);
    assert_eq!(row(lib.id).await, ("queued".into(), 0, 5, 0, None, true));
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
    let registry = app::registry().with("greet", None, |ctx| {
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
    let r = runner(&db, fast_settings(), app::registry());
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

fn test_registry() -> Registry<App> {
    app::registry()
        .with("explode", None, |_ctx| Box::pin(async { panic!("boom") }))
        .with("flaky", None, |_ctx| {
            Box::pin(async { Err::<Outcome, _>(JobError::transient("upstream said 503")) })
        })
        // Waits for a limit on its first three runs, then is done.
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

#[tokio::test]
async fn a_job_that_waits_for_a_limit_keeps_its_attempts_and_its_last_error() {
    let db = test_db().await;
    register_kinds(&db.pool, &test_registry()).await;
    let r = runner(&db, fast_settings(), test_registry());
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
        let stats = copydesk::queue::ops::stats(&db.pool).await.unwrap();
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
    register_kinds(&db.pool, &test_registry()).await;
    let (stop, worker) = start_worker(
        runner(&db, fast_settings(), test_registry()),
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
    register_kinds(&db.pool, &test_registry()).await;
    let mut settings = fast_settings();
    settings.retry.base_delay_ms = 100;
    settings.retry.max_delay_secs = 60;
    let r = runner(&db, settings, test_registry());
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
                sqlx::query("INSERT INTO app_settings (key, value) VALUES ($1, 'written')")
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
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM app_settings ORDER BY key")
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
            sqlx::query("INSERT INTO app_settings (key, value) VALUES ('half', 'written')")
                .execute(&mut *conn)
                .await?;
            // Violates the CHECK: neither value nor secret.
            sqlx::query("INSERT INTO app_settings (key) VALUES ('broken')")
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
        count(&db.pool, "SELECT count(*) FROM app_settings").await,
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
async fn cleanup_dry_run_counts_and_the_real_run_deletes_in_batches() {
    let db = test_db().await;
    sqlx::raw_sql(
        "INSERT INTO projects (id, name, updated_at) VALUES
             ('00000000-0000-0000-0000-000000000001', 'idle', now() - interval '120 days'),
             ('00000000-0000-0000-0000-000000000002', 'busy', now() - interval '120 days');
         INSERT INTO jobs (kind, status, finished_at, project_id)
             SELECT 'noop', 'done', now() - interval '10 days', NULL FROM generate_series(1, 25);
         INSERT INTO jobs (kind, status, finished_at) VALUES
             ('noop', 'done', now() - interval '1 day'),
             ('noop', 'failed', now() - interval '40 days'),
             ('noop', 'failed', now() - interval '2 days'),
             ('noop', 'cancelled', now() - interval '8 days');
         INSERT INTO jobs (kind, status, attempts, locked_by, locked_until, project_id) VALUES
             ('noop', 'running', 1, 'ghost', now() - interval '1 minute',
              '00000000-0000-0000-0000-000000000002');
         INSERT INTO runs (job_id, provider, status)
             SELECT id, 'offline', 'ok' FROM jobs WHERE status = 'done' LIMIT 1;
         INSERT INTO brand_voice_cache (url, analysis, expires_at) VALUES
             ('https://old.example', '{}', now() - interval '1 hour'),
             ('https://new.example', '{}', now() + interval '1 day');
         INSERT INTO catalog_items (external_id, name, expires_at) VALUES
             ('a', 'old', now() - interval '1 hour'), ('b', 'fresh', now() + interval '1 hour');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut cfg = fast_settings().cleanup;
    cfg.batch_size = 10;

    let dry = copydesk::jobs::cleanup::cleanup(&db.pool, &cfg, true)
        .await
        .unwrap();
    assert_eq!(
        (
            dry.deleted_done,
            dry.deleted_failed,
            dry.deleted_cancelled,
            dry.rescued_leases
        ),
        (25, 1, 1, 1)
    );
    assert_eq!(
        (
            dry.deleted_brand_voice_cache,
            dry.deleted_catalog_items,
            dry.archived_projects
        ),
        (1, 1, 1)
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs").await,
        30,
        "a dry run changes nothing"
    );

    let real = copydesk::jobs::cleanup::cleanup(&db.pool, &cfg, false)
        .await
        .unwrap();
    assert_eq!(
        real,
        copydesk::jobs::cleanup::CleanupReport {
            dry_run: false,
            ..dry
        }
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM jobs").await, 3);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM runs").await,
        1,
        "runs are kept: cost history"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'queued'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM projects WHERE archived_at IS NOT NULL AND name = 'idle'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM brand_voice_cache").await,
        1
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM catalog_items").await,
        1
    );
}

#[tokio::test]
async fn two_workers_schedulers_enqueue_one_cleanup_per_tick() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.cleanup.schedule = "* * * * * *".into(); // every second
    let opts = WorkerOptions {
        kinds: Some(vec!["noop".into()]), // leave the cleanup jobs queued, to count them
        scheduler: true,
        ..WorkerOptions::default()
    };
    let (s1, w1) = start_worker(runner(&db, settings.clone(), app::registry()), opts.clone());
    let (s2, w2) = start_worker(runner(&db, settings, app::registry()), opts);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s1.send(()).unwrap();
    s2.send(()).unwrap();
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();

    let ticks: Vec<(String, i64)> = sqlx::query_as(
        "SELECT input->>'tick', count(*) FROM jobs WHERE kind = 'cleanup' GROUP BY 1 ORDER BY 1",
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
        "one cleanup per tick: {ticks:?}"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints_answer() {
    use tower::ServiceExt;
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue(&mut conn, &catalog(), &NewJob::new("noop", json!({})))
        .await
        .unwrap();
    let app = copydesk::http::router(db.pool.clone());
    let get = |path: &'static str| {
        let app = app.clone();
        async move {
            let res = app
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            (status.as_u16(), String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    let (code, text) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("copydesk_queue_jobs{kind=\"noop\",status=\"queued\"} 1"),
        "{text}"
    );
    // A database with a migration missing is not ready.
    sqlx::query("DELETE FROM copydesk_migrations WHERE version = (SELECT max(version) FROM copydesk_migrations)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, text) = get("/readyz").await;
    assert_eq!(code, 503);
    assert!(text.contains("migrations pending"), "{text}");
}

#[tokio::test]
async fn heartbeats_keep_a_long_job_leased_past_its_lease() {
    let db = test_db().await;
    let mut settings = fast_settings();
    settings.worker.lease_secs = 2;
    settings.worker.heartbeat_secs = 1;
    let (stop, worker) = start_worker(runner(&db, settings, app::registry()), kinds(&["noop"]));
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
async fn every_migration_reverts_and_applies_again() {
    let db = test_db().await;
    let exists = |table: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(table)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // The application's migrations, then the engine's, newest first.
    let total = copydesk::db::MIGRATOR
        .iter()
        .chain(queue::schema::migrator().iter())
        .filter(|m| m.migration_type.is_up_migration())
        .count();
    for _ in 0..total {
        let reverted = copydesk::db::revert_newest(db.pool.pool()).await.unwrap();
        assert!(reverted.is_some());
    }
    assert!(
        copydesk::db::revert_newest(db.pool.pool())
            .await
            .unwrap()
            .is_none(),
        "nothing left to revert"
    );
    assert!(!exists("jobs").await && !exists("approvals").await && !exists("runs").await);
    assert!(!exists("job_kinds").await && !exists("job_steps").await);
    assert_eq!(copydesk::db::pending(&db.pool).await.unwrap().len(), total);
    assert_eq!(
        copydesk::db::migrate(db.pool.pool(), &copydesk::app::catalog())
            .await
            .unwrap(),
        total
    );
    assert!(exists("jobs").await && exists("queue_overview").await);
    assert!(copydesk::db::pending(&db.pool).await.unwrap().is_empty());
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
    let (stop, worker) = start_worker(runner(&db, settings, app::registry()), opts);
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

/// `n` ready noop jobs of a new project of `tenant` (none: the default tenant), or with
/// no project at all; returns the group's jobs oldest first.
async fn backlog(
    db: &TestDb,
    tenant: Option<Uuid>,
    project: bool,
    n: i64,
    priority: i32,
) -> Vec<Uuid> {
    let project: Option<Uuid> = if project {
        Some(
            copydesk::store::projects::create(&db.pool, tenant, "Shop", None)
                .await
                .unwrap(),
        )
    } else {
        None
    };
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
    let mut tx = db.pool.begin().await.unwrap();
    let globex = copydesk::store::tenants::create(&mut tx, "globex", "Globex", "test")
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
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
    let (stop, worker) = start_worker(
        runner(&db, fast_settings(), app::registry()),
        kinds(&["noop"]),
    );
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
    let big = copydesk::store::projects::create(&db.pool, None, "Big", None)
        .await
        .unwrap();
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
    let (stop, worker) = start_worker(runner(&db, settings, app::registry()), kinds(&["noop"]));
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
    let (stop, worker) = start_worker(runner(&db, settings, app::registry()), opts);
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
