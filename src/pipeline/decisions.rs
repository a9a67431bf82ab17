//! People's decisions: recording them (approve, reject with notes, edit a draft) and
//! applying them. Approvals are a queue too: a worker claims decided, unapplied rows
//! (`FOR UPDATE SKIP LOCKED`) and applies each once, its follow-up jobs, the waiting
//! job's status and `applied_at` together. So a decision written by another service's
//! plain `UPDATE approvals SET status = 'approved'` moves the pipeline exactly as
//! `copydesk approvals approve` does, and two workers never apply it twice.
//!
//! Each decision is applied in a savepoint of its own: one whose application fails
//! (its job's input cannot be read, its follow-up is refused) rolls back alone, says
//! why on its row (`approvals.last_error`), is tried again after a backoff, and never
//! holds up the others.

use std::time::Duration;

use crate::db::Db;
use copydesk_queue::{Catalog, JobArgs, JobStatus, ops};
use serde::Serialize;
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use super::{
    Error, Result,
    publication::{self, PublicationRequest},
    steps,
};
use crate::{
    config::Settings,
    domain::ApprovalStatus,
    jobs::{brand_voice_analysis::BrandVoiceArgs, evaluation::EvaluationArgs},
    store::{
        self,
        approvals::{Approval, Decided},
    },
};

pub use store::approvals::CHANNEL;

/// Records a decision, exactly as another service's UPDATE would; a worker applies it.
pub async fn decide(
    pool: &Db,
    id: Uuid,
    approve: bool,
    by: &str,
    notes: Option<&str>,
) -> Result<Approval> {
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let a = decide_in(&mut tx, id, approve, by, notes).await?;
    tx.commit().await.map_err(store::Error::from)?;
    Ok(a)
}

/// [`decide`] inside the caller's transaction.
pub async fn decide_in(
    conn: &mut PgConnection,
    id: Uuid,
    approve: bool,
    by: &str,
    notes: Option<&str>,
) -> Result<Approval> {
    let status = if approve {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Rejected
    };
    let a = store::approvals::decide(&mut *conn, id, status, by, notes).await?;
    store::audit::record(
        &mut *conn,
        &store::audit::Entry {
            tenant: Some(a.tenant_id),
            actor: by,
            action: if approve {
                "approval.approved"
            } else {
                "approval.rejected"
            },
            target_table: Some("approvals"),
            target_id: Some(a.id),
            details: serde_json::json!({"artifact_id": a.artifact_id, "notes": notes}),
        },
    )
    .await?;
    Ok(a)
}

/// Stores a person's edit of a draft as a new `human` version based on it; a pending
/// approval of the draft then refers to the edited version. Returns the new artifact.
pub async fn edit_draft(pool: &Db, draft: Uuid, content: &str, by: &str) -> Result<Uuid> {
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let id = edit_draft_in(&mut tx, draft, content, by).await?;
    tx.commit().await.map_err(store::Error::from)?;
    Ok(id)
}

/// [`edit_draft`] inside the caller's transaction.
pub async fn edit_draft_in(
    conn: &mut PgConnection,
    draft: Uuid,
    content: &str,
    by: &str,
) -> Result<Uuid> {
    if content.trim().is_empty() {
        return Err(Error::Invalid("the edited text is empty".into()));
    }
    let (id, tenant) =
        store::artifacts::insert_human_version(&mut *conn, draft, content, by).await?;
    let repointed = store::approvals::repoint_pending(&mut *conn, draft, id).await?;
    store::audit::record(
        &mut *conn,
        &store::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action: "draft.edited",
            target_table: Some("artifacts"),
            target_id: Some(id),
            details: serde_json::json!({
                "based_on_id": draft, "chars": content.chars().count(),
                "approvals_moved": repointed,
            }),
        },
    )
    .await?;
    Ok(id)
}

/// What applying one decision did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    pub approval_id: Uuid,
    pub status: ApprovalStatus,
    /// The jobs that follow.
    pub enqueued: Vec<Uuid>,
    /// The waiting job's new status (`None`: no job was waiting).
    pub job_status: Option<JobStatus>,
    /// Why it could not be applied (it is tried again later).
    pub error: Option<String>,
}

/// Applies up to `limit` decided approvals, each alone; returns what each did.
pub async fn apply_decided(
    pool: &Db,
    catalog: &Catalog,
    settings: &Settings,
    limit: i64,
) -> Result<Vec<Applied>> {
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let rows = store::approvals::claim_decided(&mut tx, limit).await?;
    let mut applied = Vec::with_capacity(rows.len());
    for d in rows {
        let mut sp = tx.begin().await.map_err(store::Error::from)?;
        match apply_one(&mut sp, catalog, settings, &d).await {
            Ok(a) => {
                sp.commit().await.map_err(store::Error::from)?;
                applied.push(a);
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                sp.rollback().await.map_err(store::Error::from)?;
                let error = e.to_string();
                let retry_in = backoff(d.apply_attempts);
                tracing::warn!(approval_id = %d.id, error = %error, retry_in = ?retry_in,
                    "applying an approval decision failed; the others go on");
                store::approvals::record_apply_error(&mut *tx, d.id, &error, retry_in).await?;
                applied.push(Applied {
                    approval_id: d.id,
                    status: d.status,
                    enqueued: Vec::new(),
                    job_status: None,
                    error: Some(error),
                });
            }
        }
    }
    tx.commit().await.map_err(store::Error::from)?;
    Ok(applied)
}

/// How long a decision that failed to apply waits before the next try: 10 s doubling,
/// at most an hour.
fn backoff(failures: i32) -> Duration {
    Duration::from_secs((10u64 << failures.clamp(0, 9) as u32).min(3600))
}

fn args<A: JobArgs>(d: &Decided, job: Uuid) -> Result<A> {
    let input = d.job_input.clone().unwrap_or_default();
    serde_json::from_value(input).map_err(|e| Error::BadInput {
        job,
        kind: A::KIND.into(),
        why: e.to_string(),
    })
}

async fn apply_one(
    conn: &mut PgConnection,
    catalog: &Catalog,
    settings: &Settings,
    d: &Decided,
) -> Result<Applied> {
    let mut enqueued = Vec::new();
    let mut job_status = None;
    if let (Some(job), Some(kind)) = (d.job_id, d.job_kind.as_deref()) {
        let approved = d.status == ApprovalStatus::Approved;
        let notes = d.notes.clone().unwrap_or_default();
        let (status, error) = match kind {
            BrandVoiceArgs::KIND if approved => {
                let a: BrandVoiceArgs = args(d, job)?;
                if let Some(plan) = &a.pipeline {
                    let jobs = steps::drafts_for(plan, d.artifact_id, d.project_id, Some(job));
                    let done = copydesk_queue::enqueue_many(&mut *conn, catalog, &jobs).await?;
                    enqueued.extend(done.into_iter().map(|e| e.id));
                }
                (JobStatus::Done, None)
            }
            BrandVoiceArgs::KIND => (
                JobStatus::Failed,
                Some(format!("brand voice rejected: {notes}")),
            ),
            EvaluationArgs::KIND if approved => {
                let a: EvaluationArgs = args(d, job)?;
                let request = PublicationRequest {
                    artifact: d.artifact_id,
                    integration: None,
                    at: a.schedule,
                    again: false,
                    parent: Some(job),
                    by: None,
                };
                let done = publication::request(
                    &mut *conn,
                    catalog,
                    settings.publish.facebook_min_schedule_minutes,
                    &request,
                )
                .await?;
                enqueued.push(done.job.id);
                (JobStatus::Done, None)
            }
            EvaluationArgs::KIND => {
                let a: EvaluationArgs = args(d, job)?;
                if a.iteration < settings.pipeline.max_iterations {
                    let feedback = d
                        .notes
                        .clone()
                        .unwrap_or_else(|| "Rejected by a reviewer.".into());
                    // The person rejected the draft the approval points at (an edit
                    // moves it): that is the one to rewrite.
                    let a = EvaluationArgs {
                        draft_artifact_id: d.artifact_id,
                        ..a
                    };
                    let job = steps::rewrite_job(&a, vec![feedback], d.project_id, job);
                    enqueued.push(copydesk_queue::enqueue(&mut *conn, catalog, &job).await?.id);
                    (JobStatus::Done, None)
                } else {
                    (
                        JobStatus::Failed,
                        Some(format!(
                            "draft rejected after {} iterations: {notes}",
                            a.iteration
                        )),
                    )
                }
            }
            // A decision about a job of another kind ends its wait, nothing follows.
            _ if approved => (JobStatus::Done, None),
            _ => (JobStatus::Failed, Some(format!("rejected: {notes}"))),
        };
        if ops::end_waiting(&mut *conn, job, status, error.as_deref()).await? {
            job_status = Some(status);
        }
    }
    store::approvals::mark_applied(&mut *conn, d.id).await?;
    Ok(Applied {
        approval_id: d.id,
        status: d.status,
        enqueued,
        job_status,
        error: None,
    })
}
