//! The content pipeline end to end with the offline provider and a store page served
//! on loopback: brand voice, drafts, evaluation loop, approvals by plain SQL.

mod common;

use std::time::Duration;

use common::*;
use copydesk::{
    app::{
        self,
        worker::{WorkerOptions, run as run_worker},
    },
    domain::ArtifactSource,
    queue::{self, JobStatus, NewJob},
};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

const STORE: &str = "<html><head><title>Linen &amp; Loom</title></head><body>
<h1>Linen woven slowly</h1>
<p>Our linen is woven in small Lithuanian mills by families who have done it for generations.</p>
<p>Every shirt is cut to last a decade, and we repair what we sell, for free.</p>
<li>Natural dyes</li><li>Free repairs</li></body></html>";

async fn store() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STORE, "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn worker(
    db: &TestDb,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<queue::worker::WorkerSummary, queue::Error>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let r = runner(db, fast_settings(), app::registry());
    let h = tokio::spawn(run_worker(r, WorkerOptions::default(), async move {
        let _ = rx.await;
    }));
    (tx, h)
}

async fn project(db: &TestDb, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO projects (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_channels_reach_approval_and_sql_approvals_enqueue_one_publication_each() {
    let db = test_db().await;
    let site = store().await;
    let p = project(&db, "linen").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let start = NewJob::new(
        "brand_voice_analysis",
        json!({"store_url": site.uri(), "pipeline": {"channels": ["blog", "linkedin", "x"], "topic": "Why linen lasts"}}),
    )
    .project(p);
    queue::enqueue(&mut conn, &catalog(), &start).await.unwrap();
    // Two worker processes' worth of workers, racing for the same rows.
    let (s1, w1) = worker(&db);
    let (s2, w2) = worker(&db);

    wait_for(
        Duration::from_secs(30),
        "the brand voice approval",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM approvals WHERE status = 'pending'",
            )
            .await
                == 1
        },
    )
    .await;
    // Another service approves with a plain UPDATE.
    sqlx::query("UPDATE approvals SET status = 'approved', decided_by = 'brand-team' WHERE status = 'pending'")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "three drafts waiting for approval",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM jobs WHERE kind = 'evaluation' AND status = 'needs_approval'",
            )
            .await
                == 3
        },
    )
    .await;
    // The offline reviewer asked for an example once, so each channel took two drafts.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM artifacts WHERE kind = 'draft'"
        )
        .await,
        6
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM artifacts WHERE kind = 'draft' AND version = 2 AND based_on_id IS NOT NULL").await,
        3
    );
    let x_len = count(&db.pool, "SELECT max(char_length(content))::bigint FROM artifacts WHERE kind = 'draft' AND channel = 'x'").await;
    assert!(x_len <= 280, "{x_len}");
    assert!(
        count(
            &db.pool,
            "SELECT count(*) FROM runs WHERE provider = 'offline' AND status = 'ok'"
        )
        .await
            >= 13
    );

    sqlx::query(
        "UPDATE approvals SET status = 'approved', decided_by = 'editor' WHERE status = 'pending'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "three publishing jobs to run",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM jobs WHERE kind = 'publishing' AND status = 'failed'",
            )
            .await
                == 3
        },
    )
    .await;
    let per_channel: Vec<(String, i64)> = sqlx::query_as(
        "SELECT input->>'channel', count(*) FROM jobs WHERE kind = 'publishing' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        per_channel,
        vec![("blog".into(), 1), ("linkedin".into(), 1), ("x".into(), 1)]
    );
    let err: String =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE kind = 'publishing' LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(err.contains("no integration"), "{err}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM approvals WHERE applied_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'needs_approval'"
        )
        .await,
        0
    );
    s1.send(()).unwrap();
    s2.send(()).unwrap();
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_project_with_the_same_site_reuses_the_cached_voice() {
    let db = test_db().await;
    let site = store().await; // expects exactly one page fetch
    let r = runner(&db, fast_settings(), app::registry());
    for name in ["first", "second"] {
        let p = project(&db, name).await;
        let mut conn = db.pool.acquire().await.unwrap();
        queue::enqueue(
            &mut conn,
            &catalog(),
            &NewJob::new(
                "brand_voice_analysis",
                json!({"store_url": format!("{}/", site.uri())}),
            )
            .project(p),
        )
        .await
        .unwrap();
        let (_, written) = queue::runner::run_once(&r, &["brand_voice_analysis"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            written,
            queue::runner::Written::Status(JobStatus::NeedsApproval)
        );
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM runs WHERE agent = 'brand-voice-analyzer'"
        )
        .await,
        1,
        "one model call"
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM artifacts WHERE kind = 'brand_voice'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM artifacts WHERE kind = 'brand_voice' AND (data->>'from_cache')::bool").await,
        1
    );
}

/// Starts the pipeline for one channel of a new project and runs every step up to the
/// draft's approval, one job at a time. Returns the project.
async fn run_to_draft_approval(
    db: &TestDb,
    r: &copydesk::queue::Runner<copydesk::jobs::App>,
    site: &MockServer,
    channel: &str,
) -> Uuid {
    let p = project(db, "linen").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let input = json!({"store_url": site.uri(), "pipeline": {"channels": [channel]}});
    queue::enqueue(
        &mut conn,
        &catalog(),
        &NewJob::new("brand_voice_analysis", input).project(p),
    )
    .await
    .unwrap();
    let kinds = ["brand_voice_analysis", "draft_generation", "evaluation"];
    while queue::runner::run_once(r, &kinds).await.unwrap().is_some() {}
    p
}

/// An OpenAI-compatible server that answers each agent in the shape it asks for.
struct Agents;

impl wiremock::Respond for Agents {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let content = match body["response_format"]["json_schema"]["name"].as_str() {
            Some("brand_voice") => json!({"tone": ["warm"], "audience": "makers", "vocabulary": ["linen"],
                                          "do": ["be plain"], "dont": ["hype"], "sample_phrases": ["Made slowly."]})
            .to_string(),
            Some("evaluation") => json!({"platform_appropriateness": 90, "style_consistency": 90, "clarity": 90,
                                         "engagement": 90, "grammar": 90, "overall": 90, "feedback": "Good."})
            .to_string(),
            Some("seo") => json!({"title": "Linen", "meta_description": "Linen.", "keywords": ["linen"]}).to_string(),
            _ => "Our linen lasts. What do you keep for years?".to_owned(),
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "model": body["model"], "choices": [{"finish_reason": "stop", "message": {"content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "cost": 0.001}
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_with_notes_rewrites_the_draft_with_the_notes_in_the_request() {
    let db = test_db().await;
    let site = store().await;
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Agents)
        .mount(&llm)
        .await;
    let mut settings = fast_settings();
    settings.pipeline.approve_brand_voice = false;
    let services = copydesk::jobs::Services {
        llm: copydesk::llm::Llm::new(
            copydesk::llm::Provider::Remote {
                base_url: llm.uri(),
                api_key: None,
            },
            &settings.llm,
        ),
        ..services(settings.clone())
    };
    let r = app::runner(db.pool.clone(), app::registry(), services);
    run_to_draft_approval(&db, &r, &site, "linkedin").await;
    let approval: Uuid = sqlx::query_scalar("SELECT id FROM approvals WHERE status = 'pending'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    copydesk::pipeline::decisions::decide(
        &db.pool,
        approval,
        false,
        "editor",
        Some("Mention the free repairs."),
    )
    .await
    .unwrap();
    let applied =
        copydesk::pipeline::decisions::apply_decided(&db.pool, r.catalog(), &settings, 10)
            .await
            .unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].enqueued.len(), 1, "one rewrite");
    let before = model_calls(&llm).await.len();
    let (_, w) = queue::runner::run_once(&r, &["draft_generation"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w, queue::runner::Written::Status(JobStatus::Done));
    let requests = model_calls(&llm).await;
    let writer: serde_json::Value = requests[before..]
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .find(|b| {
            b["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("copywriter")
        })
        .expect("a blog-writer request");
    let user = writer["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Mention the free repairs."), "{user}");
    assert!(
        user.contains("Our linen lasts."),
        "the previous draft is in the request: {user}"
    );
    let (version, source): (i32, ArtifactSource) = sqlx::query_as(
        "SELECT version, source FROM artifacts WHERE kind = 'draft' ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((version, source), (2, ArtifactSource::Ai));
    let cost = count(
        &db.pool,
        "SELECT (sum(cost_usd) * 1000)::bigint FROM runs WHERE provider = 'openai-compatible'",
    )
    .await;
    assert!(cost >= 5, "runs hold the provider's cost: {cost}");
}

#[tokio::test]
async fn a_human_edit_becomes_the_version_the_pending_approval_refers_to() {
    let db = test_db().await;
    let site = store().await;
    let mut settings = fast_settings();
    settings.pipeline.approve_brand_voice = false;
    let r = runner(&db, settings, app::registry());
    let p = run_to_draft_approval(&db, &r, &site, "x").await;
    let (approval, draft): (Uuid, Uuid) =
        sqlx::query_as("SELECT id, artifact_id FROM approvals WHERE status = 'pending'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let edited = copydesk::pipeline::decisions::edit_draft(
        &db.pool,
        draft,
        "Linen that lasts. Free repairs, forever.",
        "ana",
    )
    .await
    .unwrap();
    let (artifact, source, based_on): (Uuid, String, Uuid) = sqlx::query_as(
        "SELECT p.artifact_id, a.source, a.based_on_id FROM approvals p JOIN artifacts a ON a.id = p.artifact_id WHERE p.id = $1",
    )
    .bind(approval)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (artifact, source.as_str(), based_on),
        (edited, "human", draft)
    );
    let hits = copydesk::store::artifacts::search(&db.pool, "\"free repairs\"", Some(p), 10)
        .await
        .unwrap();
    assert!(hits.iter().any(|h| h.id == edited), "{hits:?}");
    let status = copydesk::store::status::project(&mut db.pool.acquire().await.unwrap(), p)
        .await
        .unwrap();
    assert_eq!(status.channels.len(), 1);
    assert_eq!(status.channels[0].state, "waiting for approval");
    assert_eq!(status.channels[0].draft_source, Some(ArtifactSource::Human));

    // A decision, once made, cannot be changed by anyone.
    copydesk::pipeline::decisions::decide(&db.pool, approval, true, "ana", None)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE approvals SET status = 'rejected' WHERE id = $1")
        .bind(approval)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be changed"), "{err}");
    let again =
        copydesk::pipeline::decisions::decide(&db.pool, approval, false, "bob", Some("no")).await;
    assert!(again.unwrap_err().to_string().contains("needs pending"));
}

/// A job waiting for a person about `artifact`, with its approval decided as `status`
/// (with `notes`), as another service's plain SQL might leave them.
async fn decided(
    db: &TestDb,
    project: Uuid,
    kind: &str,
    input: serde_json::Value,
    artifact: Uuid,
    status: &str,
    notes: Option<&str>,
) -> (Uuid, Uuid) {
    let job: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, status, project_id, input, attempts) VALUES ($1, 'needs_approval', $2, $3, 1)
         RETURNING id",
    )
    .bind(kind)
    .bind(project)
    .bind(input)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let approval: Uuid = sqlx::query_scalar(
        "INSERT INTO approvals (job_id, artifact_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(job)
    .bind(artifact)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE approvals SET status = $2, notes = $3, decided_by = 'sql' WHERE id = $1")
        .bind(approval)
        .bind(status)
        .bind(notes)
        .execute(&db.pool)
        .await
        .unwrap();
    (job, approval)
}

async fn artifact(db: &TestDb, project: Uuid, kind: &str, channel: Option<&str>) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, kind, channel, content) VALUES ($1, $2, $3, 'Linen lasts.') RETURNING id",
    )
    .bind(project)
    .bind(kind)
    .bind(channel)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_decision_that_cannot_be_applied_fails_alone_and_says_why() {
    let db = test_db().await;
    let settings = fast_settings();
    let p = project(&db, "linen").await;
    let voice = artifact(&db, p, "brand_voice", None).await;
    let draft = artifact(&db, p, "draft", Some("x")).await;
    let eval = |draft: Uuid| json!({"draft_artifact_id": draft, "channel": "x", "brand_voice_artifact_id": voice, "iteration": 1});
    // Decided in this order; the two poisoned ones come first.
    let (bad_plan_job, bad_plan) = decided(
        &db,
        p,
        "brand_voice_analysis",
        json!({"store_url": "https://linen.example", "pipeline": {"channels": ["tiktok"]}}),
        voice,
        "approved",
        None,
    )
    .await;
    let (voice_job, voice_ok) = decided(
        &db,
        p,
        "brand_voice_analysis",
        json!({"store_url": "https://linen.example", "pipeline": {"channels": ["linkedin", "x"]}}),
        voice,
        "approved",
        None,
    )
    .await;
    // An approval of an evaluation that points at the brand voice, not a draft.
    let (not_draft_job, not_draft) =
        decided(&db, p, "evaluation", eval(voice), voice, "approved", None).await;
    let (publish_job, publish_ok) =
        decided(&db, p, "evaluation", eval(draft), draft, "approved", None).await;
    let (rewrite_job, rewrite_ok) = decided(
        &db,
        p,
        "evaluation",
        eval(draft),
        draft,
        "rejected",
        Some("Shorter, please."),
    )
    .await;

    let applied = copydesk::pipeline::decisions::apply_decided(&db.pool, &catalog(), &settings, 50)
        .await
        .unwrap();
    assert_eq!(applied.len(), 5, "{applied:?}");
    let by_id = |id: Uuid| applied.iter().find(|a| a.approval_id == id).unwrap();
    assert_eq!(by_id(voice_ok).enqueued.len(), 2, "a draft per channel");
    assert_eq!(by_id(publish_ok).enqueued.len(), 1, "a publication");
    assert_eq!(by_id(rewrite_ok).enqueued.len(), 1, "a rewrite");
    for (id, job) in [
        (voice_ok, voice_job),
        (publish_ok, publish_job),
        (rewrite_ok, rewrite_job),
    ] {
        assert_eq!(by_id(id).error, None);
        assert_eq!(by_id(id).job_status, Some(JobStatus::Done));
        assert_eq!(status_of(&db.pool, job).await, "done");
    }
    let (kinds, published): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'draft_generation'), count(*) FILTER (WHERE kind = 'publishing')
         FROM jobs WHERE status = 'queued'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((kinds, published), (3, 1));

    // The poisoned ones: rolled back alone, the reason on the row, the job still waiting.
    for (id, job, why) in [
        (bad_plan, bad_plan_job, "unknown channel \"tiktok\""),
        (not_draft, not_draft_job, "is a brand_voice, not a draft"),
    ] {
        let a = by_id(id);
        assert!(a.enqueued.is_empty() && a.job_status.is_none(), "{a:?}");
        assert!(
            a.error.as_deref().unwrap_or_default().contains(why),
            "{a:?}"
        );
        let (last_error, applied_at, later): (
            Option<String>,
            Option<chrono::DateTime<chrono::Utc>>,
            bool,
        ) = sqlx::query_as(
            "SELECT last_error, applied_at, apply_after > now() FROM approvals WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(last_error.unwrap_or_default().contains(why));
        assert!(applied_at.is_none() && later);
        assert_eq!(status_of(&db.pool, job).await, "needs_approval");
    }
    // They wait for their backoff: the next pass applies nothing again.
    let again = copydesk::pipeline::decisions::apply_decided(&db.pool, &catalog(), &settings, 50)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    // `approvals show` tells the operator.
    let shown = copydesk::store::approvals::show(&db.pool, bad_plan)
        .await
        .unwrap();
    assert!(
        shown["last_error"].as_str().unwrap().contains("tiktok"),
        "{shown}"
    );
}
