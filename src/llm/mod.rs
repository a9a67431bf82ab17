//! Model calls: one OpenAI-compatible chat-completions client (OpenRouter by default;
//! OpenAI, Ollama, vLLM, llama.cpp, LM Studio by base URL) and the deterministic
//! `offline` provider.
//!
//! A call reads its agent's config at call time and goes through the agent's model and
//! then its fallbacks (`agent_model_configs.fallback_model_ids`), skipping models that
//! every job has seen fail lately. A structured call asks in the strongest mode the
//! server accepts for the model (`json_schema`, `json_object`, `prompt`), stepping down
//! at once when the server refuses the mode or ignores it, and remembering what worked
//! for every process. Its answer is repaired (`repair.rs`) and validated; an answer that
//! is still wrong is asked again once with the problem shown to the model. Every request
//! first reserves its worst-case cost against the project's budget (`store::budgets`) and
//! ends with a `runs` row (model, mode, tokens, cost and where it came from, notes) that
//! settles the reservation, in its own transaction, so cost is never lost even when the
//! job later fails. Every answer is also kept as a step of the job (`copydesk_queue::
//! steps`) before its `runs` row: a later run of the job making the same request gets
//! it back with no request, no reservation, no limit taken and no `runs` row. Errors are
//! this layer's own ([`Error`]); handlers map them to job errors.

use tracing::Instrument;

mod accounting;
pub mod dialect;
mod memory;
pub mod offline;
pub mod openai;
mod probe;
pub mod repair;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::db::Db;
use copydesk_queue::{RequestHash, Steps};
use serde_json::Value;
use uuid::Uuid;

pub use crate::store::agents::AgentConfig;
use crate::{
    config::{DialectSetting, LimitSettings, LlmSettings, ModeSetting},
    domain::{CostSource, Dialect, StructuredMode},
    store::{self, budgets::Reservation, limits::Taken, runs::NewRun},
};
use dialect::Identified;
use memory::Memory;
use openai::{Completion, Failure, RepairTurn};
pub use probe::{Probe, Tried};

/// The provider label written to `runs` and shown in output for offline calls.
pub const OFFLINE: &str = "offline";

/// Why a model call was not made or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider is not configured the way `[llm] provider` asks.
    #[error("{0}")]
    Config(String),
    #[error("agent {0:?} has no row in agent_model_configs")]
    UnknownAgent(String),
    #[error(
        "project {project} has spent ${spent:.4} (and reserved ${reserved:.4}) of its ${budget:.2} budget: \
         no call of {agent} (worst case ${cost:.4}) is made"
    )]
    OverBudget {
        project: Uuid,
        agent: String,
        spent: f64,
        reserved: f64,
        budget: f64,
        cost: f64,
    },
    /// Every try failed; `retryable` says whether a later attempt could succeed.
    #[error("{agent} call failed: {message}")]
    Failed {
        agent: String,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    /// A rate limit (`store::limits`) has no capacity for this call yet: nothing was
    /// sent. Not a failure: the job waits `after` without spending an attempt.
    #[error("waiting for limit {key}")]
    Wait { key: String, after: Duration },
    #[error("{doing}: {source}")]
    Store {
        doing: String,
        #[source]
        source: store::Error,
    },
    /// The job's steps could not be read: the call is not made blind, since it may
    /// already have been paid for.
    #[error("reading the job's steps: {0}")]
    Steps(#[from] copydesk_queue::Error),
}

impl Error {
    /// Whether trying the call again later could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Failed { retryable, .. } => *retryable,
            Self::Store { .. } | Self::Steps(_) | Self::Wait { .. } => true,
            Self::Config(_) | Self::UnknownAgent(_) | Self::OverBudget { .. } => false,
        }
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Failed { retry_after, .. } => *retry_after,
            Self::Wait { after, .. } => Some(*after),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
        let key = key_from_env();
        let base = base_url_from_env();
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
    /// Ask for JSON matching this schema (name, schema), repair and validate it.
    pub schema: Option<(String, Value)>,
    /// The structured inputs the prompts were made from; the offline provider writes
    /// its text from them (remote providers never see them).
    pub hints: Value,
}

/// A model's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    pub text: String,
    /// The parsed, repaired and validated JSON, when the call asked for a schema.
    pub json: Option<Value>,
    pub provider: String,
    /// The model that answered (a fallback when the agent's own model was down).
    pub model: String,
    /// How the structured answer was asked for.
    pub mode: Option<StructuredMode>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub cost_usd: f64,
    /// What was mended in the answer, or how it came about (a fallback).
    pub notes: Vec<String>,
}

/// Which job a call is made for: its runs rows and budget hang off this.
#[derive(Debug, Clone)]
pub struct Scope {
    pub pool: Db,
    pub job_id: Uuid,
    pub attempt: i32,
    /// Whose call it is: the tenant's own agent settings win over the global ones.
    pub tenant_id: Uuid,
    pub project_id: Option<Uuid>,
}

impl Scope {
    /// The job's steps: every answer a request gets is kept there, so a later run of
    /// the job (after a wait, a retry, a crash) gets it back instead of paying again.
    pub fn steps(&self) -> Steps {
        Steps::new(self.pool.clone(), self.job_id, self.attempt)
    }
}

/// The model client of a worker process.
#[derive(Debug, Clone)]
pub struct Llm {
    pub provider: Provider,
    pub cfg: LlmSettings,
    /// The rate limits calls take from (`store::limits`).
    pub limits: LimitSettings,
    http: reqwest::Client,
    memory: Arc<Memory>,
    /// The dialect each base URL was found to speak, by this process.
    dialects: Arc<std::sync::Mutex<HashMap<String, Identified>>>,
    /// Held while a server is asked what it is: calls starting together ask once.
    asking: Arc<tokio::sync::Mutex<()>>,
}

/// One request's outcome, as the runs row records it.
struct Try<'a> {
    model: &'a str,
    /// The answer is an earlier run's, kept as a step: no request was made now, so it
    /// writes no runs row, settles nothing and says nothing of the model's health.
    replayed: bool,
    mode: Option<StructuredMode>,
    /// The dialect the request was shaped for.
    dialect: Dialect,
    /// The mode was negotiated (not pinned): what works is worth remembering.
    negotiated: bool,
    started: Instant,
    reservation: Option<Reservation>,
}

impl<'a> Try<'a> {
    /// An earlier run's answer to the same request, kept as a step.
    fn replayed(
        model: &'a str,
        mode: Option<StructuredMode>,
        dialect: Dialect,
        negotiated: bool,
    ) -> Self {
        Self {
            model,
            replayed: true,
            mode,
            dialect,
            negotiated,
            started: Instant::now(),
            reservation: None,
        }
    }
}

/// A request sent (its try and what came back), or the rate limit's wait.
enum Paid<'a> {
    Sent(Try<'a>, std::result::Result<Completion, Failure>),
    Wait(String, Duration),
}

/// What a failure's handling needs to know of the model being tried.
struct HopState<'a> {
    model: &'a str,
    has_next: bool,
    pinned: Option<StructuredMode>,
    keys: &'a [String],
    cap: Duration,
}

/// How a call goes on after a request.
enum Next {
    /// Ask again (same model): a repair turn, a step-down, or after a wait.
    Again,
    /// Go to the next model of the chain.
    NextModel,
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
            limits: LimitSettings::default(),
            http,
            memory: Arc::default(),
            dialects: Arc::default(),
            asking: Arc::default(),
        }
    }

    /// Calls take from these limits' defaults (none by default: only a throttled
    /// answer's pause, and operators' overrides in the `limits` table, apply).
    pub fn with_limits(mut self, limits: LimitSettings) -> Self {
        self.limits = limits;
        self
    }

    /// Makes one model call for `scope`'s job: agent config, budget reservations, the
    /// model chain, mode negotiation, repair, a `runs` row per request.
    pub async fn call(&self, scope: &Scope, call: &Call) -> Result<Reply> {
        let agent = store::agents::get(&scope.pool, &call.agent, Some(scope.tenant_id))
            .await
            .map_err(|source| Error::Store {
                doing: "reading agent_model_configs".into(),
                source,
            })?
            .ok_or_else(|| Error::UnknownAgent(call.agent.clone()))?;
        match &self.provider {
            Provider::Offline => self.offline(scope, call, &agent).await,
            Provider::Remote { base_url, api_key } => {
                self.remote(scope, call, &agent, base_url, api_key.as_ref())
                    .await
            }
        }
    }

    /// The offline provider's answer, as a step like a remote one (it costs nothing,
    /// but a job's page says the same of it: called once, then replayed).
    async fn offline(&self, scope: &Scope, call: &Call, agent: &AgentConfig) -> Result<Reply> {
        let request = (
            OFFLINE,
            &agent.model_id,
            &call.system,
            &call.user,
            &call.schema,
            &call.hints,
        );
        Ok(scope
            .steps()
            .run(&call.agent, &request, || {
                self.offline_reply(scope, call, agent)
            })
            .await?
            .output)
    }

    async fn offline_reply(
        &self,
        scope: &Scope,
        call: &Call,
        agent: &AgentConfig,
    ) -> Result<Reply> {
        let started = Instant::now();
        let reservation = self.reserve(scope, agent, 0.0).await?;
        let reply = offline::reply(agent, call);
        let run = NewRun {
            job_id: Some(scope.job_id),
            project_id: scope.project_id,
            attempt: scope.attempt,
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            duration_ms: started.elapsed().as_millis() as i32,
            ..NewRun::call(&call.agent, OFFLINE, OFFLINE)
        };
        self.settle(scope, reservation, &run).await?;
        Ok(reply)
    }

    async fn remote(
        &self,
        scope: &Scope,
        call: &Call,
        agent: &AgentConfig,
        base_url: &str,
        key: Option<&Secret>,
    ) -> Result<Reply> {
        let (chain, skipped) = self.chain(scope, agent, base_url).await?;
        let attempts = self.cfg.max_call_attempts.max(1);
        let cap = Duration::from_secs(self.cfg.max_retry_wait_secs);
        let mut last = String::new();
        let mut last_wait = None;
        // The shortest wait for a rate limit among the models that had no capacity.
        let mut waiting: Option<(String, Duration)> = None;
        let steps = scope.steps();
        // How many answers each request body has had in this call: the same body asked
        // again (a cut-off answer, a retry after a bad one) is another step.
        let mut asked: HashMap<RequestHash, u32> = HashMap::new();
        let mut speaks = self.dialect(scope, agent, base_url, key).await;
        for (hop, model) in chain.iter().enumerate() {
            let keys = store::limits::llm_keys(base_url, model);
            let has_next = hop + 1 < chain.len();
            let pinned = self.pinned(agent, base_url);
            let mut mode = self
                .first_mode(scope, call, base_url, model, pinned, speaks.dialect)
                .await;
            let mut tries = 0;
            let mut repair: Option<RepairTurn> = None;
            let mut notes: Vec<String> = Vec::new();
            if hop > 0 {
                notes.push(format!("fallback from {}", chain[hop - 1]));
            } else if !skipped.is_empty() {
                notes.push(format!("skipped {} (cooling down)", skipped.join(", ")));
            }
            loop {
                // Each request is a step of the job: the answer an earlier run got for
                // this very request (its body, its server, and how many answers the same
                // body had already had in this call) comes back without asking again.
                let request =
                    openai::request_body(speaks.dialect, agent, model, call, mode, repair.as_ref());
                let same = RequestHash::of(&(base_url, &request));
                let step = same.nth(*asked.get(&same).unwrap_or(&0));
                let name = step_name(call, hop, repair.is_some());
                let recalled = steps.recall::<Completion>(&name, step).await?;
                let (t, sent) = match recalled {
                    Some(c) => (
                        Try::replayed(model, mode, speaks.dialect, pinned.is_none()),
                        Ok(c),
                    ),
                    None => match self
                        .paid_call(
                            scope,
                            call,
                            agent,
                            (base_url, key),
                            model,
                            (mode, speaks.dialect),
                            pinned,
                            repair.as_ref(),
                            (&request, &keys, &name, step),
                        )
                        .await?
                    {
                        Paid::Sent(t, sent) => (t, sent),
                        Paid::Wait(key, after) => {
                            if waiting.as_ref().is_none_or(|(_, w)| after < *w) {
                                waiting = Some((key, after));
                            }
                            break;
                        }
                    },
                };
                if sent.is_ok() {
                    *asked.entry(same).or_default() += 1;
                }
                let outcome = match sent {
                    Ok(c) => match self
                        .answered(scope, call, base_url, &t, c, repair.is_some(), &mut notes)
                        .await?
                    {
                        Ok(reply) => return Ok(reply),
                        Err(problem) => Err(problem),
                    },
                    Err(f) => Ok(f),
                };
                let next = match outcome {
                    // The answer could not be used: ask again.
                    Err(u) => {
                        self.after_unusable(
                            scope,
                            call,
                            agent,
                            (base_url, model, pinned, speaks.dialect),
                            u,
                            (&mut mode, &mut tries, &mut repair),
                            &mut notes,
                            &mut last,
                        )
                        .await;
                        Next::Again
                    }
                    // The request failed.
                    Ok(f) => {
                        self.failed(scope, call, &t, &f, &notes).await?;
                        last = f.message().to_owned();
                        let hop = HopState {
                            model,
                            has_next,
                            pinned,
                            keys: &keys,
                            cap,
                        };
                        self.after_failure(
                            scope,
                            call,
                            base_url,
                            &hop,
                            f,
                            (&mut mode, &mut speaks),
                            &mut tries,
                            &mut notes,
                            &mut last_wait,
                            &mut waiting,
                            &last,
                        )
                        .await?
                    }
                };
                match next {
                    Next::NextModel => break,
                    // This model's tries are used up: the next one, or give up.
                    Next::Again if tries >= attempts && has_next => break,
                    Next::Again if tries >= attempts => {
                        return Err(self.give_up(call, &last, last_wait));
                    }
                    Next::Again => {}
                }
            }
        }
        if let Some((key, after)) = waiting {
            return Err(Error::Wait { key, after });
        }
        Err(self.give_up(call, &last, last_wait))
    }

    /// A request no earlier run of the job has the answer to: capacity from the rate
    /// limits (none: the wait), the budget reserved, the request sent, the limits told
    /// what it used, and its answer kept as a step before anything else is written.
    #[allow(clippy::too_many_arguments)]
    async fn paid_call<'m>(
        &self,
        scope: &Scope,
        call: &Call,
        agent: &AgentConfig,
        (base_url, key): (&str, Option<&Secret>),
        model: &'m str,
        (mode, dialect): (Option<StructuredMode>, Dialect),
        pinned: Option<StructuredMode>,
        repair: Option<&RepairTurn>,
        (request, keys, name, step): (&Value, &[String], &str, RequestHash),
    ) -> Result<Paid<'m>> {
        let tokens = tokens_needed(call, agent, repair);
        let slots = match store::limits::take(
            &scope.pool,
            &self.limits,
            keys,
            tokens,
            Some(scope.job_id),
        )
        .await
        .map_err(|source| Error::Store {
            doing: "taking from the rate limits".into(),
            source,
        })? {
            Taken::Granted(slots) => slots,
            Taken::Wait { key, after } => {
                tracing::debug!(%key, after_ms = after.as_millis() as u64, %model, "rate limit: no capacity");
                return Ok(Paid::Wait(key, after));
            }
        };
        let estimate = self.worst_case(model, call, agent, repair);
        let reservation = match self.reserve(scope, agent, estimate).await {
            Ok(r) => r,
            Err(e) => {
                self.release(scope, &slots).await;
                return Err(e);
            }
        };
        let t = Try {
            model,
            replayed: false,
            mode,
            dialect,
            negotiated: pinned.is_none(),
            started: Instant::now(),
            reservation,
        };
        let host = url::Url::parse(base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        let span = crate::telemetry::model_span(
            dialect.as_str(),
            host.as_deref(),
            model,
            mode.map(|m| m.as_str()),
        );
        let sent = openai::send(
            &self.http,
            &self.cfg,
            base_url,
            key,
            request,
            mode.is_some(),
        )
        .instrument(span.clone())
        .await;
        match &sent {
            Ok(c) => {
                let (cost, _) = self.cost(&c.usage, [c.model.as_deref().unwrap_or(model), model]);
                crate::telemetry::model_answered(
                    &span,
                    c.model.as_deref(),
                    &c.finish_reason,
                    &crate::telemetry::ModelUsage {
                        input_tokens: c.usage.prompt_tokens,
                        output_tokens: c.usage.completion_tokens,
                        cache_read_tokens: c.usage.cached_tokens,
                        reasoning_tokens: c.usage.reasoning_tokens,
                        cost_usd: cost,
                    },
                );
            }
            Err(f) => crate::telemetry::span_failed(
                &span,
                match f {
                    Failure::ModeRefused(_) => "mode_refused",
                    Failure::Unavailable { .. } => "unavailable",
                    Failure::Throttled { .. } => "throttled",
                    Failure::Refused(_) => "refused",
                    Failure::Malformed { .. } => "malformed",
                },
            ),
        }
        // What the server says the call used, when it says (a throttled or
        // failed request leaves the estimate standing).
        let used = match &sent {
            Ok(c) => Some(&c.usage),
            Err(Failure::Malformed { usage, .. }) => Some(usage),
            Err(_) => None,
        }
        .map(|u| u.prompt_tokens.max(0) as u32 + u.completion_tokens.max(0) as u32)
        .filter(|n| *n > 0);
        self.end_call(scope, keys, &slots, tokens, used).await;
        if let Ok(c) = &sent {
            // Kept before anything else is written: from here on no run
            // of this job pays for this request again.
            scope.steps().record_or_warn(name, step, c).await;
        }
        Ok(Paid::Sent(t, sent))
    }

    /// The structured mode a model is first asked in: none without a schema, the pinned
    /// one, or the one this server and model last answered in (the dialect's strongest
    /// when there is none).
    async fn first_mode(
        &self,
        scope: &Scope,
        call: &Call,
        base_url: &str,
        model: &str,
        pinned: Option<StructuredMode>,
        dialect: Dialect,
    ) -> Option<StructuredMode> {
        match (&call.schema, pinned) {
            (None, _) => None,
            (Some(_), Some(m)) => Some(m),
            (Some(_), None) => Some(self.learned_mode(scope, base_url, model, dialect).await),
        }
    }

    /// The dialect `base_url` speaks: pinned for the agent or the server (or globally),
    /// else what this process found, what another process found (`llm_modes`), or what
    /// the server says about itself now.
    async fn dialect(
        &self,
        scope: &Scope,
        agent: &AgentConfig,
        base_url: &str,
        key: Option<&Secret>,
    ) -> Identified {
        let host = host_of(base_url);
        let setting = self
            .cfg
            .dialects
            .get(&agent.agent_id)
            .or_else(|| host.as_ref().and_then(|h| self.cfg.dialects.get(h)))
            .copied()
            .unwrap_or(self.cfg.dialect);
        if setting != DialectSetting::Auto {
            let dialect = setting
                .as_str()
                .parse()
                .expect("every dialect setting but auto names a dialect");
            return Identified::pinned(dialect);
        }
        let known = || {
            self.dialects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(base_url)
                .cloned()
        };
        if let Some(found) = known() {
            return found;
        }
        let _asking = self.asking.lock().await;
        if let Some(found) = known() {
            return found;
        }
        let found = match store::models::dialect(&scope.pool, base_url).await {
            Ok(Some(d)) => Identified::new(d, "found earlier (llm_modes)"),
            _ => dialect::identify(&self.ask_what_it_is(base_url, key).await),
        };
        tracing::info!(base_url, dialect = %found.dialect, why = %found.why, "model server dialect");
        self.found(base_url, found.clone());
        found
    }

    /// What the server at `base_url` says about itself, each question given the connect
    /// timeout (at most 5 s: a server that does not answer is `generic`).
    async fn ask_what_it_is(&self, base_url: &str, key: Option<&Secret>) -> dialect::Evidence {
        let wait = Duration::from_secs(self.cfg.connect_timeout_secs.clamp(1, 5));
        dialect::gather(&self.http, base_url, key, wait).await
    }

    /// Keeps what was found of `base_url` for this process's next calls.
    fn found(&self, base_url: &str, found: Identified) {
        self.dialects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base_url.to_owned(), found);
    }

    /// An answer that could not be used, and how the next request differs: a weaker
    /// structured mode, a repair turn (once), or another try.
    #[allow(clippy::too_many_arguments)]
    async fn after_unusable(
        &self,
        scope: &Scope,
        call: &Call,
        agent: &AgentConfig,
        (base_url, model, pinned, dialect): (&str, &str, Option<StructuredMode>, Dialect),
        u: Unanswered,
        (mode, tries, repair): (
            &mut Option<StructuredMode>,
            &mut u32,
            &mut Option<RepairTurn>,
        ),
        notes: &mut Vec<String>,
        last: &mut String,
    ) {
        match u {
            Unanswered::IgnoredMode(text) => {
                let weaker = mode.and_then(StructuredMode::weaker);
                match (weaker, pinned) {
                    (Some(w), None) => {
                        self.step_down(scope, base_url, model, w, dialect).await;
                        notes.push(format!(
                            "{} ignored {}: stepped down to {w}",
                            model,
                            mode.map(|m| m.as_str()).unwrap_or_default()
                        ));
                        *mode = Some(w);
                    }
                    _ => {
                        *tries += 1;
                        *last = format!("the answer holds no JSON object: {}", clip(&text));
                        *repair = None;
                    }
                }
            }
            Unanswered::Unusable { answer, problem } => {
                if repair.is_none() {
                    *repair = Some(RepairTurn {
                        answer,
                        problem: problem.clone(),
                    });
                    notes.push(format!("asked again once: {problem}"));
                } else {
                    *tries += 1;
                    *repair = None;
                }
                *last = format!("malformed {} answer: {problem}", schema_name(call));
            }
            Unanswered::CutOff => {
                *tries += 1;
                *last = format!(
                    "the answer was cut off at max_tokens ({})",
                    agent.max_tokens
                );
            }
        }
    }

    /// What a failed request means for the call: a weaker structured mode, the next
    /// model, a pause and another try, a wait for the rate limit, or the end.
    #[allow(clippy::too_many_arguments)]
    async fn after_failure(
        &self,
        scope: &Scope,
        call: &Call,
        base_url: &str,
        hop: &HopState<'_>,
        f: Failure,
        (mode, speaks): (&mut Option<StructuredMode>, &mut Identified),
        tries: &mut u32,
        notes: &mut Vec<String>,
        last_wait: &mut Option<Duration>,
        waiting: &mut Option<(String, Duration)>,
        last: &str,
    ) -> Result<Next> {
        match f {
            Failure::ModeRefused(m) => {
                // Refused in the words of a family other than the one assumed: the server
                // is that family, asked its own way from now on.
                if let Some(named) = speaks.after_refusal(&m).filter(|_| hop.pinned.is_none()) {
                    let strongest = named.dialect.modes()[0];
                    notes.push(format!(
                        "{} refused {} in {}'s words: asked in {strongest}, its way",
                        hop.model,
                        mode.map(|m| m.as_str()).unwrap_or_default(),
                        named.dialect
                    ));
                    tracing::info!(base_url, dialect = %named.dialect, "the refusal names the server's family");
                    *speaks = named;
                    self.found(base_url, speaks.clone());
                    *mode = Some(strongest);
                    return Ok(Next::Again);
                }
                let weaker = mode.and_then(StructuredMode::weaker);
                match (weaker, hop.pinned) {
                    (Some(w), None) => {
                        self.step_down(scope, base_url, hop.model, w, speaks.dialect)
                            .await;
                        notes.push(format!(
                            "{} refused {}: stepped down to {w}",
                            hop.model,
                            mode.map(|m| m.as_str()).unwrap_or_default()
                        ));
                        *mode = Some(w);
                        Ok(Next::Again)
                    }
                    _ => Err(Error::Failed {
                        agent: call.agent.clone(),
                        message: format!(
                            "{m} (the {} structured mode is {}; set [llm] structured_mode or [llm.structured_modes] to one the server takes)",
                            mode.map(|m| m.as_str()).unwrap_or_default(),
                            if hop.pinned.is_some() {
                                "pinned"
                            } else {
                                "the weakest"
                            }
                        ),
                        retryable: false,
                        retry_after: None,
                    }),
                }
            }
            Failure::Refused(m) => Err(Error::Failed {
                agent: call.agent.clone(),
                message: m,
                retryable: false,
                retry_after: None,
            }),
            Failure::Unavailable { retry_after, .. } => {
                self.sick(scope, base_url, hop.model, last).await;
                *last_wait = retry_after;
                if hop.has_next {
                    Ok(Next::NextModel)
                } else {
                    *tries += 1;
                    Ok(self.pause(retry_after, *tries, hop.cap).await)
                }
            }
            Failure::Throttled { retry_after, .. } => {
                // The model's key stops for every process until the
                // server's reset; this job waits for it, or hands over.
                let pause =
                    store::limits::pause(&scope.pool, &self.limits, &hop.keys[0], retry_after)
                        .await
                        .map_err(|source| Error::Store {
                            doing: "pausing a rate limit".into(),
                            source,
                        })?;
                tracing::warn!(key = %hop.keys[0], pause_ms = pause.as_millis() as u64, "throttled: key paused");
                if waiting.as_ref().is_none_or(|(_, w)| pause < *w) {
                    *waiting = Some((hop.keys[0].clone(), pause));
                }
                // The next model, or (none left) the end of the chain: the call waits.
                Ok(Next::NextModel)
            }
            Failure::Malformed { .. } => {
                *tries += 1;
                Ok(self.pause(None, *tries, hop.cap).await)
            }
        }
    }

    fn give_up(&self, call: &Call, last: &str, retry_after: Option<Duration>) -> Error {
        Error::Failed {
            agent: call.agent.clone(),
            message: last.to_owned(),
            retryable: true,
            retry_after,
        }
    }

    /// Waits before the next try on the same model: the provider's wait, else a backoff.
    async fn pause(&self, retry_after: Option<Duration>, tries: u32, cap: Duration) -> Next {
        let wait =
            retry_after.unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(tries.min(6) - 1)));
        if tries < self.cfg.max_call_attempts.max(1) {
            tokio::time::sleep(wait.min(cap)).await;
        }
        Next::Again
    }

    /// A mode pinned for the agent or the server, or globally.
    fn pinned(&self, agent: &AgentConfig, base_url: &str) -> Option<StructuredMode> {
        let host = host_of(base_url);
        let setting = self
            .cfg
            .structured_modes
            .get(&agent.agent_id)
            .or_else(|| host.as_ref().and_then(|h| self.cfg.structured_modes.get(h)))
            .copied()
            .unwrap_or(self.cfg.structured_mode);
        match setting {
            ModeSetting::Auto => None,
            ModeSetting::Native => Some(StructuredMode::Native),
            ModeSetting::JsonSchema => Some(StructuredMode::JsonSchema),
            ModeSetting::JsonObject => Some(StructuredMode::JsonObject),
            ModeSetting::Prompt => Some(StructuredMode::Prompt),
        }
    }

    /// An answer came: repaired, validated and recorded. `Ok(Err(..))` when it cannot
    /// be used (its runs row is written all the same).
    #[allow(clippy::too_many_arguments)]
    async fn answered(
        &self,
        scope: &Scope,
        call: &Call,
        base_url: &str,
        t: &Try<'_>,
        c: Completion,
        repaired_turn: bool,
        notes: &mut Vec<String>,
    ) -> Result<std::result::Result<Reply, Unanswered>> {
        let answered_by = c.model.clone().unwrap_or_else(|| t.model.to_owned());
        let (cost, source) = self.cost(&c.usage, [answered_by.as_str(), t.model]);
        let cut_off = c.finish_reason == "length";
        let outcome: std::result::Result<Option<repair::Repaired>, Unanswered> = match &call.schema
        {
            None if cut_off => Err(Unanswered::CutOff),
            None => Ok(None),
            Some((_, schema)) => match repair::repair(&c.text, schema, cut_off) {
                Ok(r) => Ok(Some(r)),
                Err(repair::Unusable::NoJson)
                    if matches!(
                        t.mode,
                        Some(
                            StructuredMode::Native
                                | StructuredMode::JsonSchema
                                | StructuredMode::JsonObject
                        )
                    ) && !repaired_turn =>
                {
                    Err(Unanswered::IgnoredMode(c.text.clone()))
                }
                Err(e) => Err(Unanswered::Unusable {
                    answer: c.text.clone(),
                    problem: e.to_string(),
                }),
            },
        };
        let mut row_notes = notes.clone();
        if let Ok(Some(r)) = &outcome {
            row_notes.extend(r.notes.iter().map(|n| format!("repaired: {n}")));
        }
        let error = match &outcome {
            Ok(_) => None,
            Err(Unanswered::IgnoredMode(_)) => Some(format!(
                "the answer ignored response_format {}",
                t.mode.map(|m| m.as_str()).unwrap_or_default()
            )),
            Err(Unanswered::Unusable { problem, .. }) => {
                Some(format!("malformed {} answer: {problem}", schema_name(call)))
            }
            Err(Unanswered::CutOff) => Some("the answer was cut off at max_tokens".to_owned()),
        };
        if let Some(e) = &error {
            tracing::warn!(agent = %call.agent, model = t.model, mode = ?t.mode, error = %e, "model answer not usable");
        }
        let joined = (!row_notes.is_empty()).then(|| row_notes.join("; "));
        let provider = c
            .provider
            .clone()
            .unwrap_or_else(|| self.provider.label().to_owned());
        let run = NewRun {
            job_id: Some(scope.job_id),
            project_id: scope.project_id,
            attempt: scope.attempt,
            prompt_tokens: c.usage.prompt_tokens,
            completion_tokens: c.usage.completion_tokens,
            cached_tokens: c.usage.cached_tokens,
            reasoning_tokens: c.usage.reasoning_tokens,
            cost_usd: cost,
            cost_source: Some(source),
            structured_mode: t.mode,
            dialect: Some(t.dialect),
            duration_ms: t.started.elapsed().as_millis() as i32,
            error: error.as_deref(),
            notes: joined.as_deref(),
            ..NewRun::call(&call.agent, &provider, &answered_by)
        };
        if t.replayed {
            tracing::debug!(agent = %call.agent, model = t.model, "answer replayed from the job's steps: no request made");
        } else {
            self.settle(scope, t.reservation, &run).await?;
        }
        let repaired = match outcome {
            Ok(r) => r,
            Err(u) => return Ok(Err(u)),
        };
        if !t.replayed
            && let Err(e) = store::models::record_success(&scope.pool, base_url, t.model).await
        {
            tracing::warn!(error = %e, "could not record a model's success");
        }
        if let Some(mode) = t.mode
            && t.negotiated
            && !t.replayed
        {
            self.memory
                .succeeded(&scope.pool, base_url, t.model, mode, t.dialect)
                .await;
        }
        let (json, mends) = match repaired {
            Some(r) => (Some(r.value), r.notes),
            None => (None, Vec::new()),
        };
        notes.extend(mends);
        Ok(Ok(Reply {
            text: c.text,
            json,
            provider,
            model: answered_by,
            mode: t.mode,
            prompt_tokens: c.usage.prompt_tokens,
            completion_tokens: c.usage.completion_tokens,
            cost_usd: cost,
            notes: notes.clone(),
        }))
    }
}

/// The model server's key from the environment: `COPYDESK_LLM_API_KEY`, else
/// `OPENROUTER_API_KEY`.
pub fn key_from_env() -> Option<Secret> {
    ["COPYDESK_LLM_API_KEY", "OPENROUTER_API_KEY"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .map(Secret)
}

/// `COPYDESK_LLM_BASE_URL`, if set.
pub fn base_url_from_env() -> Option<String> {
    std::env::var("COPYDESK_LLM_BASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// `host` or `host:port` of a base URL: how `[llm.structured_modes]` and
/// `[llm.dialects]` name a model server.
fn host_of(base_url: &str) -> Option<String> {
    url::Url::parse(base_url).ok().and_then(|u| {
        u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
    })
}

/// An answer that came but cannot be used.
enum Unanswered {
    /// No JSON at all although a JSON mode was asked for: the server ignored the mode.
    IgnoredMode(String),
    /// JSON that is still wrong after repair (or not JSON, in prompt mode).
    Unusable { answer: String, problem: String },
    /// A text answer cut off at `max_tokens`.
    CutOff,
}

/// The tokens a call counts against a tokens-per-minute limit, as OpenAI counts them
/// at request time: the prompt estimated from its characters (four to a token) plus
/// `max_tokens`.
fn tokens_needed(call: &Call, agent: &AgentConfig, repair: Option<&RepairTurn>) -> u32 {
    let mut chars = call.system.len() + call.user.len();
    if let Some((_, schema)) = &call.schema {
        chars += schema.to_string().len();
    }
    if let Some(r) = repair {
        chars += r.answer.len() + r.problem.len();
    }
    (chars / 4) as u32 + agent.max_tokens.max(0) as u32
}

/// A request's step name: the agent, and what kind of turn it is when not the first.
fn step_name(call: &Call, hop: usize, repair: bool) -> String {
    match (hop, repair) {
        (0, false) => call.agent.clone(),
        (0, true) => format!("{} repair", call.agent),
        (h, false) => format!("{} fallback {h}", call.agent),
        (h, true) => format!("{} fallback {h} repair", call.agent),
    }
}

fn schema_name(call: &Call) -> &str {
    call.schema.as_ref().map_or("text", |(n, _)| n.as_str())
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
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
}
