//! Applying decided approvals. Approvals are a queue too: a worker claims decided,
//! unapplied rows (`FOR UPDATE SKIP LOCKED`) and applies each once, follow-up jobs, the
//! waiting job's status and `applied_at` in one transaction. So a decision written by
//! another service's plain `UPDATE approvals SET status = 'approved'` moves the pipeline
//! exactly as `copydesk approvals approve` does, and two workers never apply it twice.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::Plan;
use crate::{
    config::Settings,
    queue::{self, NewJob},
};

/// The NOTIFY channel a decision wakes.
pub const CHANNEL: &str = "copydesk_approvals";

/// One approval, as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Approval {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub artifact_id: Uuid,
    pub status: String,
    pub decided_by: Option<String>,
    pub notes: Option<String>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    pub applied_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What applying one decision did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    pub approval_id: Uuid,
    pub status: String,
    pub enqueued: Vec<Uuid>,
    pub job_status: String,
}

#[derive(Debug, sqlx::FromRow)]
struct Decided {
    id: Uuid,
    status: String,
    notes: Option<String>,
    artifact_id: Uuid,
    job_id: Option<Uuid>,
    job_kind: Option<String>,
    job_input: Option<Value>,
    project_id: Option<Uuid>,
}

/// Applies up to `limit` decided approvals; returns what each did.
pub async fn apply_decided(
    pool: &PgPool,
    settings: &Settings,
    limit: i64,
) -> queue::Result<Vec<Applied>> {
    let cfg = &settings.pipeline;
    let facebook_min_minutes = settings.publish.facebook_min_schedule_minutes;
    let mut tx = pool.begin().await?;
    let rows: Vec<Decided> = sqlx::query_as(
        "SELECT a.id, a.status, a.notes, a.artifact_id, a.job_id, j.kind AS job_kind,
                j.input AS job_input, j.project_id
         FROM approvals a LEFT JOIN jobs j ON j.id = a.job_id
         WHERE a.status <> 'pending' AND a.applied_at IS NULL
         ORDER BY a.decided_at, a.id
         LIMIT $1
         FOR UPDATE OF a SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut applied = Vec::with_capacity(rows.len());
    for d in rows {
        let input = d.job_input.clone().unwrap_or(Value::Null);
        let mut jobs: Vec<NewJob> = Vec::new();
        let mut job_status = "done";
        let mut error: Option<String> = None;
        match (d.job_kind.as_deref(), d.status.as_str()) {
            (Some("brand_voice_analysis"), "approved") => {
                let plan: Plan =
                    serde_json::from_value(input["pipeline"].clone()).unwrap_or_default();
                jobs.extend(super::drafts_for(
                    &plan,
                    d.artifact_id,
                    d.project_id,
                    d.job_id,
                ));
            }
            (Some("brand_voice_analysis"), _) => {
                job_status = "failed";
                error = Some(format!(
                    "brand voice rejected: {}",
                    d.notes.clone().unwrap_or_default()
                ));
            }
            (Some("evaluation"), "approved") => {
                let integration = match (
                    d.project_id,
                    input["channel"].as_str().map(super::Channel::parse),
                ) {
                    (Some(p), Some(Ok(channel))) => {
                        crate::publish::integrations::for_channel(&mut *tx, p, channel).await?
                    }
                    _ => None,
                };
                jobs.push(super::publishing_job(
                    &input,
                    d.artifact_id,
                    integration,
                    facebook_min_minutes,
                    d.project_id,
                    d.job_id,
                ));
            }
            (Some("evaluation"), _) => {
                let iteration = input["iteration"].as_i64().unwrap_or(1);
                if iteration < cfg.max_iterations {
                    let feedback = d
                        .notes
                        .clone()
                        .unwrap_or_else(|| "Rejected by a reviewer.".into());
                    jobs.push(super::rewrite_job(
                        &input,
                        d.artifact_id,
                        vec![feedback],
                        iteration + 1,
                        d.project_id,
                        d.job_id,
                    ));
                } else {
                    job_status = "failed";
                    error = Some(format!(
                        "draft rejected after {iteration} iterations: {}",
                        d.notes.clone().unwrap_or_default()
                    ));
                }
            }
            _ => {}
        }
        let enqueued: Vec<Uuid> = queue::enqueue_many(&mut tx, &jobs)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        if let Some(job) = d.job_id {
            sqlx::query(
                "UPDATE jobs SET status = $2, last_error = coalesce($3, last_error), finished_at = now(), updated_at = now()
                 WHERE id = $1 AND status = 'needs_approval'",
            )
            .bind(job)
            .bind(job_status)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE approvals SET applied_at = now() WHERE id = $1")
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
        applied.push(Applied {
            approval_id: d.id,
            status: d.status,
            enqueued,
            job_status: job_status.into(),
        });
    }
    tx.commit().await?;
    Ok(applied)
}

/// Records a decision, exactly as another service's UPDATE would.
pub async fn decide(
    pool: &PgPool,
    id: Uuid,
    approve: bool,
    by: &str,
    notes: Option<&str>,
) -> queue::Result<Approval> {
    let row: Option<Approval> = sqlx::query_as(
        "UPDATE approvals SET status = $2, decided_by = $3, notes = coalesce($4, notes)
         WHERE id = $1 AND status = 'pending'
         RETURNING id, job_id, artifact_id, status, decided_by, notes, decided_at, applied_at, created_at",
    )
    .bind(id)
    .bind(if approve { "approved" } else { "rejected" })
    .bind(by)
    .bind(notes)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(a) => Ok(a),
        None => {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM approvals WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Err(match status {
                None => queue::Error::NotFound(id),
                Some(status) => queue::Error::WrongState {
                    id,
                    status,
                    action: "a decision",
                    needs: "pending",
                },
            })
        }
    }
}

/// Approvals, newest first.
pub async fn list(pool: &PgPool, status: Option<&str>, limit: i64) -> queue::Result<Vec<Approval>> {
    Ok(sqlx::query_as(
        "SELECT id, job_id, artifact_id, status, decided_by, notes, decided_at, applied_at, created_at
         FROM approvals WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
