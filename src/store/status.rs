//! Read models across tables: a project's pipeline at a glance (`pipeline show`), one
//! job with everything attached to it (`jobs show`), and a project's jobs (the demo's
//! progress).

use crate::db::Db;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::{ApprovalStatus, ArtifactSource, Channel};
use copydesk_queue::{Job, JobStatus};

/// One channel of a project's pipeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ChannelStatus {
    pub channel: Channel,
    pub state: String,
    pub draft_id: Option<Uuid>,
    pub draft_version: Option<i32>,
    pub draft_source: Option<ArtifactSource>,
    pub title: Option<String>,
    /// The model that wrote the current draft (a fallback when the agent's was down).
    pub model: Option<String>,
    pub score: Option<i32>,
    pub approval: Option<ApprovalStatus>,
    pub last_error: Option<String>,
}

/// A project's pipeline at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectStatus {
    pub project_id: Uuid,
    pub name: String,
    pub brand_voice: Option<String>,
    pub channels: Vec<ChannelStatus>,
    pub cost: Vec<super::runs::CostLine>,
    pub total_cost_usd: f64,
    /// Spent, reserved (calls in flight) and left of the project's budget.
    pub budget: super::budgets::BudgetState,
}

/// Each channel's state, current draft, score and approval, and the cost so far.
pub async fn project(conn: &mut PgConnection, project: Uuid) -> Result<ProjectStatus> {
    let name = super::projects::name(&mut *conn, project)
        .await?
        .ok_or(Error::NotFound {
            what: "project",
            id: project,
        })?;
    let brand_voice: Option<String> = crate::db::query_scalar(
        "SELECT CASE j.status WHEN 'needs_approval' THEN 'waiting for approval'
                              WHEN 'done' THEN 'approved' ELSE j.status END
         FROM jobs j WHERE j.project_id = $1 AND j.kind = 'brand_voice_analysis'
         ORDER BY j.created_at DESC LIMIT 1",
    )
    .bind(project)
    .fetch_optional(&mut *conn)
    .await?;
    let channels: Vec<ChannelStatus> = crate::db::query_as(
        "WITH ch AS (
             SELECT DISTINCT channel FROM artifacts WHERE project_id = $1 AND kind = 'draft'
             UNION SELECT DISTINCT input->>'channel' FROM jobs
             WHERE project_id = $1 AND kind IN ('draft_generation', 'evaluation', 'publishing')),
         draft AS (
             SELECT DISTINCT ON (channel) channel, id, version, source, title, data->>'model' AS model FROM artifacts
             WHERE project_id = $1 AND kind = 'draft' ORDER BY channel, created_at DESC, id DESC),
         score AS (
             SELECT DISTINCT ON (channel) channel, (data->'scores'->>'overall')::int AS score FROM artifacts
             WHERE project_id = $1 AND kind = 'evaluation' ORDER BY channel, created_at DESC, id DESC),
         pub AS (
             SELECT DISTINCT ON (input->>'channel') input->>'channel' AS channel, status, last_error FROM jobs
             WHERE project_id = $1 AND kind = 'publishing' ORDER BY input->>'channel', created_at DESC),
         active AS (
             SELECT input->>'channel' AS channel, string_agg(DISTINCT kind, ', ') AS kinds FROM jobs
             WHERE project_id = $1 AND kind IN ('draft_generation', 'evaluation')
               AND status IN ('queued', 'running') GROUP BY 1),
         failed AS (
             SELECT DISTINCT ON (input->>'channel') input->>'channel' AS channel, last_error FROM jobs
             WHERE project_id = $1 AND kind IN ('draft_generation', 'evaluation') AND status = 'failed'
             ORDER BY input->>'channel', finished_at DESC)
         SELECT ch.channel,
                CASE WHEN pub.status = 'done' THEN 'published'
                     WHEN pub.status IS NOT NULL THEN 'publishing ' || pub.status
                     WHEN active.kinds IS NOT NULL THEN 'in progress: ' || active.kinds
                     WHEN ap.status = 'pending' THEN 'waiting for approval'
                     WHEN ap.status IS NOT NULL THEN ap.status
                     WHEN failed.channel IS NOT NULL THEN 'failed'
                     ELSE 'waiting' END AS state,
                draft.id AS draft_id, draft.version AS draft_version, draft.source AS draft_source,
                draft.title, draft.model, score.score, ap.status AS approval,
                coalesce(pub.last_error, failed.last_error) AS last_error
         FROM ch
         LEFT JOIN draft USING (channel)
         LEFT JOIN score USING (channel)
         LEFT JOIN pub USING (channel)
         LEFT JOIN active USING (channel)
         LEFT JOIN failed USING (channel)
         LEFT JOIN LATERAL (SELECT status FROM approvals WHERE artifact_id = draft.id
                            ORDER BY created_at DESC LIMIT 1) ap ON true
         WHERE ch.channel IS NOT NULL
         ORDER BY ch.channel",
    )
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    let cost = super::runs::cost_by_model(&mut *conn, project).await?;
    let budget = super::budgets::state(&mut *conn, project)
        .await?
        .ok_or(Error::NotFound {
            what: "project",
            id: project,
        })?;
    let total_cost_usd = cost.iter().map(|c| c.cost_usd).sum();
    Ok(ProjectStatus {
        project_id: project,
        name,
        brand_voice,
        channels,
        cost,
        total_cost_usd,
        budget,
    })
}

/// One job with everything attached to it.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    /// The artifact it read and the one it produced.
    #[serde(flatten)]
    pub job_artifacts: super::jobs::JobArtifacts,
    pub runs: Vec<Value>,
    /// The job's steps: each kept output, the attempt that paid for it, and how often a
    /// later run got it back instead of calling again.
    pub steps: Vec<copydesk_queue::steps::StepRow>,
    pub artifacts: Vec<Value>,
    pub approvals: Vec<Value>,
    /// Publishing attempts (what was sent, what came back), oldest first. (Not
    /// `attempts`: that is the job's count, flattened in from `Job`.)
    pub publish_attempts: Vec<Value>,
}

/// A job with its runs, artifacts, approvals and publishing attempts.
pub async fn job(conn: &mut PgConnection, id: Uuid) -> Result<JobDetail> {
    let job = copydesk_queue::ops::find(&mut *conn, id)
        .await?
        .ok_or(Error::NotFound { what: "job", id })?;
    async fn rows(conn: &mut PgConnection, q: &'static str, id: Uuid) -> Result<Vec<Value>> {
        Ok(crate::db::query_scalar::<Value>(q)
            .bind(id)
            .fetch_all(conn)
            .await?)
    }
    Ok(JobDetail {
        job_artifacts: super::jobs::artifacts(&mut *conn, &[id])
            .await?
            .remove(&id)
            .unwrap_or_default(),
        runs: super::runs::for_job(&mut *conn, id).await?,
        steps: copydesk_queue::steps::list(&mut *conn, id).await?,
        artifacts: rows(
            conn,
            "SELECT jsonb_build_object('id', id, 'kind', kind, 'channel', channel, 'version', version,
                    'source', source, 'title', title, 'created_at', created_at)
             FROM artifacts WHERE job_id = $1 ORDER BY created_at",
            id,
        )
        .await?,
        approvals: rows(
            conn,
            "SELECT to_jsonb(a) - 'job_id' FROM approvals a WHERE job_id = $1 ORDER BY created_at",
            id,
        )
        .await?,
        publish_attempts: rows(
            conn,
            "SELECT to_jsonb(p) - 'job_id' FROM publish_attempts p WHERE job_id = $1
             ORDER BY created_at",
            id,
        )
        .await?,
        job,
    })
}

/// A job of a project, as the demo's progress display reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectJob {
    pub id: Uuid,
    pub kind: String,
    pub status: JobStatus,
    pub channel: Option<Channel>,
    pub last_error: Option<String>,
    pub output: Option<Value>,
}

/// A project's jobs, oldest first.
pub async fn project_jobs(pool: &Db, project: Uuid) -> Result<Vec<ProjectJob>> {
    Ok(crate::db::query_as(
        "SELECT id, kind, status, input->>'channel' AS channel, last_error, output FROM jobs
         WHERE project_id = $1 ORDER BY created_at, id",
    )
    .bind(project)
    .fetch_all(pool)
    .await?)
}
