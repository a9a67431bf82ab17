//! `token_refresh`: refreshes X OAuth 2.0 tokens before they expire (X's last two
//! hours), so no post has to wait for a refresh or find its token dead. Every connected
//! X integration whose token expires within `[publish] token_refresh_ahead_minutes`
//! is refreshed; a refresh X refuses marks the integration `error` (which raises
//! `credentials_refused`); one that could not be made is tried again next tick.

use copydesk_queue::{JobArgs, JobError, Outcome, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Ctx;
use crate::{
    domain::Platform,
    publish::{self, CallError, Ctx as PublishCtx, integrations},
    store,
};

/// The input of a `token_refresh` job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRefreshArgs {
    /// The scheduler tick that enqueued it, when a scheduler did (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
}

impl JobArgs for TokenRefreshArgs {
    const KIND: &'static str = "token_refresh";
    const SCHEMA: &'static str = include_str!("../../jobs/token_refresh/schema.json");
}

pub async fn run(ctx: Ctx, _args: TokenRefreshArgs) -> Result<Outcome, JobError> {
    let settings = &ctx.app.settings.publish;
    let ahead = chrono::Duration::minutes(i64::from(settings.token_refresh_ahead_minutes));
    let ids = store::integrations::connected(&ctx.pool, Platform::X)
        .await
        .retryable()?;
    if ids.is_empty() {
        // Nothing to refresh: a worker with no Fernet keys (no integration connected
        // yet) has nothing to fail for.
        return Ok(Outcome::done_with(
            json!({"checked": 0, "refreshed": 0, "failed": 0}),
        ));
    }
    let keys = ctx.app.keys.clone().map_err(|e| {
        JobError::permanent(format!("cannot read the integrations' credentials: {e}"))
    })?;
    let (mut refreshed, mut failed) = (0u32, 0u32);
    for &id in &ids {
        let loaded = match integrations::load(&ctx.pool, &keys, id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(integration = %id, error = %e, "cannot read the credentials of an x integration");
                failed += 1;
                continue;
            }
        };
        let pctx = PublishCtx::new(
            ctx.app.publish_http.clone(),
            ctx.pool.clone(),
            settings.clone(),
            loaded,
            Some((ctx.job.id, ctx.job.attempts)),
            Some(keys.clone()),
        );
        match publish::x::refresh_ahead(&pctx, ahead).await {
            Ok(true) => refreshed += 1,
            Ok(false) => {}
            Err(CallError::Auth(m) | CallError::TokenRefused(m)) => {
                store::integrations::mark_error(&ctx.pool, id, &m, Some(ctx.job.id))
                    .await
                    .retryable()?;
                failed += 1;
            }
            Err(e) => {
                tracing::warn!(integration = %id, error = %e, "the x token refresh failed; the next tick tries again");
                failed += 1;
            }
        }
    }
    Ok(Outcome::done_with(
        json!({"checked": ids.len(), "refreshed": refreshed, "failed": failed}),
    ))
}
