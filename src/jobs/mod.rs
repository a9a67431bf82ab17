//! The job catalogue: one module per kind, each with its args type (the wire format of
//! `jobs.input`, a [`JobArgs`] with the kind's name and `jobs/<kind>/schema.json`), its
//! output type (`jobs.output`) and its handler. `app::registry` lists them all.
//!
//! Handlers do the step's work (fetches, model calls, platform calls) and return what
//! it produced. What follows a step of the content pipeline (an approval, the next
//! jobs) is not theirs to decide: `pipeline` turns a step's product into the finish.

pub mod brand_voice_analysis;
pub mod cache_refresh;
pub mod cleanup;
pub mod deliver_event;
pub mod draft_generation;
pub mod evaluation;
pub mod noop;
pub mod notify;
pub mod publishing;
pub mod token_refresh;

use std::sync::Arc;

pub use copydesk_queue::JobArgs;
use copydesk_queue::JobError;

use crate::{config::Settings, fetch::Fetcher, keys, llm};

/// What every handler of a process shares: the settings and the clients.
#[derive(Debug)]
pub struct Services {
    pub settings: Arc<Settings>,
    pub llm: llm::Llm,
    pub fetcher: Fetcher,
    /// Fernet keys from `COPYDESK_FERNET_KEYS`; the error is kept, not raised, so a
    /// worker without keys still runs every job that needs none (publishing fails
    /// with the error instead).
    pub keys: Result<Arc<keys::Keys>, keys::KeyError>,
    /// The HTTP client for publishing platforms.
    pub publish_http: reqwest::Client,
    /// The `[files]` object store; its error is kept like the keys' (only a post with
    /// an image needs it).
    pub files: Result<crate::files::Files, std::sync::Arc<crate::files::FileError>>,
}

/// The application context the engine hands every handler.
pub type App = Arc<Services>;

/// A claimed job with the process's services: what a handler gets.
pub type Ctx = copydesk_queue::JobContext<App>;

/// The scope a job's model calls are recorded and budgeted under.
pub fn llm_scope(ctx: &Ctx) -> llm::Scope {
    llm::Scope {
        pool: ctx.pool.clone(),
        job_id: ctx.job.id,
        attempt: ctx.job.attempts,
        tenant_id: ctx.job.tenant_id,
        project_id: ctx.job.project_id,
    }
}

/// A model call's failure as the job sees it: retried when a later attempt could
/// succeed (after the provider's wait, when it gave one), failed for good otherwise.
impl From<llm::Error> for JobError {
    fn from(e: llm::Error) -> Self {
        if let llm::Error::Wait { after, .. } = &e {
            return JobError::wait(e.to_string(), *after);
        }
        let (retryable, after) = (e.is_retryable(), e.retry_after());
        let err = if retryable {
            JobError::transient(e.to_string())
        } else {
            JobError::permanent(e.to_string())
        };
        match after {
            Some(d) => err.retry_after(d),
            None => err,
        }
    }
}

/// A store failure as the job sees it: the database failing is worth retrying; a
/// missing row or a refused value is not.
impl From<crate::store::Error> for JobError {
    fn from(e: crate::store::Error) -> Self {
        if e.is_transient() {
            JobError::transient(e.to_string())
        } else {
            JobError::permanent(e.to_string())
        }
    }
}

/// A job's `output` read back as its kind's output type (`None` when there is none or
/// it is not of that type), for anyone who shows it (the demo).
pub fn output_of<T: serde::de::DeserializeOwned>(output: Option<&serde_json::Value>) -> Option<T> {
    output.and_then(|o| serde_json::from_value(o.clone()).ok())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Each kind's stored example (`jobs/<kind>/example.json`) matches its schema,
    /// decodes into its args type and encodes back to the same JSON.
    fn round_trip<A: JobArgs>(example: &str) {
        let stored: Value = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("{}: example.json is not JSON: {e}", A::KIND));
        let catalog = copydesk_queue::Registry::<()>::new()
            .with(A::KIND, Some(A::SCHEMA), |_| async {
                Ok(copydesk_queue::Outcome::done())
            })
            .catalog();
        catalog
            .validate(A::KIND, &stored)
            .unwrap_or_else(|e| panic!("{}: example.json breaks schema.json: {e}", A::KIND));
        let args: A = serde_json::from_value(stored.clone())
            .unwrap_or_else(|e| panic!("{}: example.json does not decode: {e}", A::KIND));
        assert_eq!(serde_json::to_value(&args).unwrap(), stored, "{}", A::KIND);
    }

    #[test]
    fn every_kinds_stored_example_round_trips_and_matches_its_schema() {
        round_trip::<noop::NoopArgs>(include_str!("../../jobs/noop/example.json"));
        round_trip::<notify::NotifyArgs>(include_str!("../../jobs/notify/example.json"));
        round_trip::<deliver_event::DeliverEventArgs>(include_str!(
            "../../jobs/deliver_event/example.json"
        ));
        round_trip::<cleanup::CleanupArgs>(include_str!("../../jobs/cleanup/example.json"));
        round_trip::<token_refresh::TokenRefreshArgs>(include_str!(
            "../../jobs/token_refresh/example.json"
        ));
        round_trip::<cache_refresh::CacheRefreshArgs>(include_str!(
            "../../jobs/cache_refresh/example.json"
        ));
        round_trip::<brand_voice_analysis::BrandVoiceArgs>(include_str!(
            "../../jobs/brand_voice_analysis/example.json"
        ));
        round_trip::<draft_generation::DraftArgs>(include_str!(
            "../../jobs/draft_generation/example.json"
        ));
        round_trip::<evaluation::EvaluationArgs>(include_str!(
            "../../jobs/evaluation/example.json"
        ));
        round_trip::<publishing::PublishingArgs>(include_str!(
            "../../jobs/publishing/example.json"
        ));
    }

    #[test]
    fn unknown_fields_are_refused_by_the_args_types_too() {
        let err = serde_json::from_value::<draft_generation::DraftArgs>(serde_json::json!({
            "channel": "x", "brand_voice_artifact_id": uuid::Uuid::nil(), "chanel": "x"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("chanel"), "{err}");
    }
}
