//! Model calls: one OpenAI-compatible chat-completions client (OpenRouter by default),
//! the deterministic `offline` provider, agent configs read at call time, budgets, and a
//! `runs` row for every call (through the one ledger writer, `store::runs`), written as
//! the call ends in its own statement so cost is never lost even when the job later
//! fails. Errors are this layer's own ([`Error`]); the handlers map them to job errors.

pub mod offline;
pub mod openai;

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use crate::store::agents::AgentConfig;
use crate::{config::LlmSettings, store};

/// Why a model call was not made or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider is not configured the way `[llm] provider` asks.
    #[error("{0}")]
    Config(String),
    #[error("agent {0:?} has no row in agent_model_configs")]
    UnknownAgent(String),
    #[error(
        "project {project} has spent ${spent:.4} of its ${budget:.2} budget: no further model call is made"
    )]
    OverBudget {
        project: Uuid,
        spent: f64,
        budget: f64,
    },
    /// Every try failed; `retryable` says whether a later attempt could succeed.
    #[error("{agent} call failed: {message}")]
    Failed {
        agent: String,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    #[error("{doing}: {source}")]
    Store {
        doing: String,
        #[source]
        source: store::Error,
    },
}

impl Error {
    /// Whether trying the call again later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Failed { retryable, .. } => *retryable,
            Self::Store { .. } => true,
            Self::Config(_) | Self::UnknownAgent(_) | Self::OverBudget { .. } => false,
        }
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Failed { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The provider label written to `runs` and shown in output for offline calls.
pub const OFFLINE: &str = "offline";

/// An API key: never printed, never in `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where model calls go.
#[derive(Debug, Clone)]
pub enum Provider {
    /// An OpenAI-compatible server.
    Remote {
        base_url: String,
        api_key: Option<Secret>,
    },
    /// Deterministic text from the inputs, no model, no network.
    Offline,
}

impl Provider {
    /// Chooses the provider from `[llm] provider` and the environment
    /// (`COPYDESK_LLM_API_KEY` or `OPENROUTER_API_KEY`, `COPYDESK_LLM_BASE_URL`).
    /// Offline is chosen only when neither a key nor a base URL is configured.
    pub fn from_env(cfg: &LlmSettings) -> Result<Self> {
        let key = ["COPYDESK_LLM_API_KEY", "OPENROUTER_API_KEY"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .map(Secret);
        let base = std::env::var("COPYDESK_LLM_BASE_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let remote = |base: Option<String>, api_key| Provider::Remote {
            base_url: base.unwrap_or_else(|| cfg.base_url.clone()),
            api_key,
        };
        match cfg.provider.as_str() {
            "offline" => Ok(Provider::Offline),
            "remote" if key.is_none() && base.is_none() => Err(Error::Config(
                "[llm] provider = \"remote\" but neither COPYDESK_LLM_API_KEY (or OPENROUTER_API_KEY) nor COPYDESK_LLM_BASE_URL is set".into(),
            )),
            "remote" => Ok(remote(base, key)),
            "auto" if key.is_some() || base.is_some() => Ok(remote(base, key)),
            "auto" => Ok(Provider::Offline),
            other => Err(Error::Config(format!(
                "[llm] provider = {other:?}: expected \"auto\", \"remote\" or \"offline\""
            ))),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Provider::Remote { .. } => "openai-compatible",
            Provider::Offline => OFFLINE,
        }
    }
}

/// One model call.
#[derive(Debug, Clone)]
pub struct Call {
    pub agent: String,
    pub system: String,
    pub user: String,
    /// Ask for JSON matching this schema (name, schema), parse and validate it.
    pub schema: Option<(String, Value)>,
    /// The structured inputs the prompts were made from; the offline provider writes
    /// its text from them (remote providers never see them).
    pub hints: Value,
}

/// A model's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    /// The parsed and validated JSON, when the call asked for a schema.
    pub json: Option<Value>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub cost_usd: f64,
}

/// Which job a call is made for: its runs rows and budget hang off this.
#[derive(Debug, Clone)]
pub struct Scope {
    pub pool: PgPool,
    pub job_id: Uuid,
    pub attempt: i32,
    pub project_id: Option<Uuid>,
}

/// The model client of a worker process.
#[derive(Debug, Clone)]
pub struct Llm {
    pub provider: Provider,
    pub cfg: LlmSettings,
    http: reqwest::Client,
}

/// How one try of a call ended, before classification into a job error.
#[derive(Debug)]
pub(crate) struct TryError {
    pub message: String,
    pub transient: bool,
    pub retry_after: Option<Duration>,
    /// Tokens and cost spent even though the try failed (e.g. a malformed answer).
    pub spent: Option<Reply>,
}

impl Llm {
    pub fn new(provider: Provider, cfg: &LlmSettings) -> Self {
        crate::fetch::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .build()
            .expect("HTTP client builds");
        Self {
            provider,
            cfg: cfg.clone(),
            http,
        }
    }

    /// Makes one model call for `scope`'s job: budget check, agent config, tries with
    /// backoff (honouring Retry-After), a `runs` row per try, JSON validation.
    pub async fn call(&self, scope: &Scope, call: &Call) -> Result<Reply> {
        check_budget(scope).await?;
        let agent = store::agents::get(&scope.pool, &call.agent)
            .await
            .map_err(|source| Error::Store {
                doing: "reading agent_model_configs".into(),
                source,
            })?
            .ok_or_else(|| Error::UnknownAgent(call.agent.clone()))?;
        let attempts = self.cfg.max_call_attempts.max(1);
        let mut last: Option<TryError> = None;
        for n in 1..=attempts {
            let started = Instant::now();
            let result = match &self.provider {
                Provider::Offline => Ok(offline::reply(&agent, call)),
                Provider::Remote { base_url, api_key } => {
                    openai::complete(
                        &self.http,
                        &self.cfg,
                        base_url,
                        api_key.as_ref(),
                        &agent,
                        call,
                    )
                    .await
                }
            };
            let ms = started.elapsed().as_millis() as i32;
            match result {
                Ok(reply) => {
                    record_run(
                        scope,
                        &call.agent,
                        Some(&reply),
                        &agent.model_id,
                        self.provider.label(),
                        ms,
                        None,
                    )
                    .await?;
                    return Ok(reply);
                }
                Err(e) => {
                    record_run(
                        scope,
                        &call.agent,
                        e.spent.as_ref(),
                        &agent.model_id,
                        self.provider.label(),
                        ms,
                        Some(&e.message),
                    )
                    .await?;
                    tracing::warn!(agent = %call.agent, try_ = n, error = %e.message, "model call failed");
                    if !e.transient {
                        return Err(Error::Failed {
                            agent: call.agent.clone(),
                            message: e.message,
                            retryable: false,
                            retry_after: None,
                        });
                    }
                    let wait = e
                        .retry_after
                        .unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(n - 1)));
                    let cap = Duration::from_secs(self.cfg.max_retry_wait_secs);
                    if n < attempts && wait <= cap {
                        tokio::time::sleep(wait).await;
                    } else if n < attempts {
                        // Too long to wait here: retry the job at that time instead.
                        last = Some(e);
                        break;
                    }
                    last = Some(e);
                }
            }
        }
        let e = last.expect("at least one try");
        Err(Error::Failed {
            agent: call.agent.clone(),
            message: e.message,
            retryable: true,
            retry_after: e.retry_after,
        })
    }
}

/// Refuses the call once the project's runs have reached its `budget_usd`.
async fn check_budget(scope: &Scope) -> Result<()> {
    let Some(project) = scope.project_id else {
        return Ok(());
    };
    let row = store::runs::budget(&scope.pool, project)
        .await
        .map_err(|source| Error::Store {
            doing: format!("reading the budget of project {project}"),
            source,
        })?;
    if let Some((Some(budget), spent)) = row
        && spent >= budget
    {
        return Err(Error::OverBudget {
            project,
            spent,
            budget,
        });
    }
    Ok(())
}

async fn record_run(
    scope: &Scope,
    agent: &str,
    reply: Option<&Reply>,
    model: &str,
    provider: &str,
    duration_ms: i32,
    error: Option<&str>,
) -> Result<()> {
    let run = store::runs::NewRun {
        job_id: Some(scope.job_id),
        project_id: scope.project_id,
        attempt: scope.attempt,
        agent,
        provider: reply.map_or(provider, |r| r.provider.as_str()),
        model: reply.map_or(model, |r| r.model.as_str()),
        prompt_tokens: reply.map_or(0, |r| r.prompt_tokens),
        completion_tokens: reply.map_or(0, |r| r.completion_tokens),
        cost_usd: reply.map_or(0.0, |r| r.cost_usd),
        duration_ms,
        error,
    };
    store::runs::record(&scope.pool, &run)
        .await
        .map_err(|source| Error::Store {
            doing: format!("recording a run of {agent}"),
            source,
        })
}

/// Fills `{{name}}` placeholders of a prompt template from a JSON object (strings as
/// they are, anything else as JSON). Unknown placeholders are left as they are.
pub fn render(template: &str, vars: &Value) -> String {
    let mut out = template.to_owned();
    if let Some(map) = vars.as_object() {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            out = out.replace(&format!("{{{{{k}}}}}"), &text);
        }
    }
    out
}

/// A structured answer that is not JSON, or does not match the schema asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedAnswer(String);

/// Parses a model's JSON answer (tolerating a Markdown code fence) and validates it.
pub fn parse_json(text: &str, schema: &Value) -> std::result::Result<Value, MalformedAnswer> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```"))
        .unwrap_or(t)
        .trim();
    let value: Value = serde_json::from_str(t)
        .map_err(|e| MalformedAnswer(format!("the answer is not JSON ({e})")))?;
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| MalformedAnswer(format!("bad schema: {e}")))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(MalformedAnswer(format!(
            "the JSON answer does not match the schema: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn offline_only_when_no_key_and_no_base_url_and_keys_never_print() {
        figment::Jail::expect_with(|jail| {
            let cfg = Settings::defaults().llm;
            assert!(matches!(Provider::from_env(&cfg), Ok(Provider::Offline)));
            jail.set_env("OPENROUTER_API_KEY", "sk-or-secret");
            let p = Provider::from_env(&cfg).unwrap();
            assert!(
                matches!(&p, Provider::Remote { base_url, .. } if base_url.contains("openrouter.ai"))
            );
            assert!(!format!("{p:?}").contains("sk-or-secret"), "{p:?}");
            jail.set_env("OPENROUTER_API_KEY", "");
            jail.set_env("COPYDESK_LLM_BASE_URL", "http://127.0.0.1:11434/v1");
            assert!(matches!(
                Provider::from_env(&cfg),
                Ok(Provider::Remote { api_key: None, .. })
            ));
            let mut forced = cfg.clone();
            forced.provider = "offline".into();
            assert!(matches!(Provider::from_env(&forced), Ok(Provider::Offline)));
            Ok(())
        });
    }

    #[test]
    fn render_fills_placeholders() {
        let t = "Write about {{topic}} for {{channel}}. Voice: {{voice}}";
        let out = render(
            t,
            &serde_json::json!({"topic": "linen", "channel": "x", "voice": {"tone": ["warm"]}}),
        );
        assert!(out.starts_with("Write about linen for x. Voice: {"));
        assert!(out.contains("warm"));
    }

    #[test]
    fn json_answers_in_a_code_fence_are_accepted_and_checked() {
        let schema = serde_json::json!({"type": "object", "required": ["overall"]});
        assert!(parse_json("```json\n{\"overall\": 80}\n```", &schema).is_ok());
        let err = parse_json("{\"score\": 80}", &schema).unwrap_err();
        assert!(err.to_string().contains("overall"), "{err}");
    }
}
