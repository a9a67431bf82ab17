//! `cargo bench --bench api [-- --quick]`
//!
//! The API's listings at size: 1,000,000 finished jobs and 10,000 queued (and 300
//! approvals, 200 pending), answered by the real router in process, as the token of a
//! viewer of the default tenant (so every query runs under row-level security, as a
//! request does). Prints milliseconds per answer (median, p95, max) per endpoint and one
//! JSON document. Not a test: figures depend on the machine.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use copydesk::{
    app,
    config::Settings,
    db::embedded::{Cluster, Options},
    domain::{DEFAULT_TENANT, TokenRole},
    http::api::ApiState,
    store,
};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (finished, queued) = if quick {
        (100_000, 1_000)
    } else {
        (1_000_000, 10_000)
    };
    let dir = tempfile::Builder::new().prefix("cdb").tempdir_in("/tmp")?;
    progress(&format!("starting Postgres under {}", dir.path().display()));
    let home = dir.path().to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::ensure(&home, Options::default())).await??;
    cluster.create_database("bench").await?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(cluster.connect_options("bench"))
        .await?;
    copydesk::db::migrate(&pool, &copydesk::app::catalog()).await?;

    progress(&format!(
        "writing {finished} finished jobs and {queued} queued"
    ));
    let project = store::projects::create(&pool, None, "Linen & Loom", None).await?;
    let started = Instant::now();
    // In chunks, oldest first, as a queue that ran for a while would hold them: mostly
    // done, one in a hundred failed, one in a thousand cancelled.
    let chunk = 100_000;
    for from in (0..finished).step_by(chunk) {
        sqlx::query(
            "INSERT INTO jobs (kind, input, project_id, status, attempts, last_error, created_at,
                               started_at, finished_at)
             SELECT 'noop', '{}', $3,
                    CASE WHEN n % 1000 = 0 THEN 'cancelled' WHEN n % 100 = 0 THEN 'failed' ELSE 'done' END,
                    1, CASE WHEN n % 100 = 0 THEN 'timed out after ' || n % 7 || ' s' END,
                    now() - make_interval(secs => ($2 - n) * 0.5),
                    now() - make_interval(secs => ($2 - n) * 0.5),
                    now() - make_interval(secs => ($2 - n) * 0.5 - 0.1)
             FROM generate_series($1, $1 + $4 - 1) n",
        )
        .bind(from as i64)
        .bind(finished as i64)
        .bind(project)
        .bind(chunk.min(finished - from) as i64)
        .execute(&pool)
        .await?;
        progress(&format!("  {} rows", from + chunk));
    }
    sqlx::query(
        "INSERT INTO jobs (kind, input, project_id) SELECT 'noop', '{}', $2 FROM generate_series(1, $1)",
    )
    .bind(queued as i64)
    .bind(project)
    .execute(&pool)
    .await?;
    // Approvals: 300 drafts waiting on jobs, 200 still pending.
    sqlx::query(
        "WITH j AS (
             INSERT INTO jobs (kind, input, project_id, status)
             SELECT 'noop', '{}', $1, 'needs_approval' FROM generate_series(1, 300) RETURNING id),
         a AS (
             INSERT INTO artifacts (project_id, job_id, kind, channel, content)
             SELECT $1, id, 'draft', 'blog', 'Our linen lasts.' FROM j RETURNING id, job_id)
         INSERT INTO approvals (job_id, artifact_id, status, decided_by, decided_at, applied_at)
         SELECT job_id, id,
                CASE WHEN row_number() OVER () <= 100 THEN 'approved' ELSE 'pending' END,
                CASE WHEN row_number() OVER () <= 100 THEN 'ana' END,
                CASE WHEN row_number() OVER () <= 100 THEN now() END,
                CASE WHEN row_number() OVER () <= 100 THEN now() END
         FROM a",
    )
    .bind(project)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    sqlx::query("VACUUM ANALYZE approvals")
        .execute(&pool)
        .await?;
    progress(&format!(
        "written in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let mut tx = pool.begin().await?;
    let (_, token) = store::tokens::create(
        &mut tx,
        DEFAULT_TENANT,
        "bench",
        TokenRole::Viewer,
        None,
        "bench",
    )
    .await?;
    tx.commit().await?;
    let token = token.expose().to_owned();
    let settings = Arc::new(Settings::defaults());
    let router = copydesk::http::app(ApiState::new(
        pool.clone().into(),
        settings,
        app::catalog(),
        Err(copydesk::keys::KeyError::Missing),
    ));

    // A cursor half-way down the table, for a deep page.
    let middle: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM jobs ORDER BY id OFFSET $1 LIMIT 1")
            .bind((finished / 2) as i64)
            .fetch_one(&pool)
            .await?;
    let deep = copydesk::http::api::page::Cursor {
        at: None,
        id: middle,
    }
    .encode();
    let endpoints = [
        ("jobs, first page", "/api/v1/jobs".to_owned()),
        (
            "jobs, a page half-way down",
            format!("/api/v1/jobs?cursor={deep}"),
        ),
        ("jobs, failed", "/api/v1/jobs?status=failed".to_owned()),
        ("jobs, queued", "/api/v1/jobs?status=queued".to_owned()),
        (
            "jobs, done of one kind",
            "/api/v1/jobs?status=done&kind=noop".to_owned(),
        ),
        ("queue stats", "/api/v1/queue/stats".to_owned()),
        (
            "approvals inbox",
            "/api/v1/approvals?status=pending&order=oldest".to_owned(),
        ),
        // The console's pages, as a logged-in viewer (the cookie holds the token).
        ("console: jobs", "/console/jobs".to_owned()),
        (
            "console: jobs, failed",
            "/console/jobs?status=failed".to_owned(),
        ),
        ("console: queue", "/console/queue".to_owned()),
        ("console: approvals inbox", "/console/approvals".to_owned()),
    ];
    let rounds = if quick { 10 } else { 30 };
    let mut report = serde_json::Map::new();
    println!(
        "{:<30} {:>9} {:>9} {:>9}",
        "endpoint", "p50 ms", "p95 ms", "max ms"
    );
    for (name, path) in endpoints {
        let mut ms = Vec::with_capacity(rounds);
        for round in 0..=rounds {
            let req = Request::get(&path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::COOKIE, format!("copydesk_session={token}"))
                .body(Body::empty())?;
            let t = Instant::now();
            let res = router.clone().oneshot(req).await?;
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX).await?;
            let took = t.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(
                status == StatusCode::OK,
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            if round > 0 {
                ms.push(took); // the first answer warms the connection and the cache
            }
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        let (p50, p95, max) = (at(0.5), at(0.95), at(1.0));
        println!("{name:<30} {p50:>9.1} {p95:>9.1} {max:>9.1}");
        report.insert(
            name.to_owned(),
            json!({"path": path, "p50_ms": p50, "p95_ms": p95, "max_ms": max}),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(
            [
                ("finished_jobs".to_owned(), json!(finished)),
                ("queued_jobs".to_owned(), json!(queued)),
                ("answers".to_owned(), Value::Object(report)),
            ]
            .into_iter()
            .collect()
        ))?
    );
    pool.close().await;
    cluster.stop();
    Ok(())
}
