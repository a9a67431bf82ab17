//! The kinds a process knows: each kind's input contract (a JSON Schema) and its
//! handler. [`Catalog`] is the contracts alone, what `enqueue` checks a job against;
//! [`Registry`] adds the handlers a worker runs. Both are handed to the engine by the
//! application, so a kind that a test or another binary registers is enqueued, checked
//! and run exactly like a built-in one.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use crate::db::Db;
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{ClaimedJob, Error, JobError, Outcome};

/// A kind's typed input: the wire format of its `jobs.input`, stored in rows that
/// outlive a deploy (new fields get `#[serde(default)]`; nothing is renamed casually).
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name, as stored in `jobs.kind`.
    const KIND: &'static str;
    /// The kind's input contract, JSON Schema text (`jobs/<kind>/schema.json`).
    const SCHEMA: &'static str;
    /// The version of the input contract: raised when the schema takes an input the
    /// previous version refused (a new field). Each version must still read every input
    /// an earlier one wrote. During a deploy a worker of an older version gives a job
    /// whose input only a newer schema takes back to the queue, for a newer worker
    /// ([`crate::runner`]).
    const VERSION: u32 = 1;
}

/// What a handler gets: the claimed job, the pool, the catalogue (to enqueue follow-up
/// jobs) and the application's own context `C` (its clients and settings).
#[derive(Clone)]
pub struct JobContext<C> {
    pub job: ClaimedJob,
    pub pool: Db,
    pub catalog: Catalog,
    pub app: C,
}

impl<C> JobContext<C> {
    /// The job's steps, as this run sees them: work kept when it ends and replayed to
    /// every later run of the job instead of being done again ([`crate::steps`]).
    pub fn steps(&self) -> crate::Steps {
        crate::Steps::new(self.pool.clone(), self.job.id, self.job.attempts)
    }
}

/// A kind's handler.
pub type HandlerFn<C> =
    Arc<dyn Fn(JobContext<C>) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync>;

type Schema = Option<Arc<jsonschema::Validator>>;

/// One kind's input contract as this process knows it.
#[derive(Clone)]
pub struct Contract {
    /// The compiled schema (none: any input).
    schema: Schema,
    /// The schema as written, registered in `job_kind_versions`.
    pub text: Option<Arc<Value>>,
    /// The contract's version ([`JobArgs::VERSION`]).
    pub version: u32,
    /// The kind this name stands for, when it is an old name kept for queued jobs.
    pub alias_of: Option<String>,
}

/// The input contracts of the kinds a process knows. Cheap to clone.
#[derive(Clone, Default)]
pub struct Catalog(Arc<BTreeMap<String, Contract>>);

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Catalog").field(&self.names()).finish()
    }
}

impl Catalog {
    /// Whether `kind` is known.
    pub fn contains(&self, kind: &str) -> bool {
        self.0.contains_key(kind)
    }

    /// Every known kind, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Checks `input` against the kind's schema; the error names each field that is
    /// wrong, or the known kinds when `kind` is not one of them.
    pub fn validate(&self, kind: &str, input: &Value) -> Result<(), Error> {
        let contract = self
            .0
            .get(kind)
            .ok_or_else(|| Error::UnknownKind(kind.to_owned(), self.names().join(", ")))?;
        let Some(schema) = &contract.schema else {
            return Ok(());
        };
        check(kind, schema, input)
    }

    /// The contract of `kind`.
    pub fn contract(&self, kind: &str) -> Option<&Contract> {
        self.0.get(kind)
    }

    /// Every kind with its contract, sorted by name.
    pub fn contracts(&self) -> impl Iterator<Item = (&str, &Contract)> {
        self.0.iter().map(|(k, c)| (k.as_str(), c))
    }
}

/// Checks `input` against one schema of `kind`: every field that is wrong, named.
fn check(kind: &str, schema: &jsonschema::Validator, input: &Value) -> Result<(), Error> {
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
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            kind: kind.to_owned(),
            detail: problems.join("; "),
        })
    }
}

/// The kinds a worker can run, with their handlers.
pub struct Registry<C> {
    schemas: BTreeMap<String, Contract>,
    handlers: BTreeMap<String, HandlerFn<C>>,
}

impl<C> Clone for Registry<C> {
    fn clone(&self) -> Self {
        Self {
            schemas: self.schemas.clone(),
            handlers: self.handlers.clone(),
        }
    }
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Self {
            schemas: BTreeMap::new(),
            handlers: BTreeMap::new(),
        }
    }
}

fn compile(kind: &str, text: &str) -> (Arc<jsonschema::Validator>, Arc<Value>) {
    // A kind's schema is part of the program: a broken one is a bug found at start-up.
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the schema of kind {kind} is not JSON: {e}"));
    (
        Arc::new(
            jsonschema::validator_for(&value)
                .unwrap_or_else(|e| panic!("the schema of kind {kind} is not a JSON Schema: {e}")),
        ),
        Arc::new(value),
    )
}

impl<C: Send + Sync + 'static> Registry<C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a kind with an untyped handler. `schema` is JSON Schema
    /// text; it must compile.
    pub fn with<F, Fut>(mut self, kind: &str, schema: Option<&str>, handler: F) -> Self
    where
        F: Fn(JobContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, JobError>> + Send + 'static,
    {
        let compiled = schema.map(|s| compile(kind, s));
        self.schemas.insert(
            kind.to_owned(),
            Contract {
                schema: compiled.as_ref().map(|c| c.0.clone()),
                text: compiled.map(|c| c.1),
                version: 1,
                alias_of: None,
            },
        );
        self.handlers
            .insert(kind.to_owned(), Arc::new(move |ctx| Box::pin(handler(ctx))));
        self
    }

    /// Adds (or replaces) the kind of args type `A`: its input is checked against
    /// `A::SCHEMA`, then decoded into `A` (a row that does not decode fails at once,
    /// naming the problem) and handed to `handler`.
    pub fn register<A, F, Fut>(self, handler: F) -> Self
    where
        A: JobArgs,
        F: Fn(JobContext<C>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, JobError>> + Send + 'static,
        C: Clone,
    {
        let handler = Arc::new(handler);
        self.with(A::KIND, Some(A::SCHEMA), move |ctx: JobContext<C>| {
            let handler = handler.clone();
            async move {
                let args: A = serde_json::from_value(ctx.job.input.clone()).map_err(|e| {
                    JobError::permanent(format!("input of {} is not valid: {e}", A::KIND))
                })?;
                handler(ctx, args).await
            }
        })
        .version(A::KIND, A::VERSION)
    }

    /// Sets the version of `kind`'s input contract (1 unless set; see
    /// [`JobArgs::VERSION`]).
    pub fn version(mut self, kind: &str, version: u32) -> Self {
        if let Some(c) = self.schemas.get_mut(kind) {
            c.version = version;
        }
        self
    }

    /// Keeps `old`, a kind's former name, running as `kind`: queued jobs of the old name
    /// (and what producers of the release before still enqueue under it) are claimed
    /// and run by `kind`'s handler against its contract. `kind` must be registered.
    pub fn alias(mut self, old: &str, kind: &str) -> Self {
        let (Some(contract), Some(handler)) = (self.schemas.get(kind), self.handlers.get(kind))
        else {
            panic!("kind {old:?} cannot stand for {kind:?}: no kind {kind:?} is registered");
        };
        let contract = Contract {
            alias_of: Some(kind.to_owned()),
            ..contract.clone()
        };
        let handler = handler.clone();
        self.schemas.insert(old.to_owned(), contract);
        self.handlers.insert(old.to_owned(), handler);
        self
    }

    /// The handler of `kind`.
    pub fn handler(&self, kind: &str) -> Option<&HandlerFn<C>> {
        self.handlers.get(kind)
    }

    /// Every registered kind, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// The input contracts of every registered kind.
    pub fn catalog(&self) -> Catalog {
        Catalog(Arc::new(self.schemas.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"{"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}, "additionalProperties": false}"#;

    #[test]
    fn invalid_input_names_the_field_and_unknown_kinds_list_the_known_ones() {
        let catalog = Registry::<()>::new()
            .with("count", Some(SCHEMA), |_| async { Ok(Outcome::done()) })
            .with("free", None, |_| async { Ok(Outcome::done()) })
            .catalog();
        let err = catalog.validate("count", &json!({"n": 11})).unwrap_err();
        assert!(err.to_string().contains("/n"), "{err}");
        assert!(err.to_string().contains("10"), "{err}");
        let err = catalog.validate("count", &json!({"m": 1})).unwrap_err();
        assert!(err.to_string().contains('m'), "{err}");
        assert!(catalog.validate("count", &json!({})).is_ok());
        assert!(catalog.validate("free", &json!({"anything": 1})).is_ok());
        let err = catalog
            .validate("nope", &json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("count, free"), "{err}");
    }
}
