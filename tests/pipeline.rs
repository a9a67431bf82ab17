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

/// The trace a service began, as its `traceparent` header would carry it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
    let input = json!({"store_url": site.uri(), "pipeline": {"channels": ["blog", "linkedin", "x"], "topic": "Why linen lasts"}});
    // Another service starts it by plain SQL, in a trace of its own. A traceparent that
    // is not W3C is refused by name.
    let insert = |traceparent: &'static str| {
        sqlx::query(
            "INSERT INTO jobs (kind, project_id, input, traceparent, tracestate)
             VALUES ('brand_voice_analysis', $1, $2, $3, 'shop=checkout')",
        )
        .bind(p)
        .bind(&input)
        .bind(traceparent)
        .execute(&db.pool)
    };
    let refused = insert("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("jobs_traceparent_w3c"),
        "{refused}"
    );
    insert(TRACEPARENT).await.unwrap();
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
    // Every follow-up, whether a worker or an approval by plain SQL enqueued it, is in
    // the trace that started the pipeline (this process exports none, so each carries
    // the first traceparent as it was).
    let traces: Vec<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
        "SELECT kind, traceparent, tracestate, count(*) FROM jobs GROUP BY 1, 2, 3 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let ours = |kind: &str, n: i64| {
        (
            kind.to_string(),
            Some(TRACEPARENT.to_string()),
            Some("shop=checkout".to_string()),
            n,
        )
    };
    assert_eq!(
        traces,
        vec![
            ours("brand_voice_analysis", 1),
            ours("draft_generation", 6),
            ours("evaluation", 6),
            ours("publishing", 3)
        ]
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
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "cost": 0.001,
                      "prompt_tokens_details": {"cached_tokens": 60},
                      "completion_tokens_details": {"reasoning_tokens": 8}}
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

/// One exported span, as an OTLP receiver reads it.
#[derive(Debug, Clone)]
struct Seen {
    trace: String,
    id: String,
    parent: String,
    name: String,
    /// OTLP's SpanKind: 2 server, 3 client, 5 consumer.
    kind: i32,
    attrs: std::collections::BTreeMap<String, String>,
}

impl Seen {
    fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map_or("", String::as_str)
    }
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// An OTLP/HTTP receiver (protobuf, `POST /v1/traces`), as a collector runs one.
async fn otlp_receiver() -> (String, Received) {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as Any,
    };
    use prost::Message;
    let seen = Received::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                let mut seen = store.lock().unwrap();
                for span in req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    let attrs = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Any::StringValue(s)) => s.clone(),
                                Some(Any::IntValue(i)) => i.to_string(),
                                Some(Any::DoubleValue(d)) => d.to_string(),
                                Some(Any::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    seen.push(Seen {
                        trace: hex(&span.trace_id),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span.kind,
                        attrs,
                    });
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_holds_a_pipeline_from_the_request_to_the_post() {
    use copydesk::{domain::Platform, keys::Keys, publish::integrations, store};
    let db = test_db().await;
    let site = store().await;
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Agents)
        .mount(&llm)
        .await;
    let fake = copydesk::demo::platforms::FakePlatforms::start()
        .await
        .unwrap();
    let keys = Keys::generate();
    let p = project(&db, "linen").await;
    let (creds, meta) = fake.integration(Platform::Wordpress);
    integrations::connect(
        &db.pool,
        &Keys::parse(&keys).unwrap(),
        p,
        Platform::Wordpress,
        &creds,
        &meta,
        "test",
    )
    .await
    .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let (_, token) = store::tokens::create(
        &mut tx,
        copydesk::domain::DEFAULT_TENANT,
        "shop-service",
        copydesk::domain::TokenRole::Operator,
        None,
        "test",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let (collector, spans) = otlp_receiver().await;
    let llm_url = llm.uri();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        // Traces do not hang on the log level: quiet logs, whole traces.
        ("RUST_LOG", "warn"),
        ("COPYDESK_LLM_BASE_URL", llm_url.as_str()),
        ("COPYDESK_FERNET_KEYS", keys.as_str()),
        ("COPYDESK__FETCH__ALLOW_LOOPBACK", "true"),
        ("COPYDESK__PIPELINE__APPROVE_BRAND_VOICE", "false"),
        ("COPYDESK__PIPELINE__APPROVE_DRAFTS", "false"),
    ];
    let (_server, _stdout, base) = serve_process(&db.url, &env, std::process::Stdio::null());
    let mut worker = spawn_worker(&db, &[], &env);

    // The shop's service starts the pipeline inside its own trace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = reqwest::Client::new()
        .post(format!("{base}/api/v1/pipelines"))
        .bearer_auth(token.expose())
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "shop=checkout")
        .json(
            &json!({"project_id": p, "store_url": site.uri(), "channels": ["blog"],
                      "topic": "Why linen lasts"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201, "{}", started.text().await.unwrap());
    wait_for(Duration::from_secs(60), "the post", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM jobs WHERE kind = 'publishing' AND status = 'done'",
        )
        .await
            == 1
    })
    .await;
    // A stopped worker sends what it still holds.
    signal(&worker, nix::sys::signal::Signal::SIGTERM);
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).success());
    let names = || {
        let names: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        names
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !names().iter().any(|n| n == "post wordpress") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no post span in 10 s: {:?}", names()));

    let trace_id = &TRACEPARENT[3..35];
    let all = spans.lock().unwrap().clone();
    let ours: Vec<&Seen> = all.iter().filter(|s| s.trace == trace_id).collect();
    let by_id: std::collections::HashMap<&str, &Seen> =
        ours.iter().map(|s| (s.id.as_str(), *s)).collect();
    let one = |name: &str| -> &Seen {
        let found: Vec<&&Seen> = ours.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span: {ours:#?}");
        found[0]
    };
    // Each span's ancestors within the trace, nearest first.
    let ancestors = |s: &Seen| -> Vec<String> {
        let mut names = Vec::new();
        let mut at = s.parent.as_str();
        while let Some(p) = by_id.get(at) {
            names.push(p.name.clone());
            at = p.parent.as_str();
        }
        names
    };

    // The request: a server span, the child of the service's own span.
    let request = one("POST /api/v1/pipelines");
    assert_eq!(
        (request.kind, request.parent.as_str()),
        (2, &TRACEPARENT[36..52])
    );
    assert_eq!(request.attr("http.response.status_code"), "201");

    // Every job is in the trace, and its run is a consumer span under the request.
    let jobs: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, kind, traceparent FROM jobs ORDER BY created_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "brand_voice_analysis",
            "draft_generation",
            "evaluation",
            "publishing"
        ]
    );
    for (id, kind, traceparent) in &jobs {
        assert_eq!(&traceparent[3..35], trace_id, "{kind}");
        let run = one(&format!("process {kind}"));
        assert_eq!(run.kind, 5, "{run:?}");
        assert_eq!(run.attr("messaging.message.id"), id.to_string());
        assert_eq!(run.attr("messaging.destination.name"), kind);
        assert_eq!(run.attr("copydesk.job.outcome"), "done");
        assert_eq!(run.attr("copydesk.project_id"), p.to_string());
        assert_eq!(run.attr("attempt"), "1");
        assert_eq!(
            ancestors(run).last().map(String::as_str),
            Some(request.name.as_str()),
            "{kind}: {:?}",
            ancestors(run)
        );
    }
    // A follow-up's run is the child of the run that enqueued it (in its handler, or in
    // the writes of its finish: the publication).
    assert_eq!(
        ancestors(one("process publishing"))[..3],
        [
            "process evaluation",
            "process draft_generation",
            "process brand_voice_analysis"
        ]
    );

    // One span per model call, as the GenAI conventions describe a chat, each under the
    // run that made it; as many as the runs rows say were made.
    let calls: Vec<&&Seen> = ours
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    let made = count(
        &db.pool,
        "SELECT count(*) FROM runs WHERE agent <> 'publisher'",
    )
    .await;
    assert_eq!(calls.len() as i64, made, "{calls:#?}");
    assert!(made >= 3, "{made}");
    for call in &calls {
        assert_eq!(call.kind, 3);
        assert_eq!(call.attr("gen_ai.operation.name"), "chat");
        assert_eq!(
            call.name,
            format!("chat {}", call.attr("gen_ai.request.model"))
        );
        assert_eq!(call.attr("gen_ai.usage.input_tokens"), "100");
        assert_eq!(call.attr("gen_ai.usage.output_tokens"), "20");
        assert_eq!(call.attr("gen_ai.usage.cache_read.input_tokens"), "60");
        assert_eq!(call.attr("gen_ai.usage.reasoning.output_tokens"), "8");
        assert_eq!(call.attr("copydesk.cost_usd"), "0.001");
        assert_eq!(call.attr("server.address"), "127.0.0.1");
        assert!(ancestors(call)[0].starts_with("process "), "{call:?}");
    }
    assert!(
        calls.iter().any(|c| c.attr("gen_ai.output.type") == "json"
            && !c.attr("copydesk.structured_mode").is_empty()),
        "a structured call says its mode: {calls:#?}"
    );

    // The post, and the platform call that made it, under the publishing run.
    let post = one("post wordpress");
    assert_eq!(ancestors(post)[0], "process publishing");
    let url: String =
        sqlx::query_scalar("SELECT data->>'url' FROM artifacts WHERE kind = 'publication'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(post.attr("copydesk.post.url"), url);
    let call = one("POST /wp/v2/posts");
    assert_eq!(call.kind, 3);
    assert_eq!(call.parent, post.id);
    assert_eq!(call.attr("http.response.status_code"), "201");
    assert_eq!(call.attr("copydesk.platform"), "wordpress");
    // Nothing of the token went into a span.
    let everything = format!("{all:?}");
    assert!(!everything.contains(token.expose()));
    for (_, secret) in creds.as_object().unwrap() {
        if let Some(secret) = secret.as_str().filter(|s| s.len() > 6) {
            assert!(!everything.contains(secret), "a credential in a span");
        }
    }
    if std::env::var_os("COPYDESK_PRINT_TRACE").is_some() {
        for s in &ours {
            println!(
                "{:<32} {} parent {} kind {} {:?}",
                s.name, s.id, s.parent, s.kind, s.attrs
            );
        }
    }
}
