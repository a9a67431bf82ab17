//! The OpenAI-compatible chat-completions wire protocol (OpenRouter, OpenAI, Ollama,
//! vLLM, llama.cpp): one POST, its answer parsed and classified.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AgentConfig, Call, Reply, Secret, TryError};
use crate::config::LlmSettings;

#[derive(Debug, Deserialize)]
struct ChatResponse {
    model: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
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

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    cost: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    message: Option<String>,
    code: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: Option<ApiError>,
}

/// The request body for one call.
pub fn request_body(base_url: &str, agent: &AgentConfig, call: &Call) -> Value {
    let mut body = json!({
        "model": agent.model_id,
        "messages": [
            {"role": "system", "content": call.system},
            {"role": "user", "content": call.user},
        ],
        "temperature": agent.temperature,
        "max_tokens": agent.max_tokens,
    });
    if let Some((name, schema)) = &call.schema {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": name, "strict": true, "schema": schema},
        });
        if base_url.contains("openrouter.ai") {
            body["provider"] = json!({"require_parameters": true});
        }
    }
    body
}

/// Sends one call and classifies what came back.
pub(crate) async fn complete(
    http: &reqwest::Client,
    cfg: &LlmSettings,
    base_url: &str,
    key: Option<&Secret>,
    agent: &AgentConfig,
    call: &Call,
) -> Result<Reply, TryError> {
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let mut req = http.post(&url).json(&request_body(base_url, agent, call));
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
    let fail = |message: String, transient: bool, retry_after: Option<Duration>| TryError {
        message,
        transient,
        retry_after,
        spent: None,
    };
    let res = req.send().await.map_err(|e| {
        // The URL holds no secret (the key goes in a header).
        fail(format!("POST {url}: {e}"), true, None)
    })?;
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry_after::parse);
    let text = res
        .text()
        .await
        .map_err(|e| fail(format!("reading the answer: {e}"), true, None))?;
    if !(200..300).contains(&status) {
        let err = serde_json::from_str::<ErrorBody>(&text)
            .ok()
            .and_then(|b| b.error);
        let message = err
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| text.chars().take(300).collect());
        let quota = err.as_ref().is_some_and(|e| {
            e.code.as_ref().and_then(Value::as_str) == Some("insufficient_quota")
                || e.kind.as_deref() == Some("insufficient_quota")
        });
        let transient = matches!(status, 408 | 429 | 500..=599) && !quota;
        return Err(fail(
            format!("HTTP {status}: {message}"),
            transient,
            retry_after,
        ));
    }
    let body: ChatResponse = serde_json::from_str(&text).map_err(|e| {
        fail(
            format!("the answer is not a chat completion ({e})"),
            true,
            None,
        )
    })?;
    // OpenRouter reports errors that happen mid-generation with HTTP 200.
    if let Some(e) = &body.error {
        let code = e.code.as_ref().and_then(Value::as_i64).unwrap_or(500);
        let transient = matches!(code, 408 | 429 | 500..=599);
        return Err(fail(
            format!(
                "provider error {code}: {}",
                e.message.clone().unwrap_or_default()
            ),
            transient,
            retry_after,
        ));
    }
    let usage = body.usage.as_ref();
    let prompt_tokens = usage.and_then(|u| u.prompt_tokens).unwrap_or(0) as i32;
    let completion_tokens = usage.and_then(|u| u.completion_tokens).unwrap_or(0) as i32;
    let model = body.model.clone().unwrap_or_else(|| agent.model_id.clone());
    let cost_usd = usage.and_then(|u| u.cost).unwrap_or_else(|| {
        cfg.prices
            .get(&model)
            .or_else(|| cfg.prices.get(&agent.model_id))
            .map(|p| {
                (prompt_tokens as f64 * p.prompt + completion_tokens as f64 * p.completion) / 1e6
            })
            .unwrap_or(0.0)
    });
    let mut reply = Reply {
        text: String::new(),
        json: None,
        provider: body
            .provider
            .clone()
            .unwrap_or_else(|| "openai-compatible".into()),
        model,
        prompt_tokens,
        completion_tokens,
        cost_usd,
    };
    let choice = body.choices.first();
    let finish = choice
        .and_then(|c| c.finish_reason.clone())
        .unwrap_or_default();
    let message = choice.and_then(|c| c.message.as_ref());
    let spent = |reply: &Reply, message: String| TryError {
        message,
        transient: true,
        retry_after: None,
        spent: Some(reply.clone()),
    };
    if finish == "length" {
        return Err(spent(
            &reply,
            format!(
                "the answer was cut off at max_tokens ({})",
                agent.max_tokens
            ),
        ));
    }
    if let Some(refusal) = message.and_then(|m| m.refusal.clone()) {
        return Err(TryError {
            transient: false,
            ..spent(&reply, format!("the model refused: {refusal}"))
        });
    }
    let Some(content) = message
        .and_then(|m| m.content.clone())
        .filter(|c| !c.trim().is_empty())
    else {
        return Err(spent(
            &reply,
            format!("the answer has no content (finish_reason {finish:?})"),
        ));
    };
    reply.text = content;
    if let Some((name, schema)) = &call.schema {
        match super::parse_json(&reply.text, schema) {
            Ok(v) => reply.json = Some(v),
            Err(e) => return Err(spent(&reply, format!("malformed {name} answer: {e}"))),
        }
    }
    Ok(reply)
}
