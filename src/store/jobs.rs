//! The application's columns on the engine's `jobs` table: which artifact a job read
//! (`input_artifact_id`, set when it is enqueued) and which it produced
//! (`output_artifact_id`, set in its finish). The engine owns the rest of the row.

use std::collections::HashMap;

use copydesk_queue::NewJob;
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;

/// A job's artifacts, as operators see them beside the engine's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobArtifacts {
    pub input_artifact_id: Option<Uuid>,
    pub output_artifact_id: Option<Uuid>,
}

/// A new job's application columns.
pub trait NewJobExt {
    /// The artifact the job reads (its tenant must be the job's: the tenancy trigger
    /// checks it).
    fn input_artifact(self, id: Uuid) -> Self;
}

impl NewJobExt for NewJob {
    fn input_artifact(self, id: Uuid) -> Self {
        self.column("input_artifact_id", id)
    }
}

/// Points a job's `output_artifact_id` at what its step produced (inside its finish).
pub async fn set_output_artifact(db: impl PgExecutor<'_>, job: Uuid, artifact: Uuid) -> Result<()> {
    crate::db::query("UPDATE jobs SET output_artifact_id = $2 WHERE id = $1")
        .bind(job)
        .bind(artifact)
        .execute(db)
        .await?;
    Ok(())
}

/// The artifacts of each of `jobs` that the caller may read.
pub async fn artifacts(
    db: impl PgExecutor<'_>,
    jobs: &[Uuid],
) -> Result<HashMap<Uuid, JobArtifacts>> {
    let rows: Vec<(Uuid, Option<Uuid>, Option<Uuid>)> = crate::db::query_as(
        "SELECT id, input_artifact_id, output_artifact_id FROM jobs WHERE id = ANY($1)",
    )
    .bind(jobs)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, input_artifact_id, output_artifact_id)| {
            (
                id,
                JobArtifacts {
                    input_artifact_id,
                    output_artifact_id,
                },
            )
        })
        .collect())
}
