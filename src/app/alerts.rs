//! What every worker process watches beyond its jobs, every `[alerts]
//! check_every_secs`: stalled queues (`stalls`) and a held horizon (`horizon`). Each
//! is told as a notification that folds its repeats and is resolved when the condition
//! ends; the look's failures are logged and the next look tries again.

use std::time::Duration;

use super::{horizon, stalls};
use crate::{config::AlertSettings, db::Db, domain::Severity, store};

/// A condition one look found going on: the cause its notification folds by.
pub struct Condition {
    pub cause: String,
    pub title: String,
    pub body: String,
    pub data: serde_json::Value,
}

/// Tells one look's `conditions` of `kind` to the operators (the `default` tenant):
/// each raised as a warning, or counted again on its unread row; every unread one of
/// `kind` not among them has ended and is marked read by `resolved_by`.
pub async fn tell(
    pool: &Db,
    kind: &str,
    conditions: &[Condition],
    resolved_by: &str,
) -> Result<(), store::Error> {
    for c in conditions {
        store::notifications::raise(
            pool,
            &store::notifications::New {
                tenant: crate::domain::DEFAULT_TENANT,
                project: None,
                job: None,
                severity: Severity::Warning,
                kind,
                cause: &c.cause,
                title: &c.title,
                body: &c.body,
                data: c.data.clone(),
            },
        )
        .await?;
    }
    let going_on: Vec<String> = conditions.iter().map(|c| c.cause.clone()).collect();
    store::notifications::resolve_all_but(
        pool,
        crate::domain::DEFAULT_TENANT,
        kind,
        &going_on,
        resolved_by,
    )
    .await?;
    Ok(())
}

/// Looks every `[alerts] check_every_secs` until the process ends.
pub async fn watch(pool: Db, cfg: AlertSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.check_every_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if cfg.stall_after_secs > 0 {
            match stalls::check(&pool, Duration::from_secs(cfg.stall_after_secs)).await {
                Ok(found) => {
                    for s in found {
                        tracing::warn!(kind = %s.kind, waited_secs = s.waited_secs.round(),
                            workers = s.workers, "a queue is stalled");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look for stalled queues"),
            }
        }
        if cfg.xmin_held_after_secs > 0 {
            match horizon::check(&pool, Duration::from_secs(cfg.xmin_held_after_secs)).await {
                Ok(found) => {
                    for h in found {
                        tracing::warn!(holder = %h.cause, user = h.user_name.as_deref(),
                            application_name = h.application_name.as_deref(),
                            held_secs = h.held_secs.map(f64::round),
                            "the database's horizon is held");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look for a held horizon"),
            }
        }
    }
}
