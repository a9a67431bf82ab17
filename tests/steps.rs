//! Steps: a job's finished pieces of work are paid for once. Draft jobs (a blog draft
//! is four model calls in a row: writer, editor, SEO, senior editor; an X post two) run
//! against an in-process OpenAI-compatible server that counts the requests of each
//! agent (every agent is given a model named after itself), and can refuse past a rate
//! with 429 and `Retry-After`, answer 503, or hold a request while its process is
//! killed. Whatever stops a job between its calls — a wait for a rate limit, a failed
//! call, a crash — the calls it had finished are not made again: after a wait the job
//! resumes at the call that waited, and the server sees exactly the calls an unlimited
//! run makes.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use common::*;
use copydesk::queue::{self, JobStatus, RequestHash, Steps};
use copydesk::{app, queue::runner::Written};
use serde_json::{Value, json};
use uuid::Uuid;

/// The fake model server's record and behaviour.
#[derive(Default)]
struct Fake {
    /// Every request that arrived, by model (= agent), refused ones too.
    received: Mutex<BTreeMap<String, usize>>,
    /// Requests answered 200, by model.
    answered: Mutex<BTreeMap<String, usize>>,
    /// Arrival times of the requests answered, for the rate the server allows.
    window: Mutex<Vec<Instant>>,
    /// Answer at most this many requests in any second, 429 past it (0: no limit).
    per_second: AtomicUsize,
    /// Answer the next this many requests of `senior-editor` with 503.
    senior_unavailable: AtomicUsize,
    /// Hold the next this many requests of `seo-specialist` for a minute.
    seo_hang: AtomicUsize,
}

impl Fake {
    fn received(&self) -> BTreeMap<String, usize> {
        self.received.lock().unwrap().clone()
    }
    fn answered(&self) -> BTreeMap<String, usize> {
        self.answered.lock().unwrap().clone()
    }
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    *fake
        .received
        .lock()
        .unwrap()
        .entry(model.clone())
        .or_default() += 1;
    let limit = fake.per_second.load(Ordering::SeqCst);
    if limit > 0 {
        let mut w = fake.window.lock().unwrap();
        let now = Instant::now();
        w.retain(|t| now.duration_since(*t) < Duration::from_secs(1));
        if w.len() >= limit {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}})),
            )
                .into_response();
        }
        w.push(now);
    }
    if model == "senior-editor" && take(&fake.senior_unavailable) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"message": "The server is overloaded", "type": "server_error"}})),
        )
            .into_response();
    }
    if model == "seo-specialist" && take(&fake.seo_hang) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let content = match model.as_str() {
        "seo-specialist" => {
            json!({"title": "Linen that lasts", "meta_description": "Why our linen lasts.", "keywords": ["linen"]})
                .to_string()
        }
        "blog-writer" => "# Linen that lasts\n\nOur linen is woven slowly and mended for free.".to_owned(),
        _ => "# Linen that lasts\n\nOur linen is woven slowly. What do you keep for years?".to_owned(),
    };
    *fake
        .answered
        .lock()
        .unwrap()
        .entry(model.clone())
        .or_default() += 1;
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    }))
    .into_response()
}

async fn fake_server() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(answer))
        .with_state(fake.clone());
    (fake, serve(app).await)
}

/// Each agent answers as the model named after it, with no fallbacks.
async fn models_named_after_agents(db: &TestDb) {
    sqlx::query("UPDATE agent_model_configs SET model_id = agent_id, fallback_model_ids = '{}'")
        .execute(&db.pool)
        .await
        .unwrap();
}

/// A project with a brand voice, and one draft job per channel given.
async fn drafts(db: &TestDb, channels: &[&str]) -> Vec<Uuid> {
    let pool = &db.pool;
    let (project, voice) = project_with_voice(pool).await;
    let mut jobs = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        jobs.push(
            sqlx::query_scalar(
                "INSERT INTO jobs (kind, input, project_id) VALUES ('draft_generation', $1, $2) RETURNING id",
            )
            .bind(json!({"channel": channel, "brand_voice_artifact_id": voice, "topic": format!("linen {i}")}))
            .bind(project)
            .fetch_one(pool)
            .await
            .unwrap(),
        );
    }
    jobs
}

/// The calls an unlimited run of `channels` makes, per agent.
fn calls_of(channels: &[&str]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in channels {
        let agents: &[&str] = if *c == "blog" {
            &[
                "blog-writer",
                "blog-editor",
                "seo-specialist",
                "senior-editor",
            ]
        } else {
            &["blog-writer", "blog-editor"]
        };
        for a in agents {
            *m.entry(a.to_string()).or_default() += 1;
        }
    }
    m
}

/// `runs` rows of real model calls, per agent (`error IS NULL`: answered).
async fn runs_per_agent(db: &TestDb, answered_only: bool) -> BTreeMap<String, usize> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT agent, count(*) FROM runs
         WHERE provider <> 'offline' AND ($1 = false OR error IS NULL) GROUP BY agent",
    )
    .bind(answered_only)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(a, n)| (a, n as usize)).collect()
}

/// The tests that start worker processes take turns: six processes on two cores would
/// measure the machine.
static PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn worker(db: &TestDb, server: SocketAddr) -> Proc {
    let base = format!("http://{server}/v1");
    spawn_worker(
        db,
        &["--kinds", "draft_generation", "--no-scheduler"],
        &[
            ("COPYDESK_LLM_BASE_URL", base.as_str()),
            ("COPYDESK_LLM_API_KEY", "sk-test"),
        ],
    )
}

async fn all_done(db: &TestDb, jobs: &[Uuid], timeout: Duration) {
    let pool = db.pool.clone();
    let ids = jobs.to_vec();
    wait_for(timeout, "every draft job to be done", || {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'done'",
            )
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap();
            done == ids.len() as i64
        }
    })
    .await;
}

const SIX: [&str; 6] = ["blog", "x", "blog", "x", "blog", "x"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_tighter_than_the_work_delays_drafts_but_never_pays_a_call_twice() {
    let _turn = PROCESSES.lock().await;
    let db = test_db().await;
    models_named_after_agents(&db).await;
    let (fake, server) = fake_server().await;
    sqlx::query("INSERT INTO limits (key, requests, per_ms) VALUES ($1, 2, 1000)")
        .bind(format!("llm:{server}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let jobs = drafts(&db, &SIX).await;
    let _a = worker(&db, server);
    let _b = worker(&db, server);
    // 18 calls at 2 a second: 9 s when no call is repeated. Before steps, every job
    // went back to the queue at its second call and paid for its first one again,
    // and none ever finished.
    all_done(&db, &jobs, Duration::from_secs(90)).await;
    assert_eq!(fake.received(), calls_of(&SIX), "calls per agent");
    assert_eq!(
        runs_per_agent(&db, false).await,
        calls_of(&SIX),
        "one runs row per call"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = ANY($1)")
        .bind(&jobs)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        attempts.iter().all(|a| *a == 1),
        "waits cost no attempt: {attempts:?}"
    );
    let waited: i64 = sqlx::query_scalar("SELECT waited FROM limits WHERE key = $1")
        .bind(format!("llm:{server}"))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(waited > 0, "the limit sent jobs back to wait");
    let replays = count(
        &db.pool,
        "SELECT coalesce(sum(replays), 0)::bigint FROM job_steps",
    )
    .await;
    assert!(replays > 0, "jobs that waited got their earlier calls back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_limit_configured_the_servers_429s_cost_no_answered_call_twice() {
    let _turn = PROCESSES.lock().await;
    let db = test_db().await;
    models_named_after_agents(&db).await;
    let (fake, server) = fake_server().await;
    fake.per_second.store(2, Ordering::SeqCst);
    let jobs = drafts(&db, &SIX).await;
    let _a = worker(&db, server);
    let _b = worker(&db, server);
    all_done(&db, &jobs, Duration::from_secs(120)).await;
    assert_eq!(fake.answered(), calls_of(&SIX), "answered calls per agent");
    assert_eq!(
        runs_per_agent(&db, true).await,
        calls_of(&SIX),
        "one answered runs row per answer"
    );
    // Refused requests are recorded too, one row each, never more rows than requests.
    assert_eq!(
        runs_per_agent(&db, false).await,
        fake.received(),
        "one runs row per request"
    );
}

/// A runner in this process calling the fake server, with one try per call (a 503 ends
/// the attempt).
fn remote_runner(db: &TestDb, server: SocketAddr) -> copydesk::queue::Runner<copydesk::jobs::App> {
    let mut settings = fast_settings();
    settings.llm.max_call_attempts = 1;
    let services = copydesk::jobs::Services {
        llm: copydesk::llm::Llm::new(
            copydesk::llm::Provider::Remote {
                base_url: format!("http://{server}/v1"),
                api_key: None,
            },
            &settings.llm,
        ),
        ..services(settings.clone())
    };
    app::runner(db.pool.clone(), app::registry(), services)
}

/// Runs the next claimable job of `kinds` now, whatever its `run_at`.
async fn run_now(db: &TestDb, r: &copydesk::queue::Runner<copydesk::jobs::App>) -> (Uuid, Written) {
    sqlx::query("UPDATE jobs SET run_at = now() WHERE status = 'queued'")
        .execute(&db.pool)
        .await
        .unwrap();
    copydesk::queue::runner::run_once(r, &["draft_generation"])
        .await
        .unwrap()
        .expect("a job to run")
}

#[tokio::test]
async fn a_retry_after_a_503_on_the_senior_editor_makes_only_the_senior_editors_call() {
    let db = test_db().await;
    models_named_after_agents(&db).await;
    let (fake, server) = fake_server().await;
    fake.senior_unavailable.store(1, Ordering::SeqCst);
    let jobs = drafts(&db, &["blog"]).await;
    let r = remote_runner(&db, server);
    let (id, w) = run_now(&db, &r).await;
    assert_eq!(
        (id, w),
        (jobs[0], Written::Status(JobStatus::Queued)),
        "retried"
    );
    let (_, w) = run_now(&db, &r).await;
    assert_eq!(w, Written::Status(JobStatus::Done));
    let mut expected = calls_of(&["blog"]);
    *expected.get_mut("senior-editor").unwrap() += 1;
    assert_eq!(
        fake.received(),
        expected,
        "the retry asked the senior editor only"
    );
    assert_eq!(
        runs_per_agent(&db, false).await,
        expected,
        "one runs row per real call"
    );
    let steps: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT name, attempt, replays FROM job_steps WHERE job_id = $1 ORDER BY created_at",
    )
    .bind(jobs[0])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        steps,
        vec![
            ("blog-writer".into(), 1, 1),
            ("blog-editor".into(), 1, 1),
            ("seo-specialist".into(), 1, 1),
            ("senior-editor".into(), 2, 0),
        ]
    );
    // `jobs show` says, per step, called or replayed.
    let (ok, out, err) = copydesk(&db, &["jobs", "show", &jobs[0].to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("blog-writer (attempt 1"), "{out}");
    assert!(out.contains("called, then replayed 1 time(s)"), "{out}");
    let (ok, out, err) = copydesk(&db, &["jobs", "show", &jobs[0].to_string(), "--json"]);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["steps"].as_array().unwrap().len(), 4, "{shown}");
    // The job's count and its publishing attempts are two keys (they were one name
    // twice in one object, and the list hid the count).
    assert!(shown["attempts"].is_number(), "{shown}");
    assert!(shown["publish_attempts"].is_array(), "{shown}");
    assert_eq!(out.matches("\"attempts\"").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_the_third_call_leaves_the_first_two_paid_once() {
    let _turn = PROCESSES.lock().await;
    let db = test_db().await;
    models_named_after_agents(&db).await;
    let (fake, server) = fake_server().await;
    fake.seo_hang.store(1, Ordering::SeqCst);
    let jobs = drafts(&db, &["blog"]).await;
    let mut a = worker(&db, server);
    let f = fake.clone();
    wait_for(
        Duration::from_secs(30),
        "the SEO call to be in flight",
        || {
            let f = f.clone();
            async move { f.received().get("seo-specialist") == Some(&1) }
        },
    )
    .await;
    signal(&a, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut a, Duration::from_secs(10));
    let _b = worker(&db, server);
    all_done(&db, &jobs, Duration::from_secs(60)).await;
    let mut expected = calls_of(&["blog"]);
    *expected.get_mut("seo-specialist").unwrap() += 1;
    assert_eq!(
        fake.received(),
        expected,
        "the rescued job made the third and fourth calls only"
    );
    let (attempts, _) = attempts_and_error(&db.pool, jobs[0]).await;
    assert_eq!(attempts, 2, "run once by each process");
}

#[tokio::test]
async fn a_changed_request_runs_again_and_a_stored_output_that_no_longer_decodes_is_replaced() {
    let db = test_db().await;
    models_named_after_agents(&db).await;
    let (fake, server) = fake_server().await;
    let jobs = drafts(&db, &["x"]).await;
    let r = remote_runner(&db, server);
    let (_, w) = run_now(&db, &r).await;
    assert_eq!(w, Written::Status(JobStatus::Done));
    assert_eq!(fake.received(), calls_of(&["x"]));

    // The same job run again as it was: nothing is asked.
    let again = |db: &TestDb| {
        let pool = db.pool.clone();
        let id = jobs[0];
        async move {
            sqlx::query("UPDATE jobs SET status = 'queued', finished_at = NULL WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    again(&db).await;
    run_now(&db, &r).await;
    assert_eq!(fake.received(), calls_of(&["x"]), "replayed, not asked");

    // Another brand voice is another request for the writer (and the editor, whose
    // prompt holds it too): both are asked.
    sqlx::query(
        "UPDATE artifacts SET data = '{\"analysis\": {\"tone\": [\"dry\", \"exact\"]}}' WHERE kind = 'brand_voice'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    again(&db).await;
    run_now(&db, &r).await;
    let received = fake.received();
    assert_eq!(
        received["blog-writer"], 2,
        "the changed request was asked: {received:?}"
    );

    // A stored output a deploy can no longer read runs the step again and replaces it.
    sqlx::query("UPDATE job_steps SET output = '\"not a completion\"' WHERE name = 'blog-editor'")
        .execute(&db.pool)
        .await
        .unwrap();
    let bad = "SELECT count(*) FROM job_steps WHERE output = '\"not a completion\"'::jsonb";
    let before = (fake.received()["blog-editor"], count(&db.pool, bad).await);
    again(&db).await;
    let (_, w) = run_now(&db, &r).await;
    assert_eq!(
        w,
        Written::Status(JobStatus::Done),
        "the job does not fail on it"
    );
    assert_eq!(
        (fake.received()["blog-editor"], count(&db.pool, bad).await),
        (before.0 + 1, before.1 - 1),
        "the editor was asked again and its step replaced"
    );
    assert_eq!(
        fake.received()["blog-writer"],
        2,
        "the writer's step still replays"
    );
}

#[tokio::test]
async fn a_step_runs_once_per_request_stores_nothing_on_failure_and_goes_with_its_job() {
    let db = test_db().await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, input, status, finished_at) VALUES ('noop', '{}', 'done', now() - interval '400 days') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let steps = Steps::new(db.pool.clone(), id, 1);
    let runs = AtomicUsize::new(0);
    let work = |v: u32| {
        let runs = &runs;
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, queue::Error>(v)
        }
    };
    let a = steps
        .run("fetch", &"https://example.com/a", work(1))
        .await
        .unwrap();
    assert!(!a.replayed);
    let b = steps
        .run("fetch", &"https://example.com/a", work(2))
        .await
        .unwrap();
    assert_eq!(
        (b.output, b.replayed),
        (1, true),
        "the stored output, not run again"
    );
    let c = steps
        .run("fetch", &"https://example.com/b", work(3))
        .await
        .unwrap();
    assert_eq!((c.output, c.replayed), (3, false), "another request runs");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Stored as one type, read back as another: run again and replaced.
    let d = steps
        .run("fetch", &"https://example.com/a", || async {
            Ok::<_, queue::Error>("text".to_owned())
        })
        .await
        .unwrap();
    assert_eq!((d.output.as_str(), d.replayed), ("text", false));
    // A failing step stores nothing.
    let failed: Result<queue::Ran<u32>, queue::Error> = steps
        .run("flaky", &1, || async {
            Err(queue::Error::Effect("refused".into()))
        })
        .await;
    assert!(failed.is_err());
    assert!(
        steps
            .recall::<u32>("flaky", RequestHash::of(&1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM job_steps").await,
        2,
        "two steps kept"
    );
    // Retention deletes the job and its steps, and counts them.
    let report = copydesk::jobs::cleanup::cleanup(&db.pool, &fast_settings().cleanup, false)
        .await
        .unwrap();
    assert_eq!((report.deleted_done, report.deleted_job_steps), (1, 2));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job_steps").await, 0);
}
