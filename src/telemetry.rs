//! Structured logs with `tracing`: text for people or JSON for collectors, to stderr
//! (stdout carries command output). Every line inside a job carries its span's
//! `job_id`, `kind` and `attempt`.
//!
//! Traces: when an OTLP endpoint is given (`[log] otlp_endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), the same spans
//! are exported over OTLP/HTTP (protobuf) by the OpenTelemetry SDK, in batches, and the
//! W3C propagator reads and writes `traceparent`. With no endpoint nothing is exported
//! and no exporter is built.

use std::sync::OnceLock;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::LogSettings;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where traces go: the configured endpoint (a base, as OTEL_EXPORTER_OTLP_ENDPOINT),
/// else the SDK's own reading of the OTEL_* variables; `None` when nothing says to
/// export, or OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none say not to.
fn otlp_target(cfg: &LogSettings) -> Option<Option<String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    let configured = cfg.otlp_endpoint.trim();
    if !configured.is_empty() {
        return Some(Some(format!(
            "{}/v1/traces",
            configured.trim_end_matches('/')
        )));
    }
    (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
    .then_some(None)
}

fn tracer_provider(endpoint: Option<String>) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client takes the process's TLS provider (for https collectors).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    // OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION are read by the SDK.
    let exporter = exporter
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OTLP span exporter: {e}"))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still apply over these.
    let resource = Resource::builder()
        .with_service_name("copydesk")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber once; later calls do nothing.
///
/// One filter for both: the log filter (`RUST_LOG`, else `[log] filter`) with
/// copydesk's own spans always on (their target, `copydesk_span`, holds no events), so
/// a job's lines carry its id and kind and its run is traced whatever level the logs
/// are at; log events inside a span are its span events in the trace. (Filters per
/// layer were tried: events and spans went missing from both.)
pub fn init(cfg: &LogSettings) {
    let spans = format!("{}=info", copydesk_queue::trace::SPANS);
    let with_spans = |directives: &str| EnvFilter::try_new(format!("{directives},{spans}"));
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| with_spans(&v).ok())
        .or_else(|| with_spans(&cfg.filter).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("info,{spans}")));
    let logs = if cfg.format == "json" {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut refused = None;
    let traces = otlp_target(cfg).and_then(|endpoint| match tracer_provider(endpoint) {
        Ok(provider) => {
            let tracer = provider.tracer("copydesk");
            let _ = PROVIDER.set(provider);
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            copydesk_queue::trace::set_exporting(true);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(e) => {
            refused = Some(e);
            None
        }
    });
    if tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok()
        && let Some(e) = refused
    {
        tracing::error!("traces are not exported: {e:#}");
    }
}

/// Sends the spans still buffered and stops the exporter: called once before the
/// process exits (a no-op when nothing is exported).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("warning: the last spans were not all exported: {e}");
    }
}

/// A span for the trace alone: named `name`, of OpenTelemetry kind `kind`, with
/// `attributes` that go to the exported span and not to each log line inside it; no
/// span at all (nor anything in the logs) when traces are not exported.
fn traced(name: String, kind: &'static str, attributes: Vec<KeyValue>) -> tracing::Span {
    if !copydesk_queue::trace::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: copydesk_queue::trace::SPANS,
        "traced",
        otel.name = name,
        otel.kind = kind
    );
    for kv in attributes {
        span.set_attribute(kv.key, kv.value);
    }
    span
}

/// Adds attributes to a span of [`traced`]'s (nothing when it is none).
pub fn describe(span: &tracing::Span, attributes: Vec<KeyValue>) {
    if span.is_none() {
        return;
    }
    for kv in attributes {
        span.set_attribute(kv.key, kv.value);
    }
}

/// Marks a span of [`traced`]'s failed, with the kind of failure as `error.type`.
pub fn span_failed(span: &tracing::Span, kind: &'static str) {
    if span.is_none() {
        return;
    }
    span.set_attribute("error.type", kind);
    span.set_status(opentelemetry::trace::Status::error(kind));
}

/// The span of one request to a model server, as the OpenTelemetry GenAI conventions
/// describe a `chat` call; the answer's figures are added by [`model_answered`].
pub fn model_span(
    provider: &str,
    server: Option<&str>,
    model: &str,
    structured_mode: Option<&str>,
) -> tracing::Span {
    let mut attributes = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new("gen_ai.provider.name", provider.to_owned()),
        KeyValue::new("gen_ai.request.model", model.to_owned()),
        KeyValue::new(
            "gen_ai.output.type",
            if structured_mode.is_some() {
                "json"
            } else {
                "text"
            },
        ),
    ];
    if let Some(server) = server {
        attributes.push(KeyValue::new("server.address", server.to_owned()));
    }
    if let Some(mode) = structured_mode {
        attributes.push(KeyValue::new("copydesk.structured_mode", mode.to_owned()));
    }
    traced(format!("chat {model}"), "client", attributes)
}

/// What a model's answer used, as its span says it.
pub struct ModelUsage {
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cache_read_tokens: i32,
    pub reasoning_tokens: i32,
    pub cost_usd: f64,
}

/// What a model call's answer said: the model that answered, why it stopped, tokens
/// in, out, read from the cache and spent reasoning, and what it cost.
pub fn model_answered(
    span: &tracing::Span,
    model: Option<&str>,
    finish_reason: &str,
    usage: &ModelUsage,
) {
    let mut attributes = vec![
        KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(
                vec![opentelemetry::StringValue::from(finish_reason.to_owned())].into(),
            ),
        ),
        KeyValue::new("gen_ai.usage.input_tokens", i64::from(usage.input_tokens)),
        KeyValue::new("gen_ai.usage.output_tokens", i64::from(usage.output_tokens)),
        KeyValue::new(
            "gen_ai.usage.cache_read.input_tokens",
            i64::from(usage.cache_read_tokens),
        ),
        KeyValue::new(
            "gen_ai.usage.reasoning.output_tokens",
            i64::from(usage.reasoning_tokens),
        ),
        KeyValue::new("copydesk.cost_usd", usage.cost_usd),
    ];
    if let Some(model) = model {
        attributes.push(KeyValue::new("gen_ai.response.model", model.to_owned()));
    }
    describe(span, attributes);
}

/// The span of one HTTP call to a platform's API: an HTTP client span named by the
/// call (`POST /wp/v2/posts`), with the server's host but never the URL's query (where
/// some platforms take tokens).
pub fn platform_call_span(platform: &str, op: &str, url: &url::Url) -> tracing::Span {
    let method = op.split_whitespace().next().unwrap_or("HTTP");
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new(
            "server.address",
            url.host_str().unwrap_or_default().to_owned(),
        ),
        KeyValue::new("url.path", url.path().to_owned()),
        KeyValue::new("copydesk.platform", platform.to_owned()),
    ];
    if let Some(port) = url.port_or_known_default() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    traced(op.to_owned(), "client", attributes)
}

/// The span of one post of a draft to a platform (its calls are its children).
pub fn post_span(platform: &str, artifact: uuid::Uuid, integration: uuid::Uuid) -> tracing::Span {
    traced(
        format!("post {platform}"),
        "internal",
        vec![
            KeyValue::new("copydesk.platform", platform.to_owned()),
            KeyValue::new("copydesk.artifact_id", artifact.to_string()),
            KeyValue::new("copydesk.integration_id", integration.to_string()),
        ],
    )
}
