//! Steps: a job's finished pieces of work, kept so they are paid for once.
//!
//! A handler that makes several external calls in a row (a model call, then another
//! that reads the first one's answer) runs each as a named step. The first time, the
//! step runs and its output is stored in `job_steps`, committed at once — not with the
//! job's finish, which a wait for a rate limit, a failed later call, a crash or a lost
//! lease may never bring. Every later run of the same job gets the stored output back
//! without running the step: after a wait it resumes at the call that waited, after a
//! retry at the call that failed.
//!
//! A step is keyed by its job, its name and the SHA-256 of what it was asked (any
//! `Serialize` value: a model call's whole request body, a page's URL). A changed
//! request (new feedback, an edited draft, another model after a fallback) is another
//! step and runs; a stale answer is never replayed for it. A stored output that no
//! longer decodes as the type asked for (a deploy changed it) runs the step again and
//! replaces it. Steps go with their job (the foreign key cascades; retention counts them).
//!
//! Only work whose output can stand in for doing it again is a step. An action on the
//! world whose effect must be checked, not remembered (a post to a platform), is not:
//! replaying "posted" from a stored answer would hide a post that was deleted, and
//! cannot tell a lost answer from a lost post.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Error, Result, db::Db};

/// What a step was asked, hashed: the half of its key that is not its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHash([u8; 32]);

impl RequestHash {
    /// The SHA-256 of `request` as JSON. serde_json writes a value the same way every
    /// time (object keys in their order of insertion or sorted, as the type keeps them),
    /// so the same request always hashes the same.
    pub fn of(request: &impl Serialize) -> Self {
        let bytes = serde_json::to_vec(request).expect("a request serialises to JSON");
        Self(Sha256::digest(&bytes).into())
    }

    /// The `n`th asking of the same request (0 the first): the same request made again
    /// within one run (an answer cut off, asked once more) is a step of its own.
    pub fn nth(self, n: u32) -> Self {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(n.to_be_bytes());
        Self(h.finalize().into())
    }

    /// The first eight bytes, in hex: enough to tell requests apart when listing.
    pub fn short(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A step's output, and whether it was replayed rather than run.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran<T> {
    pub output: T,
    /// The output came from an earlier run of the job: nothing was done for it now.
    pub replayed: bool,
}

/// The steps of one job, as one run of it sees them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Steps {
    db: Db,
    job_id: Uuid,
    attempt: i32,
}

impl Steps {
    /// The steps of `job_id`, for its run `attempt` (recorded with each step it runs).
    pub fn new(db: Db, job_id: Uuid, attempt: i32) -> Self {
        Self {
            db,
            job_id,
            attempt,
        }
    }

    /// Runs `work` as step `name` asked `request`, or gets its stored output back.
    ///
    /// The output is stored as soon as `work` succeeds, in a statement of its own; a
    /// failure to store it is logged and the output returned all the same (the step
    /// would only run again next time). A failure of `work` stores nothing. Reading
    /// the store failing is an error: running the step blind could pay for it twice.
    pub async fn run<T, E, F, Fut>(
        &self,
        name: &str,
        request: &impl Serialize,
        work: F,
    ) -> std::result::Result<Ran<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let hash = RequestHash::of(request);
        if let Some(output) = self.recall(name, hash).await? {
            return Ok(Ran {
                output,
                replayed: true,
            });
        }
        let output = work().await?;
        self.record_or_warn(name, hash, &output).await;
        Ok(Ran {
            output,
            replayed: false,
        })
    }

    /// The stored output of step `name` for `hash`, counted as a replay; `None` when
    /// the step has not run for this job, or its output no longer decodes as `T` (it
    /// runs again, and [`record`](Self::record) replaces it).
    pub async fn recall<T: DeserializeOwned>(
        &self,
        name: &str,
        hash: RequestHash,
    ) -> Result<Option<T>> {
        let stored: Option<Value> = crate::db::query_scalar(
            "UPDATE job_steps SET replays = replays + 1, last_replayed_at = now()
             WHERE job_id = $1 AND name = $2 AND request_sha256 = $3
             RETURNING output",
        )
        .bind(self.job_id)
        .bind(name)
        .bind(&hash.0[..])
        .fetch_optional(&self.db)
        .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        match serde_json::from_value(stored) {
            Ok(v) => {
                tracing::debug!(step = name, request = %hash.short(), "step replayed");
                Ok(Some(v))
            }
            Err(e) => {
                tracing::warn!(step = name, request = %hash.short(), error = %e,
                    "a stored step no longer decodes: running it again");
                Ok(None)
            }
        }
    }

    /// Stores step `name`'s output for `hash` (replacing one that no longer decodes).
    pub async fn record<T: Serialize>(
        &self,
        name: &str,
        hash: RequestHash,
        output: &T,
    ) -> Result<()> {
        let output = serde_json::to_value(output).map_err(|e| Error::StepOutput {
            name: name.to_owned(),
            detail: e.to_string(),
        })?;
        crate::db::query(
            "INSERT INTO job_steps (job_id, name, request_sha256, output, attempt)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, name, request_sha256) DO UPDATE
                SET output = excluded.output, attempt = excluded.attempt,
                    created_at = now(), replays = 0, last_replayed_at = NULL",
        )
        .bind(self.job_id)
        .bind(name)
        .bind(&hash.0[..])
        .bind(output)
        .bind(self.attempt)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// [`record`](Self::record), logging a failure instead of returning it: the work is
    /// done and its output good; only a later run would pay for it again.
    pub async fn record_or_warn<T: Serialize>(&self, name: &str, hash: RequestHash, output: &T) {
        if let Err(e) = self.record(name, hash, output).await {
            tracing::warn!(step = name, error = %e,
                "could not store a step's output: a later run of the job would run it again");
        }
    }
}

/// One stored step, as operators see it (its output stays in the table).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub name: String,
    /// The attempt that ran it.
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
    /// Later runs that got its output back instead of running it.
    pub replays: i32,
    pub last_replayed_at: Option<DateTime<Utc>>,
}

/// The steps of `job_id`, in the order they ran.
pub async fn list(db: impl sqlx::PgExecutor<'_>, job_id: Uuid) -> Result<Vec<StepRow>> {
    Ok(crate::db::query_as(
        "SELECT name, attempt, created_at, replays, last_replayed_at
         FROM job_steps WHERE job_id = $1 ORDER BY created_at, name",
    )
    .bind(job_id)
    .fetch_all(db)
    .await?)
}
