//! Settings: `config/default.toml` (compiled in, so it is the single list of defaults),
//! then the file named by `COPYDESK_CONFIG`, then `COPYDESK__<SECTION>__<KEY>` variables.
//!
//! Secrets are never read from files: they come from the environment only, at the place
//! that needs them.

use std::{collections::BTreeMap, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Serialize};

pub use copydesk_queue::config::{QueueConfig, RetrySettings, WorkerSettings};

/// The defaults, exactly as documented in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every setting of copydesk.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub worker: WorkerSettings,
    pub retry: RetrySettings,
    pub cleanup: CleanupSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub llm: LlmSettings,
    pub fetch: FetchSettings,
    pub pipeline: PipelineSettings,
    pub publish: PublishSettings,
    pub catalog: CatalogSettings,
    pub limits: LimitSettings,
    pub notifications: NotificationSettings,
    pub files: FileSettings,
    pub alerts: AlertSettings,
}

/// A duration that is not one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration: a whole number and s, m, h or d, like 90d or 12h")]
    NotADuration(String),
    #[error("{0:?}: a duration must be longer than zero")]
    Zero(String),
    #[error("{0:?}: a duration may be at most 36500d (a hundred years)")]
    TooLong(String),
}

/// The longest duration [`parse_duration`] takes: a hundred years (a token or a link
/// that lasts longer is one that lasts forever; Postgres's timestamps end in 294276).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// Parses a duration: a whole number with `s`, `m`, `h` or `d` (`90d`, `12h`, `30m`),
/// as every command and the API take them. The error names what is wrong.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let bad = || DurationError::NotADuration(s.to_owned());
    let t = s.trim();
    let unit = t.chars().last().ok_or_else(bad)?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(DurationError::Zero(s.to_owned()));
    }
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| DurationError::TooLong(s.to_owned()))
}

/// `[limits]`: rate limits on model servers and platforms, shared by every process
/// through the `limits` table. `keys` are the defaults; `copydesk limits set` overrides
/// one key in the database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub slot_lease_secs: u64,
    pub throttle_pause_secs: u64,
    pub keys: BTreeMap<String, LimitSpec>,
}

impl Default for LimitSettings {
    /// No default limits; throttled answers still pause their key.
    fn default() -> Self {
        Self {
            slot_lease_secs: 180,
            throttle_pause_secs: 30,
            keys: BTreeMap::new(),
        }
    }
}

/// One key's limit: any of requests per window, tokens per minute, calls at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    pub requests: Option<u32>,
    /// The window of `requests`: a whole number and s, m, h or d.
    #[serde(default, with = "opt_duration")]
    pub per: Option<std::time::Duration>,
    pub tokens_per_minute: Option<u32>,
    pub concurrency: Option<u32>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `[publish]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSettings {
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    pub shopify_api_version: String,
    pub linkedin_version: String,
    pub facebook_graph_version: String,
    pub reconcile_recent_posts: u32,
    pub facebook_min_schedule_minutes: i64,
    pub token_expiry_warning_days: u32,
    pub duplicate_window_days: u32,
    pub token_refresh_schedule: String,
    pub token_refresh_ahead_minutes: u32,
}

/// `[catalog]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    pub url: String,
    pub auth_header: String,
    pub auth_prefix: String,
    pub page_param: String,
    pub per_page_param: String,
    pub per_page: u32,
    pub max_pages: u32,
    pub items_field: String,
    pub ttl_hours: i64,
    pub schedule: String,
    pub enabled: bool,
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    pub approve_brand_voice: bool,
    pub approve_drafts: bool,
    pub pass_score: i64,
    pub max_iterations: i64,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub home: PathBuf,
    pub listen_url: String,
    pub pooler: Pooler,
}

/// `[database] pooler`: what stands between copydesk and Postgres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// The server itself, or a pooler in session mode: each connection is a session.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`, Supavisor's
    /// transaction port): every statement unnamed and in a transaction.
    Transaction,
}

impl DatabaseSettings {
    /// Where a worker's LISTEN connection goes: `None` (empty `listen_url`) is through
    /// the pool. An unreadable URL is an error naming the setting, never echoing the
    /// URL (it may hold a password).
    pub fn listen_options(&self) -> anyhow::Result<Option<sqlx::postgres::PgConnectOptions>> {
        let url = self.listen_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        url.parse::<sqlx::postgres::PgConnectOptions>()
            .map(|o| Some(o.application_name("copydesk-listen")))
            .map_err(|e| anyhow::anyhow!("[database] listen_url is not a Postgres URL ({e})"))
    }
}

/// `[cleanup]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupSettings {
    pub schedule: String,
    pub enabled: bool,
    pub done_retention_days: i32,
    pub failed_retention_days: i32,
    pub cancelled_retention_days: i32,
    pub archive_idle_projects_days: i32,
    pub batch_size: i64,
    pub approval_reminder_hours: u32,
    /// Days a lifecycle event is kept once none of its deliveries is pending.
    pub event_retention_days: i32,
}

/// `[files]`: where files' bytes live, and what is taken.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub store: FileStoreKind,
    /// The local folder; empty: `files` under COPYDESK_HOME.
    pub local_dir: String,
    pub s3: S3Settings,
    /// The largest file taken, in bytes.
    pub max_bytes: u64,
    /// The content types taken (as sniffed from the bytes, not from the name).
    pub allowed_types: Vec<String>,
}

/// Where files' bytes live.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileStoreKind {
    Local,
    S3,
}

/// `[files.s3]`: any S3-compatible store. The keys are read from `AWS_ACCESS_KEY_ID`
/// and `AWS_SECRET_ACCESS_KEY` (and the rest of the AWS_* variables), never from a file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    /// Empty: AWS itself; else the store's URL (`http://127.0.0.1:9000`).
    pub endpoint: String,
    pub region: String,
    /// Plain `http://` endpoints are refused unless this is true.
    pub allow_http: bool,
    /// Keys are made under this prefix (`copydesk/`); empty: none.
    pub prefix: String,
}

impl Settings {
    /// The folder copydesk keeps its own state in: `COPYDESK_HOME`, else
    /// `[database] home`.
    pub fn home(&self) -> PathBuf {
        std::env::var_os("COPYDESK_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.database.home.clone())
    }
}

/// `[alerts]`: what workers watch and tell people about, beyond single jobs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Seconds a kind's oldest ready job may wait before the queue is stalled
    /// (`queue_stalled`); 0: never said.
    pub stall_after_secs: u64,
    /// Seconds a transaction, prepared transaction or replication slot may hold the
    /// database's horizon before it is told (`horizon_held`); 0: never said.
    pub xmin_held_after_secs: u64,
    /// Seconds between two looks (each worker process looks).
    pub check_every_secs: u64,
}

/// `[notifications]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    pub email: EmailSettings,
}

/// How email reaches its SMTP server.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// A plain connection upgraded with STARTTLS; refused when the server does not offer
    /// it (the submission port, 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on the same machine.
    None,
}

/// `[notifications.email]`: the SMTP server email channels send through. The login is
/// read from `COPYDESK_SMTP_USERNAME` and `COPYDESK_SMTP_PASSWORD`, never from a file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Empty: no SMTP server (email channels cannot be added).
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    /// The sender, `Name <address>` or an address.
    pub from: String,
    /// A PEM file of extra certificate authorities to trust (a private CA) besides the
    /// system's; empty: the system's alone.
    pub ca_file: String,
    pub timeout_secs: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: String,
    /// Where `copydesk serve` listens when `--http` is not given.
    pub serve: String,
    /// The absolute URL people reach the server at (review links are printed on it);
    /// empty: `http://` and the address `serve` listens on.
    pub public_url: String,
    /// The largest request body the API reads.
    pub max_body_bytes: usize,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub filter: String,
    pub format: String,
    /// Where to export traces over OTLP/HTTP (a base URL, as
    /// OTEL_EXPORTER_OTLP_ENDPOINT); empty: the OTEL_* variables decide.
    #[serde(default)]
    pub otlp_endpoint: String,
}

/// `[llm]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSettings {
    pub provider: String,
    pub base_url: String,
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_call_attempts: u32,
    pub max_retry_wait_secs: u64,
    pub app_url: String,
    pub app_title: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// How structured answers are asked for: `auto` negotiates per server and model.
    pub structured_mode: ModeSetting,
    /// Pins per agent id or model server (`host` or `host:port` of the base URL).
    #[serde(default)]
    pub structured_modes: BTreeMap<String, ModeSetting>,
    /// Which family of model server the base URL is (how it takes a structured
    /// answer): `auto` finds it from what the server says about itself.
    #[serde(default)]
    pub dialect: DialectSetting,
    /// Pins of the dialect per agent id or model server, as `structured_modes`.
    #[serde(default)]
    pub dialects: BTreeMap<String, DialectSetting>,
    /// Seconds a learned step-down is trusted before the stronger mode is tried again.
    pub mode_retry_after_secs: u64,
    /// Consecutive failures after which a model is skipped by every job for a while.
    pub model_failures_before_cooldown: u32,
    /// Seconds a failing model is skipped.
    pub model_cooldown_secs: u64,
    /// Fraction of a project's budget at which copydesk warns (spent + reserved).
    pub budget_soft_limit: f64,
}

copydesk_queue::text_enum! {
    /// `[llm] dialect`: find it (`auto`), or pin one of the dialects `llm::dialect`
    /// knows (each word here is one of them).
    #[derive(Default)]
    pub enum DialectSetting("model server dialect") {
        #[default]
        Auto = "auto",
        OpenAi = "openai",
        OpenRouter = "openrouter",
        LlamaServer = "llama_server",
        LlamaCppPython = "llama_cpp_python",
        Vllm = "vllm",
        Ollama = "ollama",
        LmStudio = "lm_studio",
        Tgi = "tgi",
        Generic = "generic",
    }
}

copydesk_queue::text_enum! {
    /// `[llm] structured_mode`: negotiate (`auto`), or always use one mode.
    pub enum ModeSetting("structured mode") {
        Auto = "auto",
        Native = "native",
        JsonSchema = "json_schema",
        JsonObject = "json_object",
        Prompt = "prompt",
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt: f64,
    pub completion: f64,
    /// Prompt tokens the provider served from its cache (`prompt` when absent).
    #[serde(default)]
    pub cached_prompt: Option<f64>,
}

/// `[fetch]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSettings {
    pub allow_loopback: bool,
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    pub max_bytes: usize,
    pub max_redirects: usize,
}

/// A configuration that could not be read; says which file or variable and why.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Settings {
    /// The sections the queue engine is configured by.
    pub fn queue(&self) -> QueueConfig {
        QueueConfig {
            worker: self.worker.clone(),
            retry: self.retry.clone(),
        }
    }

    /// Reads the settings from the defaults, `COPYDESK_CONFIG` and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("COPYDESK_CONFIG").map(PathBuf::from);
        Self::figment(file.as_deref())
            .extract()
            .map_err(|e| Box::new(e).into())
    }

    /// The layered sources, exposed so tests can add their own on top.
    pub fn figment(file: Option<&std::path::Path>) -> Figment {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig.merge(Env::prefixed("COPYDESK__").split("__"))
    }

    /// The defaults alone, without reading any file or variable.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid")
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_people_write_them_and_bounded() {
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(parse_duration(" 12h ").unwrap().as_secs(), 12 * 3600);
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("0m"), Err(DurationError::Zero("0m".into())));
        assert_eq!(
            parse_duration("36501d"),
            Err(DurationError::TooLong("36501d".into()))
        );
        // Past u64 seconds, and past Postgres's intervals: too long, not a 500.
        assert_eq!(
            parse_duration("999999999999999999d"),
            Err(DurationError::TooLong("999999999999999999d".into()))
        );
        assert!(matches!(
            parse_duration("12"),
            Err(DurationError::NotADuration(_))
        ));
    }

    #[test]
    fn default_toml_lists_exactly_the_settings() {
        // deny_unknown_fields makes a stray key fail; a missing key fails extraction.
        let s = Settings::defaults();
        assert_eq!(s.worker.concurrency_for("noop"), 64);
        assert_eq!(s.worker.concurrency_for("unlisted"), s.worker.concurrency);
    }

    #[test]
    fn environment_overrides_a_nested_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("COPYDESK__WORKER__CONCURRENCY", "32");
            jail.set_env("COPYDESK__WORKER__KINDS__CLEANUP", "3");
            let s: Settings = Settings::figment(None).extract()?;
            assert_eq!(s.worker.concurrency, 32);
            assert_eq!(s.worker.concurrency_for("cleanup"), 3);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_a_file_is_refused_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[worker]\nconcurency = 3\n")?;
            let err = Settings::figment(Some(std::path::Path::new("c.toml")))
                .extract::<Settings>()
                .unwrap_err();
            assert!(err.to_string().contains("concurency"), "{err}");
            Ok(())
        });
    }
}
