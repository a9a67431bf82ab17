//! Pipelines (start, show), artifacts (search), publications (request, with the CLI's
//! rules) and cost (per project, channel, model or day; per published post).

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{ApiState, auth::Caller, problem::Problem};
use crate::{
    domain::{Channel, TokenRole},
    pipeline::{
        self, Plan,
        publication::PublicationRequest,
        start::{ProjectRef, Started},
    },
    store::{self, runs::CostGroup},
};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(start_pipeline))
        .routes(routes!(show_pipeline))
        .routes(routes!(search_artifacts))
        .routes(routes!(request_publication))
        .routes(routes!(cost))
        .routes(routes!(cost_per_post))
}

/// A pipeline to start: an existing project, or a new one by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    pub project_id: Option<Uuid>,
    /// The name of a project to create (when no `project_id` is given).
    pub project_name: Option<String>,
    /// The store whose website the brand voice is analysed from.
    pub store_url: String,
    /// Any of blog, linkedin, x and facebook.
    #[schema(value_type = Vec<super::document::Channel>, min_items = 1)]
    pub channels: Vec<String>,
    pub topic: Option<String>,
    pub instructions: Option<String>,
    /// When approved drafts are published (now when absent).
    pub schedule: Option<DateTime<Utc>>,
}

/// Starts the content pipeline for a project (operator).
#[utoipa::path(post, path = "/pipelines", tag = "pipelines", request_body = StartBody,
    responses((status = 201, body = Object), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn start_pipeline(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Started>), Problem> {
    caller.require(TokenRole::Operator)?;
    let Json(b) = body?;
    let project = match (b.project_id, b.project_name) {
        (Some(id), None) => ProjectRef::Existing(id),
        (None, Some(name)) if !name.trim().is_empty() => ProjectRef::New(name.trim().to_owned()),
        _ => {
            return Err(Problem::unprocessable(
                "give project_id (an existing project) or project_name (a new one), not both",
            ));
        }
    };
    if b.channels.is_empty() {
        return Err(Problem::unprocessable(
            "channels is empty: name any of blog, linkedin, x and facebook",
        ));
    }
    let channels = b
        .channels
        .iter()
        .map(|c| c.parse::<Channel>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::unprocessable(format!("channels: {e}")))?;
    let plan = Plan {
        channels,
        topic: b.topic,
        instructions: b.instructions,
        schedule: b.schedule,
    };
    let mut tx = caller.begin(&state).await?;
    // No tenant is named: the project is created as the session's tenant, and an
    // existing project of another tenant is not visible to it.
    let started =
        pipeline::start::start(&mut tx, state.catalog(), None, project, &b.store_url, plan).await?;
    super::jobs::audit(
        &mut tx,
        &caller,
        "pipeline.started",
        ("jobs", started.job.id),
        serde_json::json!({"project_id": started.project_id, "store_url": b.store_url}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Where a project's pipeline stands: each channel's state, draft, score, approval,
/// and the cost so far.
#[utoipa::path(get, path = "/pipelines/{project_id}", tag = "pipelines",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn show_pipeline(
    State(state): State<ApiState>,
    caller: Caller,
    Path(project): Path<Uuid>,
) -> Result<Json<store::status::ProjectStatus>, Problem> {
    let mut tx = caller.begin(&state).await?;
    let s = store::status::project(&mut tx, project).await?;
    tx.commit().await?;
    Ok(Json(s))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words, "phrases", -excluded (web-search syntax).
    pub q: String,
    pub project_id: Option<Uuid>,
    /// At most this many hits, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Full-text search over artifacts' titles and contents, best first.
#[utoipa::path(get, path = "/artifacts", tag = "pipelines", params(SearchQuery),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)))]
async fn search_artifacts(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<store::artifacts::Hit>>, Problem> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit {limit} is out of range: 1 to 100"
        )));
    }
    let mut tx = caller.begin(&state).await?;
    let hits = store::artifacts::search(&mut *tx, &q.q, q.project_id, limit).await?;
    tx.commit().await?;
    Ok(Json(hits))
}

/// A publication to request: the CLI's `copydesk publish`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// An approved draft.
    pub artifact_id: Uuid,
    /// Where to (the project's integration for the draft's channel when absent).
    pub integration_id: Option<Uuid>,
    /// When (now when absent or past).
    pub at: Option<DateTime<Utc>>,
    /// Publish even though a publication to this integration exists.
    #[serde(default)]
    pub again: bool,
}

/// Requests a publication of an approved draft (operator).
#[utoipa::path(post, path = "/publications", tag = "pipelines", request_body = PublishBody,
    responses((status = 201, body = Object), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "not approved, or already published"),
              (status = 422, body = Problem)))]
async fn request_publication(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<(StatusCode, Json<pipeline::publication::Requested>), Problem> {
    caller.require(TokenRole::Operator)?;
    let Json(b) = body?;
    let req = PublicationRequest {
        artifact: b.artifact_id,
        integration: b.integration_id,
        at: b.at,
        again: b.again,
        parent: None,
        by: Some(caller.actor().to_owned()),
    };
    let mut tx = caller.begin(&state).await?;
    let requested = pipeline::publication::request(
        &mut tx,
        state.catalog(),
        state.settings().publish.facebook_min_schedule_minutes,
        &req,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(requested)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CostQuery {
    /// project, channel, model or day.
    #[param(value_type = super::document::CostGroup)]
    pub by: CostGroup,
    pub project_id: Option<Uuid>,
    /// Only calls since this time.
    pub since: Option<DateTime<Utc>>,
}

/// Calls, tokens and cost of the external calls (model and platform), grouped.
#[utoipa::path(get, path = "/cost", tag = "cost", params(CostQuery),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)))]
async fn cost(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<CostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<store::runs::CostGroupLine>>, Problem> {
    let Query(q) = query?;
    let mut tx = caller.begin(&state).await?;
    let lines = store::runs::cost_by(&mut *tx, q.by, q.project_id, q.since).await?;
    tx.commit().await?;
    Ok(Json(lines))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PerPostQuery {
    pub project_id: Option<Uuid>,
}

/// Each project's cost, publications and cost per published post.
#[utoipa::path(get, path = "/cost/per-post", tag = "cost", params(PerPostQuery),
    responses((status = 200, body = Vec<Object>)))]
async fn cost_per_post(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<PerPostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<store::runs::CostPerPost>>, Problem> {
    let Query(q) = query?;
    let mut tx = caller.begin(&state).await?;
    let lines = store::runs::cost_per_post(&mut *tx, q.project_id).await?;
    tx.commit().await?;
    Ok(Json(lines))
}
