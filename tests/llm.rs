//! The model client against an in-process OpenAI-compatible server, and the SSRF guard
//! against in-process web servers, with a real Postgres for runs, configs and budgets.

mod common;

use std::time::Duration;

use common::*;
use copydesk::{
    config::Settings,
    fetch::{FetchError, Fetcher},
    llm::{Call, Llm, Provider, Scope},
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_partial_json, header, method, path},
};

fn llm(server: &MockServer) -> Llm {
    let mut cfg = Settings::defaults().llm;
    cfg.max_retry_wait_secs = 5;
    Llm::new(
        Provider::Remote {
            base_url: format!("{}/api/v1", server.uri()),
            api_key: Some(copydesk::llm::Secret::new("sk-test-123")),
        },
        &cfg,
    )
}

fn completion(content: &str, prompt: i64, completion: i64, cost: Option<f64>) -> Value {
    let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    if let Some(c) = cost {
        usage["cost"] = json!(c);
    }
    json!({
        "id": "gen-1", "model": "test/model-a", "provider": "TestCloud",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": usage,
    })
}

fn scope(db: &TestDb, project: Option<Uuid>) -> Scope {
    Scope {
        pool: db.pool.clone(),
        job_id: Uuid::new_v4(),
        attempt: 1,
        tenant_id: copydesk::domain::DEFAULT_TENANT,
        project_id: project,
    }
}

fn call(agent: &str, schema: Option<Value>) -> Call {
    Call {
        agent: agent.into(),
        system: "You are a careful editor.".into(),
        user: "Review this draft.".into(),
        schema: schema.map(|s| ("evaluation".to_string(), s)),
        hints: json!({}),
    }
}

#[tokio::test]
async fn requests_carry_the_agents_model_and_temperature_and_runs_record_usage() {
    let db = test_db().await;
    // The blogwriter shape: agent_id, a label for every seeded agent, timestamps.
    let labelled: Vec<(String, String)> = sqlx::query_as(
        "SELECT agent_id, agent_label FROM agent_model_configs WHERE created_at <= updated_at ORDER BY agent_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(labelled.len(), 6, "{labelled:?}");
    assert!(
        labelled.contains(&("seo-specialist".into(), "SEO Specialist".into())),
        "{labelled:?}"
    );
    let server = MockServer::start().await;
    sqlx::query("UPDATE agent_model_configs SET model_id = 'test/model-a', temperature = 0.25, max_tokens = 777 WHERE agent_id = 'blog-editor'")
        .execute(&db.pool)
        .await
        .unwrap();
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test-123"))
        .and(header("x-title", "copydesk"))
        .and(body_partial_json(json!({
            "model": "test/model-a", "temperature": 0.25, "max_tokens": 777,
            "messages": [{"role": "system", "content": "You are a careful editor."},
                         {"role": "user", "content": "Review this draft."}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "Edited.",
            120,
            30,
            Some(0.0042),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let s = scope(&db, None);
    let reply = llm(&server)
        .call(&s, &call("blog-editor", None))
        .await
        .unwrap();
    assert_eq!(reply.text, "Edited.");
    let run: (String, String, String, i32, i32, f64, String) = sqlx::query_as(
        "SELECT agent, provider, model, prompt_tokens, completion_tokens, cost_usd::float8, status FROM runs WHERE job_id = $1",
    )
    .bind(s.job_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        run,
        (
            "blog-editor".into(),
            "TestCloud".into(),
            "test/model-a".into(),
            120,
            30,
            0.0042,
            "ok".into()
        )
    );
}

#[tokio::test]
async fn cost_comes_from_the_price_table_when_the_answer_has_none() {
    let db = test_db().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"model": "anthropic/claude-sonnet-4", "choices": [{"finish_reason": "stop", "message": {"content": "ok"}}],
                   "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}}),
        ))
        .mount(&server)
        .await;
    let s = scope(&db, None);
    llm(&server)
        .call(&s, &call("blog-writer", None))
        .await
        .unwrap();
    let cost: f64 = sqlx::query_scalar("SELECT cost_usd::float8 FROM runs WHERE job_id = $1")
        .bind(s.job_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        (cost - 4.5).abs() < 1e-9,
        "3.0 + 0.1 × 15.0 = 4.5, got {cost}"
    );
}

#[tokio::test]
async fn a_429_pauses_the_models_key_for_every_call_until_retry_after_and_both_calls_are_in_runs() {
    let db = test_db().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"error": {"code": 429, "message": "Rate limit exceeded"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "Second time lucky.",
            10,
            5,
            Some(0.001),
        )))
        .mount(&server)
        .await;
    let s = scope(&db, None);
    let client = llm(&server);
    let started = std::time::Instant::now();
    // The throttled call does not sleep: its job waits for the key's pause.
    let waited = client
        .call(&s, &call("blog-writer", None))
        .await
        .unwrap_err();
    let key = format!("llm:{}/anthropic/claude-sonnet-4", server.address());
    match &waited {
        copydesk::llm::Error::Wait { key: k, after } => {
            assert_eq!(k, &key);
            assert_eq!(*after, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    // Another job's call (another process's, as far as the database is concerned)
    // is held back without a request while the key is paused.
    let other = scope(&db, None);
    assert!(matches!(
        llm(&server).call(&other, &call("blog-writer", None)).await,
        Err(copydesk::llm::Error::Wait { .. })
    ));
    assert_eq!(model_calls(&server).await.len(), 1);
    // The pause runs from the 429's arrival, a little after `started`.
    tokio::time::sleep(Duration::from_millis(1_200).saturating_sub(started.elapsed())).await;
    let reply = client.call(&s, &call("blog-writer", None)).await.unwrap();
    assert_eq!(reply.text, "Second time lucky.");
    let runs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, error FROM runs WHERE job_id = $1 ORDER BY created_at")
            .bind(s.job_id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].0, "error");
    assert!(
        runs[0]
            .1
            .as_deref()
            .unwrap()
            .contains("HTTP 429: Rate limit exceeded")
    );
    assert_eq!(runs[1], ("ok".into(), None));
    assert_eq!(model_calls(&server).await.len(), 2);
    let throttled: i64 = sqlx::query_scalar("SELECT throttled FROM limits WHERE key = $1")
        .bind(&key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(throttled, 1);
}

#[tokio::test]
async fn a_malformed_json_answer_is_retried_then_fails_clearly() {
    let db = test_db().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "Sure! Here is my review: great.",
            50,
            8,
            None,
        )))
        .mount(&server)
        .await;
    let schema = json!({"type": "object", "required": ["overall"], "properties": {"overall": {"type": "integer"}}});
    let s = scope(&db, None);
    let err = llm(&server)
        .call(&s, &call("blog-reviewer", Some(schema)))
        .await
        .unwrap_err();
    assert!(
        err.is_retryable(),
        "a malformed answer is worth retrying later"
    );
    assert!(
        err.to_string().contains(
            "blog-reviewer call failed: malformed evaluation answer: the answer holds no JSON object"
        ),
        "{err}"
    );
    // Prose under json_schema, then under json_object: the server ignored each mode, so
    // the call stepped down twice without counting a try; then each of the tries in
    // prompt mode asked once more with the problem shown (a repair turn).
    let n = Settings::defaults().llm.max_call_attempts as usize;
    assert_eq!(model_calls(&server).await.len(), 2 + 2 * n);
    let modes: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT structured_mode, count(*) FROM runs WHERE job_id = $1 AND status = 'error' AND prompt_tokens = 50
         GROUP BY 1 ORDER BY min(created_at)",
    )
    .bind(s.job_id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        modes,
        vec![
            (Some("json_schema".into()), 1),
            (Some("json_object".into()), 1),
            (Some("prompt".into()), 2 * n as i64)
        ],
        "every request is a runs row with its mode, and the tokens are still accounted"
    );
}

#[tokio::test]
async fn a_project_over_budget_makes_no_request() {
    let db = test_db().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("x", 1, 1, Some(0.01))))
        .expect(0)
        .mount(&server)
        .await;
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (name, budget_usd) VALUES ('thrifty', 1.00) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO runs (project_id, provider, status, cost_usd) VALUES ($1, 'x', 'ok', 0.6), ($1, 'x', 'ok', 0.4)")
        .bind(project)
        .execute(&db.pool)
        .await
        .unwrap();
    let err = llm(&server)
        .call(&scope(&db, Some(project)), &call("blog-writer", None))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("budget"), "{err}");
}

#[tokio::test]
async fn a_permanent_4xx_is_not_retried() {
    let db = test_db().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(402)
                .set_body_json(json!({"error": {"code": 402, "message": "Insufficient credits"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = llm(&server)
        .call(&scope(&db, None), &call("blog-writer", None))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("HTTP 402: Insufficient credits"),
        "{err}"
    );
}

fn fetcher(allow_loopback: bool) -> Fetcher {
    let mut cfg = Settings::defaults().fetch;
    cfg.allow_loopback = allow_loopback;
    Fetcher::new(&cfg)
}

#[tokio::test]
async fn the_ssrf_guard_refuses_loopback_unless_allowed_and_private_redirects_always() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<h1>Hi</h1>", "text/html"))
        .mount(&server)
        .await;
    for (p, target) in [
        ("/to-metadata", "http://169.254.169.254/latest/meta-data/"),
        ("/to-private", "http://10.0.0.1/admin"),
        ("/to-loopback-name", "http://localhost:1/"),
    ] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(302).insert_header("location", target))
            .mount(&server)
            .await;
    }
    // Loopback is refused by default: the test server itself is out of reach.
    let err = fetcher(false).get_html(&server.uri()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            FetchError::Refused {
                kind: "loopback",
                ..
            }
        ),
        "{err}"
    );
    let err = fetcher(false)
        .get_html("http://localhost:9/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            FetchError::Refused {
                kind: "loopback",
                ..
            }
        ),
        "a name resolving to loopback: {err}"
    );

    // Allowed for tests, loopback works, but redirects into private space never do.
    let page = fetcher(true).get_html(&server.uri()).await.unwrap();
    assert!(page.body.contains("Hi"));
    let err = fetcher(true)
        .get_html(&format!("{}/to-metadata", server.uri()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Refused { kind, .. } if kind.contains("metadata")),
        "{err}"
    );
    let err = fetcher(true)
        .get_html(&format!("{}/to-private", server.uri()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            FetchError::Refused {
                kind: "private",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_fetcher_caps_size_and_insists_on_html() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("x".repeat(4_000_000), "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/pdf"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("%PDF", "application/pdf"))
        .mount(&server)
        .await;
    let err = fetcher(true)
        .get_html(&format!("{}/big", server.uri()))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    let err = fetcher(true)
        .get_html(&format!("{}/pdf", server.uri()))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotHtml { .. }), "{err}");
}
