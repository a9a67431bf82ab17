//! Integrations (list, test; set for admins — never a credential in an answer), tokens
//! (admins), and the audit log.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
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
    domain::{Platform, TokenRole},
    publish,
    store::{self, audit::Recorded, integrations::Integration, tokens::Token},
};

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_integrations, set_integration))
        .routes(routes!(test_integration))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_audit))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IntegrationsQuery {
    pub project_id: Option<Uuid>,
}

/// Integrations with status, last sync and last error; never a credential.
#[utoipa::path(get, path = "/integrations", tag = "integrations", params(IntegrationsQuery),
    responses((status = 200, body = Vec<Object>)))]
async fn list_integrations(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<IntegrationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Integration>>, Problem> {
    let Query(q) = query?;
    let mut tx = caller.begin(&state).await?;
    let rows = store::integrations::list(&mut *tx, q.project_id, None).await?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// Makes the platform's cheapest authenticated read with the integration's
/// credentials and sets its status from the answer (operator).
#[utoipa::path(post, path = "/integrations/{id}/test", tag = "integrations",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn test_integration(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<publish::integrations::Tested>, Problem> {
    caller.require(TokenRole::Operator)?;
    // Seen as the tenant first: another tenant's integration is not found. The test
    // itself reads the credentials, which the tenant's session never may.
    let mut tx = caller.begin(&state).await?;
    store::integrations::get(&mut *tx, id).await?;
    tx.commit().await?;
    let tested = publish::integrations::test(
        state.pool(),
        &state.settings().publish,
        state.keys()?,
        id,
        caller.actor(),
    )
    .await?;
    Ok(Json(tested))
}

/// An integration to store (its credentials are encrypted at once).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetIntegrationBody {
    pub project_id: Uuid,
    /// wordpress, shopify, linkedin, x or facebook.
    #[schema(value_type = super::document::Platform)]
    pub platform: String,
    /// The platform's credential fields (README lists them per platform).
    #[schema(value_type = Object)]
    pub credentials: Value,
    #[schema(value_type = Object)]
    #[serde(default)]
    pub metadata: Value,
}

/// Stores or replaces a project's integration with a platform (admin).
#[utoipa::path(put, path = "/integrations", tag = "integrations", request_body = SetIntegrationBody,
    responses((status = 200, body = Object), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn set_integration(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<SetIntegrationBody>, JsonRejection>,
) -> Result<Json<Value>, Problem> {
    caller.require(TokenRole::Admin)?;
    let Json(b) = body?;
    let platform: Platform = b
        .platform
        .parse()
        .map_err(|e| Problem::unprocessable(format!("platform: {e}")))?;
    let metadata = if b.metadata.is_null() {
        json!({})
    } else {
        b.metadata
    };
    let mut tx = caller.begin(&state).await?;
    if store::projects::tenant(&mut *tx, b.project_id)
        .await?
        .is_none()
    {
        return Err(Problem::not_found(format!("no project {}", b.project_id)));
    }
    tx.commit().await?;
    let id = publish::integrations::connect(
        state.pool(),
        &*state.keys()?,
        b.project_id,
        platform,
        &b.credentials,
        &metadata,
        caller.actor(),
    )
    .await?;
    Ok(Json(
        json!({"id": id, "platform": platform, "status": "connected"}),
    ))
}

/// The tenant's tokens, newest first; never a secret (admin).
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses((status = 200, body = Vec<Object>), (status = 403, body = Problem)))]
async fn list_tokens(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<Vec<Token>>, Problem> {
    caller.require(TokenRole::Admin)?;
    let mut tx = caller.begin(&state).await?;
    let rows = store::tokens::list(&mut *tx, None).await?;
    tx.commit().await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schema(value_type = super::document::NonBlank)]
    pub name: String,
    /// viewer, approver, operator or admin.
    #[schema(value_type = super::document::TokenRole)]
    pub role: String,
    /// How long it lasts: a whole number with s, m, h or d (`90d`); forever when absent.
    #[schema(value_type = Option<super::document::Period>)]
    pub expires: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub token: Token,
    /// The token itself: shown this once, stored only as a hash.
    pub secret: String,
}

/// Makes a token of the caller's tenant (admin); the secret is in this answer only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = TokenBody,
    responses((status = 201, body = CreatedToken), (status = 403, body = Problem),
              (status = 422, body = Problem)))]
async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    caller.require(TokenRole::Admin)?;
    let Json(b) = body?;
    let role: TokenRole = b
        .role
        .parse()
        .map_err(|e| Problem::unprocessable(format!("role: {e}")))?;
    let expires = b
        .expires
        .as_deref()
        .map(crate::config::parse_duration)
        .transpose()
        .map_err(|e| Problem::unprocessable(format!("expires: {e}")))?;
    let mut tx = caller.begin(&state).await?;
    let (token, secret) = store::tokens::create(
        &mut tx,
        caller.token.tenant_id,
        &b.name,
        role,
        expires,
        caller.actor(),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// Revokes a token of the caller's tenant (admin): refused from now on.
#[utoipa::path(post, path = "/tokens/{id}/revoke", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Token>, Problem> {
    caller.require(TokenRole::Admin)?;
    let mut tx = caller.begin(&state).await?;
    let token = store::tokens::revoke(&mut tx, id, caller.actor()).await?;
    tx.commit().await?;
    Ok(Json(token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only actions since this time.
    pub since: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Who did what to which row and when, newest first; keyset-paginated.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<Object>)))]
async fn list_audit(
    State(state): State<ApiState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<Recorded>>, Problem> {
    let Query(q) = query?;
    let page = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = page.limit()?;
    let before = page.cursor()?.and_then(|c| c.at.map(|at| (at, c.id)));
    let mut tx = caller.begin(&state).await?;
    let rows = store::audit::list(&mut *tx, None, q.since, before, limit + 1).await?;
    tx.commit().await?;
    Ok(Json(Page::of(rows, limit, |r| Cursor {
        at: Some(r.at),
        id: r.id,
    })))
}
