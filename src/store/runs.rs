//! `runs`: the ledger of external calls, one row per model or platform call. This is
//! its one writer, used by the model client and the publishers alike; each row is
//! written as its call ends, in its own statement, so cost is never lost when the job
//! later fails.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::Result;
use crate::domain::RunStatus;

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
    pub cost_usd: f64,
    pub duration_ms: i32,
    pub error: Option<&'a str>,
}

/// Writes one `runs` row.
pub async fn record(db: impl PgExecutor<'_>, run: &NewRun<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO runs (job_id, project_id, attempt, agent, provider, model, prompt_tokens,
                           completion_tokens, cost_usd, duration_ms, status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
    .execute(db)
    .await?;
    Ok(())
}

/// A project's budget and what its runs have cost so far; `None` when there is no
/// such project.
pub async fn budget(pool: &PgPool, project: Uuid) -> Result<Option<(Option<f64>, f64)>> {
    Ok(sqlx::query_as(
        "SELECT p.budget_usd::float8,
                coalesce((SELECT sum(cost_usd) FROM runs r WHERE r.project_id = p.id), 0)::float8
         FROM projects p WHERE p.id = $1",
    )
    .bind(project)
    .fetch_optional(pool)
    .await?)
}

/// External-call cost of a project, per provider and model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CostLine {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: f64,
}

pub async fn cost_by_model(pool: &PgPool, project: Uuid) -> Result<Vec<CostLine>> {
    Ok(sqlx::query_as(
        "SELECT provider, coalesce(model, '-') AS model, count(*) AS calls,
                sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
                sum(cost_usd)::float8 AS cost_usd
         FROM runs WHERE project_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(project)
    .fetch_all(pool)
    .await?)
}

/// A job's runs as JSON, oldest first.
pub async fn for_job(pool: &PgPool, job: Uuid) -> Result<Vec<Value>> {
    Ok(sqlx::query_scalar(
        "SELECT to_jsonb(r) - 'job_id' FROM runs r WHERE job_id = $1 ORDER BY created_at",
    )
    .bind(job)
    .fetch_all(pool)
    .await?)
}
