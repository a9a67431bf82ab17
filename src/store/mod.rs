//! Domain SQL, one module per table or area: nothing else in the application writes
//! these tables (the queue engine owns `jobs`; `publish::attempts` owns
//! `publish_attempts`). Functions take an executor or a connection, so a caller's
//! transaction (a step's finish, a decision's application) holds them together.
//!
//! Runtime-checked queries, each covered by the tests in `tests/`.

pub mod agents;
pub mod approvals;
pub mod artifacts;
pub mod audit;
pub mod budgets;
pub mod caches;
pub mod console;
pub mod events;
pub mod files;
pub mod integrations;
pub mod jobs;
pub mod limits;
pub mod models;
pub mod notifications;
pub mod projects;
pub mod review_links;
pub mod runs;
pub mod settings;
pub mod status;
pub mod tenants;
pub mod tokens;

use uuid::Uuid;

use crate::keys::KeyError;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no {what} {id}")]
    NotFound { what: &'static str, id: Uuid },
    #[error("{what} {id} is {state}: {action} needs {needs}")]
    WrongState {
        what: &'static str,
        id: Uuid,
        state: String,
        action: &'static str,
        needs: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The engine's reads, as the store's: a database failure stays one.
impl From<copydesk_queue::Error> for Error {
    fn from(e: copydesk_queue::Error) -> Self {
        match e {
            copydesk_queue::Error::Sql(e) => Error::Sql(e),
            other => Error::Invalid(other.to_string()),
        }
    }
}

impl Error {
    /// Whether trying again later could help (the database, not the request, failed).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Sql(_))
    }
}

/// Writes made inside a step's finish report store errors to the engine; a lost
/// connection stays a database error, so the engine retries the whole finish.
impl From<Error> for copydesk_queue::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Sql(e) => copydesk_queue::Error::Sql(e),
            other => copydesk_queue::Error::Effect(other.to_string()),
        }
    }
}

/// Runs `delete` (a statement deleting at most `batch` rows) until one deletes fewer:
/// the rows deleted in all. Each statement is its own transaction, so none holds its
/// locks for long.
pub(crate) async fn in_batches<F, Fut>(batch: i64, mut delete: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = delete().await?;
        total += n;
        if (n as i64) < batch {
            return Ok(total);
        }
    }
}
