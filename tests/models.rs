//! Model servers as they are met: an in-process OpenAI-compatible server that refuses
//! `json_schema` (with 400, 422 or 500 and a validation message), takes only
//! `json_object`, ignores `response_format` and answers prose around the JSON, gives
//! scores as strings, stops at `max_tokens` in the middle of the object, or fails for
//! one model only. For each, the pipeline runs from brand voice to a draft waiting for
//! approval, no job attempt is spent on a mode refusal, and the runs rows say what
//! happened (modes, repairs, hops). And budgets hold when calls run at once.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use copydesk::{
    app,
    jobs::{App, Services},
    llm::{Call, Llm, Provider, Scope},
    queue::{self, NewJob, Runner, runner::run_once},
    store,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path},
};

/// How the fake server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Takes `json_schema` and answers exactly.
    Strict,
    /// `json_schema`: 400 with an OpenAI-style error naming response_format.
    Refuses400,
    /// `json_schema`: 422 as FastAPI servers answer (vLLM, llama-cpp-python).
    Refuses422,
    /// `json_schema`: 500 with a validation message (llama.cpp forks).
    Refuses500,
    /// Only `json_object`: the error is a bare string (as LM Studio sends its own).
    OnlyJsonObject,
    /// Ignores `response_format`; wraps its JSON in prose and a fence.
    IgnoresFormat,
    /// Gives scores as strings ("91", "85/100").
    StringScores,
    /// Stops at max_tokens in the middle of each JSON answer.
    Truncates,
    /// `primary/model` answers 503; `backup/model` works.
    DownModel,
    /// The server does not know `primary/model` (404); `backup/model` works.
    UnknownModel,
    // Model servers speaking their own dialects, as a small model behind each answers:
    // JSON of the schema's shape only when the server holds decoding to the schema in
    // its own way, else JSON of the model's own shape (missing required keys), as
    // SmolLM2-135M does behind llama-cpp-python with the schema only in the prompt.
    /// llama-cpp-python: `/v1/models` owned_by "me"; `json_schema` refused with a 500
    /// carrying pydantic's words (as 0.3.36 answers); `json_object` with `schema`
    /// compiled to a grammar (its answer has a raw newline in a string, as the real
    /// one's had).
    LlamaCppPython,
    /// llama.cpp's llama-server: owned_by "llamacpp", `/props`; the top-level
    /// `json_schema` field, or `response_format` `json_schema`.
    LlamaCpp,
    /// vLLM: owned_by "vllm", `/version`; `structured_outputs: {"json": …}`.
    Vllm,
    /// Ollama: `/api/version`; `json_schema` on its OpenAI-compatible endpoint.
    Ollama,
    /// LM Studio: owned_by "organization_owner"; `json_schema` only, `json_object`
    /// refused.
    LmStudio,
    /// TGI: `/info`; `{"type": "json", "value": schema}`; OpenAI's `json_schema` form
    /// refused by its deserializer (no `value`).
    Tgi,
}

impl Server {
    /// The schema this server's own way of asking carries, if the request asks so.
    fn constrained_to(self, body: &Value) -> Option<Value> {
        let rf = &body["response_format"];
        let found = match self {
            Server::LlamaCppPython if rf["type"] == "json_object" => rf.get("schema"),
            Server::LlamaCpp => body
                .get("json_schema")
                .or(rf["json_schema"].get("schema"))
                .or(rf.get("schema")),
            Server::Vllm => body["structured_outputs"]
                .get("json")
                .or(rf["json_schema"].get("schema")),
            Server::Ollama | Server::LmStudio => rf["json_schema"].get("schema"),
            Server::Tgi if rf["type"] == "json" => rf.get("value"),
            Server::Tgi if rf["type"] == "json_schema" => rf["value"].get("schema"),
            _ => None,
        };
        found.cloned()
    }

    /// Whether this server speaks a dialect of its own (a small model behind it).
    fn small(self) -> bool {
        matches!(
            self,
            Server::LlamaCppPython
                | Server::LlamaCpp
                | Server::Vllm
                | Server::Ollama
                | Server::LmStudio
                | Server::Tgi
        )
    }

    /// What the server says about itself: (path, JSON answer) for each GET it answers.
    fn identity(self) -> Vec<(&'static str, Value)> {
        let models = |owned_by: &str, extra: Value| {
            let mut m = json!({"id": "primary/model", "object": "model", "created": 1_700_000_000, "owned_by": owned_by});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"object": "list", "data": [m]})
        };
        match self {
            Server::LlamaCppPython => {
                vec![("/v1/models", models("me", json!({"permissions": []})))]
            }
            Server::LlamaCpp => vec![
                (
                    "/v1/models",
                    models("llamacpp", json!({"meta": {"n_ctx_train": 8192}})),
                ),
                (
                    "/props",
                    json!({"default_generation_settings": {"n_ctx": 4096},
                                  "build_info": "b6000-abcdef0", "total_slots": 1}),
                ),
            ],
            Server::Vllm => vec![
                (
                    "/v1/models",
                    models(
                        "vllm",
                        json!({"root": "primary/model", "max_model_len": 8192}),
                    ),
                ),
                ("/version", json!({"version": "0.12.0"})),
            ],
            Server::Ollama => vec![
                ("/v1/models", models("library", json!({}))),
                ("/api/version", json!({"version": "0.12.3"})),
            ],
            Server::LmStudio => vec![("/v1/models", models("organization_owner", json!({})))],
            Server::Tgi => vec![
                ("/v1/models", models("primary/model", json!({}))),
                (
                    "/info",
                    json!({"model_id": "primary/model", "max_input_tokens": 4095,
                                 "max_total_tokens": 4096, "router": "text-generation-router",
                                 "version": "3.3.4"}),
                ),
            ],
            _ => Vec::new(),
        }
    }
}

const STORE: &str = "<html><head><title>Linen &amp; Loom</title></head><body>
<h1>Linen woven slowly</h1><p>Our linen is woven in small mills and mended for free.</p></body></html>";

fn brand_voice() -> Value {
    json!({"tone": ["warm", "plain"], "audience": "people who keep things", "vocabulary": ["linen", "mend"],
           "do": ["be concrete"], "dont": ["hype"], "sample_phrases": ["Made slowly."]})
}

fn scores() -> Value {
    json!({"platform_appropriateness": 90, "style_consistency": 88, "clarity": 91, "engagement": 86,
           "grammar": 95, "overall": 90, "feedback": "Clear and warm; keep the repairs line."})
}

fn seo() -> Value {
    json!({"title": "Why linen lasts", "meta_description": "Linen, made slowly and mended.", "keywords": ["linen"]})
}

/// The fake server: answers each agent in the shape it asks for, as `behaviour` says.
struct Fake(Arc<Mutex<Server>>);

fn error(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

impl Respond for Fake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let behaviour = *self.0.lock().unwrap();
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let format = body["response_format"]["type"].as_str().map(str::to_owned);
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let schema_mode = format.as_deref() == Some("json_schema");
        match behaviour {
            Server::DownModel if model == "primary/model" => {
                return error(
                    503,
                    json!({"error": {"message": "upstream overloaded", "code": 503}}),
                );
            }
            Server::UnknownModel if model == "primary/model" => {
                return error(
                    404,
                    json!({"error": {"message": "The model `primary/model` does not exist",
                                     "type": "invalid_request_error", "code": "model_not_found"}}),
                );
            }
            Server::Refuses400 if schema_mode => {
                return error(
                    400,
                    json!({"error": {"message": "response_format.type 'json_schema' is not supported by this server",
                                                   "type": "invalid_request_error"}}),
                );
            }
            Server::Refuses422 if schema_mode => {
                return error(
                    422,
                    json!({"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"],
                                                     "msg": "Input should be 'text' or 'json_object'", "input": "json_schema"}]}),
                );
            }
            Server::Refuses500 if schema_mode => {
                return error(
                    500,
                    json!({"error": {"code": 500, "type": "server_error",
                    "message": "response_format type must be one of \"text\" or \"json_object\", but got: json_schema"}}),
                );
            }
            Server::OnlyJsonObject if schema_mode => {
                return error(
                    400,
                    json!({"error": "'response_format.type' must be 'json_object' or 'text'"}),
                );
            }
            Server::LlamaCppPython if schema_mode => {
                return ResponseTemplate::new(500).set_body_string(
                    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), \
                     'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
                );
            }
            Server::LmStudio if format.as_deref() == Some("json_object") => {
                return error(
                    400,
                    json!({"error": "'response_format.type' must be 'json_schema' or 'text'"}),
                );
            }
            Server::Tgi if schema_mode && body["response_format"].get("value").is_none() => {
                return ResponseTemplate::new(422).set_body_string(
                    "Failed to deserialize the JSON body into the target type: response_format: missing field `value` at line 1 column 812",
                );
            }
            _ => {}
        }
        if behaviour.small() {
            return small_answer(behaviour, &body, &model);
        }
        // Which schema is asked for: its name in json_schema mode, else the schema the
        // prompt states (the last one, for a repair turn); none for a text answer.
        let asked = match body["response_format"]["json_schema"]["name"].as_str() {
            Some(name) => name.to_owned(),
            None => {
                let prompts: String = body["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|m| m["content"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                prompts
                    .rfind("JSON Schema:")
                    .map(|i| prompts[i..].to_owned())
                    .unwrap_or_default()
            }
        };
        let structured =
            if asked.contains("evaluation") || asked.contains("platform_appropriateness") {
                Some(scores())
            } else if asked.contains("seo") || asked.contains("meta_description") {
                Some(seo())
            } else if asked.contains("brand_voice") || asked.contains("sample_phrases") {
                Some(brand_voice())
            } else {
                None
            };
        let (content, finish) = match structured {
            None => (
                "Our linen lasts: woven slowly, mended for free. What do you keep for years?"
                    .to_owned(),
                "stop",
            ),
            Some(mut v) => match behaviour {
                Server::IgnoresFormat => (
                    format!("Here is what I found:\n```json\n{v}\n```\nHope it helps!"),
                    "stop",
                ),
                Server::StringScores if v.get("overall").is_some() => {
                    v["overall"] = json!("90");
                    v["clarity"] = json!("91/100");
                    v["engagement"] = json!(86.4);
                    (v.to_string(), "stop")
                }
                // Cut off in the last value, written in the schema's order as models
                // write it, as max_tokens does.
                Server::Truncates if v.get("overall").is_some() => (
                    r#"{"platform_appropriateness": 90, "style_consistency": 88, "clarity": 91, "engagement": 86, "grammar": 95, "overall": 90, "feedback": "Clear and warm; keep the rep"#.to_owned(),
                    "length",
                ),
                Server::Truncates if v.get("sample_phrases").is_some() => (
                    r#"{"tone": ["warm", "plain"], "audience": "people who keep things", "vocabulary": ["linen", "mend"], "do": ["be concrete"], "dont": ["hype"], "sample_phrases": ["Made slowly.", "Mended for fr"#.to_owned(),
                    "length",
                ),
                _ => (v.to_string(), "stop"),
            },
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
                      "prompt_tokens_details": {"cached_tokens": 100},
                      "completion_tokens_details": {"reasoning_tokens": 12}}
        }))
    }
}

/// A small model behind a server with a dialect: the schema's shape when its decoding
/// was held to the schema, else JSON of its own shape; prose for a text answer.
fn small_answer(behaviour: Server, body: &Value, model: &str) -> ResponseTemplate {
    let text = match behaviour.constrained_to(body) {
        Some(schema) => {
            let keys = schema["properties"].to_string();
            let v = if keys.contains("platform_appropriateness") {
                scores()
            } else if keys.contains("meta_description") {
                seo()
            } else if keys.contains("sample_phrases") {
                brand_voice()
            } else {
                fill(&schema)
            };
            // A raw newline inside a string, as the real server's grammar let through.
            v.to_string()
                .replacen("Clear and warm;", "Clear and warm;\n", 1)
        }
        None if body["response_format"].is_object() || prompt_states_a_schema(body) => {
            r#"{"clarity": 80, "overall": 75, "feedback": "Good."}"#.to_owned()
        }
        None => "Our linen lasts: woven slowly, mended for free.".to_owned(),
    };
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    }))
}

/// A value of `schema`'s shape, as a grammar holds a model to (integers within their
/// bounds).
fn fill(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("object") => Value::Object(
            schema["properties"]
                .as_object()
                .map(|p| p.iter().map(|(k, v)| (k.clone(), fill(v))).collect())
                .unwrap_or_default(),
        ),
        Some("integer") => json!(schema["maximum"].as_i64().unwrap_or(100).min(80)),
        Some("number") => json!(80.0),
        Some("boolean") => json!(true),
        Some("array") => json!([fill(&schema["items"])]),
        _ => json!("Made slowly."),
    }
}

fn prompt_states_a_schema(body: &Value) -> bool {
    body["messages"].as_array().unwrap().iter().any(|m| {
        m["content"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON Schema:")
    })
}

struct World {
    db: TestDb,
    llm: MockServer,
    _store: MockServer,
    behaviour: Arc<Mutex<Server>>,
    runner: Runner<App>,
    project: Uuid,
    store_url: String,
}

async fn world(behaviour: Server) -> World {
    let db = test_db().await;
    let store = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(STORE, "text/html"))
        .mount(&store)
        .await;
    let llm = MockServer::start().await;
    for (at, answer) in behaviour.identity() {
        Mock::given(method("GET"))
            .and(path(at))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&llm)
            .await;
    }
    let shared = Arc::new(Mutex::new(behaviour));
    Mock::given(method("POST"))
        .respond_with(Fake(shared.clone()))
        .mount(&llm)
        .await;
    sqlx::query(
        "UPDATE agent_model_configs SET model_id = 'primary/model', fallback_model_ids = '{backup/model}'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut settings = fast_settings();
    settings.pipeline.approve_brand_voice = false;
    let runner = remote_runner(&db, &llm, settings);
    let project: Uuid =
        sqlx::query_scalar("INSERT INTO projects (name) VALUES ('linen') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    World {
        store_url: store.uri(),
        db,
        llm,
        _store: store,
        behaviour: shared,
        runner,
        project,
    }
}

fn remote_llm(server: &MockServer, settings: &copydesk::config::Settings) -> Llm {
    Llm::new(
        Provider::Remote {
            base_url: format!("{}/v1", server.uri()),
            api_key: None,
        },
        &settings.llm,
    )
}

fn remote_runner(
    db: &TestDb,
    server: &MockServer,
    settings: copydesk::config::Settings,
) -> Runner<App> {
    let services = Services {
        llm: remote_llm(server, &settings),
        ..services(settings)
    };
    app::runner(db.pool.clone(), app::registry(), services)
}

/// Starts the pipeline for the blog and runs it to the draft's approval.
async fn run_to_approval(w: &World) {
    let mut conn = w.db.pool.acquire().await.unwrap();
    let start = NewJob::new(
        "brand_voice_analysis",
        json!({"store_url": w.store_url, "pipeline": {"channels": ["blog"], "topic": "Why linen lasts"}}),
    )
    .project(w.project);
    queue::enqueue(&mut conn, &catalog(), &start).await.unwrap();
    let kinds = ["brand_voice_analysis", "draft_generation", "evaluation"];
    while run_once(&w.runner, &kinds).await.unwrap().is_some() {}
    let jobs: Vec<(String, String, i32, Option<String>)> =
        sqlx::query_as("SELECT kind, status, attempts, last_error FROM jobs ORDER BY created_at")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(
        jobs.iter()
            .map(|(k, s, a, _)| (k.as_str(), s.as_str(), *a))
            .collect::<Vec<_>>(),
        vec![
            ("brand_voice_analysis", "done", 1),
            ("draft_generation", "done", 1),
            ("evaluation", "needs_approval", 1),
        ],
        "each step in one attempt, the draft waiting for a person: {jobs:?}"
    );
}

/// One runs row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Run {
    agent: String,
    model: String,
    structured_mode: Option<String>,
    dialect: Option<String>,
    status: String,
    error: Option<String>,
    notes: Option<String>,
}

async fn runs(db: &TestDb) -> Vec<Run> {
    sqlx::query_as(
        "SELECT agent, model, structured_mode, dialect, status, error, notes FROM runs
         WHERE agent <> 'publisher' ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

const STRUCTURED: [&str; 3] = ["brand-voice-analyzer", "seo-specialist", "blog-reviewer"];

fn ok_rows<'a>(runs: &'a [Run], agent: &str) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.agent == agent && r.status == "ok")
        .collect()
}

/// A call's scope for a job of no project (no job row: these calls are made directly).
fn scope(db: &TestDb) -> Scope {
    Scope {
        pool: db.pool.clone(),
        job_id: Uuid::new_v4(),
        attempt: 1,
        tenant_id: copydesk::domain::DEFAULT_TENANT,
        project_id: None,
    }
}

/// The bodies of the model calls the server received (not its identity questions).
async fn posted(server: &MockServer) -> Vec<Value> {
    model_calls(server)
        .await
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .collect()
}

async fn json_schema_requests(server: &MockServer) -> usize {
    posted(server)
        .await
        .iter()
        .filter(|b| b["response_format"]["type"] == "json_schema")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_json_schema_is_asked_in_json_schema() {
    let w = world(Server::Strict).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    assert!(runs.iter().all(|r| r.status == "ok"), "{runs:#?}");
    for agent in STRUCTURED {
        let rows = ok_rows(&runs, agent);
        assert_eq!(rows.len(), 1, "{agent}: {runs:#?}");
        assert_eq!(rows[0].structured_mode.as_deref(), Some("json_schema"));
        assert_eq!(rows[0].notes, None, "{agent}: nothing to mend");
    }
    let tokens: (i64, i64) =
        sqlx::query_as("SELECT sum(cached_tokens), sum(reasoning_tokens) FROM runs")
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(
        tokens,
        (6 * 100, 6 * 12),
        "cached and reasoning tokens are counted"
    );
}

/// A server that refuses `json_schema` (however it says so) is asked in `then` from then
/// on: one refused request, no attempt spent, remembered for every process. A refusal
/// in the words of a family the server did not say it was makes it that family
/// (`dialect`), asked its own way; other refusals step down (`note`).
async fn refused_schema(behaviour: Server, says: &str, then: &str, dialect: &str, note: &str) {
    let w = world(behaviour).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    let refused: Vec<&Run> = runs.iter().filter(|r| r.status == "error").collect();
    assert_eq!(refused.len(), 1, "{behaviour:?}: {runs:#?}");
    assert_eq!(refused[0].agent, "brand-voice-analyzer");
    assert_eq!(refused[0].structured_mode.as_deref(), Some("json_schema"));
    assert!(
        refused[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains(says),
        "{behaviour:?}: {:?}",
        refused[0].error
    );
    for agent in STRUCTURED {
        let rows = ok_rows(&runs, agent);
        assert_eq!(rows.len(), 1, "{agent}");
        assert_eq!(
            rows[0].structured_mode.as_deref(),
            Some(then),
            "{behaviour:?} {agent}"
        );
        assert_eq!(rows[0].dialect.as_deref(), Some(dialect), "{agent}");
    }
    assert!(
        ok_rows(&runs, "brand-voice-analyzer")[0]
            .notes
            .as_deref()
            .unwrap_or_default()
            .contains(note),
        "{runs:#?}"
    );
    assert_eq!(
        json_schema_requests(&w.llm).await,
        1,
        "asked once, then remembered"
    );
    let learned: (String, String) =
        sqlx::query_as("SELECT mode, dialect FROM llm_modes WHERE model = 'primary/model'")
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(learned, (then.to_owned(), dialect.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_refusing_json_schema_steps_down_without_spending_an_attempt() {
    refused_schema(
        Server::Refuses400,
        "HTTP 400",
        "json_object",
        "generic",
        "stepped down to json_object",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_in_llama_cpp_pythons_words_makes_the_server_that_family_asked_its_own_way() {
    refused_schema(
        Server::Refuses422,
        "HTTP 422",
        "native",
        "llama_cpp_python",
        "in llama_cpp_python's words: asked in native",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_in_llama_servers_words_makes_the_server_that_family_asked_its_own_way() {
    refused_schema(
        Server::Refuses500,
        "HTTP 500",
        "native",
        "llama_server",
        "in llama_server's words: asked in native",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_takes_only_json_object_is_asked_in_json_object() {
    refused_schema(
        Server::OnlyJsonObject,
        "must be 'json_object'",
        "json_object",
        "generic",
        "stepped down to json_object",
    )
    .await;
}

/// A server with a dialect of its own, found from what it says about itself: every
/// structured call asked its way first (`mode`), so the small model behind it answers
/// the schema's shape; the pipeline reaches the draft's approval with every step in
/// one attempt, each runs row names the dialect and mode, and the request carried the
/// dialect's own form (`carried`).
async fn speaks(
    behaviour: Server,
    dialect: &str,
    mode: &str,
    carried: impl Fn(&Value) -> bool,
) -> Vec<Run> {
    let w = world(behaviour).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    for r in &runs {
        assert_eq!(r.dialect.as_deref(), Some(dialect), "{behaviour:?}: {r:?}");
    }
    for agent in STRUCTURED {
        let rows = ok_rows(&runs, agent);
        assert_eq!(rows.len(), 1, "{behaviour:?} {agent}: {runs:#?}");
        assert_eq!(
            rows[0].structured_mode.as_deref(),
            Some(mode),
            "{behaviour:?} {agent}"
        );
    }
    let structured: Vec<Value> = posted(&w.llm)
        .await
        .into_iter()
        .filter(|b| prompt_states_a_schema(b) || b["response_format"].is_object())
        .collect();
    assert!(!structured.is_empty());
    for b in &structured {
        assert!(carried(b), "{behaviour:?}: {b}");
    }
    let learned: Vec<(String, String)> =
        sqlx::query_as("SELECT mode, dialect FROM llm_modes WHERE model = 'primary/model'")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(learned, vec![(mode.to_owned(), dialect.to_owned())]);
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_python_is_asked_for_json_object_with_its_schema() {
    let runs = speaks(Server::LlamaCppPython, "llama_cpp_python", "native", |b| {
        b["response_format"]["type"] == "json_object" && b["response_format"]["schema"].is_object()
    })
    .await;
    // Its evaluation had a raw newline inside a string: escaped, and said so.
    let notes = ok_rows(&runs, "blog-reviewer")[0]
        .notes
        .clone()
        .unwrap_or_default();
    assert!(notes.contains("escaped control characters"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_is_asked_with_its_own_json_schema_field() {
    speaks(Server::LlamaCpp, "llama_server", "native", |b| {
        b["json_schema"].is_object() && b.get("response_format").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_is_asked_with_structured_outputs() {
    speaks(Server::Vllm, "vllm", "native", |b| {
        b["structured_outputs"]["json"].is_object() && b.get("response_format").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_and_lm_studio_are_asked_in_json_schema() {
    for (server, dialect) in [(Server::Ollama, "ollama"), (Server::LmStudio, "lm_studio")] {
        speaks(server, dialect, "json_schema", |b| {
            b["response_format"]["json_schema"]["schema"].is_object()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_is_asked_with_its_json_grammar() {
    speaks(Server::Tgi, "tgi", "native", |b| {
        b["response_format"]["type"] == "json" && b["response_format"]["value"].is_object()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_dialect_is_used_whatever_the_server_says() {
    // The server says it is llama-cpp-python; configuration says vLLM.
    let w = world(Server::LlamaCppPython).await;
    let mut settings = fast_settings();
    settings.llm.dialect = copydesk::config::DialectSetting::Vllm;
    let client = remote_llm(&w.llm, &settings);
    let scope = scope(&w.db);
    let call = Call {
        agent: "blog-reviewer".into(),
        system: "Score the draft.".into(),
        user: "Linen lasts.".into(),
        schema: Some((
            "evaluation".into(),
            json!({"type": "object",
            "properties": {"overall": {"type": "integer"}}, "required": ["overall"]}),
        )),
        hints: json!({}),
    };
    // vLLM's form means nothing to this server: the small model writes its own shape,
    // the call steps down, and (json_object carrying no schema in vLLM's dialect) ends
    // with the schema in the prompt, repaired as far as it goes.
    let _ = client.call(&scope, &call).await;
    let first = posted(&w.llm).await.into_iter().next().unwrap();
    assert!(first["structured_outputs"]["json"].is_object(), "{first}");
    let modes: Vec<Option<String>> = sqlx::query_scalar("SELECT DISTINCT dialect FROM runs")
        .fetch_all(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(modes, vec![Some("vllm".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_finds_the_dialect_and_the_mode_that_answers_and_remembers_both() {
    let w = world(Server::LlamaCppPython).await;
    let client = remote_llm(&w.llm, &fast_settings());
    let agent = store::agents::get(&w.db.pool, "blog-reviewer", None)
        .await
        .unwrap()
        .unwrap();
    let base = format!("{}/v1", w.llm.uri());
    let probe = client.probe(&w.db.pool, &base, None, &agent, None).await;
    assert_eq!(probe.dialect.as_str(), "llama_cpp_python");
    assert!(probe.why.contains("owned_by \"me\""), "{}", probe.why);
    assert_eq!(probe.owned_by, vec!["me"]);
    // The probe's question is a review's; the fake answers the evaluation's scores to a
    // schema with "clarity" only when asked its way: native worked at once.
    let outcomes: Vec<(String, &str)> = probe
        .tried
        .iter()
        .map(|t| (t.mode.to_string(), t.outcome))
        .collect();
    assert_eq!(
        probe.mode.map(|m| m.to_string()).as_deref(),
        Some("native"),
        "{outcomes:?}"
    );
    let learned: (String, String) =
        sqlx::query_as("SELECT mode, dialect FROM llm_modes WHERE base_url = $1")
            .bind(&base)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(
        learned,
        ("native".to_owned(), "llama_cpp_python".to_owned())
    );

    // LM Studio: no native form; json_schema answers.
    let w = world(Server::LmStudio).await;
    let base = format!("{}/v1", w.llm.uri());
    let probe = remote_llm(&w.llm, &fast_settings())
        .probe(&w.db.pool, &base, None, &agent, None)
        .await;
    assert_eq!(probe.dialect.as_str(), "lm_studio");
    assert_eq!(
        probe.mode.map(|m| m.to_string()).as_deref(),
        Some("json_schema")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_process_learned_another_uses_and_the_strong_mode_is_tried_again_later() {
    let w = world(Server::Refuses400).await;
    run_to_approval(&w).await;
    assert_eq!(json_schema_requests(&w.llm).await, 1);
    let call = Call {
        agent: "blog-reviewer".into(),
        system: "Score the draft.".into(),
        user: "Linen lasts.".into(),
        schema: Some((
            "evaluation".into(),
            json!({"title": "evaluation", "type": "object", "required": ["overall"], "additionalProperties": false,
                   "properties": {"overall": {"type": "integer", "minimum": 0, "maximum": 100}}}),
        )),
        hints: json!({}),
    };
    let scope = scope(&w.db);
    // Another process (a client with nothing in memory) reads what was learned.
    let mut settings = fast_settings();
    let other = remote_llm(&w.llm, &settings);
    let reply = other.call(&scope, &call).await.unwrap();
    assert_eq!(reply.mode.map(|m| m.as_str()), Some("json_object"));
    assert_eq!(
        json_schema_requests(&w.llm).await,
        1,
        "no json_schema request"
    );
    // After [llm] mode_retry_after_secs the strongest mode is tried again; the server
    // takes it now, and every process learns that.
    *w.behaviour.lock().unwrap() = Server::Strict;
    settings.llm.mode_retry_after_secs = 0;
    let later = remote_llm(&w.llm, &settings);
    let reply = later.call(&scope, &call).await.unwrap();
    assert_eq!(reply.mode.map(|m| m.as_str()), Some("json_schema"));
    let learned: String =
        sqlx::query_scalar("SELECT mode FROM llm_modes WHERE model = 'primary/model'")
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(learned, "json_schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prose_around_the_json_is_taken_off_and_noted() {
    let w = world(Server::IgnoresFormat).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    assert!(runs.iter().all(|r| r.status == "ok"), "{runs:#?}");
    for agent in STRUCTURED {
        let row = ok_rows(&runs, agent)[0];
        assert_eq!(row.structured_mode.as_deref(), Some("json_schema"));
        assert!(
            row.notes
                .as_deref()
                .unwrap_or_default()
                .contains("took the JSON object out"),
            "{agent}: {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_given_as_strings_are_read_as_numbers_and_noted() {
    let w = world(Server::StringScores).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    let review = ok_rows(&runs, "blog-reviewer")[0];
    let notes = review.notes.as_deref().unwrap_or_default();
    assert!(
        notes.contains("read the string \"90\"") && notes.contains("rounded 86.4"),
        "{notes}"
    );
    let overall: i64 = sqlx::query_scalar(
        "SELECT (data->'scores'->>'overall')::bigint FROM artifacts WHERE kind = 'evaluation'",
    )
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(overall, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_off_at_max_tokens_is_closed_and_noted() {
    let w = world(Server::Truncates).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    for agent in ["brand-voice-analyzer", "blog-reviewer"] {
        let row = ok_rows(&runs, agent)[0];
        assert!(
            row.notes
                .as_deref()
                .unwrap_or_default()
                .contains("cut off at max_tokens"),
            "{agent}: {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_is_down_hands_over_to_its_fallback_and_cools_down() {
    fallback(Server::DownModel, "503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_server_does_not_know_hands_over_to_its_fallback() {
    fallback(Server::UnknownModel, "does not exist").await;
}

async fn fallback(behaviour: Server, says: &str) {
    let w = world(behaviour).await;
    run_to_approval(&w).await;
    let runs = runs(&w.db).await;
    let down: Vec<&Run> = runs.iter().filter(|r| r.model == "primary/model").collect();
    assert!(
        down.iter()
            .all(|r| r.status == "error" && r.error.as_deref().unwrap_or_default().contains(says)),
        "{down:#?}"
    );
    assert_eq!(
        down.len(),
        copydesk::config::Settings::defaults()
            .llm
            .model_failures_before_cooldown as usize,
        "then it cools down and every call goes to the fallback at once: {runs:#?}"
    );
    let answered: Vec<&Run> = runs.iter().filter(|r| r.status == "ok").collect();
    assert_eq!(answered.len(), 6, "six calls for a blog draft: {runs:#?}");
    assert!(answered.iter().all(|r| r.model == "backup/model"));
    assert!(
        answered[0]
            .notes
            .as_deref()
            .unwrap_or_default()
            .contains("fallback from primary/model"),
        "{:?}",
        answered[0]
    );
    assert!(
        answered[3]
            .notes
            .as_deref()
            .unwrap_or_default()
            .contains("skipped primary/model (cooling down)"),
        "{:?}",
        answered[3]
    );
    let cooling: bool = sqlx::query_scalar(
        "SELECT cooldown_until > now() FROM llm_model_health WHERE model = 'primary/model'",
    )
    .fetch_one(&w.db.pool)
    .await
    .unwrap();
    assert!(cooling);
    // `pipeline show` says which model wrote the draft.
    let status = store::status::project(&mut w.db.pool.acquire().await.unwrap(), w.project)
        .await
        .unwrap();
    assert_eq!(status.channels[0].model.as_deref(), Some("backup/model"));
    let mut text = Vec::new();
    copydesk::report::project_status(&mut text, &status).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("backup/model"), "{text}");
    // Neither model has a price and the server reports no cost: flagged, not guessed.
    assert!(text.contains("unpriced"), "{text}");
    assert!(status.cost.iter().all(|c| c.cost_usd == 0.0));
}

/// Eight evaluation calls at once against a budget that covers three: three reserve
/// their worst case and are made, five are refused before any request; what is
/// committed never exceeds what was reserved, nor the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_cannot_overspend_a_budget() {
    let db = test_db().await;
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_millis(1500))
                .set_body_json(json!({
                    "model": "priced/model",
                    "choices": [{"finish_reason": "stop", "message": {"content": "{\"overall\": 80}"}}],
                    "usage": {"prompt_tokens": 500, "completion_tokens": 20}
                })),
        )
        .mount(&llm)
        .await;
    sqlx::query(
        "UPDATE agent_model_configs SET model_id = 'priced/model', max_tokens = 1000 WHERE agent_id = 'blog-reviewer'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut settings = fast_settings();
    settings.llm.prices.insert(
        "priced/model".into(),
        copydesk::config::Price {
            prompt: 1000.0,
            completion: 1000.0,
            cached_prompt: None,
        },
    );
    // Worst case per call: the prompt estimate (about 300 tokens) and 1,000 tokens of
    // answer at $1,000 per million, $1.298; a budget of $4 covers three ($3.894).
    let call = Call {
        agent: "blog-reviewer".into(),
        system: "Score the draft.".into(),
        user: "Linen lasts.".into(),
        schema: Some((
            "evaluation".into(),
            json!({"type": "object", "required": ["overall"], "additionalProperties": false,
                   "properties": {"overall": {"type": "integer"}}}),
        )),
        hints: json!({}),
    };
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (name, budget_usd) VALUES ('thrifty', 4.0) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let client = remote_llm(&llm, &settings);
    let calls = (0..8).map(|_| {
        let (client, call, pool) = (client.clone(), call.clone(), db.pool.clone());
        tokio::spawn(async move {
            let scope = Scope {
                pool,
                job_id: Uuid::new_v4(),
                attempt: 1,
                tenant_id: copydesk::domain::DEFAULT_TENANT,
                project_id: Some(project),
            };
            client.call(&scope, &call).await
        })
    });
    let results = futures::future::join_all(calls).await;
    let (made, refused): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|r| r.unwrap())
        .partition(|r| r.is_ok());
    assert_eq!(made.len(), 3, "{refused:?}");
    assert_eq!(refused.len(), 5);
    for r in &refused {
        let e = r.as_ref().unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("budget"), "{e}");
    }
    assert_eq!(
        posted(&llm).await.len(),
        3,
        "no request for a call that could not reserve"
    );
    let b = store::budgets::state(&db.pool, project)
        .await
        .unwrap()
        .unwrap();
    let spent: f64 =
        sqlx::query_scalar("SELECT sum(cost_usd)::float8 FROM runs WHERE project_id = $1")
            .bind(project)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!((b.spent_usd - spent).abs() < 1e-9, "{b:?} {spent}");
    assert!(b.spent_usd <= 4.0, "{b:?}");
    assert_eq!(b.reserved_usd, 0.0, "every reservation settled");
    // Each call committed its real cost: (500 + 20) tokens at $1,000 per million.
    assert!((spent - 3.0 * 0.52).abs() < 1e-6, "{spent}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM llm_reservations").await,
        0
    );
    // The third reservation crossed the soft limit (80% of $4: $3.894 held): told once.
    // The five refusals at the budget: one row counting five.
    let raised: Vec<(String, String, i32, String)> =
        sqlx::query_as("SELECT kind, severity, count, title FROM notifications ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        raised,
        [
            (
                "budget_reached".into(),
                "error".into(),
                5,
                "thrifty has reached its budget".into()
            ),
            (
                "budget_soft_limit".into(),
                "warning".into(),
                1,
                "thrifty has used 97% of its budget".into()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_pinned_per_agent_or_server_is_used_alone() {
    let w = world(Server::Strict).await;
    let host = url::Url::parse(&w.llm.uri()).unwrap();
    let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap());
    let mut settings = fast_settings();
    settings.llm.structured_modes.insert(
        "blog-reviewer".into(),
        copydesk::config::ModeSetting::Prompt,
    );
    settings
        .llm
        .structured_modes
        .insert(host, copydesk::config::ModeSetting::JsonObject);
    let client = remote_llm(&w.llm, &settings);
    let scope = scope(&w.db);
    let call = |agent: &str| Call {
        agent: agent.into(),
        system: "Answer.".into(),
        user: "Linen lasts.".into(),
        schema: Some((
            "evaluation".into(),
            json!({"title": "evaluation", "type": "object", "required": ["overall"],
                   "properties": {"overall": {"type": "integer"}}}),
        )),
        hints: json!({}),
    };
    let by_agent = client.call(&scope, &call("blog-reviewer")).await.unwrap();
    assert_eq!(by_agent.mode.map(|m| m.as_str()), Some("prompt"));
    let by_server = client.call(&scope, &call("seo-specialist")).await.unwrap();
    assert_eq!(by_server.mode.map(|m| m.as_str()), Some("json_object"));
    let formats: Vec<Value> = posted(&w.llm)
        .await
        .iter()
        .map(|b| b["response_format"]["type"].clone())
        .collect();
    assert_eq!(formats, vec![Value::Null, json!("json_object")]);
    assert_eq!(
        count(&w.db.pool, "SELECT count(*) FROM llm_modes").await,
        0,
        "a pinned mode is not learned"
    );
}
