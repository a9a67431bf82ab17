//! What a handler tells the runner: done, needs approval, retry later, or fail for good.
//! Errors are classified where they happen, with [`ResultExt::retryable`] and
//! [`ResultExt::permanent`], not in one big match at the end.

use std::{fmt, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;

/// The writes a step makes in its finish transaction (artifacts, approvals, follow-up
/// jobs). They run after the job's fenced status update succeeded, in the same
/// transaction: either both commit or neither does. `Fn`, not `FnOnce`, because a finish
/// whose commit failed on a lost connection is retried whole.
pub type Effects = Arc<
    dyn for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<(), super::Error>> + Send + Sync,
>;

/// How one attempt of a job ended.
#[derive(Clone)]
pub enum Outcome {
    /// The step is complete. `output` is a small JSON summary stored on the row.
    Done {
        output: Option<Value>,
        effects: Option<Effects>,
    },
    /// The step is complete and waits for a person (an `approvals` row in `effects`).
    NeedsApproval {
        output: Option<Value>,
        effects: Option<Effects>,
    },
    /// Try again later (after `after` if given, else the backoff), while attempts remain.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Give up now: retrying cannot help.
    Fail { error: String },
    /// Not run: something outside the job (a rate limit) has no capacity yet. The job
    /// goes back to `queued` to run `after` from now, this attempt not counted and no
    /// error recorded; `note` ("waiting for limit …") is shown on the row instead.
    Wait { note: String, after: Duration },
    /// Not run: this worker cannot read the job (its input is a newer release's). It
    /// goes back to `queued` as a wait does, for another worker; the worker that gave
    /// it back does not wake for it when it is due.
    GiveBack { note: String, after: Duration },
}

impl Outcome {
    /// Done, with nothing to report.
    pub fn done() -> Self {
        Self::Done {
            output: None,
            effects: None,
        }
    }
    /// Done, with a JSON summary for the row's `output`.
    pub fn done_with(output: Value) -> Self {
        Self::Done {
            output: Some(output),
            effects: None,
        }
    }
    /// Adds writes to commit with the finish.
    pub fn with_effects(self, e: Effects) -> Self {
        match self {
            Self::Done { output, .. } => Self::Done {
                output,
                effects: Some(e),
            },
            Self::NeedsApproval { output, .. } => Self::NeedsApproval {
                output,
                effects: Some(e),
            },
            other => other,
        }
    }
    /// Done, or (when `waits`) done and waiting for a person: the same output and
    /// effects either way.
    pub fn waiting_if(self, waits: bool) -> Self {
        match self {
            Self::Done { output, effects } if waits => Self::NeedsApproval { output, effects },
            other => other,
        }
    }
    /// The status word written to the row (`retry` becomes `queued` or `failed`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Done { .. } => "done",
            Self::NeedsApproval { .. } => "needs_approval",
            Self::Retry { .. } => "retry",
            Self::Fail { .. } => "failed",
            // The same row as a wait: queued again, the attempt not counted.
            Self::Wait { .. } | Self::GiveBack { .. } => "wait",
        }
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done { output, effects } | Self::NeedsApproval { output, effects } => f
                .debug_struct(self.label())
                .field("output", output)
                .field("effects", &effects.is_some())
                .finish(),
            Self::Retry { error, after } => f
                .debug_struct("retry")
                .field("error", error)
                .field("after", after)
                .finish(),
            Self::Fail { error } => f.debug_struct("fail").field("error", error).finish(),
            Self::Wait { note, after } => f
                .debug_struct("wait")
                .field("note", note)
                .field("after", after)
                .finish(),
            Self::GiveBack { note, after } => f
                .debug_struct("give_back")
                .field("note", note)
                .field("after", after)
                .finish(),
        }
    }
}

/// A handler's error, already classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub message: String,
    /// `None`: permanent. `Some(after)`: retryable, after that delay if given.
    pub retry: Option<Option<Duration>>,
    /// Not a failure: the job waits this long for capacity (see [`Outcome::Wait`]);
    /// `message` is the note. Takes precedence over `retry`.
    pub wait: Option<Duration>,
}

impl JobError {
    /// An error worth retrying (timeouts, 5xx, 429, connection loss, malformed answers).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Some(None),
            wait: None,
        }
    }
    /// An error retrying cannot fix (bad input, 4xx, unapproved artifact, budget).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: None,
            wait: None,
        }
    }
    /// Not an error: run again `after` from now without counting this attempt.
    pub fn wait(note: impl Into<String>, after: Duration) -> Self {
        Self {
            message: note.into(),
            retry: Some(Some(after)),
            wait: Some(after),
        }
    }
    /// Retry no sooner than `after` (e.g. from `Retry-After`).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry = Some(Some(after));
        self
    }
}

impl From<JobError> for Outcome {
    fn from(e: JobError) -> Self {
        if let Some(after) = e.wait {
            return Outcome::Wait {
                note: e.message,
                after,
            };
        }
        match e.retry {
            Some(after) => Outcome::Retry {
                error: e.message,
                after,
            },
            None => Outcome::Fail { error: e.message },
        }
    }
}

/// The engine's own failures (a database error reading a job's steps, say) are worth
/// another attempt.
impl From<crate::Error> for JobError {
    fn from(e: crate::Error) -> Self {
        JobError::transient(e.to_string())
    }
}

/// Classifies any error where it happens.
pub trait ResultExt<T> {
    /// Worth retrying.
    fn retryable(self) -> Result<T, JobError>;
    /// Not worth retrying.
    fn permanent(self) -> Result<T, JobError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, JobError> {
        self.map_err(|e| JobError::transient(e.to_string()))
    }
    fn permanent(self) -> Result<T, JobError> {
        self.map_err(|e| JobError::permanent(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_survives_conversion() {
        let r: Result<(), &str> = Err("503 from provider");
        let o: Outcome = r.retryable().unwrap_err().into();
        assert!(matches!(o, Outcome::Retry { after: None, .. }));
        let o: Outcome = JobError::transient("429")
            .retry_after(Duration::from_secs(7))
            .into();
        assert!(matches!(o, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7)));
        let r: Result<(), &str> = Err("field x");
        let o: Outcome = r.permanent().unwrap_err().into();
        assert!(matches!(o, Outcome::Fail { ref error } if error == "field x"));
        let o: Outcome = JobError::wait("waiting for limit llm:h", Duration::from_secs(2)).into();
        assert!(
            matches!(o, Outcome::Wait { ref note, after } if note == "waiting for limit llm:h" && after == Duration::from_secs(2))
        );
    }
}
