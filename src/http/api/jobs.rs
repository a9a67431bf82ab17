//! Jobs: list and filter, show with everything attached, enqueue, retry, cancel, bulk
//! retry or cancel by filter (a count first), and queue stats.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use copydesk_queue::{
    Job, JobStatus, NewJob,
    ops::{self, BulkAction, JobFilter},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiState,
    auth::{Caller, Tx},
    page::{Cursor, Page, PageQuery},
    problem::Problem,
};
use sqlx::PgConnection;

use crate::{domain::TokenRole, pipeline, store, store::jobs::JobArtifacts};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, enqueue_job))
        .routes(routes!(show_job))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
        .routes(routes!(bulk_jobs))
        .routes(routes!(queue_stats))
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    /// queued, running, done, failed, needs_approval or cancelled.
    pub status: String,
    pub project_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub input_artifact_id: Option<Uuid>,
    pub output_artifact_id: Option<Uuid>,
    pub parent_id: Option<Uuid>,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobView {
    /// The engine's row and the application's columns beside it.
    fn new(j: Job, a: JobArtifacts) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            status: j.status.to_string(),
            project_id: j.project_id,
            input: j.input,
            output: j.output,
            input_artifact_id: a.input_artifact_id,
            output_artifact_id: a.output_artifact_id,
            parent_id: j.parent_id,
            priority: j.priority,
            run_at: j.run_at,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            last_error: j.last_error,
            idempotency_key: j.idempotency_key,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }

    /// Views of `jobs`, each with its artifacts (one query for them all).
    async fn all(conn: &mut PgConnection, jobs: Vec<Job>) -> Result<Vec<Self>, Problem> {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let mut artifacts = store::jobs::artifacts(conn, &ids).await?;
        Ok(jobs
            .into_iter()
            .map(|j| {
                let a = artifacts.remove(&j.id).unwrap_or_default();
                Self::new(j, a)
            })
            .collect())
    }

    async fn one(conn: &mut PgConnection, job: Job) -> Result<Self, Problem> {
        let a = store::jobs::artifacts(conn, &[job.id])
            .await?
            .remove(&job.id)
            .unwrap_or_default();
        Ok(Self::new(job, a))
    }
}

/// Filters of the jobs listing and of bulk actions.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// queued, running, done, failed, needs_approval or cancelled.
    #[schema(value_type = Option<super::document::JobStatus>)]
    pub status: Option<String>,
    pub kind: Option<String>,
    pub project_id: Option<Uuid>,
    /// The failure as grouped by the console: `last_error` with ids shown as `<id>`
    /// and numbers as `<n>`.
    pub error_group: Option<String>,
}

impl JobsQuery {
    fn filter(&self) -> Result<JobFilter, Problem> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.parse::<JobStatus>()
                    .map_err(|e| Problem::bad_request(format!("status: {e}")))
            })
            .transpose()?;
        Ok(JobFilter {
            status,
            kind: self.kind.clone(),
            project_id: self.project_id,
            tenant_id: None, // row-level security keeps the caller to its tenant
            error_group: self.error_group.clone(),
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// queued, running, done, failed, needs_approval or cancelled.
    #[param(value_type = Option<super::document::JobStatus>)]
    pub status: Option<String>,
    pub kind: Option<String>,
    pub project_id: Option<Uuid>,
    /// The failure as grouped by the console (ids as `<id>`, numbers as `<n>`).
    pub error_group: Option<String>,
    /// `next` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Jobs, newest first, filtered; keyset-paginated.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = Page<JobView>), (status = 400, body = Problem)))]
async fn list_jobs(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<JobView>>, Problem> {
    let Query(q) = query?;
    let filter = JobsQuery {
        status: q.status,
        kind: q.kind,
        project_id: q.project_id,
        error_group: q.error_group,
    }
    .filter()?;
    let page = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = page.limit()?;
    let after = page.cursor()?.map(|c| c.id);
    let mut tx = caller.begin(&state).await?;
    let jobs = ops::page(&mut *tx, &filter, after, limit + 1).await?;
    let page = Page::of(jobs, limit, |j| Cursor { at: None, id: j.id });
    let items = JobView::all(&mut tx, page.items).await?;
    tx.commit().await?;
    Ok(Json(Page {
        items,
        next: page.next,
    }))
}

/// A job with what is attached to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetailView {
    #[serde(flatten)]
    pub job: JobView,
    /// Each external call it made (model or platform), with tokens and cost.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<Value>,
    /// Its steps (name, attempt, created_at, replays, last_replayed_at): work paid for
    /// once and replayed to later runs.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<copydesk_queue::steps::StepRow>,
    #[schema(value_type = Vec<Object>)]
    pub artifacts: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<Value>,
    /// Publishing attempts, oldest first. (Not `attempts`: that is the job's count,
    /// flattened in from `JobView`; one object held both keys until the contract test
    /// found it.)
    #[schema(value_type = Vec<Object>)]
    pub publish_attempts: Vec<Value>,
}

/// One job with its runs, artifacts, approvals and publishing attempts.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobDetailView), (status = 404, body = Problem)))]
async fn show_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<JobDetailView>, Problem> {
    let mut tx = caller.begin(&state).await?;
    let d = store::status::job(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(JobDetailView {
        job: JobView::new(d.job, d.job_artifacts),
        runs: d.runs,
        steps: d.steps,
        artifacts: d.artifacts,
        approvals: d.approvals,
        publish_attempts: d.publish_attempts,
    }))
}

/// A job to enqueue: only `kind` and `input` are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    pub kind: String,
    /// Checked against the kind's schema (jobs/<kind>/schema.json).
    #[schema(value_type = Object)]
    #[serde(default)]
    pub input: Value,
    pub project_id: Option<Uuid>,
    pub priority: Option<i32>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
    /// A second enqueue with the same key gives the first job's id.
    pub idempotency_key: Option<String>,
}

/// What an enqueue did.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedView {
    pub id: Uuid,
    /// False when the idempotency key named an existing job.
    pub created: bool,
}

/// Enqueues one job (operator).
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = EnqueueBody,
    responses((status = 201, body = EnqueuedView), (status = 200, body = EnqueuedView,
               description = "the idempotency key named an existing job"),
              (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn enqueue_job(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<EnqueueBody>, JsonRejection>,
) -> Result<(StatusCode, Json<EnqueuedView>), Problem> {
    caller.require(TokenRole::Operator)?;
    let Json(b) = body?;
    let mut job = NewJob::new(b.kind, b.input).project(b.project_id);
    job.priority = b.priority;
    job.run_at = b.run_at;
    job.max_attempts = b.max_attempts;
    job.idempotency_key = b.idempotency_key;
    let mut tx = caller.begin(&state).await?;
    let e = copydesk_queue::enqueue(&mut tx, state.catalog(), &job).await?;
    if e.created {
        audit(
            &mut tx,
            &caller,
            "job.enqueued",
            ("jobs", e.id),
            json!({"kind": job.kind}),
        )
        .await?;
    }
    tx.commit().await?;
    let status = if e.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(EnqueuedView {
            id: e.id,
            created: e.created,
        }),
    ))
}

/// A failed or cancelled job back to queued, attempts reset (operator).
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the job is not failed or cancelled")))]
async fn retry_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, Problem> {
    caller.require(TokenRole::Operator)?;
    let mut tx = caller.begin(&state).await?;
    let job = pipeline::operator::retry_in(&mut tx, id, caller.actor()).await?;
    let view = JobView::one(&mut tx, job).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// A queued or running job cancelled (operator).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the job is not queued or running")))]
async fn cancel_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<JobView>, Problem> {
    caller.require(TokenRole::Operator)?;
    let mut tx = caller.begin(&state).await?;
    let job = pipeline::operator::cancel_in(&mut tx, id, caller.actor()).await?;
    let view = JobView::one(&mut tx, job).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// At most this many jobs change in one bulk call.
const BULK_MAX: i64 = 10_000;

/// A bulk retry or cancel. Without `expect` nothing changes: the answer says how many
/// jobs the filter matches. With `expect` equal to that count the action is applied;
/// when the count has changed since, nothing is (409) and the answer gives the new one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// `retry` (failed or cancelled jobs) or `cancel` (queued or running ones).
    #[schema(value_type = super::document::BulkAction)]
    pub action: BulkAction,
    #[serde(default)]
    pub filter: JobsQuery,
    /// The count a previous call without it returned.
    pub expect: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkView {
    /// Jobs the filter matches that the action applies to.
    pub matched: i64,
    /// Whether the action was applied.
    pub applied: bool,
    /// The jobs changed (when applied).
    pub jobs: Vec<Uuid>,
}

/// Retries or cancels every job a filter matches, after a count (operator).
#[utoipa::path(post, path = "/jobs/bulk", tag = "jobs", request_body = BulkBody,
    responses((status = 200, body = BulkView),
              (status = 409, body = Problem, description = "the count changed since `expect` was read"),
              (status = 422, body = Problem, description = "more jobs match than one call changes")))]
async fn bulk_jobs(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Json<BulkView>, Problem> {
    caller.require(TokenRole::Operator)?;
    let Json(b) = body?;
    let filter = b.filter.filter()?;
    let mut tx = caller.begin(&state).await?;
    let view = bulk_in(&mut tx, &caller, b.action, &filter, b.expect).await?;
    tx.commit().await?;
    Ok(Json(view))
}

/// A bulk action in the caller's transaction: the count alone without `expect`, else
/// the action when the count is still `expect` (409 when it changed), audited.
pub(crate) async fn bulk_in(
    tx: &mut Tx,
    caller: &Caller,
    action: BulkAction,
    filter: &JobFilter,
    expect: Option<i64>,
) -> Result<BulkView, Problem> {
    let matched = ops::count(&mut **tx, filter, action.applies_to()).await?;
    let Some(expect) = expect else {
        return Ok(BulkView {
            matched,
            applied: false,
            jobs: Vec::new(),
        });
    };
    if expect != matched {
        return Err(Problem::conflict(format!(
            "the filter now matches {matched} job(s), not {expect}: send expect = {matched} to go on"
        )));
    }
    if matched > BULK_MAX {
        return Err(Problem::unprocessable(format!(
            "{matched} jobs match; one call changes at most {BULK_MAX}: narrow the filter"
        )));
    }
    let jobs = ops::bulk_in(tx, action, filter, BULK_MAX).await?;
    let name = match action {
        BulkAction::Retry => "jobs.bulk_retried",
        BulkAction::Cancel => "jobs.bulk_cancelled",
    };
    store::audit::record(
        &mut **tx,
        &store::audit::Entry {
            tenant: Some(caller.token.tenant_id),
            actor: caller.actor(),
            action: name,
            target_table: Some("jobs"),
            target_id: None,
            details: json!({"filter": filter, "count": jobs.len(), "jobs": jobs}),
        },
    )
    .await?;
    Ok(BulkView {
        matched,
        applied: true,
        jobs,
    })
}

/// Counts per kind and status, the oldest ready job's wait, recent throughput.
#[utoipa::path(get, path = "/queue/stats", tag = "jobs",
    responses((status = 200, body = Object)))]
async fn queue_stats(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<ops::QueueStats>, Problem> {
    let mut tx = caller.begin(&state).await?;
    let stats = ops::stats(&mut *tx).await?;
    tx.commit().await?;
    Ok(Json(stats))
}

/// Records a write by `caller` in the audit log, in the request's transaction.
pub async fn audit(
    tx: &mut Tx,
    caller: &Caller,
    action: &str,
    (table, target): (&str, Uuid),
    details: Value,
) -> Result<(), Problem> {
    store::audit::record(
        &mut **tx,
        &store::audit::Entry {
            tenant: Some(caller.token.tenant_id),
            actor: caller.actor(),
            action,
            target_table: Some(table),
            target_id: Some(target),
            details,
        },
    )
    .await?;
    Ok(())
}
