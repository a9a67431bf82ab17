//! The queue as the application runs it, in process: a library enqueue and a plain
//! INSERT give the same row (the tenant default is the application's), retention
//! (cleanup), the cleanup schedule across workers, health and metrics, and both owners'
//! migrations reverted and applied again. The engine's own behaviour (claims, finishes,
//! fencing, leases, waits, races between processes) is tested in crates/queue/tests,
//! against a database holding the engine's schema alone.

mod common;

use std::time::Duration;

use common::*;
use copydesk::{
    app::{
        self,
        worker::{WorkerOptions, run as run_worker},
    },
    queue::{self, NewJob},
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
             ('a', 'old', now() - interval '1 hour'), ('b', 'fresh', now() + interval '1 hour');
         -- Lifecycle events: an old one delivered (deleted), an old one still pending
         -- (kept: its delivery is still to come) and a recent one (kept).
         INSERT INTO event_subscriptions (id, tenant_id, target, url, secret, created_by)
             VALUES ('00000000-0000-0000-0000-0000000000e1',
                     '00000000-0000-0000-0000-000000000001', 'https://o.example/…',
                     'sealed', 'sealed', 'test');
         INSERT INTO events (id, tenant_id, type, data, created_at) VALUES
             ('00000000-0000-0000-0000-0000000000f1', '00000000-0000-0000-0000-000000000001',
              'publication.made', '{}', now() - interval '40 days'),
             ('00000000-0000-0000-0000-0000000000f2', '00000000-0000-0000-0000-000000000001',
              'publication.made', '{}', now() - interval '40 days'),
             ('00000000-0000-0000-0000-0000000000f3', '00000000-0000-0000-0000-000000000001',
              'publication.made', '{}', now() - interval '1 day');
         INSERT INTO event_deliveries (tenant_id, event_id, subscription_id, status)
             SELECT '00000000-0000-0000-0000-000000000001', e, '00000000-0000-0000-0000-0000000000e1', st
               FROM (VALUES ('00000000-0000-0000-0000-0000000000f1'::uuid, 'delivered'),
                            ('00000000-0000-0000-0000-0000000000f2'::uuid, 'pending'),
                            ('00000000-0000-0000-0000-0000000000f3'::uuid, 'failed')) v(e, st);",
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
            dry.archived_projects,
            dry.deleted_events
        ),
        (1, 1, 1, 1)
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
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM events").await,
        2,
        "the pending one and the recent one are kept"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM event_deliveries").await,
        2
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
    sqlx::query("INSERT INTO jobs (kind, input, run_at, created_at) VALUES ('noop', '{}', now() - interval '1 second', now() - interval '1 hour')")
        .execute(&db.pool)
        .await
        .unwrap();
    // A cleanup job ready for two minutes, never claimed: a stalled kind.
    sqlx::query("INSERT INTO jobs (kind, input, run_at, created_at) VALUES ('cleanup', '{}', now() - interval '120 seconds', now() - interval '120 seconds')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, text) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("copydesk_queue_jobs{kind=\"noop\",status=\"queued\"} 2"),
        "{text}"
    );
    let oldest = |text: &str, kind: &str| -> f64 {
        let prefix = format!("copydesk_queue_oldest_ready_seconds{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no oldest-ready gauge for {kind}: {text}"))
            .parse()
            .unwrap()
    };
    // No live worker claims cleanup; one live and one dead claim noop.
    sqlx::query(
        "INSERT INTO copydesk_workers (name, kinds, version, alive_until) VALUES
           ('up:1:aaaa', '{noop}', '0.1.0', now() + interval '30 seconds'),
           ('dead:2:bbbb', '{noop,cleanup}', '0.1.0', now() - interval '1 second')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (_, text) = get("/metrics").await;
    assert!(text.contains("copydesk_workers{kind=\"noop\"} 1"), "{text}");
    assert!(
        text.contains("copydesk_workers{kind=\"cleanup\"} 0"),
        "{text}"
    );
    let age = oldest(&text, "cleanup");
    assert!((120.0..180.0).contains(&age), "{age}");
    // A job made an hour ago and due again a second ago (a retry) has waited a second.
    assert!(oldest(&text, "noop") < 60.0, "{text}");
    // Run what is ready: the wait each job had is in the histogram, and a kind with
    // nothing ready reports 0.
    let r = runner(&db, fast_settings(), app::registry());
    while queue::runner::run_once(&r, &["noop", "cleanup"])
        .await
        .unwrap()
        .is_some()
    {}
    // The one process serving notify (a kind with no jobs) dies: 0, not its last count.
    sqlx::query("INSERT INTO copydesk_workers (name, kinds, version, alive_until) VALUES ('n:3:cccc', '{notify}', '0.1.0', now() + interval '30 seconds')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, text) = get("/metrics").await;
    assert!(
        text.contains("copydesk_workers{kind=\"notify\"} 1"),
        "{text}"
    );
    sqlx::query("UPDATE copydesk_workers SET alive_until = now() - interval '1 second' WHERE name = 'n:3:cccc'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (_, text) = get("/metrics").await;
    assert!(
        text.contains("copydesk_workers{kind=\"notify\"} 0"),
        "{text}"
    );
    assert_eq!(oldest(&text, "cleanup"), 0.0, "{text}");
    let waited_over_a_minute = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("copydesk_job_wait_seconds_bucket{kind=\"cleanup\",le=\"60\"} ")
        })
        .unwrap_or_else(|| panic!("no wait histogram for cleanup: {text}"));
    assert_eq!(
        waited_over_a_minute, "0",
        "the cleanup job waited 120 s: {text}"
    );
    assert!(
        text.contains("copydesk_job_wait_seconds_bucket{kind=\"cleanup\",le=\"300\"} 1"),
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
