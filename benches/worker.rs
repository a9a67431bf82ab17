//! `cargo bench --bench worker [-- --quick] [-- --runs N]`
//!
//! The queue as users run it: the real `copydesk worker` process, spawned as
//! `copydesk worker --kinds noop --concurrency 64`, against a Postgres of its own, with
//! 50,000 no-op jobs inserted by plain SQL before it starts. The rate comes from the
//! rows' own times (the last `finished_at` less the first `started_at`), so the
//! process's start-up is not counted. At the defaults, with claims that never grow
//! (`max_batch_size` 32), with `batch_size` 512 and `prefetch` 1024, and at the
//! defaults exporting traces to an OTLP collector the bench runs (counting the spans it
//! receives), alternated `--runs` times (3 by default). Prints a table and
//! one JSON document. Not a test: figures depend on the machine.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use copydesk::db::embedded::{Cluster, Options};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let jobs: i64 = if quick { 10_000 } else { 50_000 };
    let dir = tempfile::Builder::new().prefix("cdw").tempdir_in("/tmp")?;
    progress(&format!("starting Postgres under {}", dir.path().display()));
    let home = dir.path().to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::ensure(&home, Options::default())).await??;
    cluster.create_database("bench").await?;
    let url = cluster.url("bench");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(cluster.connect_options("bench"))
        .await?;
    copydesk::db::migrate(&pool, &copydesk::app::catalog()).await?;

    // A collector for the traced run: takes OTLP/HTTP exports and counts their spans.
    let spans = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = spans.clone();
    let sink = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                use prost::Message;
                if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                    let n: usize = req
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, sink).await });

    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let configs: Vec<(&str, Vec<(String, String)>)> = vec![
        ("defaults", Vec::new()),
        (
            "max_batch_size 32 (no growing)",
            owned(&[("COPYDESK__WORKER__MAX_BATCH_SIZE", "32")]),
        ),
        (
            "batch_size 512, prefetch 1024",
            owned(&[
                ("COPYDESK__WORKER__BATCH_SIZE", "512"),
                ("COPYDESK__WORKER__PREFETCH", "1024"),
            ]),
        ),
        (
            "defaults, traces exported",
            owned(&[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str())]),
        ),
    ];
    let mut results: Vec<(String, Vec<f64>)> = configs
        .iter()
        .map(|(n, _)| (n.to_string(), Vec::new()))
        .collect();
    for run in 1..=runs {
        for (i, (name, env)) in configs.iter().enumerate() {
            sqlx::query("DELETE FROM jobs").execute(&pool).await?;
            sqlx::query(
                "INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, $1)",
            )
            .bind(jobs)
            .execute(&pool)
            .await?;
            sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
            progress(&format!(
                "run {run}, {name}: {jobs} jobs queued; starting the worker"
            ));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_copydesk"));
            cmd.args([
                "worker",
                "--kinds",
                "noop",
                "--concurrency",
                "64",
                "--no-scheduler",
                "--no-migrate",
            ])
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
            for (k, v) in env.iter() {
                cmd.env(k, v);
            }
            let spans_before = spans.load(std::sync::atomic::Ordering::Relaxed);
            let mut child = cmd.spawn()?;
            let started = Instant::now();
            loop {
                // Reads the two small partial indexes: counting rows not done would read
                // the whole table every poll and take CPU from the run it measures.
                let open: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued')
                         OR EXISTS (SELECT 1 FROM jobs WHERE status = 'running')",
                )
                .fetch_one(&pool)
                .await?;
                if !open {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(300),
                    "the worker did not finish {jobs} jobs in 5 minutes"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            child.wait()?;
            let secs: f64 = sqlx::query_scalar(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM jobs",
            )
            .fetch_one(&pool)
            .await?;
            let rate = jobs as f64 / secs;
            progress(&format!("run {run}, {name}: {rate:.0} jobs/s"));
            let exported = spans.load(std::sync::atomic::Ordering::Relaxed) - spans_before;
            if exported > 0 {
                // The SDK's batch processor drops what its queue (OTEL_BSP_MAX_QUEUE_SIZE,
                // 2,048) cannot hold: say how many of the jobs' spans arrived.
                progress(&format!(
                    "run {run}, {name}: {exported} spans received for {jobs} jobs"
                ));
            }
            results[i].1.push(rate);
        }
    }

    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "worker process", "min", "median", "max"
    );
    let mut doc = serde_json::Map::new();
    for (name, mut rates) in results {
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "{name:<32} {:>12.0} {median:>12.0} {:>12.0}",
            rates[0],
            rates[rates.len() - 1]
        );
        doc.insert(name, json!({"jobs_per_s": rates, "median": median}));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"jobs": jobs, "runs": runs, "results": doc}))?
    );
    Ok(())
}
