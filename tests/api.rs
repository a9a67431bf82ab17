//! The HTTP API against a real Postgres: every endpoint with each token role allowed and
//! refused, two tenants (one's token finds none of the other's rows), keyset pages,
//! bulk actions that count first, RFC 9457 errors, the OpenAPI document, and the real
//! `copydesk serve` process.

mod common;

use std::{process::Stdio, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use common::*;
use copydesk::{
    domain::{Platform, TokenRole},
    http::api::ApiState,
    keys::Keys,
    store,
};
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const LINK_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// One answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Answer {
    fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

struct Api {
    db: TestDb,
    state: ApiState,
    router: Router,
    keys: Arc<Keys>,
    /// `keys` as `COPYDESK_FERNET_KEYS` reads them, for a `copydesk serve` process.
    fernet: String,
}

impl Api {
    async fn new() -> Self {
        let db = test_db().await;
        let fernet = Keys::generate();
        let keys = Arc::new(Keys::parse(&fernet).unwrap());
        let mut settings = fast_settings();
        settings.http.public_url = "https://review.example/".into();
        let state = ApiState::new(
            db.pool.clone(),
            Arc::new(settings),
            catalog(),
            Ok(keys.clone()),
        )
        .with_link_key(copydesk::links::LinkKey::parse(LINK_KEY).unwrap());
        Self {
            router: copydesk::http::app(state.clone()),
            state,
            db,
            keys,
            fernet,
        }
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if !token.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            content_type,
            body,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A tenant (`default` when `slug` is that) with a token of each role.
    async fn tenant(&self, slug: &str) -> Tenant {
        let mut tx = self.db.pool.begin().await.unwrap();
        let id = if slug == "default" {
            copydesk::domain::DEFAULT_TENANT
        } else {
            store::tenants::create(&mut tx, slug, &format!("{slug} Ltd"), "test")
                .await
                .unwrap()
                .id
        };
        let mut tokens = Vec::new();
        for role in [
            TokenRole::Viewer,
            TokenRole::Approver,
            TokenRole::Operator,
            TokenRole::Admin,
        ] {
            let (_, secret) =
                store::tokens::create(&mut tx, id, &format!("{slug}-{role}"), role, None, "test")
                    .await
                    .unwrap();
            tokens.push(secret.expose().to_owned());
        }
        tx.commit().await.unwrap();
        Tenant { id, tokens }
    }

    /// A project with a job of each state a person acts on, a draft waiting for
    /// approval, an approved draft and a WordPress integration (at an address nobody
    /// listens on), written by the owner as the workers would.
    async fn seed(&self, t: &Tenant) -> Seeded {
        let pool = &self.db.pool;
        let project =
            store::projects::create(pool, Some(t.id), "Linen & Loom", Some("https://l.example"))
                .await
                .unwrap();
        let job = |status: &'static str, error: Option<&'static str>| async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO jobs (kind, input, project_id, status, last_error, attempts, finished_at)
                 VALUES ('noop', '{}', $1, $2, $3, CASE WHEN $2 = 'failed' THEN 5 ELSE 0 END,
                         CASE WHEN $2 IN ('done', 'failed') THEN now() END)
                 RETURNING id",
            )
            .bind(project)
            .bind(status)
            .bind(error)
            .fetch_one(pool)
            .await
            .unwrap()
        };
        let failed = job("failed", Some("timed out after 30 s (call 17)")).await;
        let queued = job("queued", None).await;
        let waiting = job("needs_approval", None).await;
        let draft = |job: Uuid, text: &'static str| async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO artifacts (project_id, job_id, kind, channel, version, title, content)
                 VALUES ($1, $2, 'draft', 'blog', 1, 'Linen', $3) RETURNING id",
            )
            .bind(project)
            .bind(job)
            .bind(text)
            .fetch_one(pool)
            .await
            .unwrap()
        };
        let pending_draft = draft(waiting, "Our linen lasts for years.").await;
        let approval = store::approvals::create_pending(pool, waiting, pending_draft)
            .await
            .unwrap();
        let done = job("done", None).await;
        let approved_draft = draft(done, "Washed linen, made to last.").await;
        store::approvals::create_approved(pool, done, approved_draft, "ana", "")
            .await
            .unwrap();
        let integration = store::integrations::upsert(
            pool,
            project,
            Platform::Wordpress,
            &self.keys.encrypt_json(&json!({
                "username": "ed", "application_password": "abcd efgh ijkl mnop"
            })),
            &json!({"site_url": "http://127.0.0.1:9"}),
        )
        .await
        .unwrap();
        let subscription = store::events::subscribe(
            pool,
            &store::events::NewSubscription {
                tenant: t.id,
                project: Some(project),
                target: "http://127.0.0.1:9/…",
                url: &self.keys.encrypt(b"http://127.0.0.1:9/hooks/orders"),
                secret: &self.keys.encrypt(b"whsec_c2VjcmV0"),
                events: &[],
                by: "test",
            },
        )
        .await
        .unwrap();
        let mut run = store::runs::NewRun::call("writer", "offline", "offline-1");
        run.job_id = Some(done);
        run.project_id = Some(project);
        store::runs::record(pool, &run).await.unwrap();
        Seeded {
            project,
            failed,
            queued,

            approval,
            pending_draft,
            approved_draft,
            integration,
            subscription,
        }
    }
}

struct Tenant {
    id: Uuid,
    /// viewer, approver, operator, admin.
    tokens: Vec<String>,
}

impl Tenant {
    fn token(&self, role: TokenRole) -> &str {
        &self.tokens[role_index(role)]
    }
}

fn role_index(role: TokenRole) -> usize {
    match role {
        TokenRole::Viewer => 0,
        TokenRole::Approver => 1,
        TokenRole::Operator => 2,
        TokenRole::Admin => 3,
    }
}

#[derive(Debug, Clone, Copy)]
struct Seeded {
    project: Uuid,
    failed: Uuid,
    queued: Uuid,

    approval: Uuid,
    pending_draft: Uuid,
    approved_draft: Uuid,
    integration: Uuid,
    subscription: Uuid,
}

/// A call the test makes: method, path and body, given a fresh seed to act on.
type MakeCall = fn(&Seeded) -> (Method, String, Option<Value>);

const ROLES: [TokenRole; 4] = [
    TokenRole::Viewer,
    TokenRole::Approver,
    TokenRole::Operator,
    TokenRole::Admin,
];

/// Every endpoint with the least role allowed to call it.
fn endpoints() -> Vec<(&'static str, TokenRole, MakeCall)> {
    use TokenRole::*;
    vec![
        ("list jobs", Viewer, |_| {
            (Method::GET, "/api/v1/jobs?status=failed".into(), None)
        }),
        ("show job", Viewer, |s| {
            (Method::GET, format!("/api/v1/jobs/{}", s.failed), None)
        }),
        ("queue stats", Viewer, |_| {
            (Method::GET, "/api/v1/queue/stats".into(), None)
        }),
        ("list approvals", Viewer, |_| {
            (
                Method::GET,
                "/api/v1/approvals?status=pending&order=oldest".into(),
                None,
            )
        }),
        ("show approval", Viewer, |s| {
            (
                Method::GET,
                format!("/api/v1/approvals/{}", s.approval),
                None,
            )
        }),
        ("show pipeline", Viewer, |s| {
            (
                Method::GET,
                format!("/api/v1/pipelines/{}", s.project),
                None,
            )
        }),
        ("search artifacts", Viewer, |_| {
            (Method::GET, "/api/v1/artifacts?q=linen".into(), None)
        }),
        ("list integrations", Viewer, |_| {
            (Method::GET, "/api/v1/integrations".into(), None)
        }),
        ("cost by model", Viewer, |_| {
            (Method::GET, "/api/v1/cost?by=model".into(), None)
        }),
        ("cost per post", Viewer, |_| {
            (Method::GET, "/api/v1/cost/per-post".into(), None)
        }),
        ("audit log", Viewer, |_| {
            (Method::GET, "/api/v1/audit".into(), None)
        }),
        ("approve", Approver, |s| {
            (
                Method::POST,
                format!("/api/v1/approvals/{}/approve", s.approval),
                Some(json!({})),
            )
        }),
        ("reject", Approver, |s| {
            (
                Method::POST,
                format!("/api/v1/approvals/{}/reject", s.approval),
                Some(json!({"notes": "warmer, please"})),
            )
        }),
        ("edit draft", Approver, |s| {
            (
                Method::POST,
                format!("/api/v1/drafts/{}/edit", s.pending_draft),
                Some(json!({"content": "Our linen lasts for decades."})),
            )
        }),
        ("review link", Approver, |s| {
            (
                Method::POST,
                format!("/api/v1/approvals/{}/links", s.approval),
                Some(json!({"name": "Acme marketing", "expires": "2d"})),
            )
        }),
        ("enqueue", Operator, |_| {
            (
                Method::POST,
                "/api/v1/jobs".into(),
                Some(json!({"kind": "noop", "input": {}})),
            )
        }),
        ("retry", Operator, |s| {
            (
                Method::POST,
                format!("/api/v1/jobs/{}/retry", s.failed),
                None,
            )
        }),
        ("cancel", Operator, |s| {
            (
                Method::POST,
                format!("/api/v1/jobs/{}/cancel", s.queued),
                None,
            )
        }),
        ("bulk count", Operator, |s| {
            (
                Method::POST,
                "/api/v1/jobs/bulk".into(),
                Some(json!({"action": "retry", "filter": {"project_id": s.project}})),
            )
        }),
        ("start pipeline", Operator, |s| {
            (
                Method::POST,
                "/api/v1/pipelines".into(),
                Some(
                    json!({"project_id": s.project, "store_url": "https://l.example", "channels": ["blog"]}),
                ),
            )
        }),
        ("request publication", Operator, |s| {
            (
                Method::POST,
                "/api/v1/publications".into(),
                Some(json!({"artifact_id": s.approved_draft, "integration_id": s.integration})),
            )
        }),
        ("test integration", Operator, |s| {
            (
                Method::POST,
                format!("/api/v1/integrations/{}/test", s.integration),
                None,
            )
        }),
        ("set integration", Admin, |s| {
            (
                Method::PUT,
                "/api/v1/integrations".into(),
                Some(
                    json!({"project_id": s.project, "platform": "x", "credentials": {"access_token": "t0k3n-secret", "refresh_token": "r3fr3sh", "client_id": "cid"}}),
                ),
            )
        }),
        ("list subscriptions", Viewer, |_| {
            (Method::GET, "/api/v1/subscriptions".into(), None)
        }),
        ("subscription deliveries", Viewer, |s| {
            (
                Method::GET,
                format!("/api/v1/subscriptions/{}/deliveries", s.subscription),
                None,
            )
        }),
        ("subscribe", Admin, |s| {
            (
                Method::POST,
                "/api/v1/subscriptions".into(),
                Some(json!({"url": "https://orders.example/hooks/copydesk",
                            "project_id": s.project, "events": ["publication.made"]})),
            )
        }),
        ("unsubscribe", Admin, |s| {
            (
                Method::DELETE,
                format!("/api/v1/subscriptions/{}", s.subscription),
                None,
            )
        }),
        ("list tokens", Admin, |_| {
            (Method::GET, "/api/v1/tokens".into(), None)
        }),
        ("create token", Admin, |_| {
            (
                Method::POST,
                "/api/v1/tokens".into(),
                Some(json!({"name": "bot", "role": "viewer", "expires": "90d"})),
            )
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_refuses_the_roles_below_its_own_and_serves_the_rest() {
    let api = Api::new().await;
    let acme = api.tenant("acme").await;
    let mut checked = 0;
    for (name, least, make) in endpoints() {
        for role in ROLES {
            // A fresh seed per call: a write by one role must not decide another's.
            let seed = api.seed(&acme).await;
            let (method, path, body) = make(&seed);
            let a = api
                .call(method.clone(), &path, acme.token(role), body)
                .await;
            if role_index(role) < role_index(least) {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{name} as {role}: {a:?}");
                assert_eq!(a.content_type, "application/problem+json", "{name}");
                assert!(
                    a.detail().contains(&least.to_string()),
                    "{name}: {}",
                    a.detail()
                );
            } else {
                assert!(a.status.is_success(), "{name} as {role}: {a:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints().len() * ROLES.len());
    // Refused writes changed nothing: no viewer's decision, retry or enqueue exists.
    let by_viewer = count(
        &api.db.pool,
        "SELECT count(*) FROM audit_log WHERE actor = 'acme-viewer'",
    )
    .await;
    assert_eq!(by_viewer, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_are_not_found_and_its_rows_are_never_listed() {
    let api = Api::new().await;
    let (acme, globex) = (api.tenant("acme").await, api.tenant("globex").await);
    let a = api.seed(&acme).await;
    let g = api.seed(&globex).await;
    let admin = globex.token(TokenRole::Admin);

    for (name, _, make) in endpoints() {
        let (method, path, body) = make(&a);
        if !path.contains(&a.project.to_string())
            && !path.contains(&a.failed.to_string())
            && !path.contains(&a.queued.to_string())
            && !path.contains(&a.approval.to_string())
            && !path.contains(&a.pending_draft.to_string())
            && !path.contains(&a.integration.to_string())
            && body.as_ref().is_none_or(|b| {
                let b = b.to_string();
                !b.contains(&a.project.to_string()) && !b.contains(&a.approved_draft.to_string())
            })
        {
            continue; // names no row
        }
        let got = api.call(method, &path, admin, body).await;
        if name == "bulk count" {
            // A filter naming acme's project matches nothing of globex's.
            assert_eq!(got.status, StatusCode::OK, "{got:?}");
            assert_eq!(got.body["matched"], 0, "{got:?}");
            continue;
        }
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{name}: {got:?}");
        assert_eq!(got.content_type, "application/problem+json", "{name}");
    }
    // Nothing of acme's changed: its approval pending, its jobs as seeded.
    assert_eq!(status_of(&api.db.pool, a.failed).await, "failed");
    assert_eq!(status_of(&api.db.pool, a.queued).await, "queued");
    let pending: String = sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
        .bind(a.approval)
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(pending, "pending");

    // Listings hold globex's rows only.
    let viewer = globex.token(TokenRole::Viewer);
    let jobs = api.get("/api/v1/jobs?limit=500", viewer).await;
    let ids: Vec<&str> = jobs.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&g.failed.to_string().as_str()), "{ids:?}");
    assert!(!ids.contains(&a.failed.to_string().as_str()), "{ids:?}");
    assert_eq!(ids.len(), 4);
    for path in [
        "/api/v1/approvals",
        "/api/v1/integrations",
        "/api/v1/artifacts?q=linen",
        "/api/v1/cost/per-post",
        "/api/v1/audit",
        "/api/v1/subscriptions",
        "/api/v1/subscriptions/{id}",
        "/api/v1/subscriptions/{id}/deliveries",
    ] {
        let body = api.get(path, viewer).await.body.to_string();
        for acme_id in [a.approval, a.integration, a.pending_draft, a.project] {
            assert!(
                !body.contains(&acme_id.to_string()),
                "{path} shows acme's {acme_id}"
            );
        }
    }
    let stats = api.get("/api/v1/queue/stats", viewer).await;
    let total: i64 = stats.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jobs"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4, "{stats:?}");
    // Its admin's token listing holds its own four tokens only.
    let tokens = api.get("/api/v1/tokens", admin).await;
    assert_eq!(tokens.body.as_array().unwrap().len(), 4, "{tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_edits_are_recorded_with_the_tokens_name() {
    let api = Api::new().await;
    let t = api.tenant("default").await;
    let s = api.seed(&t).await;
    let approver = t.token(TokenRole::Approver);

    // An edit is a new human version; the pending approval moves to it.
    let edited = api
        .post(
            &format!("/api/v1/drafts/{}/edit", s.pending_draft),
            approver,
            json!({"content": "Our linen lasts for decades."}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::CREATED, "{edited:?}");
    let version: Uuid = edited.body["artifact_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let shown = api
        .get(&format!("/api/v1/approvals/{}", s.approval), approver)
        .await;
    assert_eq!(shown.body["artifact_id"], version.to_string());
    assert_eq!(
        shown.body["artifact"]["content"],
        "Our linen lasts for decades."
    );
    assert!(shown.body.get("tenant_id").is_none());

    let rejected = api
        .post(
            &format!("/api/v1/approvals/{}/reject", s.approval),
            approver,
            json!({"notes": "warmer, please"}),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{rejected:?}");
    assert_eq!(rejected.body["status"], "rejected");
    assert_eq!(rejected.body["decided_by"], "default-approver");
    assert_eq!(rejected.body["notes"], "warmer, please");
    // Decided once: a second decision is a conflict naming the state.
    let again = api
        .post(
            &format!("/api/v1/approvals/{}/approve", s.approval),
            approver,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert!(again.detail().contains("rejected"), "{}", again.detail());

    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, action FROM audit_log WHERE actor LIKE 'default-%' ORDER BY id",
    )
    .fetch_all(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        vec![
            ("default-approver".into(), "draft.edited".into()),
            ("default-approver".into(), "approval.rejected".into()),
        ]
    );
    // The API's own audit listing shows them, newest first.
    let audit = api.get("/api/v1/audit", t.token(TokenRole::Viewer)).await;
    assert_eq!(audit.body["items"][0]["action"], "approval.rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_counts_first_and_acts_only_on_the_count_it_was_shown() {
    let api = Api::new().await;
    let t = api.tenant("default").await;
    let s = api.seed(&t).await;
    let operator = t.token(TokenRole::Operator);
    // Two more failures of the same kind of error, one of another.
    for error in [
        "timed out after 12 s (call 3)",
        "timed out after 9 s (call 88)",
        "boom",
    ] {
        sqlx::query(
            "INSERT INTO jobs (kind, input, project_id, status, last_error)
             VALUES ('noop', '{}', $1, 'failed', $2)",
        )
        .bind(s.project)
        .bind(error)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    let group = "timed out after <n> s (call <n>)";
    let filter = json!({"status": "failed", "error_group": group});

    let counted = api
        .post(
            "/api/v1/jobs/bulk",
            operator,
            json!({"action": "retry", "filter": filter}),
        )
        .await;
    assert_eq!(
        counted.body,
        json!({"matched": 3, "applied": false, "jobs": []})
    );
    assert_eq!(
        count(
            &api.db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'failed'"
        )
        .await,
        4
    );

    let stale = api
        .post(
            "/api/v1/jobs/bulk",
            operator,
            json!({"action": "retry", "filter": filter, "expect": 2}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{stale:?}");
    assert!(
        stale.detail().contains("now matches 3"),
        "{}",
        stale.detail()
    );
    assert_eq!(
        count(
            &api.db.pool,
            "SELECT count(*) FROM jobs WHERE status = 'failed'"
        )
        .await,
        4
    );

    let done = api
        .post(
            "/api/v1/jobs/bulk",
            operator,
            json!({"action": "retry", "filter": filter, "expect": 3}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert_eq!(done.body["applied"], true);
    assert_eq!(done.body["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(status_of(&api.db.pool, s.failed).await, "queued");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE status = 'failed'")
            .fetch_all(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec!["boom".to_owned()]);
    let (actor, details): (String, Value) =
        sqlx::query_as("SELECT actor, details FROM audit_log WHERE action = 'jobs.bulk_retried'")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(actor, "default-operator");
    assert_eq!(details["count"], 3);
    assert_eq!(details["filter"]["error_group"], group);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_by_cursor_newest_first_without_repeats() {
    let api = Api::new().await;
    let t = api.tenant("default").await;
    let viewer = t.token(TokenRole::Viewer);
    // Plain SQL inserts, as another service would make them: one statement of 100 and
    // 20 more one by one.
    sqlx::query("INSERT INTO jobs (kind, input) SELECT 'noop', jsonb_build_object('n', n) FROM generate_series(1, 100) n")
        .execute(&api.db.pool)
        .await
        .unwrap();
    for n in 101..=120 {
        sqlx::query(
            "INSERT INTO jobs (kind, input) VALUES ('noop', jsonb_build_object('n', $1::int))",
        )
        .bind(n)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/jobs?limit=50".to_owned();
    let mut pages = 0;
    loop {
        let page = api.get(&path, viewer).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        pages += 1;
        for j in page.body["items"].as_array().unwrap() {
            seen.push(j["input"]["n"].as_i64().unwrap());
        }
        match page.body["next"].as_str() {
            Some(next) => path = format!("/api/v1/jobs?limit=50&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (1..=120).rev().collect::<Vec<_>>(),
        "newest first, each once"
    );

    let bad = api.get("/api/v1/jobs?cursor=not-ours", viewer).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.content_type, "application/problem+json");
    assert!(bad.detail().contains("cursor"), "{}", bad.detail());
    let too_many = api.get("/api/v1/jobs?limit=501", viewer).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert!(
        too_many.detail().contains("limit 501"),
        "{}",
        too_many.detail()
    );
    let bad_status = api.get("/api/v1/jobs?status=sleeping", viewer).await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_status.detail().contains("sleeping"),
        "{}",
        bad_status.detail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problem_documents_naming_what_is_wrong() {
    let api = Api::new().await;
    let t = api.tenant("default").await;
    let operator = t.token(TokenRole::Operator);

    let none = api.get("/api/v1/jobs", "").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.content_type, "application/problem+json");
    assert_eq!(none.body["type"], "urn:copydesk:problem:unauthorized");
    assert!(none.detail().contains("Authorization"), "{}", none.detail());
    let wrong = api.get("/api/v1/jobs", "cdk_nothere_0123456789").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.detail().contains("unknown, revoked or expired"));

    let unknown_kind = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "sleep", "input": {}}),
        )
        .await;
    assert_eq!(
        unknown_kind.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{unknown_kind:?}"
    );
    assert!(
        unknown_kind.detail().contains("sleep"),
        "{}",
        unknown_kind.detail()
    );
    let bad_input = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "brand_voice_analysis", "input": {"store_url": 7}}),
        )
        .await;
    assert_eq!(
        bad_input.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{bad_input:?}"
    );
    assert!(
        bad_input.detail().contains("store_url"),
        "{}",
        bad_input.detail()
    );
    let extra = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "noop", "colour": "red"}),
        )
        .await;
    assert_eq!(extra.status, StatusCode::UNPROCESSABLE_ENTITY, "{extra:?}");
    assert!(extra.detail().contains("colour"), "{}", extra.detail());

    let not_json = api
        .send(
            Request::post("/api/v1/jobs")
                .header(header::AUTHORIZATION, format!("Bearer {operator}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"kind\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST, "{not_json:?}");
    assert_eq!(not_json.content_type, "application/problem+json");
    let huge = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "noop", "input": {"pad": "x".repeat(300_000)}}),
        )
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE, "{huge:?}");
    assert_eq!(huge.content_type, "application/problem+json");
    // An approval's optional body, when sent, is read like any other.
    let approver = t.token(TokenRole::Approver);
    let bad_decision = api
        .send(
            Request::post(format!("/api/v1/approvals/{}/approve", Uuid::new_v4()))
                .header(header::AUTHORIZATION, format!("Bearer {approver}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"notes\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(
        bad_decision.status,
        StatusCode::BAD_REQUEST,
        "{bad_decision:?}"
    );
    assert_eq!(bad_decision.content_type, "application/problem+json");
    let nowhere = api.get("/api/v1/nothing", operator).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert_eq!(nowhere.content_type, "application/problem+json");
    // An extractor's own refusal (a path parameter that is not a UUID) and the router's
    // (a method the path does not take) are problem documents too.
    let not_uuid = api.get("/api/v1/jobs/not-a-uuid", operator).await;
    assert_eq!(not_uuid.status, StatusCode::BAD_REQUEST, "{not_uuid:?}");
    assert_eq!(not_uuid.content_type, "application/problem+json");
    assert!(not_uuid.detail().contains("UUID"), "{}", not_uuid.detail());
    let wrong_method = api
        .call(Method::DELETE, "/api/v1/jobs", operator, None)
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.content_type, "application/problem+json");
    // Postgres stores no NUL character: the request's fault, said so, not a 500.
    let nul = api
        .post(
            &format!("/api/v1/approvals/{}/approve", Uuid::new_v4()),
            approver,
            json!({"notes": "fine\u{0}"}),
        )
        .await;
    assert_eq!(nul.status, StatusCode::UNPROCESSABLE_ENTITY, "{nul:?}");
    assert!(nul.detail().contains("NUL"), "{}", nul.detail());
    let nul_input = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "noop", "input": {}, "idempotency_key": "k\u{0}"}),
        )
        .await;
    assert_eq!(
        nul_input.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{nul_input:?}"
    );
    assert!(nul_input.detail().contains("NUL"), "{}", nul_input.detail());
    // A good enqueue, and the same idempotency key again gives the first job.
    let first = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "noop", "input": {}, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let second = api
        .post(
            "/api/v1/jobs",
            operator,
            json!({"kind": "noop", "input": {}, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["created"], false);
    // Nothing the API answered carries a token.
    for a in [&none, &wrong, &unknown_kind, &first] {
        assert!(!a.body.to_string().contains(operator));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_through_the_api_work_until_revoked_and_never_show_their_secret_again() {
    let api = Api::new().await;
    let t = api.tenant("acme").await;
    let admin = t.token(TokenRole::Admin);
    let made = api
        .post(
            "/api/v1/tokens",
            admin,
            json!({"name": "ci", "role": "operator", "expires": "1h"}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let secret = made.body["secret"].as_str().unwrap().to_owned();
    let id = made.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get("/api/v1/jobs", &secret).await.status,
        StatusCode::OK
    );
    let listed = api.get("/api/v1/tokens", admin).await.body.to_string();
    assert!(listed.contains("\"ci\"") && !listed.contains(&secret));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_sha256 FROM api_tokens WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 32);
    let bad_role = api
        .post(
            "/api/v1/tokens",
            admin,
            json!({"name": "x", "role": "root"}),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_role.detail().contains("root"), "{}", bad_role.detail());

    let revoked = api
        .post(&format!("/api/v1/tokens/{id}/revoke"), admin, json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(
        api.get("/api/v1/jobs", &secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = $1::uuid ORDER BY id")
            .bind(&id)
            .fetch_all(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["token.created", "token.revoked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let api = Api::new().await;
    let doc = api.get("/api/v1/openapi.json", "").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/retry",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/bulk",
        "/api/v1/queue/stats",
        "/api/v1/approvals",
        "/api/v1/approvals/{id}",
        "/api/v1/approvals/{id}/approve",
        "/api/v1/approvals/{id}/reject",
        "/api/v1/drafts/{id}/edit",
        "/api/v1/pipelines",
        "/api/v1/pipelines/{project_id}",
        "/api/v1/artifacts",
        "/api/v1/publications",
        "/api/v1/integrations",
        "/api/v1/integrations/{id}/test",
        "/api/v1/cost",
        "/api/v1/cost/per-post",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}/revoke",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the document");
    }
    // Every route is documented: one per endpoint of the role matrix, and revoking a
    // token and a review link (tested on their own).
    let operations: usize = paths.values().map(|v| v.as_object().unwrap().len()).sum();
    assert_eq!(
        operations,
        endpoints().len() + 2,
        "a route without a document, or the reverse"
    );
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
    // Every operation documents the errors every operation can give, each as a problem
    // document: 401 always, 403 on each that needs more than a viewer, the body's
    // refusals where there is a body.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            assert!(has("401") && has("500"), "{method} {path}: {responses:?}");
            if method != "get" || path == "/api/v1/tokens" {
                assert!(has("403"), "{method} {path} needs a role and says no 403");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(has(status), "{method} {path} has a body and no {status}");
                }
            }
            for (status, response) in responses {
                if !status.starts_with('2') {
                    let content = response["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        ["application/problem+json"],
                        "{method} {path} {status}"
                    );
                }
            }
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        }
    }
    // The words the API takes are enums a generated client can type.
    assert_eq!(
        doc.body["components"]["schemas"]["TokenRole"]["enum"],
        json!(["viewer", "approver", "operator", "admin"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_command_answers_until_sigterm() {
    let db = test_db().await;
    let mut tx = db.pool.begin().await.unwrap();
    let (_, secret) = store::tokens::create(
        &mut tx,
        copydesk::domain::DEFAULT_TENANT,
        "ops",
        TokenRole::Viewer,
        None,
        "test",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (mut child, mut stdout, base) = serve_process(&db.url, &[], Stdio::piped());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let jobs = http
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth(secret.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 200);
    assert_eq!(
        jobs.json::<Value>().await.unwrap(),
        json!({"items": [], "next": null})
    );
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest.trim(), "stopped");
    assert!(!log.contains(secret.expose()), "the token reached the log");
    // Each request's lines carry its span: method, path and the token's name.
    let line = log
        .lines()
        .find(|l| l.contains("answered") && l.contains("/api/v1/jobs"))
        .unwrap_or_else(|| panic!("no line for the request in {log}"));
    assert!(
        line.contains("token=ops") && line.contains("status=200"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_link_made_through_the_api_decides_once_and_can_be_withdrawn() {
    let api = Api::new().await;
    let acme = api.tenant("acme").await;
    let s = api.seed(&acme).await;
    let approver = acme.token(TokenRole::Approver);
    let made = api
        .post(
            &format!("/api/v1/approvals/{}/links", s.approval),
            approver,
            json!({"name": "Acme marketing"}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let url = made.body["url"].as_str().unwrap().to_owned();
    let path = url
        .strip_prefix("https://review.example")
        .unwrap_or_else(|| panic!("not on the public URL: {url}"));
    assert!(path.starts_with("/review/"), "{url}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(made.body["expires_at"].clone()).unwrap();
    let hours = (expires - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!(
        (71.0..=72.0).contains(&hours),
        "72 hours by default: {hours}"
    );
    // The link's page answers without a token; a tampered one is not valid.
    let page = api.get(path, "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("Our linen lasts for years.")
    );
    let tampered = format!("{}x", &path[..path.len() - 1]);
    assert_eq!(api.get(&tampered, "").await.status, StatusCode::NOT_FOUND);
    // Withdrawn: refused, and the audit log has both.
    let id = made.body["id"].as_str().unwrap();
    let revoked = api
        .post(
            &format!("/api/v1/review-links/{id}/revoke"),
            approver,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert!(revoked.body["url"].is_null(), "the URL is answered once");
    let page = api.get(path, "").await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.as_str().unwrap().contains("withdrawn"));
    assert_eq!(
        count(
            &api.db.pool,
            "SELECT count(*) FROM audit_log WHERE action IN ('review_link.created', 'review_link.revoked')
               AND details->>'name' = 'Acme marketing'"
        )
        .await,
        2
    );
    // A viewer may not make one; another tenant's token finds neither approval nor link.
    let viewer = api
        .post(
            &format!("/api/v1/approvals/{}/links", s.approval),
            acme.token(TokenRole::Viewer),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);
    let globex = api.tenant("globex").await;
    let other = api
        .post(
            &format!("/api/v1/review-links/{id}/revoke"),
            globex.token(TokenRole::Admin),
            json!({}),
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    // A decided approval gets no link.
    api.post(
        &format!("/api/v1/approvals/{}/approve", s.approval),
        approver,
        json!({}),
    )
    .await;
    let late = api
        .post(
            &format!("/api/v1/approvals/{}/links", s.approval),
            approver,
            json!({"name": "late"}),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{late:?}");
    // Without a key the server says which setting is missing.
    let keyless = ApiState::new(
        api.db.pool.clone(),
        Arc::new(fast_settings()),
        catalog(),
        Ok(api.keys.clone()),
    );
    if std::env::var_os(copydesk::links::ENV).is_none() {
        let router = copydesk::http::app(keyless);
        let res = router
            .oneshot(
                Request::post(format!("/api/v1/approvals/{}/links", s.approval))
                    .header(header::AUTHORIZATION, format!("Bearer {approver}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"name":"n"}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("COPYDESK_LINK_KEY"));
    }
}

#[tokio::test]
async fn failures_group_by_masked_error_within_the_callers_tenant_only() {
    let api = Api::new().await;
    let acme = api.tenant("acme").await;
    let globex = api.tenant("globex").await;
    let fail = |tenant: Uuid, kind: &'static str, error: Option<String>| {
        let pool = api.db.pool.clone();
        async move {
            let project = store::projects::create(&pool, Some(tenant), "Shop", None)
                .await
                .unwrap();
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO jobs (kind, input, project_id, status, last_error, finished_at)
                 VALUES ($1, '{}', $2, 'failed', $3, now()) RETURNING id",
            )
            .bind(kind)
            .bind(project)
            .bind(error)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // acme: seven timeouts (two kinds; ids and numbers differ), one refusal, one
    // failure with no error; globex: the same timeout, which acme must not count.
    let mut timeouts = Vec::new();
    for n in 0..7 {
        let kind = if n % 2 == 0 { "noop" } else { "publishing" };
        let error = format!("job {} timed out after {n}0 s", Uuid::new_v4());
        timeouts.push(fail(acme.id, kind, Some(error)).await);
    }
    fail(acme.id, "noop", Some("401 Unauthorized".into())).await;
    fail(acme.id, "noop", None).await;
    fail(
        globex.id,
        "noop",
        Some(format!("job {} timed out after 5 s", Uuid::new_v4())),
    )
    .await;
    // As a request would see it, and after VACUUM, when the planner may answer from
    // the index alone.
    for vacuumed in [false, true] {
        if vacuumed {
            sqlx::query("VACUUM ANALYZE jobs")
                .execute(&api.db.pool)
                .await
                .unwrap();
        }
        let mut tx = copydesk::http::api::auth::begin_as(&api.state, acme.id)
            .await
            .unwrap();
        let groups = store::console::failed_groups(&mut *tx, 50).await.unwrap();
        tx.rollback().await.unwrap();
        let summary: Vec<(Option<&str>, i64)> = groups
            .iter()
            .map(|g| (g.error_group.as_deref(), g.jobs))
            .collect();
        assert_eq!(
            summary,
            [
                (Some("job <id> timed out after <n> s"), 7),
                (Some("<n> Unauthorized"), 1),
                (None, 1),
            ],
            "vacuumed: {vacuumed}"
        );
        let newest_first: Vec<Uuid> = timeouts.iter().rev().take(5).copied().collect();
        assert_eq!(groups[0].sample, newest_first);
        let mut kinds = groups[0].kinds.clone();
        kinds.sort();
        assert_eq!(kinds, ["noop", "publishing"]);
        assert!(groups[0].last_failed_at.is_some());
        // At most `limit` groups, biggest first.
        let mut tx = copydesk::http::api::auth::begin_as(&api.state, acme.id)
            .await
            .unwrap();
        let top = store::console::failed_groups(&mut *tx, 1).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].jobs, 7);
    }
}

/// Runs the real `copydesk` binary against the test database with `envs`.
fn copydesk_cli(db: &TestDb, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_copydesk"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .env_remove("COPYDESK_LINK_KEY")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_a_review_link_that_the_server_honours_until_the_cli_withdraws_it() {
    let api = Api::new().await;
    let acme = api.tenant("acme").await;
    let s = api.seed(&acme).await;
    let approval = s.approval.to_string();
    // Without a key: an error naming the variable and how to make one; no link row.
    let out = copydesk_cli(&api.db, &["approvals", "link", &approval], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("COPYDESK_LINK_KEY") && stderr.contains("openssl rand -hex 32"),
        "{stderr}"
    );
    assert_eq!(
        count(&api.db.pool, "SELECT count(*) FROM review_links").await,
        0
    );

    let envs = [
        ("COPYDESK_LINK_KEY", LINK_KEY),
        ("COPYDESK__HTTP__PUBLIC_URL", "https://review.example/"),
    ];
    let out = copydesk_cli(
        &api.db,
        &[
            "approvals",
            "link",
            &approval,
            "--name",
            "Acme marketing",
            "--expires",
            "2h",
            "--json",
            "--by",
            "ed",
        ],
        &envs,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = made["url"].as_str().unwrap();
    let path = url
        .strip_prefix("https://review.example")
        .unwrap_or_else(|| panic!("not on the public URL: {url}"));
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(made["expires_at"].clone()).unwrap();
    let minutes = (expires - chrono::Utc::now()).num_minutes();
    assert!(
        (118..=120).contains(&minutes),
        "--expires 2h: {minutes} min"
    );
    // The server (same key) shows it with no token; the CLI withdraws it; refused after.
    let page = api.get(path, "").await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert!(
        page.body
            .as_str()
            .unwrap()
            .contains("Our linen lasts for years.")
    );
    let id = made["id"].as_str().unwrap();
    let out = copydesk_cli(
        &api.db,
        &["approvals", "revoke-link", id, "--by", "ed"],
        &envs,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("withdrawn"));
    assert_eq!(api.get(path, "").await.status, StatusCode::GONE);
    assert_eq!(
        count(
            &api.db.pool,
            "SELECT count(*) FROM audit_log WHERE action IN ('review_link.created', 'review_link.revoked')
               AND actor = 'ed' AND details->>'name' = 'Acme marketing'"
        )
        .await,
        2
    );
    // Bad input names what is wrong.
    let out = copydesk_cli(
        &api.db,
        &["approvals", "link", &approval, "--expires", "soon"],
        &envs,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}

/// The contract: `copydesk serve`, against a database with rows in every table the
/// API reads, answers every request Schemathesis generates from the API's own document
/// (valid and invalid, with and without a token) with a status, content type and body
/// the document describes, and never with a 5xx. Two runs: one with the ids the tool
/// makes up (not found, mostly) over every operation but revoking a token, which would
/// revoke the run's own; one with the seeded rows' ids over the operations that name
/// one, revoking a spare token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_served_api_is_one_its_document_describes() {
    let env = python_env();
    let api = Api::new().await;
    let default = api.tenant("default").await;
    let s = api.seed(&default).await;
    let admin = default.token(TokenRole::Admin);
    // A review link, so the revocation has one to find; a spare admin token to revoke.
    let link = api
        .post(
            &format!("/api/v1/approvals/{}/links", s.approval),
            default.token(TokenRole::Approver),
            json!({"name": "Acme marketing", "expires": "2d"}),
        )
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{link:?}");
    let spare = api
        .post(
            "/api/v1/tokens",
            admin,
            json!({"name": "spare", "role": "admin"}),
        )
        .await;
    assert_eq!(spare.status, StatusCode::CREATED, "{spare:?}");
    let dir = std::env::temp_dir().join(format!("copydesk-contract-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("serve.log");
    let (_server, _stdout, base) = serve_process(
        &api.db.url,
        &[
            ("RUST_LOG", "warn"),
            ("COPYDESK_FERNET_KEYS", &api.fernet),
            ("COPYDESK_LINK_KEY", LINK_KEY),
        ],
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    // The rows each operation naming one is given (`path.<name>` of its template).
    let ids = [
        ("/api/v1/jobs/{id}", s.failed.to_string()),
        ("/api/v1/jobs/{id}/retry", s.failed.to_string()),
        ("/api/v1/jobs/{id}/cancel", s.queued.to_string()),
        ("/api/v1/approvals/{id}", s.approval.to_string()),
        ("/api/v1/approvals/{id}/approve", s.approval.to_string()),
        ("/api/v1/approvals/{id}/reject", s.approval.to_string()),
        ("/api/v1/approvals/{id}/links", s.approval.to_string()),
        ("/api/v1/drafts/{id}/edit", s.pending_draft.to_string()),
        ("/api/v1/pipelines/{project_id}", s.project.to_string()),
        ("/api/v1/integrations/{id}/test", s.integration.to_string()),
        (
            "/api/v1/review-links/{id}/revoke",
            link.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "/api/v1/tokens/{id}/revoke",
            spare.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "/api/v1/subscriptions/{id}/deliveries",
            s.subscription.to_string(),
        ),
        ("/api/v1/subscriptions/{id}", s.subscription.to_string()),
    ];
    let mut config = String::new();
    for (path, id) in &ids {
        let name = &path[path.rfind('{').unwrap() + 1..path.rfind('}').unwrap()];
        config.push_str(&format!(
            "[[operations]]\ninclude-path = \"{path}\"\nparameters = {{ \"path.{name}\" = \"{id}\" }}\n\n"
        ));
    }
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, config).unwrap();
    let schemathesis = |config: Option<&std::path::Path>, only: &[&str]| {
        let mut cmd = std::process::Command::new(env.join("bin/st"));
        if let Some(config) = config {
            cmd.arg("--config-file").arg(config);
        }
        cmd.args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,ignored_auth",
            "--header",
            &format!("Authorization: Bearer {admin}"),
            "--max-examples",
            "25",
            "--seed",
            "27",
            // One worker: Hypothesis's lambda descriptions are not thread-safe under
            // CPython 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
        ])
        .args(only)
        .env("NO_COLOR", "1")
        .current_dir(&dir);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "Schemathesis found answers the document does not describe:\n{stdout}\n{}\n\
             server log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        stdout
    };
    let made_up = schemathesis(None, &["--exclude-path", "/api/v1/tokens/{id}/revoke"]);
    let seeded = schemathesis(Some(&config_path), &["--include-path-regex", "\\{"]);
    for (run, out) in [("made-up ids", &made_up), ("seeded ids", &seeded)] {
        let tested = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Tested: "))
            .unwrap_or_else(|| panic!("no count of operations in the {run} run:\n{out}"));
        let cases = out
            .lines()
            .find(|l| {
                l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated")
            })
            .map(str::trim)
            .unwrap_or("no count of cases");
        println!("{run}: {tested} operations tested, {cases}");
    }
    // The seeded run reached the rows: the spare token is revoked and the rest stand.
    let spare_row: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_tokens WHERE name = 'spare'")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert!(
        spare_row.is_some(),
        "the seeded run never revoked the spare token"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains(admin), "a token reached the server's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_goes_with_the_job_through_the_api_and_the_cli_and_a_retry_keeps_it()
{
    let api = Api::new().await;
    let t = api.tenant("default").await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let enqueue = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/jobs")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", t.token(TokenRole::Operator)),
            )
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(Body::from(json!({"kind": "noop", "input": {}}).to_string()))
            .unwrap()
    };
    let trace_of = |id: String| {
        let pool = api.db.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<String>)>(
                "SELECT traceparent, tracestate FROM jobs WHERE id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // No exporter in this process: the header is carried on as it came.
    let traced = api
        .send(enqueue(vec![
            ("traceparent", traceparent),
            ("tracestate", "shop=checkout"),
        ]))
        .await;
    assert_eq!(traced.status, StatusCode::CREATED, "{:?}", traced.body);
    let id = traced.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        trace_of(id.clone()).await,
        (Some(traceparent.into()), Some("shop=checkout".into()))
    );
    // A header that is not W3C is ignored, as the recommendation says: the job is made.
    let bad = api
        .send(enqueue(vec![("traceparent", "00-not-a-trace-01")]))
        .await;
    assert_eq!(bad.status, StatusCode::CREATED, "{:?}", bad.body);
    assert_eq!(
        trace_of(bad.body["id"].as_str().unwrap().to_owned()).await,
        (None, None)
    );
    // A failed job retried keeps its trace.
    sqlx::query("UPDATE jobs SET status = 'failed', finished_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    let (ok, _, err) = copydesk(&api.db, &["jobs", "retry", &id]);
    assert!(ok, "{err}");
    assert_eq!(trace_of(id).await.0.as_deref(), Some(traceparent));
    // The CLI takes TRACEPARENT and TRACESTATE from its environment.
    let (ok, out, err) = copydesk_at(
        &api.db.url,
        &[("TRACEPARENT", traceparent), ("TRACESTATE", "ci=1")],
        &["enqueue", "noop"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        trace_of(out.trim().to_owned()).await,
        (Some(traceparent.into()), Some("ci=1".into()))
    );
    // `jobs show` says which trace to look the job up in.
    let (ok, show, err) = copydesk(&api.db, &["jobs", "show", out.trim()]);
    assert!(ok, "{err}");
    assert!(
        show.contains(&format!("traceparent: {traceparent}")),
        "{show}"
    );
}
