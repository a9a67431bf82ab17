//! `runs`: the ledger of external calls, one row per model or platform call. This is
//! its one writer, used by the model client and the publishers alike; each row is
//! written as its call ends, in its own statement, so cost is never lost when the job
//! later fails.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;
use crate::domain::{CostSource, Dialect, RunStatus, StructuredMode};

/// One finished external call.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The job that made it (`None`: an operator's call, e.g. `integrations test`).
    pub job_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub attempt: i32,
    /// The agent (model calls) or `publisher` (platform calls).
    pub agent: &'a str,
    /// The model provider, or the platform.
    pub provider: &'a str,
    /// The model, or the platform call (`POST /2/tweets`).
    pub model: &'a str,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    /// Prompt tokens the provider served from its cache.
    pub cached_tokens: i32,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: i32,
    pub cost_usd: f64,
    pub cost_source: Option<CostSource>,
    /// How a structured answer was asked for.
    pub structured_mode: Option<StructuredMode>,
    /// The model server dialect the request was shaped for.
    pub dialect: Option<Dialect>,
    pub duration_ms: i32,
    pub error: Option<&'a str>,
    /// What copydesk did about the answer (repairs, a fallback, a step-down).
    pub notes: Option<&'a str>,
}

impl<'a> NewRun<'a> {
    /// A call that cost nothing in tokens (a platform call).
    pub fn call(agent: &'a str, provider: &'a str, model: &'a str) -> Self {
        Self {
            job_id: None,
            project_id: None,
            attempt: 0,
            agent,
            provider,
            model,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cost_usd: 0.0,
            cost_source: None,
            structured_mode: None,
            dialect: None,
            duration_ms: 0,
            error: None,
            notes: None,
        }
    }
}

/// Writes one `runs` row.
pub async fn record(db: impl PgExecutor<'_>, run: &NewRun<'_>) -> Result<()> {
    crate::db::query(
        "INSERT INTO runs (job_id, project_id, attempt, agent, provider, model, prompt_tokens,
                           completion_tokens, cost_usd, duration_ms, status, error,
                           cached_tokens, reasoning_tokens, cost_source, structured_mode, notes, dialect)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(run.job_id)
    .bind(run.project_id)
    .bind(run.attempt)
    .bind(run.agent)
    .bind(run.provider)
    .bind(run.model)
    .bind(run.prompt_tokens)
    .bind(run.completion_tokens)
    .bind(run.cost_usd)
    .bind(run.duration_ms)
    .bind(if run.error.is_some() {
        RunStatus::Error
    } else {
        RunStatus::Ok
    })
    .bind(run.error)
    .bind(run.cached_tokens)
    .bind(run.reasoning_tokens)
    .bind(run.cost_source)
    .bind(run.structured_mode)
    .bind(run.notes)
    .bind(run.dialect)
    .execute(db)
    .await?;
    Ok(())
}

/// External-call cost of a project, per provider and model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CostLine {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_usd: f64,
    /// Calls whose model has no price: their cost is unknown, counted as nothing.
    pub unpriced_calls: i64,
}

pub async fn cost_by_model(db: impl PgExecutor<'_>, project: Uuid) -> Result<Vec<CostLine>> {
    Ok(crate::db::query_as(
        "SELECT provider, coalesce(model, '-') AS model, count(*) AS calls,
                sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
                sum(cached_tokens)::bigint AS cached_tokens, sum(reasoning_tokens)::bigint AS reasoning_tokens,
                sum(cost_usd)::float8 AS cost_usd,
                count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced_calls
         FROM runs WHERE project_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(project)
    .fetch_all(db)
    .await?)
}

/// A job's runs as JSON, oldest first.
pub async fn for_job(db: impl PgExecutor<'_>, job: Uuid) -> Result<Vec<Value>> {
    Ok(crate::db::query_scalar(
        "SELECT to_jsonb(r) - 'job_id' FROM runs r WHERE job_id = $1 ORDER BY created_at",
    )
    .bind(job)
    .fetch_all(db)
    .await?)
}

/// What cost is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostGroup {
    Project,
    /// The channel of the job that made the call (`-` for calls of no channel).
    Channel,
    /// `provider/model`.
    Model,
    /// The UTC day of the call.
    Day,
}

/// One group's calls, tokens and cost.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CostGroupLine {
    pub key: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
    pub errors: i64,
}

/// Cost of the runs since `since` (all without it), of one project or all, per `group`.
pub async fn cost_by(
    db: impl PgExecutor<'_>,
    group: CostGroup,
    project: Option<Uuid>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<CostGroupLine>> {
    let key = match group {
        CostGroup::Project => "coalesce(r.project_id::text, '-')",
        CostGroup::Channel => "coalesce(j.input->>'channel', '-')",
        CostGroup::Model => "r.provider || '/' || coalesce(r.model, '-')",
        CostGroup::Day => "to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    };
    let join = if group == CostGroup::Channel {
        "LEFT JOIN jobs j ON j.id = r.job_id"
    } else {
        ""
    };
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {key} AS key, count(*) AS calls, sum(r.prompt_tokens)::bigint AS prompt_tokens,
                sum(r.completion_tokens)::bigint AS completion_tokens,
                sum(r.cost_usd)::float8 AS cost_usd,
                count(*) FILTER (WHERE r.status = 'error') AS errors
         FROM runs r {join}
         WHERE ($1::uuid IS NULL OR r.project_id = $1)
           AND ($2::timestamptz IS NULL OR r.created_at >= $2)
         GROUP BY 1 ORDER BY 1"
    )))
    .bind(project)
    .bind(since)
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// A project's cost against what it published.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CostPerPost {
    pub project_id: Uuid,
    pub name: String,
    pub cost_usd: f64,
    /// Publications (posts that went out, or were found out there).
    pub published: i64,
    /// Everything the project's calls cost divided by its publications (none without one).
    pub cost_per_post_usd: Option<f64>,
}

/// Cost per published post, per project (one project or all).
pub async fn cost_per_post(
    db: impl PgExecutor<'_>,
    project: Option<Uuid>,
) -> Result<Vec<CostPerPost>> {
    Ok(crate::db::query_as(
        "SELECT *, CASE WHEN published > 0 THEN cost_usd / published END AS cost_per_post_usd
         FROM (SELECT p.id AS project_id, p.name, p.created_at,
                      coalesce((SELECT sum(cost_usd) FROM runs r WHERE r.project_id = p.id), 0)::float8 AS cost_usd,
                      (SELECT count(*) FROM artifacts a
                       WHERE a.project_id = p.id AND a.kind = 'publication') AS published
               FROM projects p WHERE ($1::uuid IS NULL OR p.id = $1)) t
         ORDER BY created_at, project_id",
    )
    .bind(project)
    .fetch_all(db)
    .await?)
}
