//! The W3C trace context a job carries (`jobs.traceparent`, `jobs.tracestate`), and how
//! a run of the job joins it.
//!
//! Where a new job's trace comes from, first found first:
//! 1. set on the [`NewJob`](crate::NewJob) (or by a plain SQL writer);
//! 2. built while a job runs: that run's span (or, when this process exports no
//!    traces, the running job's own trace), so a follow-up is a child of the run that
//!    made it;
//! 3. a follow-up with a parent and no trace takes its parent's in the database
//!    (trigger `jobs_inherit_trace`), whoever writes it;
//! 4. otherwise the ambient trace of the caller: the current span's, or what
//!    [`scope`] set (the API from the request's `traceparent` header, the CLI from the
//!    `TRACEPARENT` variable).
//!
//! Parsing and formatting are the OpenTelemetry W3C propagator's, so a header that is
//! not W3C is ignored, as the recommendation says, and never refuses the request.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{Context, propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of copydesk's spans (a job's run, an API request, a model or platform
/// call): their own, so the log filter's level for copydesk's events does not decide
/// whether they exist. The application's filter always enables it at INFO.
pub const SPANS: &str = "copydesk_span";

/// The longest `tracestate` kept (`jobs_tracestate_with_parent` refuses longer).
pub const MAX_TRACESTATE: usize = 512;

/// A W3C trace context, as the `traceparent` and `tracestate` headers carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

tokio::task_local! {
    /// The trace of the job running on this task.
    static RUNNING: Option<TraceContext>;
    /// The trace of the request or command being served on this task.
    static AMBIENT: Option<TraceContext>;
}

/// Whether this process exports spans (the application says so when it installs an
/// exporter): the job span's OpenTelemetry fields are recorded only then, so logs stay
/// as they were for everyone else.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

impl TraceContext {
    /// The context in a `traceparent` (and `tracestate`) value; `None` when it is not
    /// a valid W3C trace context.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        Self::of(&Self::extract(traceparent, tracestate))
    }

    /// The trace of an OpenTelemetry context's span, if it has a valid one.
    pub fn of(cx: &Context) -> Option<Self> {
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut fields);
        Some(Self {
            traceparent: fields.remove("traceparent")?,
            // A tracestate longer than the recommendation's 512 characters is dropped,
            // as the recommendation allows, rather than refused with the job.
            tracestate: fields
                .remove("tracestate")
                .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE),
        })
    }

    /// The trace of a `tracing` span, when an OpenTelemetry layer gave it one (none
    /// does unless this process exports: then nothing is looked up).
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        exporting().then(|| Self::of(&span.context())).flatten()
    }

    /// This trace as a remote parent for a span of this process.
    pub fn context(&self) -> Context {
        Self::extract(&self.traceparent, self.tracestate.as_deref())
    }

    fn extract(traceparent: &str, tracestate: Option<&str>) -> Context {
        let mut fields = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        if let Some(state) = tracestate {
            fields.insert("tracestate".to_string(), state.to_string());
        }
        TraceContextPropagator::new().extract(&fields)
    }
}

/// Runs `f` with `trace` as the ambient trace of the jobs it enqueues (those with no
/// parent and no trace of their own).
pub async fn scope<F: Future>(trace: Option<TraceContext>, f: F) -> F::Output {
    AMBIENT.scope(trace, f).await
}

/// Runs a job's handler with the job's own trace at hand (see [`in_job`]).
pub(crate) async fn running<F: Future>(trace: Option<TraceContext>, f: F) -> F::Output {
    RUNNING.scope(trace, f).await
}

/// Inside a job's handler: the trace a job built here belongs to (the current span's,
/// or the running job's when no span carries one). `None` outside a handler.
pub fn in_job() -> Option<TraceContext> {
    let job = RUNNING.try_with(Clone::clone).ok()?;
    TraceContext::of_span(&tracing::Span::current()).or(job)
}

/// The ambient trace: the current span's, else what [`scope`] set, else the running
/// job's.
pub fn current() -> Option<TraceContext> {
    TraceContext::of_span(&tracing::Span::current())
        .or_else(|| AMBIENT.try_with(Clone::clone).ok().flatten())
        .or_else(|| RUNNING.try_with(Clone::clone).ok().flatten())
}

/// Makes `span` a child of `trace` (before it is first entered). Without an
/// OpenTelemetry layer this does nothing.
pub fn adopt(span: &tracing::Span, trace: Option<&TraceContext>) {
    if let Some(trace) = trace {
        let _ = span.set_parent(trace.context());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_w3c_traceparent_is_read_and_written_back_the_same() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::parse(tp, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.traceparent, tp);
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            t.context().span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_tracestate_past_512_characters_is_dropped_and_the_traceparent_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let long: Vec<String> = (0..30)
            .map(|i| format!("vendor{i:02}={}", "x".repeat(20)))
            .collect();
        let t = TraceContext::parse(tp, Some(&long.join(","))).unwrap();
        assert_eq!((t.traceparent.as_str(), t.tracestate), (tp, None));
    }

    #[test]
    fn what_is_not_a_w3c_traceparent_is_ignored() {
        for bad in [
            "",
            "hello",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_scope_is_the_ambient_trace_and_a_job_built_outside_a_handler_takes_none() {
        let t = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        assert_eq!(current(), None);
        scope(t.clone(), async {
            assert_eq!(current(), t);
            assert_eq!(in_job(), None);
        })
        .await;
        running(t.clone(), async { assert_eq!(in_job(), t) }).await;
    }
}
