//! A rolling deploy: two releases' workers and producers share one database for a
//! while. The newer release extends a kind's input (version 2, a new field) and renames
//! a kind; nothing either release enqueues fails, and everything is done by a worker
//! that reads it.

mod common;

use std::time::Duration;

use common::*;
use copydesk_queue::{
    self as queue, JobArgs, JobContext, NewJob, Outcome, Registry, schema, worker::WorkerOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `greet` as the release before knows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetV1 {
    name: String,
}

impl JobArgs for GreetV1 {
    const KIND: &'static str = "greet";
    const SCHEMA: &'static str = r#"{"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}},
        "additionalProperties": false}"#;
}

/// `greet` as the new release knows it: a new, optional field.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetV2 {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    style: Option<String>,
}

impl JobArgs for GreetV2 {
    const KIND: &'static str = "greet";
    const SCHEMA: &'static str = r#"{"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1},
                       "style": {"enum": ["formal", "warm"]}},
        "additionalProperties": false}"#;
    const VERSION: u32 = 2;
}

/// Marks the job done by `release`: a row in `marks` per job.
async fn mark(ctx: &JobContext<()>, release: &str) -> Result<Outcome, queue::JobError> {
    sqlx::query("INSERT INTO marks (key) VALUES ($1)")
        .bind(format!("{}:{release}", ctx.job.id))
        .execute(&ctx.pool)
        .await
        .map_err(|e| queue::JobError::transient(e.to_string()))?;
    Ok(Outcome::done())
}

fn release_before() -> Registry<()> {
    Registry::new().register(|ctx, _args: GreetV1| async move { mark(&ctx, "before").await })
}

fn release_after() -> Registry<()> {
    Registry::new().register(|ctx, args: GreetV2| async move {
        let release = format!("after:{}", args.style.as_deref().unwrap_or("plain"));
        mark(&ctx, &release).await
    })
}

fn only(kinds: &[&str]) -> WorkerOptions {
    WorkerOptions {
        kinds: Some(kinds.iter().map(|k| k.to_string()).collect()),
        ..WorkerOptions::default()
    }
}

async fn enqueue(db: &TestDb, registry: &Registry<()>, jobs: Vec<NewJob>) {
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(&mut conn, &registry.catalog(), &jobs)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_share_one_database_and_nothing_fails() {
    let db = test_db().await;
    let (before, after) = (release_before(), release_after());
    // The release before runs; the new one migrates and registers its kinds (as its
    // `copydesk migrate` does) and its producers start writing version 2 inputs.
    let (stop_before, old) = start_worker(
        runner(&db, fast_settings(), before.clone()),
        only(&["greet"]),
    );
    schema::register_kinds(&db.pool, &after.catalog())
        .await
        .unwrap();
    let old_inputs = (0..20).map(|i| {
        NewJob::of(&GreetV1 {
            name: format!("old-{i}"),
        })
    });
    let new_inputs = (0..20).map(|i| {
        NewJob::of(&GreetV2 {
            name: format!("new-{i}"),
            style: Some(["formal", "warm"][i % 2].into()),
        })
    });
    enqueue(&db, &before, old_inputs.collect()).await;
    enqueue(&db, &after, new_inputs.collect()).await;

    // The old worker does what it reads and gives the rest back, spending no attempt.
    wait_for(
        Duration::from_secs(20),
        "the old worker's give-backs",
        || async {
            count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 20
                && count(
                    &db.pool,
                    "SELECT count(*) FROM jobs WHERE status = 'queued' AND attempts = 0
                   AND waiting_for = 'a worker that reads greet input v2 (this one reads v1)'",
                )
                .await
                    == 20
        },
    )
    .await;

    // The new release's worker starts beside it and takes them.
    let (stop_after, new) = start_worker(
        runner(&db, fast_settings(), after.clone()),
        only(&["greet"]),
    );
    let all_done = tokio::time::timeout(Duration::from_secs(30), async {
        while count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await < 40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if all_done.is_err() {
        let left: Vec<(String, i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, attempts, waiting_for, (run_at - now())::text FROM jobs WHERE status <> 'done'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let _ = stop_after.send(());
        let summary = new.await;
        panic!("not all done in 30 s: {left:?} new worker: {summary:?}");
    }
    stop_before.send(()).unwrap();
    stop_after.send(()).unwrap();
    old.await.unwrap().unwrap();
    new.await.unwrap().unwrap();

    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status <> 'done'").await,
        0
    );
    // Each version 2 input was done by the new release, on its first counted attempt;
    // the old ones by either.
    let by: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT j.input->>'name', split_part(m.key, ':', 2) || coalesce(':' || nullif(split_part(m.key, ':', 3), ''), ''),
                j.attempts
         FROM jobs j JOIN marks m ON m.key LIKE j.id::text || ':%' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(by.len(), 40, "one mark per job: {by:?}");
    for (name, release, attempts) in &by {
        assert_eq!(*attempts, 1, "{name}");
        if name.starts_with("new-") {
            assert!(
                release.starts_with("after:formal") || release.starts_with("after:warm"),
                "{name} by {release}"
            );
        } else {
            assert!(
                release == "before" || release == "after:plain",
                "{name} by {release}"
            );
        }
    }
    // The database knows both contracts.
    let versions: Vec<(String, i32)> = sqlx::query_as(
        "SELECT kind, version FROM job_kind_versions WHERE kind = 'greet' ORDER BY 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        [("greet".to_string(), 1), ("greet".to_string(), 2)]
    );
    // As `copydesk queue kinds` lists them.
    let kinds = queue::ops::kinds(&db.pool).await.unwrap();
    let greet = kinds.iter().find(|k| k.kind == "greet").unwrap();
    assert_eq!(
        (greet.versions.as_slice(), greet.workers),
        ([1, 2].as_slice(), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_only_a_newer_release_reads_fails_after_unreadable_after_naming_both_versions() {
    let db = test_db().await;
    let (before, after) = (release_before(), release_after());
    schema::register_kinds(&db.pool, &after.catalog())
        .await
        .unwrap();
    let mut settings = fast_settings();
    settings.worker.unreadable_after_secs = 2;
    let (stop, old) = start_worker(runner(&db, settings, before.clone()), only(&["greet"]));
    enqueue(
        &db,
        &after,
        vec![NewJob::of(&GreetV2 {
            name: "ana".into(),
            style: Some("warm".into()),
        })],
    )
    .await;
    // Input no version takes (by plain SQL): bad input, failed at once and alone.
    sqlx::query("INSERT INTO jobs (kind, input) VALUES ('greet', $1)")
        .bind(json!({"name": "bo", "style": "shouty"}))
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "both failed", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'failed'",
        )
        .await
            == 2
    })
    .await;
    stop.send(()).unwrap();
    old.await.unwrap().unwrap();
    let failed: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT input->>'name', attempts, last_error FROM jobs ORDER BY input->>'name'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let (ana, bo) = (&failed[0], &failed[1]);
    assert_eq!(
        ana.1, 1,
        "given back without spending attempts, failed on the last: {ana:?}"
    );
    assert!(
        ana.2
            .starts_with("input of greet v2 cannot be read by this worker, which reads v1")
            && ana.2.contains("within 2s")
            && ana.2.contains("'style' was unexpected"),
        "{}",
        ana.2
    );
    assert_eq!(bo.1, 1);
    assert!(
        bo.2.starts_with("input for greet is invalid")
            && bo
                .2
                .ends_with("v2, the newest greet contract this database knows, refuses it too"),
        "{}",
        bo.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_kind_runs_the_jobs_queued_under_its_old_name() {
    let db = test_db().await;
    let before = release_before();
    schema::register_kinds(&db.pool, &before.catalog())
        .await
        .unwrap();
    // Queued by the release before, by plain SQL, before anything of the new one ran.
    for name in ["ana", "bo"] {
        sqlx::query("INSERT INTO jobs (kind, input) VALUES ('greet', $1)")
            .bind(json!({ "name": name }))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // The new release calls the kind `salute`, and keeps `greet` as its old name.
    let renamed = Registry::new()
        .with("salute", Some(GreetV1::SCHEMA), |ctx| async move {
            mark(&ctx, &format!("salute-as-{}", ctx.job.kind)).await
        })
        .alias("greet", "salute");
    let (stop, new) = start_worker(
        runner(&db, fast_settings(), renamed),
        WorkerOptions::default(),
    );
    // A producer of the release before still writes the old name during the deploy.
    sqlx::query("INSERT INTO jobs (kind, input) VALUES ('greet', '{\"name\": \"cy\"}')")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "all three done", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 3
    })
    .await;
    stop.send(()).unwrap();
    new.await.unwrap().unwrap();
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM marks WHERE key LIKE '%:salute-as-greet'"
        )
        .await,
        3
    );
    let alias: Option<String> =
        sqlx::query_scalar("SELECT alias_of FROM job_kinds WHERE name = 'greet'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(alias.as_deref(), Some("salute"));
    let kinds = queue::ops::kinds(&db.pool).await.unwrap();
    let old_name = kinds.iter().find(|k| k.kind == "greet").unwrap();
    assert_eq!(
        (old_name.alias_of.as_deref(), old_name.versions.as_slice()),
        (Some("salute"), [1].as_slice())
    );
}
