//! `cargo bench --bench horizon [-- --hold MINUTES] [--rate JOBS_PER_S]
//! [--holder idle|repeatable|select|busy] [--before MINUTES] [--after MINUTES]`
//!
//! The queue while something holds back the database's horizon, as users meet it: two
//! real `copydesk worker` processes at their defaults against a Postgres of their own,
//! no-op jobs inserted by plain SQL at a steady rate (1,500/s), and, after `--before`
//! minutes (1), a session that holds the horizon for `--hold` minutes (10), then
//! `--after` minutes (2) once it has let go. The holder is one of:
//!
//! - `idle`: `BEGIN; SELECT txid_current();` and nothing more (a forgotten psql);
//! - `repeatable`: four `REPEATABLE READ` sessions scanning `jobs` in a loop (reports);
//! - `select`: one long `SELECT` on `jobs` (a slow query or `pg_dump`);
//! - `busy`: no holder, the control for `repeatable`: four `READ COMMITTED` sessions
//!   scanning a static table of a million rows in a loop, the same CPU taken from the
//!   queue without holding the horizon back.
//!
//! Prints, per minute: the offered and finished rates, start latency (`created_at` to
//! `started_at`) p50 and p95 of the jobs finished in that minute, the ready backlog at
//! its end, the dead row versions of `jobs` as the statistics count them, and what the
//! database was busy with (statements seen running for over 50 ms, sampled every
//! 100 ms, with what each was waiting on); then one JSON document. Not a test: figures
//! depend on the machine.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use copydesk::db::embedded::{Cluster, Options};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

struct Args {
    before: u64,
    hold: u64,
    after: u64,
    rate: u64,
    holder: String,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut a = Args {
            before: 1,
            hold: 10,
            after: 2,
            rate: 1_500,
            holder: "idle".into(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut num = |name: &str| -> anyhow::Result<u64> {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("{name} takes a whole number"))
            };
            match arg.as_str() {
                "--before" => a.before = num("--before")?,
                "--hold" => a.hold = num("--hold")?,
                "--after" => a.after = num("--after")?,
                "--rate" => a.rate = num("--rate")?,
                "--holder" => {
                    a.holder = it.next().unwrap_or_default();
                    anyhow::ensure!(
                        ["idle", "repeatable", "select", "busy"].contains(&a.holder.as_str()),
                        "--holder is idle, repeatable, select or busy, not {:?}",
                        a.holder
                    );
                }
                "--bench" => {}
                other => eprintln!("ignoring argument {other:?}"),
            }
        }
        Ok(a)
    }
}

/// One minute of the run.
struct Minute {
    phase: &'static str,
    offered: f64,
    finished: f64,
    p50_ms: f64,
    p95_ms: f64,
    backlog: i64,
    dead: i64,
    /// What the database was busy with: statements seen running for over 50 ms, by
    /// their first words, with how often they were seen (sampled every 100 ms).
    busy: Vec<(String, u64)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let dir = tempfile::Builder::new().prefix("cdh").tempdir_in("/tmp")?;
    progress(&format!("starting Postgres under {}", dir.path().display()));
    let home = dir.path().to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::ensure(&home, Options::default())).await??;
    cluster.create_database("bench").await?;
    let url = cluster.url("bench");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(cluster.connect_options("bench"))
        .await?;
    copydesk::db::migrate(&pool, &copydesk::app::catalog()).await?;

    let mut workers: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_copydesk"))
                .args(["worker", "--no-migrate"])
                .env("DATABASE_URL", &url)
                .env("COPYDESK_HOME", dir.path())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()?;

    let inserted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        pool.clone(),
        args.rate,
        inserted.clone(),
        stop.clone(),
    ));
    let busy = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let sampler = tokio::spawn(sample_busy(pool.clone(), busy.clone(), stop.clone()));

    let total = args.before + args.hold + args.after;
    let mut minutes = Vec::new();
    let mut holder: Option<Holder> = None;
    let mut last_inserted = 0;
    let mut from: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    for m in 0..total {
        let phase = if m < args.before {
            "before"
        } else if m < args.before + args.hold {
            "held"
        } else {
            "after"
        };
        if phase == "held" && holder.is_none() {
            progress(&format!("holding the horizon ({})", args.holder));
            holder = Some(Holder::start(&cluster, &args.holder).await?);
        }
        if phase == "after"
            && let Some(h) = holder.take()
        {
            progress("letting the horizon go");
            h.stop().await?;
        }
        let minute_start = Instant::now();
        while minute_start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(10)).await;
            for w in workers.iter_mut() {
                anyhow::ensure!(
                    w.try_wait()?.is_none(),
                    "a worker process exited during the run"
                );
            }
        }
        let to: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
        let now_inserted = inserted.load(Ordering::Relaxed);
        let secs = (to - from).num_milliseconds() as f64 / 1000.0;
        let offered = (now_inserted - last_inserted) as f64 / secs;
        last_inserted = now_inserted;
        let mut minute = measure(&pool, phase, offered, from, to).await?;
        let mut seen: Vec<(String, u64)> = std::mem::take(&mut *busy.lock().expect("not poisoned"))
            .into_iter()
            .collect();
        seen.sort_by_key(|b| std::cmp::Reverse(b.1));
        seen.truncate(6);
        minute.busy = seen;
        progress(&format!(
            "minute {} ({phase}): offered {:.0}/s, finished {:.0}/s, start p50 {:.1} ms, p95 {:.1} ms, backlog {}, dead {}, busy with {:?}",
            m + 1,
            minute.offered,
            minute.finished,
            minute.p50_ms,
            minute.p95_ms,
            minute.backlog,
            minute.dead,
            minute.busy
        ));
        minutes.push(minute);
        from = to;
    }
    stop.store(true, Ordering::Relaxed);
    producer.await??;
    sampler.await??;
    for w in workers.iter_mut() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        w.wait()?;
    }

    println!();
    println!(
        "holder {} for {} min at {} jobs/s offered, two `copydesk worker` processes at defaults",
        args.holder, args.hold, args.rate
    );
    println!(
        "{:>6} {:>7} {:>10} {:>11} {:>13} {:>13} {:>9} {:>10}",
        "minute",
        "phase",
        "offered/s",
        "finished/s",
        "start p50 ms",
        "start p95 ms",
        "backlog",
        "dead rows"
    );
    for (i, m) in minutes.iter().enumerate() {
        println!(
            "{:>6} {:>7} {:>10.0} {:>11.0} {:>13.1} {:>13.1} {:>9} {:>10}",
            i + 1,
            m.phase,
            m.offered,
            m.finished,
            m.p50_ms,
            m.p95_ms,
            m.backlog,
            m.dead
        );
    }
    let doc: Vec<_> = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({"minute": i + 1, "phase": m.phase, "offered_per_s": m.offered,
                   "finished_per_s": m.finished, "start_p50_ms": m.p50_ms,
                   "start_p95_ms": m.p95_ms, "backlog": m.backlog, "dead_rows": m.dead,
                   "busy_with": m.busy})
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "holder": args.holder, "hold_minutes": args.hold, "rate": args.rate, "minutes": doc
        }))?
    );
    Ok(())
}

/// Inserts `rate` no-op jobs a second by plain SQL, in a statement every 10 ms, until
/// told to stop. A statement that falls behind is made up at once (the offered rate
/// stays the rate asked for as long as the database takes the inserts).
async fn produce(
    pool: PgPool,
    rate: u64,
    inserted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let n = due.saturating_sub(inserted.load(Ordering::Relaxed));
        if n == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, $1)",
        )
        .bind(n as i64)
        .execute(&mut *conn)
        .await?;
        inserted.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The figures of the minute from `from` to `to`, from the rows' own times.
async fn measure(
    pool: &PgPool,
    phase: &'static str,
    offered: f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Minute> {
    let (finished, p50, p95): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))
         FROM jobs WHERE status = 'done' AND finished_at >= $1 AND finished_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let backlog: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND run_at <= now()")
            .fetch_one(pool)
            .await?;
    let dead: i64 = sqlx::query_scalar(
        "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(pool)
    .await?;
    let secs = (to - from).num_milliseconds() as f64 / 1000.0;
    Ok(Minute {
        phase,
        offered,
        finished: finished as f64 / secs,
        p50_ms: p50.unwrap_or(f64::NAN) * 1000.0,
        p95_ms: p95.unwrap_or(f64::NAN) * 1000.0,
        backlog,
        dead,
        busy: Vec::new(),
    })
}

/// Every 100 ms, notes each statement (or vacuum) that has been running for over 50 ms,
/// by its first words, until told to stop.
async fn sample_busy(
    pool: PgPool,
    busy: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT CASE WHEN backend_type = 'client backend'
                         THEN left(regexp_replace(query, '\\s+', ' ', 'g'), 48)
                         ELSE backend_type END
                    || coalesce(' [' || wait_event_type || ':' || wait_event || ']', ' [on cpu]')
             FROM pg_stat_activity
             WHERE state = 'active' AND pid <> pg_backend_pid()
               AND now() - query_start > interval '50 ms'
               AND backend_type IN ('client backend', 'autovacuum worker')
               AND query NOT LIKE '%pg_sleep%' AND query NOT LIKE 'SELECT txid_current%'",
        )
        .fetch_all(&pool)
        .await?;
        let mut b = busy.lock().expect("not poisoned");
        for q in rows {
            *b.entry(q).or_default() += 1;
        }
    }
    Ok(())
}

/// What holds the horizon back, and how to stop it.
struct Holder {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    idle: Option<PgConnection>,
}

impl Holder {
    async fn start(cluster: &Cluster, how: &str) -> anyhow::Result<Self> {
        let opts = cluster.connect_options("bench");
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut idle = None;
        match how {
            "idle" => {
                let mut conn = PgConnection::connect_with(&opts).await?;
                sqlx::query("BEGIN").execute(&mut conn).await?;
                sqlx::query("SELECT txid_current()")
                    .execute(&mut conn)
                    .await?;
                idle = Some(conn);
            }
            "repeatable" | "busy" => {
                let (begin, scan) = if how == "repeatable" {
                    (
                        "BEGIN ISOLATION LEVEL REPEATABLE READ",
                        "SELECT count(*), max(created_at) FROM jobs",
                    )
                } else {
                    let mut conn = PgConnection::connect_with(&opts).await?;
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS busy_scan AS
                         SELECT g AS id, now() AS created_at, repeat('x', 150) AS pad
                         FROM generate_series(1, 1000000) g",
                    )
                    .execute(&mut conn)
                    .await?;
                    sqlx::query("VACUUM ANALYZE busy_scan")
                        .execute(&mut conn)
                        .await?;
                    ("BEGIN", "SELECT count(*), max(created_at) FROM busy_scan")
                };
                for _ in 0..4 {
                    let (opts, stop) = (opts.clone(), stop.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut conn = PgConnection::connect_with(&opts).await?;
                        sqlx::query(begin).execute(&mut conn).await?;
                        while !stop.load(Ordering::Relaxed) {
                            sqlx::query(scan).execute(&mut conn).await?;
                        }
                        sqlx::query("ROLLBACK").execute(&mut conn).await?;
                        Ok(())
                    }));
                }
            }
            _ => {
                let (opts, stop) = (opts.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = PgConnection::connect_with(&opts).await?;
                    // One statement that reads `jobs` and runs until cancelled: its
                    // snapshot is held for as long as it runs.
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&mut conn)
                        .await?;
                    let mut canceller = PgConnection::connect_with(&opts).await?;
                    let watch = tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        sqlx::query("SELECT pg_cancel_backend($1)")
                            .bind(pid)
                            .execute(&mut canceller)
                            .await
                    });
                    let _ = sqlx::query("SELECT (SELECT count(*) FROM jobs), pg_sleep(86400)")
                        .execute(&mut conn)
                        .await;
                    watch.await??;
                    Ok(())
                }));
            }
        }
        Ok(Self { stop, tasks, idle })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        if let Some(mut conn) = self.idle {
            sqlx::query("ROLLBACK").execute(&mut conn).await?;
        }
        Ok(())
    }
}
