//! copydesk behind PgBouncer in transaction mode (Debian's `pgbouncer`, which `.ci/run`
//! installs), with `[database] pooler = "transaction"`: worker processes, the CLI's
//! enqueue and approvals, and the content pipeline to its posts. The bouncer keeps four
//! server connections for many clients and hands them out in turn, so a statement that
//! depended on its session (a named statement, two round trips outside a transaction)
//! would fail here.

mod common;

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use copydesk::{
    db::embedded::{PORT, SUPERUSER},
    demo::platforms::FakePlatforms,
    domain::Platform,
    keys::Keys,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

/// A PgBouncer in front of the test cluster, stopped when dropped.
struct Bouncer {
    _proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Bouncer {
    /// The URL of `db` through the bouncer.
    fn url(&self, db: &TestDb) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port, db.name
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

fn pgbouncer_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file());
    found.expect("these tests need PgBouncer: apt-get install pgbouncer (.ci/run does)")
}

/// Starts PgBouncer in transaction mode on a free loopback port. Run as root, it runs as
/// the `postgres` user (it refuses root), who can reach the cluster's socket.
fn bouncer() -> Bouncer {
    let bin = pgbouncer_bin();
    let dir = tempfile::Builder::new()
        .prefix("cdpgb")
        .tempdir_in("/tmp")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = cluster().url("postgres");
    let socket = url
        .split("host=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("pgbouncer.ini"),
        format!(
            "[databases]\n* = host={socket} port={PORT} user={SUPERUSER}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {d}/users.txt\npool_mode = transaction\n\
             default_pool_size = 4\nmax_client_conn = 500\nserver_round_robin = 1\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {d}/pgbouncer.log\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("users.txt"),
        format!("\"{SUPERUSER}\" \"\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    // It logs to its file (and to stderr, which the test does not need).
    cmd.arg(dir.path().join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user (the Postgres package makes one)");
        for p in [
            dir.path().to_owned(),
            dir.path().join("pgbouncer.ini"),
            dir.path().join("users.txt"),
        ] {
            std::os::unix::fs::chown(&p, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
        }
        cmd.uid(pg.uid.as_raw()).gid(pg.gid.as_raw());
    }
    let proc = Proc(cmd.spawn().expect("pgbouncer starts"));
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "PgBouncer did not listen on {port}: {}",
            std::fs::read_to_string(dir.path().join("pgbouncer.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Bouncer {
        _proc: proc,
        port,
        dir,
    }
}

/// `copydesk` run to its end through the bouncer.
fn through(url: &str, args: &[&str]) -> (bool, String, String) {
    copydesk_at(url, &[("COPYDESK__DATABASE__POOLER", "transaction")], args)
}

/// Every job of `db` ran once and ended well: a statement that failed behind the
/// bouncer would have cost an attempt or left an error.
async fn assert_all_done_in_one_attempt(db: &TestDb) {
    let bad: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT kind, status, attempts, last_error FROM jobs
          WHERE status NOT IN ('done') OR attempts <> 1 OR last_error IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        bad.is_empty(),
        "jobs that did not end in one clean attempt: {bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_from_sql_and_the_cli_run_through_pgbouncer_in_transaction_mode() {
    let db = test_db().await;
    let pgb = bouncer();
    let url = pgb.url(&db);
    sqlx::query("INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, 990)")
        .execute(&db.pool)
        .await
        .unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("COPYDESK__DATABASE__POOLER", "transaction"),
    ];
    let mut workers: Vec<Proc> = (0..2)
        .map(|_| spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &env))
        .collect();
    // Ten more through the CLI, through the bouncer.
    for i in 0..10 {
        let (ok, out, err) = through(
            &url,
            &[
                "enqueue",
                "noop",
                "--input",
                "{}",
                "--idempotency-key",
                &format!("cli-{i}"),
                "--json",
            ],
        );
        assert!(ok, "enqueue through PgBouncer: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["created"], true, "{out}");
    }
    wait_for(Duration::from_secs(60), "1,000 jobs done", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 1000
    })
    .await;
    assert_all_done_in_one_attempt(&db).await;
    let (ok, out, err) = through(&url, &["jobs", "list", "--status", "done", "--json"]);
    assert!(ok, "jobs list through PgBouncer: {err}");
    assert!(out.contains("\"noop\""), "{out}");
    for w in &workers {
        signal(w, Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(20)).success());
    }
    let log = pgb.log();
    assert!(!log.contains("ERROR"), "PgBouncer logged errors:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_to_its_posts_through_pgbouncer_in_transaction_mode() {
    let db = test_db().await;
    let pgb = bouncer();
    let url = pgb.url(&db);
    let site = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html><head><title>Linen &amp; Loom</title></head><body><h1>Linen woven slowly</h1>\
             <p>Our linen is woven in small mills by families who have done it for generations.</p>\
             <p>Every shirt is cut to last a decade, and we repair what we sell, for free.</p></body></html>",
            "text/html",
        ))
        .mount(&site)
        .await;
    let platforms = FakePlatforms::start().await.unwrap();
    let key = Keys::generate();
    let keys = Arc::new(Keys::parse(&key).unwrap());

    // Started through the CLI, through the bouncer.
    let (ok, out, err) = through(
        &url,
        &[
            "pipeline",
            "start",
            "--new",
            "Linen & Loom",
            "--store-url",
            &site.uri(),
            "--channels",
            "linkedin,x",
            "--topic",
            "Why linen lasts",
            "--json",
        ],
    );
    assert!(ok, "pipeline start through PgBouncer: {err}");
    let started: Value = serde_json::from_str(&out).unwrap();
    let project: Uuid = started["project_id"].as_str().unwrap().parse().unwrap();
    for platform in [Platform::Linkedin, Platform::X] {
        let (creds, meta) = platforms.integration(platform);
        copydesk::publish::integrations::connect(
            &db.pool, &keys, project, platform, &creds, &meta, "test",
        )
        .await
        .unwrap();
    }
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("COPYDESK__DATABASE__POOLER", "transaction"),
        ("COPYDESK__FETCH__ALLOW_LOOPBACK", "true"),
        ("COPYDESK_FERNET_KEYS", key.as_str()),
    ];
    let mut workers: Vec<Proc> = (0..2)
        .map(|_| spawn_worker(&db, &["--no-scheduler"], &env))
        .collect();

    // Approve what waits through the CLI, as an editor would, until both posts are out.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, out, err) = through(
            &url,
            &["approvals", "list", "--status", "pending", "--json"],
        );
        assert!(ok, "approvals list through PgBouncer: {err}");
        let pending: Vec<Value> = serde_json::from_str(&out).unwrap();
        for a in &pending {
            let id = a["id"].as_str().unwrap();
            let (ok, _, err) = through(&url, &["approvals", "approve", id, "--by", "editor"]);
            assert!(ok, "approve through PgBouncer: {err}");
        }
        let published = count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE kind = 'publishing' AND status = 'done'",
        )
        .await;
        if published == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not publish through PgBouncer in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_all_done_in_one_attempt(&db).await;
    let mut posted: Vec<&str> = platforms
        .posts()
        .iter()
        .map(|p| p.platform.as_str())
        .collect::<Vec<_>>();
    posted.sort();
    assert_eq!(posted, ["linkedin", "x"]);
    for w in &workers {
        signal(w, Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(20)).success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_pooler_migrations_need_a_direct_url_and_say_so() {
    let db = test_db().await;
    let pgb = bouncer();
    let url = pgb.url(&db);
    // Nothing pending: nothing needs a session.
    let (ok, out, err) = through(&url, &["migrate"]);
    assert!(ok, "{err}");
    assert!(out.contains("applied 0 migration"), "{out}");
    // Something to do and no direct URL: refused, saying what to set.
    let (ok, _, err) = through(&url, &["migrate", "--revert"]);
    assert!(!ok);
    assert!(
        err.contains("migration reverts need a session") && err.contains("[database] listen_url"),
        "{err}"
    );
    // With the direct URL, the revert and the migration run there.
    let with_direct = |args: &[&str]| {
        let env = [
            ("COPYDESK__DATABASE__POOLER", "transaction"),
            ("COPYDESK__DATABASE__LISTEN_URL", db.url.as_str()),
        ];
        let (ok, out, err) = copydesk_at(&url, &env, args);
        assert!(ok, "{err}");
        out
    };
    assert!(with_direct(&["migrate", "--revert"]).contains("reverted"));
    assert!(with_direct(&["migrate"]).contains("applied 1 migration"));
}
