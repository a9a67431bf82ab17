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
    // Credentials no key can read are a configuration problem, not this tick's: said
    // once as a warning that stays (folded with a count) until a tick reads them all,
    // and the job is done, so a worker without keys fails nothing every ten minutes.
    let keys = match ctx.app.keys.clone() {
        Ok(keys) => keys,
        Err(e) => {
            let why = format!(
                "cannot read the credentials of {} X integration(s) to refresh their tokens: {e}",
                ids.len()
            );
            unreadable(&ctx, &why).await?;
            return Ok(Outcome::done_with(json!({
                "checked": ids.len(), "refreshed": 0, "failed": 0,
                "unreadable": ids.len(), "why": why,
            })));
        }
    };
    let (mut refreshed, mut failed, mut unread) = (0u32, 0u32, Vec::new());
    for &id in &ids {
        let loaded = match integrations::load(&ctx.pool, &keys, id).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(integration = %id, error = %e, "cannot read the credentials of an x integration");
                unread.push(format!("{id}: {e}"));
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
    if unread.is_empty() {
        store::notifications::resolve(
            &ctx.pool,
            ctx.job.tenant_id,
            UNREADABLE,
            UNREADABLE_CAUSE,
            "copydesk (the keys read them again)",
        )
        .await
        .retryable()?;
    } else {
        unreadable(
            &ctx,
            &format!(
                "cannot read the credentials of {} of {} X integration(s) with COPYDESK_FERNET_KEYS \
                 (encrypted under a key not in the list?): {}",
                unread.len(),
                ids.len(),
                unread.join("; ")
            ),
        )
        .await?;
    }
    Ok(Outcome::done_with(json!({
        "checked": ids.len(), "refreshed": refreshed, "failed": failed,
        "unreadable": unread.len(),
    })))
}

/// The notification of credentials no key can read, and its one cause.
pub const UNREADABLE: &str = "credentials_unreadable";
const UNREADABLE_CAUSE: &str = "COPYDESK_FERNET_KEYS";

/// Raises (or counts again) the warning that integrations' credentials cannot be read.
async fn unreadable(ctx: &Ctx, why: &str) -> Result<(), JobError> {
    tracing::warn!(why, "integrations' credentials cannot be read");
    store::notifications::raise(
        &ctx.pool,
        &store::notifications::New {
            tenant: ctx.job.tenant_id,
            project: None,
            job: Some(ctx.job.id),
            severity: crate::domain::Severity::Warning,
            kind: UNREADABLE,
            cause: UNREADABLE_CAUSE,
            title: "Integrations' credentials cannot be read: set COPYDESK_FERNET_KEYS on the workers",
            body: why,
            data: json!({}),
        },
    )
    .await
    .retryable()?;
    Ok(())
}
