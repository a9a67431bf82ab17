//! The job catalogue: one module per kind (args type, handler, tests) and the one list,
//! [`Registry::builtin`], that registers every kind. A kind's input contract is
//! `jobs/<kind>/schema.json`, compiled in and checked at enqueue and again at claim.

pub mod brand_voice_analysis;
pub mod cache_refresh;
pub mod cleanup;
pub mod draft_generation;
pub mod evaluation;
pub mod noop;
pub mod publishing;

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgPool;

use crate::{
    config::Settings,
    queue::{ClaimedJob, Error, JobError, Outcome},
};

/// What a handler gets: the claimed job and the process's shared resources.
#[derive(Clone)]
pub struct JobContext {
    pub job: ClaimedJob,
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub services: Arc<crate::queue::runner::Services>,
}

impl JobContext {
    /// The scope model calls of this job are recorded and budgeted under.
    pub fn llm_scope(&self) -> crate::llm::Scope {
        crate::llm::Scope {
            pool: self.pool.clone(),
            job_id: self.job.id,
            attempt: self.job.attempts,
            project_id: self.job.project_id,
        }
    }
}

/// A kind's handler.
pub type HandlerFn =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync>;

/// One registered kind.
#[derive(Clone)]
pub struct Kind {
    pub name: String,
    pub schema: Option<Arc<jsonschema::Validator>>,
    pub handler: HandlerFn,
}

/// The kinds a worker can run.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Kind>,
}

static BUILTIN: LazyLock<Registry> = LazyLock::new(|| {
    Registry::default()
        .with(noop::KIND, Some(noop::SCHEMA), |ctx| {
            Box::pin(noop::run(ctx))
        })
        .with(cleanup::KIND, Some(cleanup::SCHEMA), |ctx| {
            Box::pin(cleanup::run(ctx))
        })
        .with(
            brand_voice_analysis::KIND,
            Some(brand_voice_analysis::SCHEMA),
            |ctx| Box::pin(brand_voice_analysis::run(ctx)),
        )
        .with(
            draft_generation::KIND,
            Some(draft_generation::SCHEMA),
            |ctx| Box::pin(draft_generation::run(ctx)),
        )
        .with(evaluation::KIND, Some(evaluation::SCHEMA), |ctx| {
            Box::pin(evaluation::run(ctx))
        })
        .with(publishing::KIND, Some(publishing::SCHEMA), |ctx| {
            Box::pin(publishing::run(ctx))
        })
        .with(cache_refresh::KIND, Some(cache_refresh::SCHEMA), |ctx| {
            Box::pin(cache_refresh::run(ctx))
        })
});

impl Registry {
    /// Every kind copydesk ships.
    pub fn builtin() -> Self {
        BUILTIN.clone()
    }

    /// Adds (or replaces) a kind. `schema` is JSON Schema text; it must compile.
    pub fn with<F>(mut self, name: &str, schema: Option<&str>, handler: F) -> Self
    where
        F: Fn(JobContext) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync + 'static,
    {
        let schema = schema.map(|text| {
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("schema of {name} is not JSON: {e}"));
            Arc::new(
                jsonschema::validator_for(&value)
                    .unwrap_or_else(|e| panic!("schema of {name} is not a valid JSON Schema: {e}")),
            )
        });
        self.kinds.insert(
            name.to_owned(),
            Kind {
                name: name.to_owned(),
                schema,
                handler: Arc::new(handler),
            },
        );
        self
    }

    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Checks `input` against the kind's schema.
    pub fn validate(&self, kind: &str, input: &Value) -> Result<(), Error> {
        let k = self
            .get(kind)
            .ok_or_else(|| Error::UnknownKind(kind.to_owned(), self.names().join(", ")))?;
        if let Some(schema) = &k.schema {
            let problems: Vec<String> = schema
                .iter_errors(input)
                .map(|e| {
                    let path = e.instance_path().to_string();
                    let at = if path.is_empty() {
                        "the top level".to_owned()
                    } else {
                        path
                    };
                    format!("at {at}: {e}")
                })
                .collect();
            if !problems.is_empty() {
                return Err(Error::InvalidInput {
                    kind: kind.to_owned(),
                    detail: problems.join("; "),
                });
            }
        }
        Ok(())
    }
}

/// Validates `input` for a built-in `kind` (what `enqueue` and the CLI call).
pub fn validate_input(kind: &str, input: &Value) -> Result<(), Error> {
    BUILTIN.validate(kind, input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_input_names_the_field() {
        let err = validate_input("noop", &json!({"sleep_ms": 700000})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/sleep_ms"), "{msg}");
        assert!(msg.contains("600000"), "{msg}");
        let err = validate_input("noop", &json!({"sleep": 1})).unwrap_err();
        assert!(err.to_string().contains("sleep"), "{err}");
        assert!(validate_input("noop", &json!({})).is_ok());
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let err = validate_input("nope", &json!({})).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("noop") && err.contains("cleanup"),
            "{err}"
        );
    }
}
