//! Who is calling: a token from the `Authorization: Bearer` header, looked up by its
//! hash (never revoked, never expired). Each request then runs in one transaction as
//! `copydesk_api` with the token's tenant set locally, so row-level security keeps it
//! to that tenant's rows; the token's role decides what it may do.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use sqlx::{Postgres, Transaction};

use super::{ApiState, problem::Problem};
use crate::{domain::TokenRole, store::tokens::Token};

/// A request's transaction, as the token's tenant.
pub type Tx = Transaction<'static, Postgres>;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Token,
}

fn rank(role: TokenRole) -> u8 {
    match role {
        TokenRole::Viewer => 0,
        TokenRole::Approver => 1,
        TokenRole::Operator => 2,
        TokenRole::Admin => 3,
    }
}

impl Caller {
    /// Refuses (403) a token whose role is below `role`.
    pub fn require(&self, role: TokenRole) -> Result<(), Problem> {
        if rank(self.token.role) >= rank(role) {
            return Ok(());
        }
        Err(Problem::forbidden(format!(
            "this needs a token of role {role} or above; token {:?} is a {}",
            self.token.name, self.token.role
        )))
    }

    /// Who the audit log names for this caller's writes: the token's name.
    pub fn actor(&self) -> &str {
        &self.token.name
    }

    /// Opens the request's transaction as `copydesk_api` with the token's tenant set
    /// for this transaction only (one round trip).
    pub async fn begin(&self, state: &ApiState) -> Result<Tx, Problem> {
        begin_as(state, self.token.tenant_id).await
    }
}

/// A transaction as `copydesk_api` with `tenant` set for it only (one round trip): what
/// a token's request runs in, and a review link's.
pub async fn begin_as(state: &ApiState, tenant: uuid::Uuid) -> Result<Tx, Problem> {
    let mut tx = state.pool().begin().await?;
    crate::db::query(
        "SELECT set_config('role', 'copydesk_api', true),
                set_config('copydesk.tenant_id', $1::text, true)",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

impl<S> FromRequestParts<S> for Caller
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let state = ApiState::from_ref(state);
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthorized(
                "no token: send `Authorization: Bearer <token>` (copydesk tokens create)",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        let token = crate::store::tokens::authenticate(state.pool(), presented)
            .await?
            .ok_or_else(|| Problem::unauthorized("the token is unknown, revoked or expired"))?;
        tracing::Span::current().record("token", tracing::field::display(&token.name));
        Ok(Caller { token })
    }
}
