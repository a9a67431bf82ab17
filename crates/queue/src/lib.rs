//! The copydesk queue engine: a Postgres `jobs` table driven through apalis.
//!
//! It enqueues (inside the caller's transaction), claims in one statement, keeps leases,
//! rescues what dead workers left, and commits finishes in batches, each fenced on its
//! own lease. It knows nothing of what jobs do: the application hands it a [`Registry`]
//! of kinds (input contract and handler) and a context of its own, `C`, that every
//! handler receives. This crate depends on no part of the application, so the compiler
//! keeps the engine under it.
//!
//! Job states (moved only by this crate's statements, and by the application's
//! approval decisions, which end a `needs_approval` job):
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> queued: INSERT / enqueue
//!     queued --> running: claim (attempts + 1, lease)
//!     running --> done: finish ok
//!     running --> needs_approval: finish, waiting for a person
//!     running --> queued: retryable error, attempts left (run_at later)
//!     running --> failed: permanent error, or attempts used up
//!     running --> queued: lease expired (rescue) / shutdown release
//!     queued --> cancelled: cancel
//!     running --> cancelled: cancel (result discarded)
//!     needs_approval --> done: decision applied (approved, or rewritten)
//!     needs_approval --> failed: decision applied (rejected for good)
//!     failed --> queued: retry (attempts reset)
//!     cancelled --> queued: retry (attempts reset)
//! ```
//!
//! Invariants: **only the lease holder writes a running job** (every finish is fenced on
//! `status = 'running' AND locked_by AND attempts`), and **no transaction spans an
//! external call** (the claim commits at once; a handler's writes commit with its finish).

pub mod backend;
pub mod config;
pub mod db;
pub mod floors;
pub mod ops;
pub mod outcome;
pub mod registry;
pub mod runner;
pub mod schema;
mod sql;
pub mod steps;
pub mod text;
pub mod trace;
pub mod worker;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

pub use outcome::{Effects, JobError, Outcome, ResultExt};
pub use registry::{Catalog, JobArgs, JobContext, Registry};
pub use runner::Runner;
pub use sql::JOBS_CHANNEL;
pub use steps::{Ran, RequestHash, Steps};

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use sqlx;
}

text_enum! {
    /// Where a job stands (`jobs.status`).
    pub enum JobStatus("job status") {
        Queued = "queued",
        Running = "running",
        Done = "done",
        Failed = "failed",
        NeedsApproval = "needs_approval",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// Whether the job will not run again unless someone retries it.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// Errors of the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the engine's migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unknown job kind {0:?}: known kinds are {1}")]
    UnknownKind(String, String),
    #[error("column {name:?} of a new job: {why}")]
    Column { name: String, why: &'static str },
    #[error("input for {kind} is invalid: {detail}")]
    InvalidInput { kind: String, detail: String },
    #[error("job {0} not found")]
    NotFound(Uuid),
    #[error("job {id} is {status}: {action} needs {needs}")]
    WrongState {
        id: Uuid,
        status: JobStatus,
        action: &'static str,
        needs: &'static str,
    },
    #[error("periodic job {name:?}: {schedule:?} is not a cron expression: {why}")]
    BadSchedule {
        name: String,
        schedule: String,
        why: String,
    },
    /// A write the application made inside a finish (its effects) failed.
    #[error("{0}")]
    Effect(String),
    /// A step's output cannot be stored as JSON.
    #[error("step {name:?}: its output does not serialise to JSON: {detail}")]
    StepOutput { name: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A job to enqueue. Only `kind` and `input` are required; every other column has a
/// default in the database, exactly as for a plain SQL `INSERT`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewJob {
    pub kind: String,
    pub input: Value,
    /// The tenant; when absent the database decides (the project's, the parent's, or the
    /// writer's).
    pub tenant_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub parent_id: Option<Uuid>,
    pub priority: Option<i32>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
    pub idempotency_key: Option<String>,
    /// The trace the job belongs to. Set when the job is built inside a job's handler
    /// (that run's trace); otherwise the parent's, or the caller's (see [`trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<trace::TraceContext>,
    /// Values for columns the application added to `jobs`, by column name, as JSON the
    /// column's type reads (`jsonb_populate_record`); a column not named is NULL, as it
    /// would be for an `INSERT` that leaves it out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, Value>,
}

impl NewJob {
    /// A job of `kind` with untyped input (checked against the kind's schema at enqueue).
    pub fn new(kind: impl Into<String>, input: Value) -> Self {
        Self {
            kind: kind.into(),
            input,
            trace: trace::in_job(),
            ..Self::default()
        }
    }
    /// A job of `A`'s kind with `args` as its input.
    pub fn of<A: JobArgs>(args: &A) -> Self {
        // Args types are plain structs of strings, numbers, ids and lists: they always
        // serialise.
        let input = serde_json::to_value(args).expect("job args serialise to JSON");
        Self::new(A::KIND, input)
    }
    pub fn tenant(mut self, id: impl Into<Option<Uuid>>) -> Self {
        self.tenant_id = id.into();
        self
    }
    pub fn project(mut self, id: impl Into<Option<Uuid>>) -> Self {
        self.project_id = id.into();
        self
    }
    pub fn parent(mut self, id: impl Into<Option<Uuid>>) -> Self {
        self.parent_id = id.into();
        self
    }
    /// Sets a column the application added to `jobs` (not one of the engine's).
    pub fn column(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        // Ids, numbers and strings always serialise.
        let value = serde_json::to_value(value).expect("a column value serialises to JSON");
        self.columns.insert(name.into(), value);
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = Some(p);
        self
    }
    pub fn run_at(mut self, at: impl Into<Option<DateTime<Utc>>>) -> Self {
        self.run_at = at.into();
        self
    }
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    /// The trace this job belongs to, in place of the one it would find (see [`trace`]).
    pub fn trace(mut self, trace: impl Into<Option<trace::TraceContext>>) -> Self {
        self.trace = trace.into();
        self
    }
}

/// What an enqueue did: a new row, or the existing row with the same idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: Uuid,
    pub created: bool,
}

/// A whole `jobs` row, as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub status: JobStatus,
    pub tenant_id: Uuid,
    pub project_id: Option<Uuid>,
    pub input: Value,
    pub output: Option<Value>,
    pub parent_id: Option<Uuid>,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Why a queued job is not running yet though its attempt was given back (a rate
    /// limit: "waiting for limit KEY"); cleared when the job is claimed again, and by
    /// any other finish or a cancel.
    pub waiting_for: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The W3C trace context the job belongs to (see [`trace`]).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A job as its worker holds it after the claim: what the handler needs, plus the lease
/// (`locked_by`, `attempts`) every later write is fenced on.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub kind: String,
    /// Whose job it is: what the handler reads and writes stays within it.
    pub tenant_id: Uuid,
    pub project_id: Option<Uuid>,
    pub input: Value,
    pub parent_id: Option<Uuid>,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub locked_by: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl ClaimedJob {
    /// The trace this job belongs to, if it carries a valid one.
    pub fn trace(&self) -> Option<trace::TraceContext> {
        trace::TraceContext::parse(self.traceparent.as_deref()?, self.tracestate.as_deref())
    }
}

/// Enqueues one job inside the caller's transaction (or on a plain connection).
///
/// The input is validated against the kind's schema in `catalog` first. With an
/// idempotency key that is already taken, the existing job is returned and nothing is
/// inserted.
pub async fn enqueue(conn: &mut PgConnection, catalog: &Catalog, job: &NewJob) -> Result<Enqueued> {
    Ok(enqueue_many(conn, catalog, std::slice::from_ref(job)).await?[0])
}

/// Enqueues many jobs in one round trip, inside the caller's transaction.
///
/// Returns one [`Enqueued`] per input job, in order. Every input is validated before
/// anything is written: one bad job refuses the whole call, naming its index.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    catalog: &Catalog,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>> {
    for (i, job) in jobs.iter().enumerate() {
        catalog
            .validate(&job.kind, &job.input)
            .map_err(|e| match e {
                Error::InvalidInput { kind, detail } if jobs.len() > 1 => Error::InvalidInput {
                    kind,
                    detail: format!("job #{i}: {detail}"),
                },
                other => other,
            })?;
    }
    sql::job_insert_many(conn, jobs).await
}
