//! `cargo bench --bench pipeline [-- --projects N] [-- --no-off-run] [-- --tight]
//! [-- --tight-projects N --tight-rate R] [-- --tight-no-limiter]`
//!
//! The whole pipeline at scale, as users run it: two `copydesk worker` processes at
//! their defaults against a Postgres of their own, `--projects` projects (200 by
//! default) each with its own store page and the four channels (blog, LinkedIn, X,
//! Facebook), approvals given by SQL as they appear, and every draft published to the
//! stand-in platforms (`copydesk::demo::platforms`, with copydesk's default platform
//! limits). The model server is a fake in this process that enforces what a provider
//! does: 600 requests in any minute, 200,000 tokens a minute (a bucket that holds a
//! minute's worth, charged what each answer used), 300 ms per answer, and a 429 with
//! `Retry-After` past either limit. Its answers are built from the JSON Schema each
//! call sends (or short Markdown for text), and its `usage` counts a token per four
//! characters, as the providers roughly do.
//!
//! Run once with the limiter set to the fake's limits (`llm:HOST:PORT`, 600 per minute
//! and 200,000 tokens a minute) and once with no limit for the model server (skip it
//! with `--no-off-run`). Then, with the limiter on: a one-job project enqueued behind a
//! 10,000-job project (no-op jobs of 50 ms), and how long its job waited to start.
//!
//! Prints per run: model calls accepted and refused (429), tokens, utilisation of each
//! limit over the run (accepted ÷ what the limit allows in the run's time: 600 requests
//! for each minute begun, since 600 may go at once; tokens, a minute's bucket plus its
//! refill), wall time (from releasing the first jobs to the last project's fourth
//! post) against the ideal (the shortest run these limits allow for the calls and
//! tokens made: 60 s for each further 600 calls, or the tokens beyond the first
//! minute's at 200,000 a minute; `calls_over_rate_s` in the JSON is the plainer calls ÷
//! 600 a minute), per-project finish times (p50, p95) and each worker's peak RSS; and
//! one JSON document. Not a test: figures depend on the machine.
//!
//! Then the tight-limit line (`--tight` runs it alone): `--tight-projects` projects (40)
//! for the blog and X against a provider that answers `--tight-rate` requests in any
//! second (3) and refuses past it, the limiter set to the same, far more draft jobs
//! ready than the provider takes: calls answered against the calls a run with no limit
//! makes for the same jobs (repeated calls ÷ calls should be 0: a job that waits for
//! the limit resumes at the call that waited), and wall time against calls ÷ rate, up
//! to every draft waiting for its approval. `--tight-no-limiter` sets no limit, as a new
//! user has: the provider's 429s alone hold the work back.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use copydesk::{
    db::{
        Db,
        embedded::{Cluster, Options},
    },
    demo::platforms::FakePlatforms,
    domain::{Channel, Platform},
    keys::Keys,
    pipeline::{
        Plan,
        start::{ProjectRef, start},
    },
};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const REQUESTS_PER_MINUTE: usize = 600;
const TOKENS_PER_MINUTE: f64 = 200_000.0;
const LATENCY: Duration = Duration::from_millis(300);
const DESTINATIONS: [Platform; 4] = [
    Platform::Wordpress,
    Platform::Linkedin,
    Platform::X,
    Platform::Facebook,
];

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// The fake provider's books.
struct Provider {
    /// At most `requests` accepted in any `window`.
    requests: usize,
    window: Duration,
    tokens_per_minute: f64,
    /// When each accepted request of the last window arrived.
    log: VecDeque<Instant>,
    /// When the token bucket is full again (it holds a minute's worth).
    token_tat: Instant,
    accepted: u64,
    refused: u64,
    tokens: u64,
    /// When each accepted request arrived.
    times: Vec<Instant>,
}

impl Provider {
    fn new(requests: usize, window: Duration, tokens_per_minute: f64) -> Self {
        Self {
            requests,
            window,
            tokens_per_minute,
            log: VecDeque::new(),
            token_tat: Instant::now(),
            accepted: 0,
            refused: 0,
            tokens: 0,
            times: Vec::new(),
        }
    }

    /// Takes a request of `tokens`, or says how long until it would fit.
    fn take(&mut self, tokens: u64) -> Result<(), Duration> {
        let now = Instant::now();
        while self
            .log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.log.pop_front();
        }
        let mut wait = Duration::ZERO;
        if self.log.len() >= self.requests {
            wait = self.window - now.duration_since(self.log[0]);
        }
        let need = Duration::from_secs_f64(60.0 * tokens as f64 / self.tokens_per_minute);
        let tat = self.token_tat.max(now);
        if tat + need > now + Duration::from_secs(60) {
            wait = wait.max(tat + need - now - Duration::from_secs(60));
        }
        if !wait.is_zero() {
            self.refused += 1;
            return Err(wait);
        }
        self.log.push_back(now);
        self.token_tat = tat + need;
        self.accepted += 1;
        self.tokens += tokens;
        self.times.push(now);
        Ok(())
    }
}

/// A value of `schema`: every required property, scores at 88 of 100.
fn instance(schema: &Value) -> Value {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e.first().cloned().unwrap_or(Value::Null);
    }
    let ty = match schema.get("type") {
        Some(Value::Array(a)) => a.iter().find(|t| *t != "null").cloned().unwrap_or_default(),
        Some(t) => t.clone(),
        None => json!("string"),
    };
    match ty.as_str().unwrap_or("string") {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), instance(v));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = schema.get("items").map(instance).unwrap_or(json!("linen"));
            Value::Array((0..n).map(|_| item.clone()).collect())
        }
        "integer" => {
            let max = schema.get("maximum").and_then(Value::as_i64).unwrap_or(100);
            json!(88.min(max))
        }
        "number" => json!(0.88),
        "boolean" => json!(false),
        _ => json!("Warm, plain and sure of its craft"),
    }
}

async fn answer(
    State(p): State<Arc<Mutex<Provider>>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let prompt: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    // Each text answer is its own: the platforms refuse the same post twice.
    static ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = match body["response_format"]["json_schema"]["schema"] {
        ref s @ Value::Object(_) => instance(s).to_string(),
        _ => format!(
            "# Linen that lasts, note {n}\n\nWoven slowly by families in small mills, cut to last \
             a decade, and repaired for free when it needs it."
        ),
    };
    let (prompt_tokens, completion_tokens) = ((prompt / 4) as u64, (text.len() / 4) as u64);
    let taken = p.lock().unwrap().take(prompt_tokens + completion_tokens);
    if let Err(wait) = taken {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
            .into_response();
    }
    tokio::time::sleep(LATENCY).await;
    Json(json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    }))
    .into_response()
}

async fn serve(app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Each project's store page: its own name, so no brand voice comes from the cache.
async fn store_page(
    axum::extract::Path(n): axum::extract::Path<u32>,
) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<html><head><title>Linen Shop {n}</title></head><body><h1>Linen woven slowly, shop {n}</h1>\
         <p>Our linen is woven in small mills by families who have done it for generations.</p>\
         <p>Every shirt is cut to last a decade, and we repair what we sell, for free.</p></body></html>"
    ))
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A worker process, stopped (SIGTERM, then waited for) when dropped, so a run that
/// fails leaves none behind.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

struct Run {
    accepted: u64,
    refused: u64,
    tokens: u64,
    wall: Duration,
    finishes: Vec<f64>,
    rss_mb: Vec<f64>,
    fair_wait_ms: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A run's database, model server and projects, the projects' first jobs held back.
struct Setup {
    name: String,
    url: String,
    db: Db,
    provider: Arc<Mutex<Provider>>,
    model: SocketAddr,
    key: String,
    ids: Vec<Uuid>,
    // Kept alive for the run.
    _platforms: FakePlatforms,
}

/// Creates database `name`, a fake provider and `projects` projects for `channels`,
/// with the limiter set to `limit` (requests, per ms, tokens a minute) when given and
/// an integration for each destination when `integrations`.
async fn setup(
    cluster: &Cluster,
    name: &str,
    projects: u32,
    channels: &[Channel],
    provider: Provider,
    limit: Option<(i32, i64, Option<i32>)>,
    integrations: bool,
) -> anyhow::Result<Setup> {
    cluster.create_database(name).await?;
    let url = cluster.url(name);
    let db = Db::new(
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(cluster.connect_options(name))
            .await?,
    );
    copydesk::db::migrate(db.pool(), &copydesk::app::catalog()).await?;

    let provider = Arc::new(Mutex::new(provider));
    let model = serve(
        Router::new()
            .route("/v1/chat/completions", post(answer))
            .with_state(provider.clone()),
    )
    .await?;
    let stores = serve(Router::new().route("/store/{n}", get(store_page))).await?;
    let platforms = FakePlatforms::start().await?;
    let key = Keys::generate();
    let keys = Keys::parse(&key)?;
    if let Some((requests, per_ms, tokens)) = limit {
        sqlx::query(
            "INSERT INTO limits (key, requests, per_ms, tokens_per_minute) VALUES ($1, $2, $3, $4)",
        )
        .bind(format!("llm:{model}"))
        .bind(requests)
        .bind(per_ms)
        .bind(tokens)
        .execute(&db)
        .await?;
    }

    progress(&format!("{name}: creating {projects} projects"));
    let catalog = copydesk::app::catalog();
    let mut ids = Vec::new();
    for n in 0..projects {
        let mut tx = db.begin().await?;
        let plan = Plan {
            channels: channels.to_vec(),
            topic: Some("Why our linen lasts a decade".into()),
            instructions: None,
            schedule: None,
        };
        let started = start(
            &mut tx,
            &catalog,
            None,
            ProjectRef::New(format!("Linen Shop {n}")),
            &format!("http://{stores}/store/{n}"),
            plan,
        )
        .await?;
        // Held back until every project is ready, so the run starts at once.
        sqlx::query("UPDATE jobs SET run_at = 'infinity' WHERE id = $1")
            .bind(started.job.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if integrations {
            for platform in DESTINATIONS {
                let (creds, meta) = platforms.integration(platform);
                copydesk::publish::integrations::connect(
                    &db,
                    &keys,
                    started.project_id,
                    platform,
                    &creds,
                    &meta,
                    "bench",
                )
                .await?;
            }
        }
        ids.push(started.project_id);
    }
    Ok(Setup {
        name: name.to_owned(),
        url,
        db,
        provider,
        model,
        key,
        ids,
        _platforms: platforms,
    })
}

impl Setup {
    /// A `copydesk worker` process at its defaults.
    fn worker(&self) -> anyhow::Result<Worker> {
        Ok(Worker(
            Command::new(env!("CARGO_BIN_EXE_copydesk"))
                .args(["worker", "--no-scheduler", "--no-migrate"])
                .env("DATABASE_URL", &self.url)
                .env("COPYDESK_LLM_BASE_URL", format!("http://{}/v1", self.model))
                .env("COPYDESK_LLM_API_KEY", "sk-bench")
                .env("COPYDESK_FERNET_KEYS", &self.key)
                .env("COPYDESK__FETCH__ALLOW_LOOPBACK", "true")
                .env("COPYDESK__CATALOG__ENABLED", "false")
                .env("RUST_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?,
        ))
    }

    /// Two workers, then the held-back jobs released; returns when they were.
    async fn start(&self) -> anyhow::Result<(Vec<Worker>, Instant)> {
        let workers = vec![self.worker()?, self.worker()?];
        tokio::time::sleep(Duration::from_secs(1)).await;
        sqlx::query("UPDATE jobs SET run_at = now() WHERE run_at = 'infinity'")
            .execute(&self.db)
            .await?;
        Ok((workers, Instant::now()))
    }
}

async fn run(cluster: &Cluster, projects: u32, limiter: bool) -> anyhow::Result<Run> {
    let name = format!("bench_{}", if limiter { "on" } else { "off" });
    let limit = limiter.then_some((
        REQUESTS_PER_MINUTE as i32,
        60_000,
        Some(TOKENS_PER_MINUTE as i32),
    ));
    let provider = Provider::new(
        REQUESTS_PER_MINUTE,
        Duration::from_secs(60),
        TOKENS_PER_MINUTE,
    );
    let setup = setup(
        cluster,
        &name,
        projects,
        &Channel::ALL,
        provider,
        limit,
        true,
    )
    .await?;
    let Setup {
        ref db,
        ref provider,
        ref ids,
        ..
    } = setup;
    let (workers, started) = setup.start().await?;
    let mut finished: HashMap<Uuid, f64> = HashMap::new();
    let mut last_report = Instant::now();
    while finished.len() < ids.len() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "{name}: the pipeline did not finish in an hour"
        );
        // Approvals given by plain SQL, as another service would.
        sqlx::query("UPDATE approvals SET status = 'approved', decided_by = 'bench' WHERE status = 'pending'")
            .execute(db)
            .await?;
        let done: Vec<Uuid> = sqlx::query_scalar(
            "SELECT project_id FROM jobs WHERE kind = 'publishing' AND status = 'done'
              GROUP BY project_id HAVING count(*) = 4",
        )
        .fetch_all(db)
        .await?;
        for p in done {
            finished
                .entry(p)
                .or_insert_with(|| started.elapsed().as_secs_f64());
        }
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
            .fetch_one(db)
            .await?;
        anyhow::ensure!(failed == 0, "{name}: {failed} job(s) failed");
        if last_report.elapsed() > Duration::from_secs(10) {
            let p = provider.lock().unwrap();
            progress(&format!(
                "{name}: {:.0} s, {}/{} projects published, {} calls accepted, {} refused",
                started.elapsed().as_secs_f64(),
                finished.len(),
                ids.len(),
                p.accepted,
                p.refused
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = started.elapsed();
    let (accepted, refused, tokens) = {
        let p = provider.lock().unwrap();
        (p.accepted, p.refused, p.tokens)
    };

    // A one-job project behind a 10,000-job project.
    let fair_wait_ms = if limiter {
        progress(&format!(
            "{name}: a one-job project behind a 10,000-job project"
        ));
        sqlx::query(
            "INSERT INTO jobs (kind, input, project_id)
             SELECT 'noop', '{\"sleep_ms\": 50}', $1 FROM generate_series(1, 10000)",
        )
        .bind(ids[0])
        .execute(db)
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let small: Uuid = sqlx::query_scalar(
            "INSERT INTO jobs (kind, input, project_id) VALUES ('noop', '{}', $1) RETURNING id",
        )
        .bind(ids[1])
        .fetch_one(db)
        .await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let waited: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 FROM jobs
                  WHERE id = $1 AND started_at IS NOT NULL",
            )
            .bind(small)
            .fetch_optional(db)
            .await?;
            if let Some(w) = waited {
                break Some(w);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the one-job project's job never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        None
    };
    let rss_mb = workers.iter().map(|w| peak_rss_mb(w.0.id())).collect();
    drop(workers);
    db.close().await;
    let mut finishes: Vec<f64> = finished.into_values().collect();
    finishes.sort_by(f64::total_cmp);
    Ok(Run {
        accepted,
        refused,
        tokens,
        wall,
        finishes,
        rss_mb,
        fair_wait_ms,
    })
}

/// The tight-limit line's figures.
struct Tight {
    /// Calls the provider answered and refused.
    accepted: u64,
    refused: u64,
    /// The calls a run without any limit makes for the same jobs: one per agent of
    /// each job (a brand voice 1, a blog draft 4, an X draft 2, an evaluation 1).
    needed: u64,
    wall: Duration,
    /// Answered calls per agent, from `runs`.
    per_agent: Vec<(String, i64)>,
    /// Calls answered in each 10 s of the run.
    per_10s: Vec<u32>,
    /// Times the limiter sent a job away to wait.
    waited: i64,
}

/// `projects` projects for the blog and X against a provider that answers `rate`
/// requests in any second (429 past it), the limiter set to the same, two workers at
/// their defaults: far more draft jobs ready than the provider takes in a second. Runs
/// until every draft waits for its approval (brand voices approved by SQL).
async fn tight(
    cluster: &Cluster,
    projects: u32,
    rate: usize,
    limiter: bool,
) -> anyhow::Result<Tight> {
    let setup = setup(
        cluster,
        if limiter {
            "bench_tight"
        } else {
            "bench_tight_nolimit"
        },
        projects,
        &[Channel::Blog, Channel::X],
        Provider::new(rate, Duration::from_secs(1), 1e12),
        limiter.then_some((rate as i32, 1000, None)),
        false,
    )
    .await?;
    let (workers, started) = setup.start().await?;
    let (db, name) = (&setup.db, &setup.name);
    let target = 2 * i64::from(projects);
    let mut last_report = Instant::now();
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "{name}: the drafts did not reach their approvals in an hour"
        );
        sqlx::query(
            "UPDATE approvals SET status = 'approved', decided_by = 'bench' WHERE status = 'pending'
               AND job_id IN (SELECT id FROM jobs WHERE kind = 'brand_voice_analysis')",
        )
        .execute(db)
        .await?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'evaluation' AND status = 'needs_approval'",
        )
        .fetch_one(db)
        .await?;
        if waiting >= target {
            break;
        }
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
            .fetch_one(db)
            .await?;
        anyhow::ensure!(failed == 0, "{name}: {failed} job(s) failed");
        if last_report.elapsed() > Duration::from_secs(10) {
            let p = setup.provider.lock().unwrap();
            progress(&format!(
                "{name}: {:.0} s, {waiting}/{target} drafts waiting for approval, {} calls accepted, {} refused",
                started.elapsed().as_secs_f64(),
                p.accepted,
                p.refused
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed();
    let needed: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE WHEN kind <> 'draft_generation' THEN 1
                                  WHEN input->>'channel' = 'blog' THEN 4 ELSE 2 END), 0)::bigint
           FROM jobs WHERE kind IN ('brand_voice_analysis', 'draft_generation', 'evaluation')
            AND status IN ('done', 'needs_approval')",
    )
    .fetch_one(db)
    .await?;
    let waited: i64 = sqlx::query_scalar("SELECT coalesce(sum(waited), 0)::bigint FROM limits")
        .fetch_one(db)
        .await?;
    let per_agent: Vec<(String, i64)> = sqlx::query_as(
        "SELECT agent, count(*) FROM runs WHERE error IS NULL GROUP BY agent ORDER BY agent",
    )
    .fetch_all(db)
    .await?;
    drop(workers);
    let (accepted, refused, per_10s) = {
        let p = setup.provider.lock().unwrap();
        // Calls answered in each 10 s from the first: how evenly the limit was used.
        let mut per_10s: Vec<u32> = Vec::new();
        if let Some(first) = p.times.first() {
            for t in &p.times {
                let i = (t.duration_since(*first).as_secs() / 10) as usize;
                if per_10s.len() <= i {
                    per_10s.resize(i + 1, 0);
                }
                per_10s[i] += 1;
            }
        }
        (p.accepted, p.refused, per_10s)
    };
    setup.db.close().await;
    Ok(Tight {
        accepted,
        refused,
        needed: needed as u64,
        wall,
        per_agent,
        per_10s,
        waited,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let projects: u32 = args
        .iter()
        .position(|a| a == "--projects")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let off_run = !args.iter().any(|a| a == "--no-off-run");
    let arg = |name: &str, default: u32| -> u32 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let tight_only = args.iter().any(|a| a == "--tight");
    let (tight_projects, tight_rate) = (arg("--tight-projects", 40), arg("--tight-rate", 3));
    let tight_limiter = !args.iter().any(|a| a == "--tight-no-limiter");
    let dir = tempfile::Builder::new().prefix("cdp").tempdir_in("/tmp")?;
    progress(&format!("starting Postgres under {}", dir.path().display()));
    let home = dir.path().to_owned();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::ensure(&home, Options::default())).await??;

    let mut doc = serde_json::Map::new();
    let mut runs = vec![("limiter on", true)];
    if off_run {
        runs.push(("limiter off", false));
    }
    if tight_only {
        runs.clear();
    }
    println!();
    println!(
        "{:<12} {:>9} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>13} {:>10}",
        "run",
        "accepted",
        "429s",
        "tokens",
        "req use",
        "tok use",
        "wall s",
        "ideal s",
        "p50 s",
        "p95 s",
        "peak RSS MB",
        "fair wait"
    );
    for (label, limiter) in runs {
        let r = run(&cluster, projects, limiter).await?;
        let secs = r.wall.as_secs_f64();
        // What the limits allow in the run's time: 600 requests in any 60 s (so 600 at
        // once, then 600 more each time a minute has passed) and a bucket of a minute's
        // tokens that refills continuously.
        let allowed_requests = REQUESTS_PER_MINUTE as f64 * (secs / 60.0).ceil();
        let allowed_tokens = TOKENS_PER_MINUTE * (1.0 + secs / 60.0);
        let req_use = r.accepted as f64 / allowed_requests;
        let tok_use = r.tokens as f64 / allowed_tokens;
        // The shortest run the limits allow for these calls and tokens.
        let ideal = (60.0 * ((r.accepted.max(1) - 1) / REQUESTS_PER_MINUTE as u64) as f64)
            .max(60.0 * (r.tokens as f64 - TOKENS_PER_MINUTE).max(0.0) / TOKENS_PER_MINUTE)
            .max(LATENCY.as_secs_f64());
        // The simpler reading: calls ÷ the per-minute rate.
        let by_rate = 60.0 * r.accepted as f64 / REQUESTS_PER_MINUTE as f64;
        let (p50, p95) = (percentile(&r.finishes, 0.5), percentile(&r.finishes, 0.95));
        println!(
            "{label:<12} {:>9} {:>6} {:>10} {:>7.1}% {:>7.1}% {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>13} {:>10}",
            r.accepted,
            r.refused,
            r.tokens,
            req_use * 100.0,
            tok_use * 100.0,
            secs,
            ideal,
            p50,
            p95,
            r.rss_mb
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            r.fair_wait_ms.map_or("-".into(), |w| format!("{w:.0} ms")),
        );
        doc.insert(
            label.into(),
            json!({
                "projects": projects, "accepted": r.accepted, "refused_429": r.refused, "tokens": r.tokens,
                "request_utilisation": req_use, "token_utilisation": tok_use,
                "wall_s": secs, "ideal_s": ideal, "wall_over_ideal": secs / ideal,
                "calls_over_rate_s": by_rate,
                "finish_p50_s": p50, "finish_p95_s": p95, "peak_rss_mb": r.rss_mb,
                "one_job_project_wait_ms": r.fair_wait_ms,
            }),
        );
    }
    let t = tight(&cluster, tight_projects, tight_rate as usize, tight_limiter).await?;
    let repeated = t.accepted as f64 - t.needed as f64;
    let by_rate = t.needed as f64 / f64::from(tight_rate);
    let wall = t.wall.as_secs_f64();
    println!();
    let per_agent = t
        .per_agent
        .iter()
        .map(|(a, n)| format!("{a} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "tight limit ({}): {tight_projects} projects (blog, X) at {tight_rate} requests/s: {} calls answered \
         (an unlimited run makes {}), repeated {:.3}, {} refused (429), wall {wall:.1} s, \
         calls / rate {by_rate:.1} s, wall / (calls / rate) {:.3}; answered per agent: {per_agent}",
        if tight_limiter {
            "limiter on"
        } else {
            "no limiter"
        },
        t.accepted,
        t.needed,
        repeated / t.accepted.max(1) as f64,
        t.refused,
        wall / by_rate
    );
    println!(
        "answered in each 10 s: {:?}; jobs sent away to wait: {}",
        t.per_10s, t.waited
    );
    doc.insert(
        "tight limit".into(),
        json!({
            "projects": tight_projects, "requests_per_second": tight_rate,
            "accepted": t.accepted, "refused_429": t.refused, "unlimited_run_calls": t.needed,
            "repeated_over_calls": repeated / t.accepted.max(1) as f64,
            "wall_s": wall, "calls_over_rate_s": by_rate, "wall_over_calls_over_rate": wall / by_rate,
            "limiter": tight_limiter, "answered_per_agent": t.per_agent.iter().cloned().collect::<HashMap<_, _>>(),
            "answered_per_10s": t.per_10s, "limiter_waits": t.waited,
        }),
    );
    println!("{}", serde_json::to_string_pretty(&Value::Object(doc))?);
    Ok(())
}
