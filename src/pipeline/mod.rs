//! The transition table of the content pipeline: what starts it, what follows each
//! step (with and without approval), how a person's decision is applied, and how a
//! publication is requested. Nothing else writes approvals or enqueues follow-up jobs;
//! the handlers in `jobs/` only do their step's work and return what it produced.
//!
//! ```text
//! start ──► brand_voice_analysis ──(approval)──► draft_generation (one per channel)
//!                                                   │
//!                                                   ▼
//!                                              evaluation ── below pass_score, iterations left ──► draft_generation (with feedback)
//!                                                   │ passed, or iterations used up
//!                                                   ▼
//!                                               (approval) ── rejected with notes, iterations left ──► draft_generation (with notes)
//!                                                   │ approved (or approve_drafts = false)
//!                                                   ▼
//!                                               publishing (request_publication; `copydesk publish` too)
//! ```
//!
//! Approval states:
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> pending: a step ends needing a person (job needs_approval)
//!     pending --> approved: approve (CLI, or any UPDATE)
//!     pending --> rejected: reject with notes
//!     approved --> applied: a worker applies it once (follow-up jobs, job done)
//!     rejected --> applied: a rewrite with the notes, or the channel ends rejected
//!     approved --> approved: applying failed (last_error set; tried again later)
//! ```

pub mod decisions;
pub mod operator;
pub mod publication;
pub mod review_links;
pub mod start;
pub mod steps;

use uuid::Uuid;

pub use crate::jobs::brand_voice_analysis::Plan;
use crate::{domain::Platform, publish, store};

/// Why a transition was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Queue(#[from] copydesk_queue::Error),
    /// The draft may not go where it was asked to.
    #[error(transparent)]
    Ineligible(#[from] publish::eligibility::Ineligible),
    /// A row named by id belongs to another tenant than the one the caller acts for.
    #[error("{what} {id} belongs to another tenant than {tenant}")]
    OtherTenant {
        what: &'static str,
        id: Uuid,
        tenant: String,
    },
    #[error(
        "artifact {artifact} is already published to {platform} ({url}); pass --again to publish it once more"
    )]
    AlreadyPublished {
        artifact: Uuid,
        platform: Platform,
        url: String,
    },
    /// A waiting job's input does not decode into its kind's args: nothing can follow it.
    #[error("job {job} ({kind}) has an input its kind cannot read: {why}")]
    BadInput {
        job: Uuid,
        kind: String,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<publish::eligibility::Error> for Error {
    fn from(e: publish::eligibility::Error) -> Self {
        match e {
            publish::eligibility::Error::Ineligible(e) => Self::Ineligible(e),
            publish::eligibility::Error::Store(e) => Self::Store(e),
        }
    }
}

impl Error {
    /// Whether the database, not the request, failed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Queue(copydesk_queue::Error::Sql(_)) => true,
            _ => false,
        }
    }
}

/// Transitions made inside a step's finish report their errors to the engine; a lost
/// connection stays a database error, so the engine retries the whole finish.
impl From<Error> for copydesk_queue::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e.into(),
            Error::Queue(e) => e,
            other => copydesk_queue::Error::Effect(other.to_string()),
        }
    }
}
