//! Postgres restarted under running workers: they reconnect and every job finishes.
//! In its own test binary, so the restart hits no other test's cluster.

mod common;

use std::time::Duration;

use common::*;
use copydesk::queue::{self, NewJob};
use nix::sys::signal::Signal;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reconnect_after_a_postgres_restart_and_every_job_finishes() {
    let db = test_db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(
        &mut conn,
        &catalog(),
        &vec![NewJob::new("noop", json!({"sleep_ms": 20})); 3000],
    )
    .await
    .unwrap();
    drop(conn);
    let mut workers: Vec<_> = (0..2)
        .map(|_| spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &[]))
        .collect();
    wait_for(Duration::from_secs(60), "some jobs done", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await >= 300
    })
    .await;
    cluster().restart_immediately().unwrap();
    // Our own pool reconnects as well; wait until every job is done.
    wait_for(
        Duration::from_secs(180),
        "all 3000 jobs done after the restart",
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE status = 'done'")
                .fetch_one(&db.pool)
                .await
                .is_ok_and(|n| n == 3000)
        },
    )
    .await;
    for w in &workers {
        signal(w, Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(30)).success());
    }
}
