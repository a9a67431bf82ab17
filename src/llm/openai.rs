//! The OpenAI-compatible chat-completions wire protocol (OpenRouter, OpenAI, Ollama,
//! vLLM, llama.cpp, LM Studio): one POST in a given structured mode, its answer parsed,
//! and its failures classified by what the client should do next.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AgentConfig, Call, Secret};
use crate::{
    config::LlmSettings,
    domain::{Dialect, StructuredMode},
};

#[derive(Debug, Deserialize)]
struct ChatResponse {
    model: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    /// OpenRouter: what the call cost, in USD.
    cost: Option<f64>,
    /// OpenAI and OpenRouter: `cached_tokens`.
    prompt_tokens_details: Option<Details>,
    /// OpenAI and OpenRouter: `reasoning_tokens`.
    completion_tokens_details: Option<Details>,
    /// Anthropic-compatible servers: prompt tokens read from the cache.
    cache_read_input_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    message: Option<String>,
    code: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Tokens as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub cached_tokens: i32,
    pub reasoning_tokens: i32,
    /// The provider's own figure of the cost, when it gives one (`usage.cost`).
    pub cost_usd: Option<f64>,
}

impl Usage {
    fn from_wire(u: Option<&WireUsage>) -> Self {
        let Some(u) = u else {
            return Self::default();
        };
        let n = |v: Option<i64>| v.unwrap_or(0).clamp(0, i32::MAX as i64) as i32;
        Self {
            prompt_tokens: n(u.prompt_tokens),
            completion_tokens: n(u.completion_tokens),
            cached_tokens: n(u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .or(u.cache_read_input_tokens)),
            reasoning_tokens: n(u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)),
            cost_usd: u.cost,
        }
    }
}

/// One answer. Kept as a job's step when it comes, so a later run of the job gets it
/// back instead of asking again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    /// `length`: the answer was cut off at max_tokens.
    pub finish_reason: String,
    pub usage: Usage,
    /// Who served it (OpenRouter names the upstream provider).
    pub provider: Option<String>,
    /// The model that answered (it may name a dated version of the one asked for).
    pub model: Option<String>,
}

/// Why one request failed, by what the client should do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The server refused the way the answer was asked for (`response_format`): step
    /// down to a weaker mode at once, without counting a try.
    ModeRefused(String),
    /// Not the request's fault: the model or server is down, overloaded, unknown or too
    /// slow. Another model may answer now.
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Rate limited; try again after `retry_after` (or another model now).
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request's own fault, or one retrying cannot fix (bad key, no credit): fail.
    Refused(String),
    /// The answer came but is no chat completion (or has no content): try again.
    Malformed { message: String, usage: Usage },
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Self::ModeRefused(m) | Self::Refused(m) => m,
            Self::Unavailable { message, .. }
            | Self::Throttled { message, .. }
            | Self::Malformed { message, .. } => message,
        }
    }
}

/// The instruction that states the schema in the prompt (json_object and prompt modes).
pub fn schema_instruction(schema: &Value) -> String {
    format!(
        "Answer with one JSON object and nothing else: no prose before or after it, no \
         Markdown fence. It must match this JSON Schema:\n{}",
        serde_json::to_string_pretty(schema).unwrap_or_default()
    )
}

/// What a repair turn tells the model: its answer, and what was wrong with it.
#[derive(Debug, Clone)]
pub struct RepairTurn {
    pub answer: String,
    pub problem: String,
}

/// The request body for one call of `model` in `mode` (none: a text answer), shaped
/// for `dialect`. The schema is stated in the prompt too in every mode but
/// `json_schema`: a grammar holds the answer to the schema's shape, but the model
/// learns what each field means, and the bounds of its numbers (which not every
/// server's grammar enforces), from the words; `json_schema` servers (OpenAI's strict
/// mode) are given it once.
pub fn request_body(
    dialect: Dialect,
    agent: &AgentConfig,
    model: &str,
    call: &Call,
    mode: Option<StructuredMode>,
    repair: Option<&RepairTurn>,
) -> Value {
    let mut system = call.system.clone();
    let schema = call.schema.as_ref();
    if let Some((_, schema)) = schema
        && mode.is_some_and(|m| m != StructuredMode::JsonSchema)
    {
        system.push_str("\n\n");
        system.push_str(&schema_instruction(schema));
    }
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": call.user}),
    ];
    if let Some(r) = repair {
        messages.push(json!({"role": "assistant", "content": r.answer}));
        let again = match schema {
            Some((_, schema)) => format!(
                "That answer could not be used: {}. Answer again with the corrected JSON \
                 object only, complete, matching this JSON Schema:\n{}",
                r.problem,
                serde_json::to_string_pretty(schema).unwrap_or_default()
            ),
            None => format!(
                "That answer could not be used: {}. Answer again.",
                r.problem
            ),
        };
        messages.push(json!({"role": "user", "content": again}));
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": agent.temperature,
        "max_tokens": agent.max_tokens,
    });
    if let (Some((name, schema)), Some(mode)) = (schema, mode) {
        dialect.shape(&mut body, mode, name, schema);
    }
    body
}

/// Whether an error's text is about how the answer was asked for: servers name the
/// field (`response_format`), the type (`json_schema`, `json_object`), or their own way
/// of constraining output (`guided_json`, a grammar), whatever status they send.
fn about_the_mode(text: &str) -> bool {
    let t = text.to_lowercase();
    [
        "response_format",
        "json_schema",
        "json_object",
        "structured_outputs",
        "guided_",
        "grammar",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Whether an error says the model does not exist or cannot be served here.
fn model_unavailable(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("model")
        && [
            "not found",
            "does not exist",
            "not available",
            "unavailable",
            "unknown model",
            "invalid model",
            "no endpoints",
            "not a valid model",
        ]
        .iter()
        .any(|w| t.contains(w))
}

/// Sends one request (`body`, from [`request_body`]; `structured`: it asks for a
/// structured answer) and classifies what came back.
pub async fn send(
    http: &reqwest::Client,
    cfg: &LlmSettings,
    base_url: &str,
    key: Option<&Secret>,
    body: &Value,
    structured: bool,
) -> Result<Completion, Failure> {
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let mut req = http.post(&url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k.expose());
    }
    if !cfg.app_url.is_empty() {
        req = req.header("HTTP-Referer", &cfg.app_url);
    }
    if !cfg.app_title.is_empty() {
        req = req.header("X-Title", &cfg.app_title);
    }
    for (name, value) in &cfg.headers {
        req = req.header(name, value);
    }
    // The URL holds no secret (the key goes in a header).
    let res = req.send().await.map_err(|e| Failure::Unavailable {
        message: format!("POST {url}: {e}"),
        retry_after: None,
    })?;
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry_after::parse);
    let text = res.text().await.map_err(|e| Failure::Unavailable {
        message: format!("reading the answer: {e}"),
        retry_after: None,
    })?;
    if !(200..300).contains(&status) {
        return Err(classify_error(status, &text, retry_after, structured));
    }
    let parsed: ChatResponse = serde_json::from_str(&text).map_err(|e| Failure::Malformed {
        message: format!("the answer is not a chat completion ({e})"),
        usage: Usage::default(),
    })?;
    let usage = Usage::from_wire(parsed.usage.as_ref());
    // OpenRouter reports errors that happen mid-generation with HTTP 200.
    if let Some(e) = &parsed.error {
        let code = e.code.as_ref().and_then(Value::as_i64).unwrap_or(500) as u16;
        let message = e.message.clone().unwrap_or_default();
        return Err(classify_error(
            code,
            &json!({"error": {"message": message}}).to_string(),
            retry_after,
            structured,
        ));
    }
    let choice = parsed.choices.first();
    let finish_reason = choice
        .and_then(|c| c.finish_reason.clone())
        .unwrap_or_default();
    let message = choice.and_then(|c| c.message.as_ref());
    if let Some(refusal) = message.and_then(|m| m.refusal.clone()) {
        return Err(Failure::Refused(format!("the model refused: {refusal}")));
    }
    let content = message
        .and_then(|m| m.content.clone())
        .filter(|c| !c.trim().is_empty());
    let Some(text) = content else {
        return Err(Failure::Malformed {
            message: format!("the answer has no content (finish_reason {finish_reason:?})"),
            usage,
        });
    };
    Ok(Completion {
        text,
        finish_reason,
        usage,
        provider: parsed.provider,
        model: parsed.model,
    })
}

/// An error answer, by status and words.
fn classify_error(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    structured: bool,
) -> Failure {
    // Error bodies come as {"error": {"message": ...}}, {"error": "..."} (LM Studio),
    // {"detail": [...]} (FastAPI servers: vLLM, llama-cpp-python) or plain text.
    let value: Option<Value> = serde_json::from_str(body).ok();
    let api: Option<ApiError> = value
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| serde_json::from_value(e.clone()).ok());
    let message = api
        .as_ref()
        .and_then(|e| e.message.clone())
        .or_else(|| {
            value
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let message = format!("HTTP {status}: {message}");
    let quota = api.as_ref().is_some_and(|e| {
        e.code.as_ref().and_then(Value::as_str) == Some("insufficient_quota")
            || e.kind.as_deref() == Some("insufficient_quota")
    });
    if quota || status == 401 || status == 402 || status == 403 {
        return Failure::Refused(message);
    }
    if structured && about_the_mode(body) && matches!(status, 400 | 404 | 415 | 422 | 500 | 501) {
        return Failure::ModeRefused(message);
    }
    if model_unavailable(body) && matches!(status, 400 | 404 | 422 | 503) {
        return Failure::Unavailable {
            message,
            retry_after,
        };
    }
    match status {
        429 => Failure::Throttled {
            message,
            retry_after,
        },
        408 | 500..=599 => Failure::Unavailable {
            message,
            retry_after,
        },
        _ => Failure::Refused(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_refusals_are_told_from_other_errors_whatever_the_status() {
        let lm_studio = r#"{"error":"'response_format.type' must be 'json_schema' or 'text'"}"#;
        assert!(matches!(
            classify_error(400, lm_studio, None, true),
            Failure::ModeRefused(m) if m.contains("must be 'json_schema'")
        ));
        let fastapi = r#"{"detail":[{"type":"literal_error","loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'"}]}"#;
        assert!(matches!(
            classify_error(422, fastapi, None, true),
            Failure::ModeRefused(_)
        ));
        let llama = r#"{"error":{"code":500,"message":"response_format type must be one of \"text\" or \"json_object\", but got: json_schema","type":"server_error"}}"#;
        assert!(matches!(
            classify_error(500, llama, None, true),
            Failure::ModeRefused(_)
        ));
        // The same words on a text call, or a plain 500, are not about the mode.
        assert!(matches!(
            classify_error(500, llama, None, false),
            Failure::Unavailable { .. }
        ));
        assert!(matches!(
            classify_error(500, r#"{"error":{"message":"boom"}}"#, None, true),
            Failure::Unavailable { .. }
        ));
        let gone = r#"{"error":{"message":"The model `old/model` does not exist","code":"model_not_found"}}"#;
        assert!(matches!(
            classify_error(404, gone, None, true),
            Failure::Unavailable { .. }
        ));
        assert!(matches!(
            classify_error(
                402,
                r#"{"error":{"code":402,"message":"Insufficient credits"}}"#,
                None,
                true
            ),
            Failure::Refused(_)
        ));
        assert!(matches!(
            classify_error(429, "{}", Some(Duration::from_secs(3)), true),
            Failure::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify_error(
                400,
                r#"{"error":{"message":"messages: too long"}}"#,
                None,
                true
            ),
            Failure::Refused(_)
        ));
    }

    #[test]
    fn usage_reads_cached_and_reasoning_tokens_in_each_dialect() {
        let openai: WireUsage = serde_json::from_value(json!({
            "prompt_tokens": 100, "completion_tokens": 40, "cost": 0.002,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 25}
        }))
        .unwrap();
        assert_eq!(
            Usage::from_wire(Some(&openai)),
            Usage {
                prompt_tokens: 100,
                completion_tokens: 40,
                cached_tokens: 60,
                reasoning_tokens: 25,
                cost_usd: Some(0.002)
            }
        );
        let anthropic: WireUsage = serde_json::from_value(
            json!({"prompt_tokens": 10, "completion_tokens": 5, "cache_read_input_tokens": 8}),
        )
        .unwrap();
        assert_eq!(Usage::from_wire(Some(&anthropic)).cached_tokens, 8);
    }
}
