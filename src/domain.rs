//! The words every layer shares: what a draft is written for, where it is published,
//! and the states of the rows the application owns. Each is an enum in the code and
//! the same plain text in the database (the migrations' CHECK constraints list the
//! same words), so plain-SQL users see no difference.

use copydesk_queue::text_enum;

text_enum! {
    /// What a draft is written for.
    pub enum Channel("channel") {
        Blog = "blog",
        Linkedin = "linkedin",
        X = "x",
        Facebook = "facebook",
    }
}

impl Channel {
    /// The most characters a post may have (`None`: no limit). X counts weighted
    /// characters (`publish::x::weighted_len`).
    pub fn max_chars(self) -> Option<usize> {
        match self {
            Channel::Blog => None,
            Channel::Linkedin => Some(3000),
            Channel::X => Some(280),
            Channel::Facebook => Some(63_206),
        }
    }
}

text_enum! {
    /// A destination: where an approved draft is published.
    pub enum Platform("platform") {
        Wordpress = "wordpress",
        Shopify = "shopify",
        Linkedin = "linkedin",
        X = "x",
        Facebook = "facebook",
    }
}

impl Platform {
    /// The channel whose drafts this destination publishes.
    pub fn channel(self) -> Channel {
        match self {
            Platform::Wordpress | Platform::Shopify => Channel::Blog,
            Platform::Linkedin => Channel::Linkedin,
            Platform::X => Channel::X,
            Platform::Facebook => Channel::Facebook,
        }
    }

    /// The destinations of a channel, in the order the pipeline prefers them.
    pub fn for_channel(channel: Channel) -> &'static [Platform] {
        match channel {
            Channel::Blog => &[Platform::Wordpress, Platform::Shopify],
            Channel::Linkedin => &[Platform::Linkedin],
            Channel::X => &[Platform::X],
            Channel::Facebook => &[Platform::Facebook],
        }
    }
}

text_enum! {
    /// What an artifact is (`artifacts.kind`).
    pub enum ArtifactKind("artifact kind") {
        BrandVoice = "brand_voice",
        Draft = "draft",
        Evaluation = "evaluation",
        Publication = "publication",
        Source = "source",
    }
}

text_enum! {
    /// Who made an artifact (`artifacts.source`).
    pub enum ArtifactSource("artifact source") {
        Ai = "ai",
        Human = "human",
        System = "system",
    }
}

text_enum! {
    /// A person's decision (`approvals.status`).
    pub enum ApprovalStatus("approval status") {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
    }
}

text_enum! {
    /// Whether an integration's credentials work (`integrations.status`).
    pub enum IntegrationStatus("integration status") {
        Connected = "connected",
        Disconnected = "disconnected",
        Error = "error",
    }
}

text_enum! {
    /// How one external call ended (`runs.status`).
    pub enum RunStatus("run status") {
        Ok = "ok",
        Error = "error",
    }
}

text_enum! {
    /// What became of one attempt to post (`publish_attempts.state`).
    pub enum AttemptState("publish attempt state") {
        /// Recorded before the request left; its outcome is not known (yet).
        Sending = "sending",
        /// The platform has the post; its id and URL are recorded.
        Sent = "sent",
        /// Nothing went out (refused, throttled, or reconciled as absent).
        NotSent = "not_sent",
    }
}

text_enum! {
    /// How a structured answer is asked of a model server, strongest first
    /// (`runs.structured_mode`, `llm_modes.mode`).
    pub enum StructuredMode("structured mode") {
        /// The server's own way of holding its decoding to the schema, where that is not
        /// `json_schema` (its dialect's: `llm::dialect`).
        Native = "native",
        /// `response_format: {"type": "json_schema", ...}` with the schema, strict.
        JsonSchema = "json_schema",
        /// `response_format: {"type": "json_object"}`, the schema stated in the prompt.
        JsonObject = "json_object",
        /// No `response_format`; the schema stated in the prompt.
        Prompt = "prompt",
    }
}

text_enum! {
    /// A family of model servers, by how it takes a structured answer
    /// (`llm_modes.dialect`, `runs.dialect`).
    pub enum Dialect("model server dialect") {
        /// api.openai.com: `json_schema`, strict.
        OpenAi = "openai",
        /// openrouter.ai: `json_schema`, strict, with `provider.require_parameters` so
        /// only upstreams that honour it are chosen.
        OpenRouter = "openrouter",
        /// llama.cpp's `llama-server`: its own top-level `json_schema` field.
        LlamaServer = "llama_server",
        /// llama-cpp-python's server: `json_object` with `schema`.
        LlamaCppPython = "llama_cpp_python",
        /// vLLM: `structured_outputs: {"json": …}`.
        Vllm = "vllm",
        /// Ollama's OpenAI-compatible endpoint: `json_schema`, turned into its `format`.
        Ollama = "ollama",
        /// LM Studio: `json_schema` only.
        LmStudio = "lm_studio",
        /// Hugging Face text-generation-inference: `{"type": "json", "value": …}`.
        Tgi = "tgi",
        /// Any other OpenAI-compatible server: the OpenAI forms.
        Generic = "generic",
    }
}

impl StructuredMode {
    /// The next weaker mode, if any.
    pub fn weaker(self) -> Option<Self> {
        match self {
            Self::Native => Some(Self::JsonSchema),
            Self::JsonSchema => Some(Self::JsonObject),
            Self::JsonObject => Some(Self::Prompt),
            Self::Prompt => None,
        }
    }
}

text_enum! {
    /// Where a run's cost came from (`runs.cost_source`).
    pub enum CostSource("cost source") {
        /// The provider's `usage.cost`.
        Provider = "provider",
        /// Tokens times `[llm.prices]`.
        PriceTable = "price_table",
        /// Neither: the model has no price (it costs nothing as far as copydesk knows).
        Unpriced = "unpriced",
    }
}

text_enum! {
    /// What an API token may do (`api_tokens.role`): each role may do what the ones
    /// before it may.
    pub enum TokenRole("token role") {
        /// Reads.
        Viewer = "viewer",
        /// Also decides approvals and edits drafts.
        Approver = "approver",
        /// Also retries, cancels, enqueues, publishes and tests integrations.
        Operator = "operator",
        /// Also manages integrations, settings and tokens.
        Admin = "admin",
    }
}

/// The tenant every row belongs to until there are others (`tenants.slug = 'default'`).
pub const DEFAULT_TENANT: uuid::Uuid = uuid::uuid!("00000000-0000-0000-0000-000000000001");

text_enum! {
    /// How much a notification needs a person (`notifications.severity`).
    pub enum Severity("severity") {
        Info = "info",
        Warning = "warning",
        Error = "error",
    }
}

text_enum! {
    /// Where a notification goes (`notification_channels.kind`).
    pub enum ChannelKind("notification channel kind") {
        Webhook = "webhook",
        Email = "email",
    }
}

text_enum! {
    /// Where one notification's delivery to one channel stands
    /// (`notification_deliveries.status`).
    pub enum DeliveryStatus("delivery status") {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
    }
}

text_enum! {
    /// What a file is for (`files.kind`).
    pub enum FileKind("file kind") {
        /// A post's picture.
        Image = "image",
        /// A style sample.
        Sample = "sample",
        Export = "export",
    }
}
