//! What operators ask of a project: each channel's state, current draft, score and
//! approval, and what the model calls cost; drafts edited by people; full-text search.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::queue::{self, Error};

/// One channel of a project's pipeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ChannelStatus {
    pub channel: String,
    pub state: String,
    pub draft_id: Option<Uuid>,
    pub draft_version: Option<i32>,
    pub draft_source: Option<String>,
    pub title: Option<String>,
    pub score: Option<i32>,
    pub approval: Option<String>,
    pub last_error: Option<String>,
}

/// Model-call cost of a project, per provider and model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CostLine {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
}

/// A project's pipeline at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectStatus {
    pub project_id: Uuid,
    pub name: String,
    pub brand_voice: Option<String>,
    pub channels: Vec<ChannelStatus>,
    pub cost: Vec<CostLine>,
    pub total_cost_usd: f64,
}

pub async fn show(pool: &PgPool, project: Uuid) -> queue::Result<ProjectStatus> {
    let name: String = sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
        .bind(project)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound(project))?;
    let brand_voice: Option<String> = sqlx::query_scalar(
        "SELECT CASE j.status WHEN 'needs_approval' THEN 'waiting for approval'
                              WHEN 'done' THEN 'approved' ELSE j.status END
         FROM jobs j WHERE j.project_id = $1 AND j.kind = 'brand_voice_analysis'
         ORDER BY j.created_at DESC LIMIT 1",
    )
    .bind(project)
    .fetch_optional(pool)
    .await?;
    let channels: Vec<ChannelStatus> = sqlx::query_as(
        "WITH ch AS (
             SELECT DISTINCT channel FROM artifacts WHERE project_id = $1 AND kind = 'draft'
             UNION SELECT DISTINCT input->>'channel' FROM jobs
             WHERE project_id = $1 AND kind IN ('draft_generation', 'evaluation', 'publishing')),
         draft AS (
             SELECT DISTINCT ON (channel) channel, id, version, source, title FROM artifacts
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
                draft.title, score.score, ap.status AS approval,
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
    .fetch_all(pool)
    .await?;
    let cost: Vec<CostLine> = sqlx::query_as(
        "SELECT provider, coalesce(model, '-') AS model, count(*) AS calls,
                sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
                sum(cost_usd)::float8 AS cost_usd
         FROM runs WHERE project_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(project)
    .fetch_all(pool)
    .await?;
    let total_cost_usd = cost.iter().map(|c| c.cost_usd).sum();
    Ok(ProjectStatus {
        project_id: project,
        name,
        brand_voice,
        channels,
        cost,
        total_cost_usd,
    })
}

/// Stores a person's edit of a draft as a new `human` version based on it; a pending
/// approval of the draft then refers to the edited version. Returns the new artifact.
pub async fn edit_draft(
    pool: &PgPool,
    draft: Uuid,
    content: &str,
    by: &str,
) -> queue::Result<Uuid> {
    if content.trim().is_empty() {
        return Err(Error::InvalidInput {
            kind: "draft".into(),
            detail: "the edited text is empty".into(),
        });
    }
    let mut tx = pool.begin().await?;
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM artifacts WHERE id = $1 FOR UPDATE")
            .bind(draft)
            .fetch_optional(&mut *tx)
            .await?;
    match kind.as_deref() {
        None => return Err(Error::NotFound(draft)),
        Some("draft") => {}
        Some(other) => {
            return Err(Error::InvalidInput {
                kind: other.into(),
                detail: format!("artifact {draft} is a {other}, not a draft"),
            });
        }
    }
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO artifacts (project_id, job_id, kind, channel, version, based_on_id, source, title, content, data)
         SELECT project_id, job_id, 'draft', channel, version + 1, id, 'human', title, $2,
                data || jsonb_build_object('edited_by', $3::text)
         FROM artifacts WHERE id = $1
         RETURNING id",
    )
    .bind(draft)
    .bind(content)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE approvals SET artifact_id = $2 WHERE artifact_id = $1 AND status = 'pending'",
    )
    .bind(draft)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// One full-text search hit.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Hit {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub kind: String,
    pub channel: Option<String>,
    pub version: i32,
    pub title: Option<String>,
    pub snippet: String,
    pub rank: f32,
}

/// Searches artifacts' titles and contents (web-search syntax: words, "phrases", -not).
pub async fn search(
    pool: &PgPool,
    words: &str,
    project: Option<Uuid>,
    limit: i64,
) -> queue::Result<Vec<Hit>> {
    Ok(sqlx::query_as(
        "SELECT a.id, a.project_id, a.kind, a.channel, a.version, a.title,
                ts_headline('english', a.content, q, 'MaxFragments=1, MaxWords=18, MinWords=6') AS snippet,
                ts_rank(a.search, q) AS rank
         FROM artifacts a, websearch_to_tsquery('english', $1) q
         WHERE a.search @@ q AND ($2::uuid IS NULL OR a.project_id = $2)
         ORDER BY rank DESC, a.created_at DESC LIMIT $3",
    )
    .bind(words)
    .bind(project)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
