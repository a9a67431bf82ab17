//! Event subscriptions: another service's webhook for its tenant's lifecycle events
//! (README "Events for other services"). Listing is for every role; subscribing and
//! unsubscribing for admins, audited. The signing secret is in the answer that makes it,
//! never again.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{ApiState, auth::Caller, jobs::audit, problem::Problem};
use crate::{domain::TokenRole, store};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions, subscribe))
        .routes(routes!(unsubscribe))
        .routes(routes!(list_deliveries))
}

/// The tenant's subscriptions, newest first, each with its last delivery; a URL is
/// shown by its origin only.
#[utoipa::path(get, path = "/subscriptions", tag = "events",
    responses((status = 200, body = Vec<Object>)))]
async fn list_subscriptions(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<store::events::Subscription>>, Problem> {
    let mut tx = caller.begin(&state).await?;
    let rows = store::events::subscriptions(&mut *tx, None).await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// A webhook to subscribe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    /// Where each event is POSTed (http or https; the same guard as store pages).
    pub url: String,
    /// Only this project's events (else all of the tenant's).
    pub project_id: Option<Uuid>,
    /// Only these types (else every type).
    #[schema(value_type = Option<Vec<super::document::EventType>>)]
    #[serde(default)]
    pub events: Vec<String>,
}

/// A subscription made: its signing secret is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribedView {
    pub id: Uuid,
    /// The URL as shown: its origin, the path hidden.
    pub target: String,
    pub project_id: Option<Uuid>,
    #[schema(value_type = Vec<super::document::EventType>)]
    pub events: Vec<String>,
    /// The `whsec_` secret receivers verify `webhook-signature` with.
    pub secret: String,
}

/// Subscribes a webhook to the tenant's lifecycle events (admin).
#[utoipa::path(post, path = "/subscriptions", tag = "events", request_body = SubscribeBody,
    responses((status = 201, body = SubscribedView), (status = 404, body = Problem),
              (status = 422, body = Problem),
              (status = 503, body = Problem, description = "no COPYDESK_FERNET_KEYS to seal it with")))]
async fn subscribe(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<SubscribeBody>, JsonRejection>,
) -> Result<(StatusCode, Json<SubscribedView>), Problem> {
    caller.require(TokenRole::Admin)?;
    let Json(b) = body?;
    store::events::check_types(&b.events)?;
    crate::fetch::Fetcher::new(&state.settings().fetch)
        .check_url(&b.url)
        .map_err(|e| Problem::unprocessable(format!("url: {e}")))?;
    let keys = state.keys()?;
    let secret = crate::jobs::notify::new_secret();
    let target = crate::jobs::notify::shown(&b.url);
    let mut tx = caller.begin(&state).await?;
    let id = store::events::subscribe(
        &mut *tx,
        &store::events::NewSubscription {
            tenant: caller.token.tenant_id,
            project: b.project_id,
            target: &target,
            url: &keys.encrypt(b.url.as_bytes()),
            secret: &keys.encrypt(secret.as_bytes()),
            events: &b.events,
            by: caller.actor(),
        },
    )
    .await?;
    audit(
        &mut tx,
        &caller,
        "event_subscription.added",
        ("event_subscriptions", id),
        serde_json::json!({"url": target, "project_id": b.project_id, "events": b.events}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(SubscribedView {
            id,
            target,
            project_id: b.project_id,
            events: b.events,
            secret,
        }),
    ))
}

/// Removes a subscription (admin); its pending deliveries go with it.
#[utoipa::path(delete, path = "/subscriptions/{id}", tag = "events", params(("id" = Uuid, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = Problem)))]
async fn unsubscribe(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    caller.require(TokenRole::Admin)?;
    let mut tx = caller.begin(&state).await?;
    if store::events::unsubscribe(&mut *tx, id).await?.is_none() {
        return Err(Problem::not_found(format!("no event subscription {id}")));
    }
    audit(
        &mut tx,
        &caller,
        "event_subscription.removed",
        ("event_subscriptions", id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// At most this many, newest first, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A subscription's latest deliveries: the event type, status, attempts and the
/// receiver's answer.
#[utoipa::path(get, path = "/subscriptions/{id}/deliveries", tag = "events",
    params(("id" = Uuid, Path), DeliveriesQuery),
    responses((status = 200, body = Vec<Object>), (status = 404, body = Problem)))]
async fn list_deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<store::events::DeliveryRow>>, Problem> {
    let Query(q) = query?;
    let limit = super::page::PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let mut tx = caller.begin(&state).await?;
    if !store::events::exists(&mut *tx, id).await? {
        return Err(Problem::not_found(format!("no event subscription {id}")));
    }
    let rows = store::events::deliveries(&mut *tx, Some(id), limit).await?;
    tx.commit().await?;
    Ok(Json(rows))
}
