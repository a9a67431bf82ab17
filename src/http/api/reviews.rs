//! Approvals (list, show, approve, reject with notes) and drafts (an edit is a new
//! human version; a pending approval moves to it).

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiState,
    auth::Caller,
    page::{Cursor, Page, PageQuery},
    problem::Problem,
};
use crate::{
    domain::{ApprovalStatus, TokenRole},
    pipeline,
    store::{self, approvals::Approval},
};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_approvals))
        .routes(routes!(show_approval))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(edit_draft))
        .routes(routes!(create_link))
        .routes(routes!(revoke_link))
}

/// An approval as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    /// The draft (or brand voice) it is about.
    pub artifact_id: Uuid,
    /// pending, approved or rejected.
    pub status: String,
    pub decided_by: Option<String>,
    pub notes: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// When a worker applied the decision (follow-up jobs enqueued).
    pub applied_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> Self {
        Self {
            id: a.id,
            job_id: a.job_id,
            artifact_id: a.artifact_id,
            status: a.status.to_string(),
            decided_by: a.decided_by,
            notes: a.notes,
            decided_at: a.decided_at,
            applied_at: a.applied_at,
            last_error: a.last_error,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// pending, approved or rejected.
    #[param(value_type = Option<super::document::ApprovalStatus>)]
    pub status: Option<String>,
    pub project_id: Option<Uuid>,
    /// `oldest` (the inbox's order) or `newest` (the default).
    #[param(value_type = Option<super::document::Order>)]
    pub order: Option<String>,
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Approvals by creation time; keyset-paginated.
#[utoipa::path(get, path = "/approvals", tag = "approvals", params(ApprovalsQuery),
    responses((status = 200, body = Page<ApprovalView>), (status = 400, body = Problem)))]
async fn list_approvals(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<ApprovalsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<ApprovalView>>, Problem> {
    let Query(q) = query?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<ApprovalStatus>()
                .map_err(|e| Problem::bad_request(format!("status: {e}")))
        })
        .transpose()?;
    let oldest_first = match q.order.as_deref() {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "order {other:?}: oldest or newest"
            )));
        }
    };
    let page = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = page.limit()?;
    let after = page
        .cursor()?
        .map(|c| {
            c.at.map(|at| (at, c.id))
                .ok_or_else(|| Problem::bad_request("that cursor is not one of this listing"))
        })
        .transpose()?;
    let mut tx = caller.begin(&state).await?;
    let rows = store::approvals::page(
        &mut *tx,
        status,
        q.project_id,
        oldest_first,
        after,
        limit + 1,
    )
    .await?;
    tx.commit().await?;
    let page = Page::of(rows, limit, |a| Cursor {
        at: Some(a.created_at),
        id: a.id,
    });
    Ok(Json(Page {
        items: page.items.into_iter().map(ApprovalView::from).collect(),
        next: page.next,
    }))
}

/// One approval with the artifact it is about.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals", params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn show_approval(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let mut tx = caller.begin(&state).await?;
    let mut a = store::approvals::show(&mut *tx, id).await?;
    tx.commit().await?;
    if let Some(o) = a.as_object_mut() {
        o.remove("tenant_id");
    }
    Ok(Json(a))
}

/// A decision's notes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// For a rejection: what to change (the rewrite gets them).
    pub notes: Option<String>,
}

/// Approves a pending approval (approver); a worker applies it.
#[utoipa::path(post, path = "/approvals/{id}/approve", tag = "approvals",
    params(("id" = Uuid, Path)), request_body(content = DecisionBody, description = "optional"),
    responses((status = 200, body = ApprovalView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "already decided")))]
async fn approve(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Result<Option<Json<DecisionBody>>, JsonRejection>,
) -> Result<Json<ApprovalView>, Problem> {
    let body = body?.map(|b| b.0).unwrap_or_default();
    decide(state, caller, id, true, body).await
}

/// Rejects a pending approval with notes (approver); a draft is rewritten with them.
#[utoipa::path(post, path = "/approvals/{id}/reject", tag = "approvals",
    params(("id" = Uuid, Path)), request_body = DecisionBody,
    responses((status = 200, body = ApprovalView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "already decided")))]
async fn reject(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Result<Json<ApprovalView>, Problem> {
    let Json(b) = body?;
    decide(state, caller, id, false, b).await
}

async fn decide(
    state: ApiState,
    caller: Caller,
    id: Uuid,
    approve: bool,
    b: DecisionBody,
) -> Result<Json<ApprovalView>, Problem> {
    caller.require(TokenRole::Approver)?;
    let notes = b.notes.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let mut tx = caller.begin(&state).await?;
    let a = pipeline::decisions::decide_in(&mut tx, id, approve, caller.actor(), notes).await?;
    tx.commit().await?;
    Ok(Json(a.into()))
}

/// A person's version of a draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    #[schema(value_type = super::document::NonBlank)]
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EditedView {
    /// The new version (a `human` draft based on the edited one).
    pub artifact_id: Uuid,
}

/// Stores an edit of a draft as a new human version (approver); a pending approval of
/// the draft moves to it.
#[utoipa::path(post, path = "/drafts/{id}/edit", tag = "approvals",
    params(("id" = Uuid, Path)), request_body = EditBody,
    responses((status = 201, body = EditedView), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn edit_draft(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Result<Json<EditBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<EditedView>), Problem> {
    caller.require(TokenRole::Approver)?;
    let Json(b) = body?;
    let mut tx = caller.begin(&state).await?;
    let artifact_id =
        pipeline::decisions::edit_draft_in(&mut tx, id, &b.content, caller.actor()).await?;
    tx.commit().await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(EditedView { artifact_id }),
    ))
}

/// A client review link to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// Whom it is for, 1 to 200 characters; the audit log names the decision by it.
    #[schema(value_type = super::document::NonBlank, max_length = 200)]
    pub name: String,
    /// How long it works: s, m, h or d (default 72h).
    #[schema(value_type = Option<super::document::Period>)]
    pub expires: Option<String>,
}

/// A review link (its URL only when it is made).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub id: Uuid,
    pub approval_id: Uuid,
    pub name: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_action: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The absolute URL to send (answered once, when the link is made).
    pub url: Option<String>,
}

impl From<store::review_links::ReviewLink> for LinkView {
    fn from(l: store::review_links::ReviewLink) -> Self {
        Self {
            id: l.id,
            approval_id: l.approval_id,
            name: l.name,
            expires_at: l.expires_at,
            used_at: l.used_at,
            used_action: l.used_action,
            revoked_at: l.revoked_at,
            url: None,
        }
    }
}

/// Makes a client review link to a pending approval (approver): a URL that lets a
/// person with no account decide it once, until it expires.
#[utoipa::path(post, path = "/approvals/{id}/links", tag = "approvals",
    params(("id" = Uuid, Path)), request_body = LinkBody,
    responses((status = 201, body = LinkView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the approval is decided"),
              (status = 503, body = Problem, description = "COPYDESK_LINK_KEY is not set")))]
async fn create_link(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    body: Result<Json<LinkBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<LinkView>), Problem> {
    caller.require(TokenRole::Approver)?;
    let Json(b) = body?;
    let key = state.link_key()?.clone();
    let ttl = crate::config::parse_duration(b.expires.as_deref().unwrap_or("72h"))
        .map_err(|e| Problem::unprocessable(format!("expires: {e}")))?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(ttl)
            .map_err(|_| Problem::unprocessable("expires: too far away"))?;
    let mut tx = caller.begin(&state).await?;
    let link =
        pipeline::review_links::create_in(&mut tx, id, &b.name, caller.actor(), expires_at).await?;
    tx.commit().await?;
    let url = crate::links::url(&state.public_url(), &key.sign(link.id));
    let mut view = LinkView::from(link);
    view.url = Some(url);
    Ok((axum::http::StatusCode::CREATED, Json(view)))
}

/// Withdraws a review link (approver).
#[utoipa::path(post, path = "/review-links/{id}/revoke", tag = "approvals",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LinkView), (status = 404, body = Problem)))]
async fn revoke_link(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<LinkView>, Problem> {
    caller.require(TokenRole::Approver)?;
    let mut tx = caller.begin(&state).await?;
    let link = pipeline::review_links::revoke_in(&mut tx, id, caller.actor()).await?;
    tx.commit().await?;
    Ok(Json(link.into()))
}
