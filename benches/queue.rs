//! `cargo bench --bench queue [-- --quick] [-- --only enqueue,ceiling,process,latency,backlog,rss,health,churn]`
//!
//! Starts its own Postgres (the embedded cluster, with fsync on), then measures
//! copydesk beside apalis-postgres's `PostgresStorage` on the same database in the same
//! run, and the database's own ceiling (plain SQL, no framework). Prints a table and one
//! JSON document. Not a test: figures depend on the machine.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use apalis_core::{backend::TaskSink, error::BoxDynError, worker::builder::WorkerBuilder};
use apalis_postgres::{Config as ApalisConfig, PostgresStorage};
use copydesk::{
    app::{
        self,
        worker::{WorkerOptions, run as run_worker},
    },
    config::Settings,
    db::embedded::{Cluster, Options},
    jobs::App,
    queue::{self, NewJob, Runner, ops},
};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgPoolOptions};

struct Args {
    quick: bool,
    /// Skip apalis-postgres in the processing lines (for iterating on copydesk alone).
    ours_only: bool,
    only: Option<Vec<String>>,
}

impl Args {
    fn parse() -> Self {
        let mut a = Args {
            quick: false,
            ours_only: false,
            only: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--ours-only" => a.ours_only = true,
                "--only" => a.only = it.next().map(|s| s.split(',').map(str::to_owned).collect()),
                "--bench" => {}
                other => eprintln!("ignoring argument {other:?}"),
            }
        }
        a
    }
    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// One figure, with its baseline when there is one.
#[derive(Default)]
struct Report {
    lines: Vec<(String, Value)>,
}

impl Report {
    fn add(&mut self, name: &str, v: Value) {
        progress(&format!("{name}: {v}"));
        self.lines.push((name.to_owned(), v));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = if args.quick { 5_000 } else { 100_000 };
    let dir = tempfile::Builder::new().prefix("cdb").tempdir_in("/tmp")?;
    progress(&format!("starting Postgres under {}", dir.path().display()));
    let home = dir.path().to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::ensure(&home, Options::default())).await??;
    cluster.create_database("bench").await?;
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(cluster.connect_options("bench"))
        .await?;
    copydesk::db::migrate(&pool, &copydesk::app::catalog()).await?;

    // apalis keeps its own sqlx migration history, so it gets its own database on the
    // same server: same machine, same run, no shared migration table.
    cluster.create_database("bench_apalis").await?;
    let apool = PgPoolOptions::new()
        .max_connections(40)
        .connect_with(cluster.connect_options("bench_apalis"))
        .await?;
    PostgresStorage::setup(&apool).await?;
    let dbs = Dbs {
        ours: pool.clone(),
        apalis: apool,
    };
    let mut report = Report::default();

    if args.wants("enqueue") {
        enqueue(&dbs, n, &mut report).await?;
    }
    if args.wants("ceiling") {
        ceiling(&dbs, n, &mut report).await?;
    }
    if args.wants("process") {
        for c in [1usize, 16, 64] {
            let jobs = if c == 1 { n / 5 } else { n };
            let ours = copydesk_process(&dbs, jobs, c, 32).await?;
            let theirs = if args.ours_only {
                f64::NAN
            } else {
                apalis_process(&dbs, jobs, c, 10).await?
            };
            report.add(
                &format!("process_concurrency_{c}"),
                json!({"jobs": jobs, "copydesk_jobs_per_s": ours, "apalis_jobs_per_s": theirs, "ratio": ours / theirs}),
            );
        }
        // Each side's best batch setting, found by trying a few.
        let mut ours = (0.0f64, 0usize);
        let mut ours_all = serde_json::Map::new();
        for batch in [256, 512, 1000] {
            let rate = copydesk_process(&dbs, n, 64, batch).await?;
            ours_all.insert(batch.to_string(), json!(rate));
            if rate > ours.0 {
                ours = (rate, batch);
            }
        }
        let mut theirs = (f64::NAN, 0usize);
        let mut theirs_all = serde_json::Map::new();
        if !args.ours_only {
            for batch in [100, 500] {
                let rate = apalis_process(&dbs, n, 64, batch).await?;
                theirs_all.insert(batch.to_string(), json!(rate));
                if theirs.0.is_nan() || rate > theirs.0 {
                    theirs = (rate, batch);
                }
            }
        }
        report.add(
            "process_best_batch",
            json!({"jobs": n, "copydesk_jobs_per_s": ours.0, "copydesk_batch": ours.1,
                   "apalis_jobs_per_s": theirs.0, "apalis_batch": theirs.1, "ratio": ours.0 / theirs.0,
                   "copydesk_by_batch": ours_all, "apalis_by_batch": theirs_all}),
        );
    }
    if args.wants("latency") {
        latency(&dbs, if args.quick { 100 } else { 500 }, &mut report).await?;
    }
    if args.wants("backlog") {
        backlog(
            &dbs,
            if args.quick { 100_000 } else { 1_000_000 },
            &mut report,
        )
        .await?;
    }
    if args.wants("rss") {
        rss(&dbs, if args.quick { 300 } else { 1000 }, &mut report).await?;
    }
    if args.wants("health") {
        health(&dbs, &mut report).await?;
    }
    if args.wants("churn") {
        churn(
            &dbs,
            if args.quick { 100_000 } else { 1_000_000 },
            &mut report,
        )
        .await?;
    }

    println!("\n{:<28} result", "line");
    for (name, v) in &report.lines {
        println!("{name:<28} {v}");
    }
    let doc: serde_json::Map<String, Value> = report.lines.into_iter().collect();
    println!(
        "\n{}",
        serde_json::to_string_pretty(&json!({"quick": args.quick, "results": doc}))?
    );
    pool.close().await;
    drop(cluster);
    Ok(())
}

/// copydesk's database and apalis-postgres's, on the same server.
struct Dbs {
    ours: PgPool,
    apalis: PgPool,
}

async fn reset(dbs: &Dbs) -> anyhow::Result<()> {
    // One statement each: several in one simple query would run as one transaction,
    // and VACUUM refuses to run inside one.
    for (pool, sql_text) in [
        (&dbs.ours, "TRUNCATE jobs CASCADE"),
        (&dbs.ours, "VACUUM ANALYZE jobs"),
        (&dbs.apalis, "TRUNCATE apalis.jobs CASCADE"),
        (&dbs.apalis, "VACUUM ANALYZE apalis.jobs"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql_text))
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn noops(n: usize) -> Vec<NewJob> {
    vec![NewJob::new("noop", json!({})); n]
}

async fn enqueue(dbs: &Dbs, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    let jobs = noops(n);
    let t = Instant::now();
    for chunk in jobs.chunks(10_000) {
        let mut tx = pool.begin().await?;
        queue::enqueue_many(&mut tx, &app::catalog(), chunk).await?;
        tx.commit().await?;
    }
    let lib = n as f64 / t.elapsed().as_secs_f64();
    reset(dbs).await?;
    let t = Instant::now();
    insert_noops(pool, n, "{}").await?;
    let plain = n as f64 / t.elapsed().as_secs_f64();
    reset(dbs).await?;
    let mut storage = PostgresStorage::<Value>::new(&dbs.apalis)
        .with_config(ApalisConfig::default().queue("bench"));
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        storage
            .push_bulk(chunk.iter().map(|_| json!({})).collect())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let apalis = n as f64 / t.elapsed().as_secs_f64();
    report.add(
        "enqueue",
        json!({"jobs": n, "copydesk_enqueue_many_jobs_per_s": lib, "copydesk_plain_sql_jobs_per_s": plain,
               "apalis_push_bulk_jobs_per_s": apalis, "ratio_enqueue_many": lib / apalis}),
    );
    Ok(())
}

/// The database's own ceiling: claim 500 with SKIP LOCKED, mark them done by primary
/// key, four connections, plain SQL.
async fn ceiling(dbs: &Dbs, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    insert_noops(pool, n, "{}").await?;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "UPDATE jobs SET status = 'running', locked_by = $1 WHERE id IN (
                         SELECT id FROM jobs WHERE status = 'queued' AND kind = 'noop'
                         ORDER BY priority DESC, run_at, id LIMIT 500 FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                )
                .bind(format!("ceiling-{w}"))
                .fetch_all(&pool)
                .await?;
                if ids.is_empty() {
                    return Ok::<_, sqlx::Error>(());
                }
                sqlx::query(
                    "UPDATE jobs SET status = 'done', finished_at = now() WHERE id = ANY($1)",
                )
                .bind(&ids)
                .execute(&pool)
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    report.add("db_ceiling", json!({"jobs": n, "jobs_per_s": rate}));
    Ok(())
}

fn runner(pool: &PgPool, concurrency: usize, batch: usize) -> anyhow::Result<Runner<App>> {
    let mut s = Settings::defaults();
    s.llm.provider = "offline".into();
    s.worker.concurrency = concurrency;
    s.worker.kinds.clear();
    s.worker.batch_size = batch;
    // Noop jobs take no time: hold a batch beyond the running ones so the next claim
    // overlaps with work (the default keeps this small for slow LLM jobs).
    s.worker.prefetch = 2 * batch;
    let services = app::services(Arc::new(s))?;
    Ok(app::runner(pool.clone().into(), app::registry(), services))
}

type Worker = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<queue::worker::WorkerSummary, queue::Error>>,
);

/// Starts an in-process copydesk worker for `noop` jobs.
fn start_copydesk(pool: &PgPool, concurrency: usize, batch: usize) -> anyhow::Result<Worker> {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = WorkerOptions {
        kinds: Some(vec!["noop".into()]),
        ..WorkerOptions::default()
    };
    let w = tokio::spawn(run_worker(
        runner(pool, concurrency, batch)?,
        opts,
        async move {
            let _ = rx.await;
        },
    ));
    Ok((stop, w))
}

/// Inserts `n` queued noop jobs with `input`, in one statement.
async fn insert_noops(pool: &PgPool, n: usize, input: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO jobs (kind, input) SELECT 'noop', $2::jsonb FROM generate_series(1, $1)",
    )
    .bind(n as i64)
    .bind(input)
    .execute(pool)
    .await?;
    Ok(())
}

async fn wait_until(
    pool: &PgPool,
    sql_text: &'static str,
    want: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let got: i64 = sqlx::query_scalar(sql_text).fetch_one(pool).await?;
        if got >= want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out: {got} of {want} for {sql_text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn copydesk_process(
    dbs: &Dbs,
    n: usize,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    insert_noops(pool, n, "{}").await?;
    progress(&format!(
        "copydesk: {n} noop jobs, concurrency {concurrency}, batch {batch}"
    ));
    let t = Instant::now();
    let (stop, w) = start_copydesk(pool, concurrency, batch)?;
    // "Nothing queued or running" reads the two small partial indexes; counting done
    // rows would read a growing index every poll and slow the run it measures.
    wait_until(
        pool,
        "SELECT (NOT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued')
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE status = 'running'))::int::bigint",
        1,
        Duration::from_secs(900),
    )
    .await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    w.await??;
    Ok(rate)
}

async fn apalis_noop(_: Value) -> Result<(), BoxDynError> {
    Ok(())
}

async fn apalis_process(
    dbs: &Dbs,
    n: usize,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let pool = &dbs.apalis;
    reset(dbs).await?;
    let cfg = ApalisConfig::default().queue("bench").batch_size(batch);
    let mut storage = PostgresStorage::<Value>::new(pool).with_config(cfg.clone());
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        storage
            .push_bulk(chunk.iter().map(|_| json!({})).collect())
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    progress(&format!(
        "apalis-postgres: {n} jobs, concurrency {concurrency}, batch {batch}"
    ));
    let backend = PostgresStorage::<Value>::new(pool)
        .with_config(cfg)
        .with_pubsub();
    let worker = WorkerBuilder::new(format!("bench-{concurrency}-{batch}"))
        .backend(backend)
        .layer(tower::limit::ConcurrencyLimitLayer::new(concurrency))
        .build(apalis_noop);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let w = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    wait_until(
        pool,
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Done'",
        n as i64,
        Duration::from_secs(1800),
    )
    .await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    Ok(rate)
}

fn percentiles(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    json!({"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99)})
}

/// Enqueue→start latency: `n` jobs enqueued one at a time at 100/s to an idle worker.
async fn latency(dbs: &Dbs, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    let (stop, w) = start_copydesk(pool, 16, 32)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    progress(&format!("copydesk latency: {n} jobs at 100/s"));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..n {
        tick.tick().await;
        let mut conn = pool.acquire().await?;
        queue::enqueue(&mut conn, &app::catalog(), &NewJob::new("noop", json!({}))).await?;
    }
    wait_until(
        pool,
        "SELECT count(*) FROM jobs WHERE status = 'done'",
        n as i64,
        Duration::from_secs(60),
    )
    .await?;
    let _ = stop.send(());
    w.await??;
    let ours: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 FROM jobs",
    )
    .fetch_all(pool)
    .await?;

    reset(dbs).await?;
    let pool = &dbs.apalis;
    let backend = PostgresStorage::<Value>::new(pool)
        .with_config(ApalisConfig::default().queue("bench"))
        .with_pubsub();
    let worker = WorkerBuilder::new("bench-latency")
        .backend(backend)
        .layer(tower::limit::ConcurrencyLimitLayer::new(16))
        .build(apalis_noop);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    progress(&format!("apalis latency: {n} jobs at 100/s"));
    let mut storage =
        PostgresStorage::<Value>::new(pool).with_config(ApalisConfig::default().queue("bench"));
    for _ in 0..n {
        tick.tick().await;
        storage
            .push(json!({}))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    wait_until(
        pool,
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Done'",
        n as i64,
        Duration::from_secs(120),
    )
    .await?;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    let theirs: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM lock_at - run_at)::float8 * 1000 FROM apalis.jobs WHERE lock_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    report.add(
        "latency_enqueue_to_start",
        json!({"jobs": n, "rate_per_s": 100, "copydesk": percentiles(ours),
               "apalis": if theirs.is_empty() { Value::Null } else { percentiles(theirs) }}),
    );
    Ok(())
}

/// Claim throughput (claim 100 at a time, one connection, 20,000 claims) with 10,000
/// queued rows and with `big` queued rows.
async fn backlog(dbs: &Dbs, big: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    let mut out = BTreeMap::new();
    for rows in [10_000usize, big] {
        reset(dbs).await?;
        progress(&format!("backlog: inserting {rows} queued rows"));
        sqlx::query(
            "INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, $1)",
        )
        .bind(rows as i64)
        .execute(pool)
        .await?;
        sqlx::raw_sql("VACUUM ANALYZE jobs").execute(pool).await?;
        // The same number of claims on both tables: each claim leaves dead entries at
        // the head of the queued index until vacuum, so claiming more rows from the
        // larger table would measure that, not the table's size.
        let claims = 5_000;
        let t = Instant::now();
        let mut got = 0;
        while got < claims {
            got += ops::claim(pool, "backlog", "noop", 100, Duration::from_secs(60))
                .await?
                .len();
        }
        out.insert(rows.to_string(), claims as f64 / t.elapsed().as_secs_f64());
    }
    let small = out["10000"];
    let large = out[&big.to_string()];
    report.add(
        "claim_backlog",
        json!({"claims_per_s_by_queued_rows": out, "large_vs_small": large / small}),
    );
    Ok(())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `in_flight` jobs that each sleep 1 s, three waves: peak RSS of this process and
/// throughput against the ideal of concurrency ÷ 1 s.
async fn rss(dbs: &Dbs, in_flight: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    let jobs = in_flight * 3;
    insert_noops(pool, jobs, r#"{"sleep_ms": 1000}"#).await?;
    progress(&format!("rss: {jobs} jobs of 1 s, {in_flight} in flight"));
    let before = rss_mb();
    let t = Instant::now();
    let (stop, w) = start_copydesk(pool, in_flight, in_flight)?;
    let mut peak = before;
    loop {
        peak = peak.max(rss_mb());
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'done'")
            .fetch_one(pool)
            .await?;
        if done as usize >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = jobs as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    w.await??;
    report.add(
        "rss_in_flight",
        json!({"in_flight": in_flight, "process_rss_mb_peak": peak, "process_rss_mb_before": before,
               "jobs_per_s": rate, "ideal_jobs_per_s": in_flight as f64, "fraction_of_ideal": rate / in_flight as f64}),
    );
    Ok(())
}

/// Dead tuples and size of the jobs table after the runs above.
async fn health(dbs: &Dbs, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    let (live, dead, size): (i64, i64, i64) = sqlx::query_as(
        "SELECT n_live_tup, n_dead_tup, pg_total_relation_size('jobs') FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(pool)
    .await?;
    report.add(
        "jobs_table",
        json!({"live_tuples": live, "dead_tuples": dead, "total_bytes": size}),
    );
    Ok(())
}

/// `total` jobs through one worker (concurrency 64, batch 256) in waves while cleanup
/// deletes finished rows every 2 s, as a busy day would: throughput, and the `jobs`
/// table's dead tuples, size and index sizes at the end (and the most dead tuples seen).
async fn churn(dbs: &Dbs, total: usize, report: &mut Report) -> anyhow::Result<()> {
    let pool = &dbs.ours;
    reset(dbs).await?;
    let wave = (total / 10).max(1);
    progress(&format!(
        "churn: {total} jobs in waves of {wave}, cleanup every 2 s"
    ));
    let mut cfg = Settings::defaults().cleanup;
    cfg.done_retention_days = 0;
    cfg.batch_size = 10_000;
    let cleaner_pool = pool.clone();
    let cleaner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Err(e) =
                copydesk::jobs::cleanup::cleanup(&cleaner_pool.clone().into(), &cfg, false).await
            {
                progress(&format!("cleanup failed: {e}"));
            }
        }
    });
    let dead = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .fetch_one(pool)
        .await
    };
    let open = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await
    };
    let t = Instant::now();
    let (stop, w) = start_copydesk(pool, 64, 256)?;
    let mut peak_dead = 0i64;
    for i in 0..total / wave {
        insert_noops(pool, wave, "{}").await?;
        loop {
            peak_dead = peak_dead.max(dead().await?);
            if open().await? < (wave / 4) as i64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        progress(&format!("churn: wave {} of {}", i + 1, total / wave));
    }
    while open().await? > 0 {
        peak_dead = peak_dead.max(dead().await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    w.await??;
    cleaner.abort();
    let mut cfg = Settings::defaults().cleanup;
    cfg.done_retention_days = 0;
    copydesk::jobs::cleanup::cleanup(&pool.clone().into(), &cfg, false).await?;
    // Give autovacuum and the statistics a moment, as a real table would have.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (live, dead_end, table, indexes, queued_idx, autovacuums): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT n_live_tup, n_dead_tup, pg_table_size('jobs'), pg_indexes_size('jobs'),
                    pg_relation_size('jobs_queued_idx'), autovacuum_count
             FROM pg_stat_user_tables WHERE relname = 'jobs'",
        )
        .fetch_one(pool)
        .await?;
    report.add(
        "churn",
        json!({"jobs": total, "jobs_per_s": rate, "live_tuples": live, "dead_tuples_end": dead_end,
               "dead_tuples_peak": peak_dead, "table_bytes": table, "indexes_bytes": indexes,
               "queued_index_bytes": queued_idx, "autovacuum_runs": autovacuums}),
    );
    Ok(())
}
