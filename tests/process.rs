//! What only a process shows: several worker processes racing over one queue,
//! SIGKILL mid-job, SIGTERM with jobs in flight.

mod common;

use std::time::Duration;

use common::*;
use copydesk::queue::{self, NewJob};
use nix::sys::signal::Signal;
use serde_json::json;
use uuid::Uuid;

async fn enqueue(db: &TestDb, jobs: Vec<NewJob>) -> Vec<Uuid> {
    let mut conn = db.pool.acquire().await.unwrap();
    queue::enqueue_many(&mut conn, &catalog(), &jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_do_ten_thousand_jobs_each_claimed_once() {
    let db = test_db().await;
    // Record every claim: a trigger appends (job, attempt, worker) each time a row
    // goes to running, so a second claim of any job would show; and every job a worker
    // gave back unstarted (its claims had grown and the jobs looked slow on a busy
    // machine), which is then claimed again legitimately.
    sqlx::raw_sql(
        "CREATE TABLE claims (job_id uuid, attempt int, worker text);
         CREATE TABLE given_back (job_id uuid, worker text);
         CREATE FUNCTION log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status = 'running' THEN
                 INSERT INTO claims VALUES (NEW.id, NEW.attempts, NEW.locked_by);
             ELSE
                 INSERT INTO given_back VALUES (OLD.id, OLD.locked_by);
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER log_claim AFTER UPDATE OF status ON jobs FOR EACH ROW
             WHEN (NEW.status = 'running' OR (OLD.status = 'running' AND NEW.status = 'queued'))
             EXECUTE FUNCTION log_claim();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    enqueue(&db, vec![NewJob::new("noop", json!({})); 10_000]).await;
    let mut workers: Vec<_> = (0..4)
        .map(|_| spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &[]))
        .collect();
    // Every worker is up (it LISTENs once its signal handlers are in place): on a busy
    // machine the other three can finish all the jobs before the fourth has started,
    // and a SIGTERM before its handlers exist would kill it.
    wait_for(Duration::from_secs(60), "four workers listening", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .await
            == 4
    })
    .await;
    wait_for(Duration::from_secs(240), "10,000 jobs done", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 10_000
    })
    .await;
    for w in &workers {
        signal(w, Signal::SIGTERM);
    }
    for w in &mut workers {
        assert!(wait_exit(w, Duration::from_secs(30)).success());
    }
    let given_back = count(&db.pool, "SELECT count(*) FROM given_back").await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM claims").await,
        10_000 + given_back,
        "one claim per job, and one more per job given back unstarted"
    );
    // A job is given back only by the worker that held it.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM given_back g
             WHERE NOT EXISTS (SELECT 1 FROM claims c
                               WHERE c.job_id = g.job_id AND c.worker = g.worker)"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(DISTINCT job_id) FROM claims").await,
        10_000
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM jobs WHERE attempts <> 1").await,
        0
    );
    let processes = count(
        &db.pool,
        "SELECT count(DISTINCT split_part(worker, ':', 2)) FROM claims",
    )
    .await;
    assert!(
        processes >= 2,
        "the work was shared between processes (got {processes})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_is_rescued_after_its_lease_and_completes() {
    let db = test_db().await;
    let lease = [("COPYDESK__WORKER__LEASE_SECS", "2")];
    let id = enqueue(&db, vec![NewJob::new("noop", json!({"sleep_ms": 4000}))]).await[0];
    let mut first = spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &lease);
    wait_for(Duration::from_secs(20), "the job to start", || async {
        status_of(&db.pool, id).await == "running"
    })
    .await;
    signal(&first, Signal::SIGKILL);
    wait_exit(&mut first, Duration::from_secs(10));
    assert_eq!(
        status_of(&db.pool, id).await,
        "running",
        "nobody released it"
    );

    let mut second = spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &lease);
    wait_for(
        Duration::from_secs(30),
        "the rescued job to complete",
        || async { status_of(&db.pool, id).await == "done" },
    )
    .await;
    let (attempts, err) = attempts_and_error(&db.pool, id).await;
    let err = err.unwrap_or_default();
    assert_eq!(attempts, 2);
    assert!(err.starts_with("lease expired"), "{err}");
    signal(&second, Signal::SIGTERM);
    assert!(wait_exit(&mut second, Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_jobs_in_flight_finish_and_exits_zero() {
    let db = test_db().await;
    let ids = enqueue(&db, vec![NewJob::new("noop", json!({"sleep_ms": 1500})); 3]).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let http = format!("127.0.0.1:{port}");
    let mut w = spawn_worker(
        &db,
        &["--kinds", "noop", "--no-scheduler", "--http", &http],
        &[],
    );
    // In flight means started, not only claimed: a job claimed a moment before the
    // signal and not yet begun is given back instead (without spending an attempt).
    // Each start records its wait, so /metrics counts the jobs begun.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    wait_for(Duration::from_secs(20), "three jobs begun", || async {
        let Ok(res) = client.get(format!("http://{http}/metrics")).send().await else {
            return false;
        };
        let text = res.text().await.unwrap_or_default();
        let begun: f64 = text
            .lines()
            .filter(|l| l.starts_with("copydesk_job_wait_seconds_count"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum();
        begun >= 3.0
    })
    .await;
    signal(&w, Signal::SIGTERM);
    let status = wait_exit(&mut w, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    for id in ids {
        assert_eq!(status_of(&db.pool, id).await, "done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_returns_unfinished_jobs_to_the_queue() {
    let db = test_db().await;
    let ids = enqueue(
        &db,
        vec![NewJob::new("noop", json!({"sleep_ms": 60000})); 2],
    )
    .await;
    let mut w = spawn_worker(
        &db,
        &["--kinds", "noop", "--no-scheduler"],
        &[("COPYDESK__WORKER__SHUTDOWN_GRACE_SECS", "1")],
    );
    wait_running(&db.pool, 2, Duration::from_secs(20)).await;
    signal(&w, Signal::SIGTERM);
    let status = wait_exit(&mut w, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    for id in ids {
        let (status, attempts, locked): (String, i32, Option<String>) =
            sqlx::query_as("SELECT status, attempts, locked_by FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), attempts, locked), ("queued", 0, None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enqueues_lists_shows_and_refuses_bad_input_clearly() {
    let db = test_db().await;
    let cli = |args: &[&str]| copydesk(&db, args);
    let (ok, id, _) = cli(&[
        "enqueue",
        "noop",
        "--input",
        r#"{"sleep_ms": 5}"#,
        "--idempotency-key",
        "k1",
    ]);
    assert!(ok);
    let id = id.trim().to_owned();
    let (ok, again, err) = cli(&["enqueue", "noop", "--idempotency-key", "k1"]);
    assert!(
        ok && again.trim() == id && err.contains("exists already"),
        "{again} {err}"
    );

    let (ok, _, err) = cli(&["enqueue", "noop", "--input", r#"{"sleep_ms": "x"}"#]);
    assert!(!ok && err.contains("/sleep_ms"), "{err}");
    let (ok, _, err) = cli(&["enqueue", "nope"]);
    assert!(!ok && err.contains("unknown job kind \"nope\""), "{err}");
    let (ok, _, err) = cli(&["enqueue", "noop", "--input", "{oops"]);
    assert!(!ok && err.contains("--input is not valid JSON"), "{err}");

    let (ok, list, _) = cli(&["jobs", "list", "--json"]);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    let (ok, show, _) = cli(&["jobs", "show", &id]);
    assert!(
        ok && show.contains("status: queued") && show.contains("idempotency key: k1"),
        "{show}"
    );
    let (ok, _, err) = cli(&["jobs", "show", "not-a-uuid"]);
    assert!(!ok && err.contains("is not an id (a UUID)"), "{err}");
    let (ok, stats, _) = cli(&["queue", "stats", "--json"]);
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["rows"][0]["jobs"], 1);
    let (ok, out, _) = cli(&["jobs", "cancel", &id]);
    assert!(ok && out.contains("cancelled"), "{out}");
    let (ok, out, _) = cli(&["jobs", "retry", &id]);
    assert!(ok && out.contains("queued again"), "{out}");
    let (ok, out, _) = cli(&["cleanup", "--dry-run", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["dry_run"],
        true
    );
}

#[test]
fn the_embedded_cluster_is_reused_and_stopped_by_its_last_user() {
    let home = tempfile::Builder::new()
        .prefix("cdh")
        .tempdir_in("/tmp")
        .unwrap();
    let pid_file = home.path().join("pgdata/postmaster.pid");
    let copydesk = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"));
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env("COPYDESK_HOME", home.path())
            .env("RUST_LOG", "warn");
        cmd
    };
    let out = copydesk(&["migrate"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        home.path().join("pgdata/PG_VERSION").exists(),
        "initialised"
    );
    assert!(!pid_file.exists(), "stopped when the command ended");

    // A worker keeps it running; a second command reuses it and leaves it running.
    let mut worker = Proc(
        copydesk(&["worker", "--no-scheduler"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !pid_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not start the cluster"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = copydesk(&["queue", "stats", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pid_file.exists(), "still running for the worker");
    signal(&worker, Signal::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).success());
    assert!(!pid_file.exists(), "the last user stopped it");
}

/// `copydesk demo` with no configuration, run from a folder only its owner can enter
/// (root's home is 0700, and so is `mktemp -d`): as root, the server runs as the
/// `postgres` user, which cannot reach `./.copydesk` there, so the cluster's files go
/// where it can, and the demo says where.
#[test]
fn the_demo_runs_from_a_folder_the_server_user_cannot_enter() {
    use std::os::unix::fs::PermissionsExt;
    let outer = tempfile::Builder::new()
        .prefix("cdd")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in("/tmp")
        .unwrap();
    let cwd = outer.path().join("project");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::set_permissions(&cwd, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .arg("demo")
        .current_dir(&cwd)
        .env_remove("DATABASE_URL")
        .env_remove("COPYDESK_HOME")
        .env_remove("COPYDESK_CONFIG")
        .env_remove("COPYDESK_LLM_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .env_remove("COPYDESK_LLM_BASE_URL")
        .env_remove("COPYDESK_FERNET_KEYS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let data = stdout
        .lines()
        .find_map(|l| l.strip_prefix("postgres data: "))
        .map(std::path::PathBuf::from);
    // Whatever happens, leave no cluster behind.
    struct Cleanup(Option<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(dir) = self.0.as_ref().and_then(|d| d.parent()) {
                if !dir.starts_with("/tmp") {
                    let _ = std::fs::remove_dir_all(dir);
                    // The `copydesk` folder above it, when no other cluster lives there.
                    let _ = dir.parent().map(std::fs::remove_dir);
                }
            }
        }
    }
    let _cleanup = Cleanup(data.clone());
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for channel in ["blog", "facebook", "linkedin", "x"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(channel) && l.contains("published")),
            "{channel} published: {stdout}"
        );
    }
    let data = data.expect("the demo says where the data lives");
    assert!(data.join("PG_VERSION").exists(), "{}", data.display());
    assert!(
        !data.join("postmaster.pid").exists(),
        "the demo stopped its cluster"
    );
    if nix::unistd::geteuid().is_root() {
        assert!(
            !data.starts_with(&cwd),
            "the postgres user cannot reach {}, so the data is elsewhere: {}",
            cwd.display(),
            data.display()
        );
        assert!(
            stdout.contains("postgres note: the postgres user cannot reach"),
            "{stdout}"
        );
    } else {
        assert!(data.starts_with(&cwd), "{}", data.display());
    }
}

#[test]
fn missing_postgres_binaries_say_what_to_install() {
    let home = tempfile::Builder::new()
        .prefix("cdh")
        .tempdir_in("/tmp")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(["queue", "stats"])
        .env_remove("DATABASE_URL")
        .env("COPYDESK_HOME", home.path())
        .env("COPYDESK_PG_BIN", home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apt-get install postgresql") && err.contains("DATABASE_URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_url_gives_listen_its_own_connection_and_a_bad_one_is_named() {
    let db = test_db().await;
    // A minute between polls: only a NOTIFY can start the job below in time.
    let env = [
        ("COPYDESK__DATABASE__LISTEN_URL", db.url.as_str()),
        ("COPYDESK__WORKER__POLL_INTERVAL_MS", "60000"),
    ];
    let mut worker = spawn_worker(&db, &["--kinds", "noop", "--no-scheduler"], &env);
    wait_for(
        Duration::from_secs(30),
        "LISTEN on its own connection",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'
               AND application_name = 'copydesk-listen'",
            )
            .await
                == 1
        },
    )
    .await;
    // Give the first claim (made at start) time to find nothing, then insert by SQL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id: Uuid =
        sqlx::query_scalar("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the job woken by NOTIFY",
        || async { status_of(&db.pool, id).await == "done" },
    )
    .await;
    signal(&worker, Signal::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(20)).success());

    // An unreadable URL stops the worker at start, naming the setting and not the
    // password in it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(["worker", "--kinds", "noop", "--no-scheduler"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .env(
            "COPYDESK__DATABASE__LISTEN_URL",
            "postgres://copydesk:s3cret-pw@db.internal:notaport/copydesk",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[database] listen_url is not a Postgres URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_modes_and_worker_processes_are_listed_as_tables_and_json() {
    let db = test_db().await;
    for insert in [
        "INSERT INTO llm_modes (base_url, model, mode, dialect) VALUES
           ('http://127.0.0.1:8089/v1', 'smollm2', 'native', 'llama_cpp_python'),
           ('https://openrouter.ai/api/v1', 'old/model', 'json_object', NULL)",
        "INSERT INTO copydesk_workers (name, kinds, version, alive_until) VALUES
           ('host:1:aaaa', '{noop,cleanup}', '0.1.0', now() + interval '30 seconds'),
           ('host:2:bbbb', '{noop}', '0.0.9', now() - interval '1 minute')",
    ] {
        sqlx::query(insert).execute(&db.pool).await.unwrap();
    }
    let (ok, out, err) = copydesk(&db, &["models", "list", "--json"]);
    assert!(ok, "{err}");
    let modes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(modes[0]["model"], "smollm2");
    assert_eq!(
        (&modes[0]["mode"], &modes[0]["dialect"]),
        (&json!("native"), &json!("llama_cpp_python"))
    );
    assert_eq!(
        modes[1]["dialect"],
        serde_json::Value::Null,
        "learned before dialects"
    );
    let (ok, table, _) = copydesk(&db, &["models", "list"]);
    assert!(
        ok && table.contains("llama_cpp_python") && table.contains("json_object"),
        "{table}"
    );

    let (ok, out, err) = copydesk(&db, &["queue", "workers", "--json"]);
    assert!(ok, "{err}");
    let workers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seen: Vec<(&str, bool)> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["alive"].as_bool().unwrap()))
        .collect();
    assert_eq!(seen, vec![("host:1:aaaa", true), ("host:2:bbbb", false)]);
    let (ok, table, _) = copydesk(&db, &["queue", "workers"]);
    assert!(ok && table.contains("noop,cleanup"), "{table}");

    // The kinds, each with the contract versions the database knows and the live
    // processes claiming it (host:1 claims noop and cleanup; host:2 is dead).
    let (ok, out, err) = copydesk(&db, &["queue", "kinds", "--json"]);
    assert!(ok, "{err}");
    let kinds: serde_json::Value = serde_json::from_str(&out).unwrap();
    let noop = kinds
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "noop")
        .unwrap();
    assert_eq!(
        (&noop["versions"], &noop["workers"], &noop["alias_of"]),
        (
            &serde_json::json!([1]),
            &serde_json::json!(1),
            &serde_json::Value::Null
        )
    );
    let (ok, table, _) = copydesk(&db, &["queue", "kinds"]);
    assert!(
        ok && table.contains("VERSIONS") && table.contains("brand_voice_analysis"),
        "{table}"
    );
}
