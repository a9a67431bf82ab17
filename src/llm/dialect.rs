//! Model servers' dialects of structured answers: how each family of server constrains
//! its decoding to a JSON schema when asked its own way, what its `json_schema` and
//! `json_object` forms look like, and how it says what it is.
//!
//! Every fact here was read in the server's source or documentation (README.md, "Model
//! servers", gives each with its source). A small model asked for JSON with the schema
//! only in the prompt writes JSON of its own shape; the same model, its decoding held to
//! a grammar compiled from the schema, answers every required key. So a structured call
//! asks first in the server's own constrained form ([`StructuredMode::Native`]), then
//! `json_schema`, `json_object` (with the schema where the dialect takes one), and the
//! schema in the prompt, stepping down on a refusal.
//!
//! Which dialect a base URL speaks is found from what the server says about itself
//! ([`Evidence`], [`identify`]): the host, `/v1/models`' `owned_by`, the endpoints only
//! one family has (`/props`, `/version`, `/api/version`, `/info`), and the wording of a
//! refusal ([`from_refusal`]).

use std::time::Duration;

use serde_json::{Value, json};

pub use crate::domain::Dialect;
use crate::domain::StructuredMode;

impl Dialect {
    /// The modes to try, strongest first.
    pub fn modes(self) -> &'static [StructuredMode] {
        use StructuredMode::*;
        match self {
            Self::LlamaServer | Self::LlamaCppPython | Self::Vllm | Self::Tgi => {
                &[Native, JsonSchema, JsonObject, Prompt]
            }
            _ => &[JsonSchema, JsonObject, Prompt],
        }
    }

    /// Whether the schema reaches the server in `mode` (else the prompt states it).
    pub fn constrains(self, mode: StructuredMode) -> bool {
        match mode {
            StructuredMode::Native | StructuredMode::JsonSchema => true,
            StructuredMode::JsonObject => self.json_object_takes_schema(),
            StructuredMode::Prompt => false,
        }
    }

    /// Whether this dialect's `json_object` carries the schema (and constrains to it).
    fn json_object_takes_schema(self) -> bool {
        matches!(self, Self::LlamaServer | Self::LlamaCppPython | Self::Tgi)
    }

    /// How the native form is sent, in words (for `models probe`).
    pub fn native_form(self) -> Option<&'static str> {
        match self {
            Self::LlamaServer => Some("top-level \"json_schema\": <schema>"),
            Self::LlamaCppPython => {
                Some("\"response_format\": {\"type\": \"json_object\", \"schema\": <schema>}")
            }
            Self::Vllm => Some("\"structured_outputs\": {\"json\": <schema>}"),
            Self::Tgi => Some("\"response_format\": {\"type\": \"json\", \"value\": <schema>}"),
            _ => None,
        }
    }

    /// Writes into `body` the fields that ask for an answer matching `schema` (named
    /// `name`) in `mode`. Returns whether the body now constrains decoding to the schema;
    /// when it does not, the caller states the schema in the prompt.
    pub fn shape(self, body: &mut Value, mode: StructuredMode, name: &str, schema: &Value) -> bool {
        let fields = body.as_object_mut().expect("a request body is an object");
        match (mode, self) {
            (StructuredMode::Native, Self::LlamaServer) => {
                fields.insert("json_schema".into(), schema.clone());
            }
            (StructuredMode::Native, Self::LlamaCppPython)
            | (StructuredMode::JsonObject, Self::LlamaCppPython | Self::LlamaServer) => {
                fields.insert(
                    "response_format".into(),
                    json!({"type": "json_object", "schema": schema}),
                );
            }
            (StructuredMode::Native, Self::Vllm) => {
                fields.insert("structured_outputs".into(), json!({"json": schema}));
            }
            (StructuredMode::Native, Self::Tgi) | (StructuredMode::JsonObject, Self::Tgi) => {
                fields.insert(
                    "response_format".into(),
                    json!({"type": "json", "value": schema}),
                );
            }
            (StructuredMode::JsonSchema, Self::Tgi) => {
                // TGI's `json_schema` keeps its schema under `value`, not `json_schema`.
                fields.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "value": {"name": name, "schema": schema}}),
                );
            }
            (StructuredMode::Native | StructuredMode::JsonSchema, _) => {
                fields.insert(
                    "response_format".into(),
                    json!({"type": "json_schema",
                           "json_schema": {"name": name, "strict": true, "schema": schema}}),
                );
                if self == Self::OpenRouter {
                    fields.insert("provider".into(), json!({"require_parameters": true}));
                }
            }
            (StructuredMode::JsonObject, _) => {
                fields.insert("response_format".into(), json!({"type": "json_object"}));
            }
            (StructuredMode::Prompt, _) => {}
        }
        self.constrains(mode)
    }
}

/// What a server said about itself, each answer as it came (`None`: no answer, an
/// error status, or not JSON).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The base URL's host.
    pub host: String,
    /// `GET {base}/models`.
    pub models: Option<Value>,
    /// `GET {root}/props` (llama-server).
    pub props: Option<Value>,
    /// `GET {root}/version` (vLLM).
    pub version: Option<Value>,
    /// `GET {root}/api/version` (Ollama).
    pub api_version: Option<Value>,
    /// `GET {root}/info` (TGI).
    pub info: Option<Value>,
    /// The `Server` header of the `/models` answer (shown, not used to decide: the
    /// servers read here either send none or their web framework's).
    pub server_header: Option<String>,
}

/// Where the server's own endpoints live: the base URL without its `/v1`.
fn root(base_url: &str) -> &str {
    let trimmed = base_url.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed)
}

/// Asks the server at `base_url` what it is, every question at once, each given
/// `timeout`: an error status, a failure or an answer that is not JSON is no answer.
pub async fn gather(
    http: &reqwest::Client,
    base_url: &str,
    key: Option<&super::Secret>,
    timeout: Duration,
) -> Evidence {
    let get = |url: String| async move {
        let mut req = http.get(&url).timeout(timeout);
        if let Some(k) = key {
            req = req.bearer_auth(k.expose());
        }
        let res = req.send().await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let server = res
            .headers()
            .get(reqwest::header::SERVER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = res.json().await.ok()?;
        Some((body, server))
    };
    let base = base_url.trim_end_matches('/');
    let root = root(base_url);
    let (models, props, version, api_version, info) = tokio::join!(
        get(format!("{base}/models")),
        get(format!("{root}/props")),
        get(format!("{root}/version")),
        get(format!("{root}/api/version")),
        get(format!("{root}/info")),
    );
    let host = url::Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let server_header = models.as_ref().and_then(|(_, s)| s.clone());
    Evidence {
        host,
        models: models.map(|(v, _)| v),
        props: props.map(|(v, _)| v),
        version: version.map(|(v, _)| v),
        api_version: api_version.map(|(v, _)| v),
        info: info.map(|(v, _)| v),
        server_header,
    }
}

/// A dialect and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub dialect: Dialect,
    pub why: String,
    /// Configuration chose it (`[llm] dialect`, `[llm.dialects]`): nothing the server
    /// says changes it.
    pub pinned: bool,
}

impl Identified {
    pub fn new(dialect: Dialect, why: impl Into<String>) -> Self {
        Self {
            dialect,
            why: why.into(),
            pinned: false,
        }
    }

    /// `dialect`, as configuration pins it.
    pub fn pinned(dialect: Dialect) -> Self {
        Self {
            dialect,
            why: "pinned by [llm] dialect or [llm.dialects]".into(),
            pinned: true,
        }
    }

    /// What the server is once it refused a mode in words `refusal`: the family those
    /// words belong to, when that is not the one assumed and nothing pinned it.
    pub fn after_refusal(&self, refusal: &str) -> Option<Self> {
        from_refusal(refusal)
            .filter(|named| *named != self.dialect && !self.pinned)
            .map(|named| Self::new(named, format!("a refusal in its words: {refusal}")))
    }
}

/// The dialect `evidence` points to, most specific sign first; [`Dialect::Generic`]
/// when nothing names one.
pub fn identify(evidence: &Evidence) -> Identified {
    let host = evidence.host.to_ascii_lowercase();
    if host == "api.openai.com" || host.ends_with(".openai.azure.com") {
        return Identified::new(Dialect::OpenAi, format!("the host is {host}"));
    }
    if host == "openrouter.ai" || host.ends_with(".openrouter.ai") {
        return Identified::new(Dialect::OpenRouter, format!("the host is {host}"));
    }
    let models: Vec<&Value> = evidence
        .models
        .as_ref()
        .and_then(|m| m["data"].as_array())
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    let owned_by = |word: &str| models.iter().any(|m| m["owned_by"] == word);
    if owned_by("llamacpp") {
        return Identified::new(Dialect::LlamaServer, "/models: owned_by \"llamacpp\"");
    }
    if let Some(props) = &evidence.props
        && (props.get("build_info").is_some() || props.get("default_generation_settings").is_some())
    {
        return Identified::new(Dialect::LlamaServer, "/props answers with build_info");
    }
    if owned_by("vllm") {
        return Identified::new(Dialect::Vllm, "/models: owned_by \"vllm\"");
    }
    if evidence
        .api_version
        .as_ref()
        .is_some_and(|v| v["version"].is_string())
    {
        return Identified::new(Dialect::Ollama, "/api/version answers with a version");
    }
    if let Some(info) = &evidence.info
        && info["model_id"].is_string()
        && (info.get("router").is_some() || info.get("max_input_tokens").is_some())
    {
        return Identified::new(
            Dialect::Tgi,
            "/info answers with model_id and the router's limits",
        );
    }
    if models
        .iter()
        .any(|m| m["owned_by"] == "me" && m["permissions"].is_array())
    {
        return Identified::new(
            Dialect::LlamaCppPython,
            "/models: owned_by \"me\" with a permissions list",
        );
    }
    if owned_by("organization_owner") {
        return Identified::new(
            Dialect::LmStudio,
            "/models: owned_by \"organization_owner\"",
        );
    }
    if evidence
        .version
        .as_ref()
        .and_then(Value::as_object)
        .is_some_and(|v| v.len() == 1 && v["version"].is_string())
    {
        return Identified::new(Dialect::Vllm, "/version answers with a version alone");
    }
    Identified::new(Dialect::Generic, "nothing the server said names its family")
}

/// The dialect a refusal's wording names, if any: each family refuses a form it does not
/// take in words of its own.
pub fn from_refusal(text: &str) -> Option<Dialect> {
    if text.contains("Input should be 'text' or 'json_object'") {
        // pydantic's literal error on llama-cpp-python's request model.
        Some(Dialect::LlamaCppPython)
    } else if text.contains("response_format type must be one of") {
        Some(Dialect::LlamaServer)
    } else if text.contains("must be 'json_schema' or 'text'") {
        Some(Dialect::LmStudio)
    } else if text.contains("missing field `value`") {
        // serde's error on TGI's `{"type": …, "value": …}` grammar.
        Some(Dialect::Tgi)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
    }

    fn shaped(dialect: Dialect, mode: StructuredMode) -> (Value, bool) {
        let mut body = json!({"model": "m", "messages": []});
        let constrained = dialect.shape(&mut body, mode, "answer", &schema());
        (body, constrained)
    }

    #[test]
    fn every_dialect_can_be_pinned_and_every_pin_names_a_dialect() {
        // `config` lies below `domain`'s users and may not name `Dialect`: its list of
        // settings is kept equal to the dialects here.
        use crate::config::DialectSetting;
        let pins: Vec<&str> = DialectSetting::WORDS
            .iter()
            .copied()
            .filter(|w| *w != "auto")
            .collect();
        assert_eq!(pins, Dialect::WORDS);
    }

    #[test]
    fn each_dialect_asks_natively_in_its_own_words() {
        let (b, c) = shaped(Dialect::LlamaServer, StructuredMode::Native);
        assert!(c);
        assert_eq!(b["json_schema"], schema());
        assert!(b.get("response_format").is_none());

        let (b, _) = shaped(Dialect::LlamaCppPython, StructuredMode::Native);
        assert_eq!(
            b["response_format"],
            json!({"type": "json_object", "schema": schema()})
        );

        let (b, _) = shaped(Dialect::Vllm, StructuredMode::Native);
        assert_eq!(b["structured_outputs"], json!({"json": schema()}));
        assert!(b.get("response_format").is_none());

        let (b, _) = shaped(Dialect::Tgi, StructuredMode::Native);
        assert_eq!(
            b["response_format"],
            json!({"type": "json", "value": schema()})
        );
    }

    #[test]
    fn json_schema_is_openais_form_except_under_tgi_and_openrouter_requires_it() {
        let (b, c) = shaped(Dialect::Generic, StructuredMode::JsonSchema);
        assert!(c);
        assert_eq!(b["response_format"]["json_schema"]["schema"], schema());
        assert_eq!(b["response_format"]["json_schema"]["strict"], true);
        assert!(b.get("provider").is_none());

        let (b, _) = shaped(Dialect::OpenRouter, StructuredMode::JsonSchema);
        assert_eq!(b["provider"], json!({"require_parameters": true}));

        let (b, _) = shaped(Dialect::Tgi, StructuredMode::JsonSchema);
        assert_eq!(b["response_format"]["value"]["schema"], schema());
    }

    #[test]
    fn json_object_carries_the_schema_only_where_the_dialect_reads_it() {
        for (dialect, takes) in [
            (Dialect::LlamaServer, true),
            (Dialect::LlamaCppPython, true),
            (Dialect::Tgi, true),
            (Dialect::OpenAi, false),
            (Dialect::Vllm, false),
            (Dialect::Ollama, false),
            (Dialect::Generic, false),
        ] {
            let (b, constrained) = shaped(dialect, StructuredMode::JsonObject);
            assert_eq!(constrained, takes, "{dialect}");
            let carried = b["response_format"]
                .get("schema")
                .or(b["response_format"].get("value"));
            assert_eq!(carried.is_some(), takes, "{dialect}: {b}");
        }
        let (b, constrained) = shaped(Dialect::Generic, StructuredMode::Prompt);
        assert!(!constrained);
        assert!(b.get("response_format").is_none());
    }

    #[test]
    fn the_native_form_comes_first_only_where_there_is_one() {
        use StructuredMode::*;
        assert_eq!(Dialect::Vllm.modes()[0], Native);
        assert_eq!(Dialect::OpenAi.modes()[0], JsonSchema);
        // Every dialect's order is the modes' own, from its first: a step down is
        // `StructuredMode::weaker`.
        for d in Dialect::ALL {
            let modes = d.modes();
            let stepped: Vec<StructuredMode> =
                std::iter::successors(Some(modes[0]), |m| m.weaker()).collect();
            assert_eq!(stepped, modes, "{d}");
            assert_eq!(d.native_form().is_some(), modes[0] == Native, "{d}");
        }
    }

    fn models(owned_by: &str, extra: Value) -> Option<Value> {
        let mut m = json!({"id": "small", "object": "model", "owned_by": owned_by});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some(json!({"object": "list", "data": [m]}))
    }

    #[test]
    fn a_server_is_known_by_what_it_says_about_itself() {
        let local = |e: Evidence| {
            identify(&Evidence {
                host: "127.0.0.1".into(),
                ..e
            })
            .dialect
        };
        assert_eq!(
            identify(&Evidence {
                host: "api.openai.com".into(),
                ..Default::default()
            })
            .dialect,
            Dialect::OpenAi
        );
        assert_eq!(
            identify(&Evidence {
                host: "OpenRouter.ai".into(),
                ..Default::default()
            })
            .dialect,
            Dialect::OpenRouter
        );
        assert_eq!(
            local(Evidence {
                models: models("llamacpp", json!({"meta": {}})),
                ..Default::default()
            }),
            Dialect::LlamaServer
        );
        assert_eq!(
            local(Evidence {
                props: Some(json!({"build_info": "b8681", "model_alias": "m"})),
                ..Default::default()
            }),
            Dialect::LlamaServer
        );
        assert_eq!(
            local(Evidence {
                models: models("me", json!({"permissions": []})),
                ..Default::default()
            }),
            Dialect::LlamaCppPython
        );
        assert_eq!(
            local(Evidence {
                models: models("vllm", json!({"root": "small"})),
                version: Some(json!({"version": "0.11.0"})),
                ..Default::default()
            }),
            Dialect::Vllm
        );
        assert_eq!(
            local(Evidence {
                models: models("library", json!({})),
                api_version: Some(json!({"version": "0.12.3"})),
                ..Default::default()
            }),
            Dialect::Ollama
        );
        assert_eq!(
            local(Evidence {
                models: models("small", json!({})),
                info: Some(
                    json!({"model_id": "small", "router": "text-generation-router",
                                  "version": "3.3.6", "max_input_tokens": 4095})
                ),
                ..Default::default()
            }),
            Dialect::Tgi
        );
        assert_eq!(
            local(Evidence {
                models: models("organization_owner", json!({})),
                ..Default::default()
            }),
            Dialect::LmStudio
        );
        // A plain OpenAI-compatible server, and one whose `owned_by` is any word:
        // `me` without llama-cpp-python's permissions list names nothing.
        assert_eq!(
            local(Evidence {
                models: models("me", json!({})),
                ..Default::default()
            }),
            Dialect::Generic
        );
        assert_eq!(local(Evidence::default()), Dialect::Generic);
    }

    #[test]
    fn a_refusal_names_the_family_that_words_it_so() {
        let fastapi = r#"{"detail":[{"type":"literal_error","loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'","input":"json_schema"}]}"#;
        assert_eq!(from_refusal(fastapi), Some(Dialect::LlamaCppPython));
        let llama = r#"{"error":{"code":400,"message":"response_format type must be one of \"text\" or \"json_object\", but got: json","type":"invalid_request_error"}}"#;
        assert_eq!(from_refusal(llama), Some(Dialect::LlamaServer));
        let lm_studio = r#"{"error":"'response_format.type' must be 'json_schema' or 'text'"}"#;
        assert_eq!(from_refusal(lm_studio), Some(Dialect::LmStudio));
        let tgi = "Failed to deserialize the JSON body into the target type: response_format: missing field `value` at line 1 column 180";
        assert_eq!(from_refusal(tgi), Some(Dialect::Tgi));
        assert_eq!(from_refusal(r#"{"error":{"message":"bad request"}}"#), None);
    }
}
