//! Test support: one embedded Postgres cluster per test binary (started on first use,
//! stopped at exit), and a fresh database per test cloned from a migrated template.
#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use copydesk::{
    app,
    config::Settings,
    db::Db,
    db::embedded::Cluster,
    jobs::{App, Services},
    queue::{Catalog, Registry, Runner},
};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const TEMPLATE: &str = "copydesk_template";

/// The test binary's cluster, its template migrated as `copydesk migrate` would.
pub fn cluster() -> &'static Cluster {
    copydesk::db::embedded::testing::cluster(TEMPLATE, |options| {
        Box::pin(async move {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            copydesk::db::migrate(&pool, &copydesk::app::catalog())
                .await
                .unwrap();
            pool.close().await;
        })
    })
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub pool: Db,
    pub name: String,
    pub url: String,
}

pub async fn test_db() -> TestDb {
    let c = cluster();
    let name = format!("t_{}", Uuid::new_v4().simple());
    c.create_database_from(&name, Some(TEMPLATE)).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(c.connect_options(&name))
        .await
        .unwrap();
    TestDb {
        pool: Db::new(pool),
        url: c.url(&name),
        name,
    }
}

/// Settings for fast tests: short leases and polls, tiny retry delays.
pub fn fast_settings() -> Settings {
    let mut s = Settings::defaults();
    s.worker.lease_secs = 5;
    s.worker.heartbeat_secs = 1;
    s.worker.poll_interval_ms = 200;
    s.worker.shutdown_grace_secs = 5;
    s.retry.base_delay_ms = 10;
    s.retry.max_delay_secs = 1;
    s.llm.provider = "offline".into();
    s.fetch.allow_loopback = true;
    // The daily cache refresh would add jobs to whichever test runs at its minute.
    s.catalog.enabled = false;
    // A throttle that names no reset pauses its key this long.
    s.limits.throttle_pause_secs = 1;
    s
}

/// The services a worker process builds from `settings` (and the environment).
pub fn services(settings: Settings) -> Services {
    app::services(Arc::new(settings)).unwrap()
}

/// A runner of `registry`'s kinds over the test's database.
pub fn runner(db: &TestDb, settings: Settings, registry: Registry<App>) -> Runner<App> {
    app::runner(db.pool.clone(), registry, services(settings))
}

/// The kinds copydesk ships (what `enqueue` checks against).
pub fn catalog() -> Catalog {
    app::catalog()
}

/// Makes the kinds of `registry` (a test's own among them) ones a job may name, as a
/// worker starting with it would.
pub async fn register_kinds(pool: &Db, registry: &Registry<App>) {
    copydesk::queue::schema::register_kinds(pool, &registry.catalog())
        .await
        .unwrap();
}

/// A project (Linen & Loom) with a warm brand voice: (project, brand voice artifact).
pub async fn project_with_voice(pool: &Db) -> (Uuid, Uuid) {
    let project: Uuid =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('Linen & Loom') RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    let voice: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, kind, content, data)
         VALUES ($1, 'brand_voice', 'warm', '{\"analysis\": {\"tone\": [\"warm\"]}}') RETURNING id",
    )
    .bind(project)
    .fetch_one(pool)
    .await
    .unwrap();
    (project, voice)
}

/// Serves `app` on a loopback port of its own for the rest of the test.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn status_of(pool: &Db, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn count(pool: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A child process that is killed when dropped, so a failing test leaves no orphan.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs the real `copydesk` binary against `db` to the end: (success, stdout, stderr).
pub fn copydesk(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    copydesk_at(&db.url, &[], args)
}

/// Runs the real `copydesk` binary against the database at `url`, with extra
/// environment, to the end: (success, stdout, stderr).
pub fn copydesk_at(url: &str, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Starts `copydesk worker` against `db` with extra environment.
pub fn spawn_worker(db: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_copydesk"));
    cmd.arg("worker")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn,copydesk=info")
        .env("COPYDESK__WORKER__LEASE_SECS", "5")
        .env("COPYDESK__WORKER__HEARTBEAT_SECS", "1")
        .env("COPYDESK__WORKER__POLL_INTERVAL_MS", "200")
        .env("COPYDESK__RETRY__BASE_DELAY_MS", "10")
        .env("COPYDESK__CATALOG__ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("copydesk binary starts"))
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A job's `(attempts, last_error)`.
pub async fn attempts_and_error(pool: &Db, id: Uuid) -> (i32, Option<String>) {
    sqlx::query_as("SELECT attempts, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until exactly `n` jobs are running.
pub async fn wait_running(pool: &Db, n: i64, timeout: Duration) {
    wait_for(timeout, &format!("{n} jobs running"), || async {
        count(pool, "SELECT count(*) FROM jobs WHERE status = 'running'").await == n
    })
    .await;
}

/// The model calls a fake model server received: its POSTs, not the questions copydesk
/// asks it about itself (`/models`, `/props`, …) to learn its dialect.
#[allow(dead_code)]
pub async fn model_calls(server: &wiremock::MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}

/// The Python environment `scripts/python-env.sh` makes (what `.ci/run` does):
/// Schemathesis, pytest and the Python client. `COPYDESK_PYTHON_ENV` names another.
pub fn python_env() -> std::path::PathBuf {
    let env = std::env::var_os("COPYDESK_PYTHON_ENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-env")
        });
    assert!(
        env.join("bin/st").exists() && env.join("bin/pytest").exists(),
        "no Python test environment in {}: run scripts/python-env.sh (what .ci/run does) first",
        env.display()
    );
    env
}

/// Starts `copydesk serve` on a free port against the database at `url`: the process
/// (killed when dropped, so a failing assertion leaves no server behind), its stdout
/// after the line naming the address, and the base URL.
pub fn serve_process(
    url: &str,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Proc, std::io::BufReader<std::process::ChildStdout>, String) {
    let mut child = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
            .args(["serve", "--http", "127.0.0.1:0"])
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "debug,sqlx=warn,hyper=info,h2=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let base = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/api/v1"))
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, stdout, base)
}
