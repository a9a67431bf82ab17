//! The exactly-once post of one draft to one integration, for the `publishing` job.
//!
//! 1. If an earlier attempt of this job recorded a post (`publish_attempts.state =
//!    'sent'`), it is the answer. If one was left `sending` (its answer was lost: a
//!    crash, a timeout, a 5xx), reconcile: look the post up on the platform (by slug or
//!    handle, or by text among the recent posts) and answer with what is there; post
//!    again only when the lookup says nothing went out; fail, telling the operator
//!    what to check, when the lookup itself is refused.
//! 2. Take the integration's and the platform's limit slots; refuse the same text sent
//!    to the integration within `[publish] duplicate_window_days` (unless `again`).
//! 3. Record the attempt (`sending`, committed) before the request leaves; then `sent`
//!    with the external id, or `not_sent` when the platform refused it.
//!
//! What went out is returned; the job writes its `publication` artifact in its finish
//! transaction.

use chrono::{DateTime, Utc};
use copydesk_queue::{JobError, ResultExt, text_enum};
use serde_json::json;
use uuid::Uuid;

use super::{
    CallError, Ctx, Post, Published,
    attempts::{self, NewAttempt},
};
use crate::{
    config::LimitSettings,
    domain::{AttemptState, Channel, Platform, Severity},
    store::{self, limits::Taken},
};

text_enum! {
    /// How a publication came to be recorded.
    pub enum How("publication method") {
        /// This attempt posted it.
        Posted = "posted",
        /// An earlier attempt's answer was lost; the platform showed its post.
        Reconciled = "reconciled",
        /// The platform refused this attempt as a duplicate of the earlier one's post.
        ReconciledAfterDuplicate = "reconciled after a duplicate refusal",
        /// An earlier attempt recorded the post before the job could finish.
        Recorded = "recorded",
    }
}

/// The job posting: its id and attempt (the attempt record and `runs` rows hang off
/// them), and its tenant and project (for the notification a lost post raises).
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub id: Uuid,
    pub attempt: i32,
    pub tenant: Uuid,
    pub project: Option<Uuid>,
}

/// What went out, and how this job knows.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub published: Published,
    pub how: How,
    /// The attempt that recorded it.
    pub attempt: Option<Uuid>,
}

/// One post of `artifact` (shaped as `post`) through `pctx`'s integration.
#[derive(Clone, Copy)]
pub struct Once<'a> {
    pub pctx: &'a Ctx,
    pub limits: &'a LimitSettings,
    pub job: Job,
    pub post: &'a Post,
    pub artifact: Uuid,
    /// Post even when the same text went to this integration within the window.
    pub again: bool,
}

impl Once<'_> {
    /// Posts unless an earlier attempt of this job already did: the post as sent, or
    /// the job's error (wait for a limit, retry later, or fail saying what to do).
    pub async fn post(&self) -> Result<Delivered, JobError> {
        use tracing::Instrument;
        let span = crate::telemetry::post_span(
            self.pctx.integration.platform.as_str(),
            self.artifact,
            self.pctx.integration.id,
        );
        let delivered = async {
            if let Some(done) = self.earlier_attempts().await? {
                return Ok(done);
            }
            self.post_once().await
        }
        .instrument(span.clone())
        .await;
        match &delivered {
            Ok(d) => crate::telemetry::describe(
                &span,
                vec![
                    opentelemetry::KeyValue::new(
                        "copydesk.post.external_id",
                        d.published.external_id.clone(),
                    ),
                    opentelemetry::KeyValue::new("copydesk.post.url", d.published.url.clone()),
                ],
            ),
            Err(e) => crate::telemetry::span_failed(
                &span,
                match (e.wait, e.retry) {
                    (Some(_), _) => "waiting",
                    (None, Some(_)) => "retry",
                    (None, None) => "failed",
                },
            ),
        }
        delivered
    }

    /// What earlier attempts of this job left: a recorded post finishes the job with it; a
    /// post whose answer was lost is looked up on the platform (found: finished with it;
    /// not there: marked not sent, and this attempt posts); a lookup refused fails the job
    /// and tells a person what to check.
    async fn earlier_attempts(&self) -> Result<Option<Delivered>, JobError> {
        let Self {
            pctx,
            job,
            post,
            artifact,
            ..
        } = *self;
        let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
        let finish = |published: Published, how: How, attempt: Option<Uuid>| Delivered {
            published,
            how,
            attempt,
        };
        let earlier = attempts::for_job(&pctx.pool, job.id, integration_id)
            .await
            .retryable()?;
        if let Some(sent) = earlier.iter().find(|a| a.state == AttemptState::Sent) {
            tracing::info!(
                attempt = sent.attempt,
                "an earlier attempt recorded the post: finishing with it"
            );
            let p = Published {
                external_id: sent.external_id.clone().unwrap_or_default(),
                url: sent.url.clone().unwrap_or_default(),
                response: json!({"recorded_by_attempt": sent.attempt}),
                scheduled_for: None,
            };
            return Ok(Some(finish(p, How::Recorded, Some(sent.id))));
        }
        let unknown: Vec<&attempts::Attempt> = earlier
            .iter()
            .filter(|a| a.state == AttemptState::Sending)
            .collect();
        if let Some(first) = unknown.first() {
            let which = unknown
                .iter()
                .map(|a| a.attempt.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(attempts = %which, "earlier attempts have no recorded outcome: reconciling");
            let ids: Vec<Uuid> = unknown.iter().map(|a| a.id).collect();
            match super::find(pctx, post, first.created_at).await {
                Ok(Some(p)) => {
                    attempts::mark(&pctx.pool, &ids, AttemptState::Sent, Some(&p), None)
                        .await
                        .retryable()?;
                    tracing::info!(external_id = %p.external_id, "found the earlier attempt's post: not posting again");
                    return Ok(Some(finish(p, How::Reconciled, ids.last().copied())));
                }
                Ok(None) => {
                    tracing::info!("the platform has no post from the earlier attempts: posting");
                    attempts::mark(
                        &pctx.pool,
                        &ids,
                        AttemptState::NotSent,
                        None,
                        Some("reconciled: the platform has no such post"),
                    )
                    .await
                    .retryable()?;
                }
                Err(CallError::Throttled {
                    message,
                    retry_after,
                }) => {
                    return Err(self.throttled(&message, retry_after).await);
                }
                Err(e @ (CallError::Unknown { .. } | CallError::NotSent(_))) => {
                    return Err(transient(e, "reconciling an earlier attempt"));
                }
                Err(e) => {
                    let what = format!(
                        "attempt {which} may have posted to {platform} (its answer was lost) and the lookup to confirm it failed: {e}. \
                         Check {} for {}; if it is there, nothing more is needed; if not, publish again with \
                         `copydesk publish {artifact} --integration {integration_id}`",
                        where_to_look(pctx),
                        what_to_look_for(post, platform)
                    );
                    // A person must look: told now, and the job's failure is not told again.
                    store::notifications::raise(
                        &pctx.pool,
                        &store::notifications::New {
                            tenant: job.tenant,
                            project: job.project,
                            job: Some(job.id),
                            severity: Severity::Error,
                            kind: "publication_unconfirmed",
                            cause: &job.id.to_string(),
                            title: &format!("A {platform} post may have gone out and could not be confirmed"),
                            body: &what,
                            data: json!({"artifact_id": artifact, "integration_id": integration_id, "platform": platform}),
                        },
                    )
                    .await
                    .retryable()?;
                    return Err(JobError::permanent(what));
                }
            }
        }

        Ok(None)
    }

    /// This attempt's post: the limits' slots, the duplicate guard and the `sending`
    /// record first, then the call, and what its answer means for the attempt and the job.
    async fn post_once(&self) -> Result<Delivered, JobError> {
        let Self {
            pctx,
            limits,
            job,
            post,
            artifact,
            again,
        } = *self;
        let channel = post.channel;
        let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
        let lookup_key = if channel == Channel::Blog {
            &post.slug
        } else {
            &post.body
        };
        // The post takes from the integration's and the platform's limits first; with no
        // capacity the job waits, nothing sent and no attempt spent.
        let limit_keys = store::limits::platform_keys(platform, integration_id);
        let slots = match store::limits::take(&pctx.pool, limits, &limit_keys, 0, Some(job.id))
            .await
            .retryable()?
        {
            Taken::Granted(slots) => slots,
            Taken::Wait { key, after } => {
                return Err(JobError::wait(format!("waiting for limit {key}"), after));
            }
        };
        let content_hash = super::content_hash(post);
        let attempt = attempts::record_sending(
            &pctx.pool,
            &NewAttempt {
                job_id: job.id,
                attempt: job.attempt,
                artifact_id: artifact,
                integration_id,
                platform,
                lookup_key,
                content_hash: &content_hash,
            },
            pctx.settings.duplicate_window_days,
            again,
        )
        .await;
        let attempt = match attempt {
            Ok(Ok(a)) => a,
            Ok(Err(earlier)) => {
                let _ = store::limits::release(&pctx.pool, &slots).await;
                return Err(JobError::permanent(format!(
                    "not sent: the same text went to {platform} {} ago ({}, job {}); publish it again anyway with `copydesk publish {artifact} --integration {integration_id} --again`",
                    ago(earlier.created_at),
                    match (&earlier.url, earlier.state) {
                        (Some(url), _) if !url.is_empty() => url.clone(),
                        (_, AttemptState::Sending) => "its answer is not in yet".into(),
                        _ => "no link recorded".into(),
                    },
                    earlier.job_id
                )));
            }
            Err(e) => {
                // Nothing was sent: the slots go back now rather than at their lease's end.
                let _ = store::limits::release(&pctx.pool, &slots).await;
                return Err(e).retryable();
            }
        };
        let created = super::create(pctx, post).await;
        if let Err(e) = store::limits::release(&pctx.pool, &slots).await {
            tracing::warn!(error = %e, "could not free rate-limit slots; they expire with their lease");
        }
        self.answered(&attempt, created).await
    }

    /// What the platform's answer to this attempt's post means: the attempt marked `sent`
    /// or `not_sent` (or left `sending` when the answer is unknown, for the next attempt to
    /// reconcile), and the job done, retried later, or failed with what to do.
    async fn answered(
        &self,
        attempt: &attempts::Attempt,
        created: Result<Published, CallError>,
    ) -> Result<Delivered, JobError> {
        let Self {
            pctx, job, post, ..
        } = *self;
        let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
        let finish = |published: Published, how: How| Delivered {
            published,
            how,
            attempt: Some(attempt.id),
        };
        let ids = [attempt.id];
        let mark = |state, p: Option<&Published>, error: Option<&str>| {
            let pool = pctx.pool.clone();
            let (p, error) = (p.cloned(), error.map(str::to_owned));
            async move {
                attempts::mark(&pool, &ids, state, p.as_ref(), error.as_deref())
                    .await
                    .retryable()
            }
        };
        match created {
            Ok(p) => {
                mark(AttemptState::Sent, Some(&p), None).await?;
                Ok(finish(p, How::Posted))
            }
            Err(CallError::Duplicate(m)) => {
                tracing::info!(refusal = %m, "the platform refused the post as a duplicate: reconciling");
                match super::find(pctx, post, attempt.created_at).await {
                    Ok(Some(p)) => {
                        mark(AttemptState::Sent, Some(&p), Some(&m)).await?;
                        Ok(finish(p, How::ReconciledAfterDuplicate))
                    }
                    Ok(None)
                    | Err(
                        CallError::Auth(_)
                        | CallError::TokenRefused(_)
                        | CallError::Rejected(_)
                        | CallError::Duplicate(_),
                    ) => {
                        mark(AttemptState::NotSent, None, Some(&m)).await?;
                        Err(JobError::permanent(format!(
                            "{platform} refused the post as a duplicate ({m}), but no matching post of this job was found among the recent ones: \
                             check {} for {}",
                            where_to_look(pctx),
                            what_to_look_for(post, platform)
                        )))
                    }
                    Err(e) => Err(transient(e, "reconciling a duplicate refusal")),
                }
            }
            Err(CallError::Throttled {
                message,
                retry_after,
            }) => {
                mark(AttemptState::NotSent, None, Some(&message)).await?;
                Err(self.throttled(&message, retry_after).await)
            }
            Err(e @ CallError::NotSent(_)) => {
                mark(AttemptState::NotSent, None, Some(&e.to_string())).await?;
                Err(transient(e, "posting"))
            }
            Err(CallError::Unknown {
                message: m,
                retry_after,
            }) => {
                // Left `sending`: the next attempt reconciles before it posts.
                attempts::note_unknown(&pctx.pool, attempt.id, &m)
                    .await
                    .retryable()?;
                let e = JobError::transient(format!(
                    "{platform}: {m} (the next attempt looks the post up before posting again)"
                ));
                Err(match retry_after {
                    Some(d) => e.retry_after(d),
                    None => e,
                })
            }
            Err(CallError::Auth(m) | CallError::TokenRefused(m)) => {
                mark(AttemptState::NotSent, None, Some(&m)).await?;
                store::integrations::mark_error(&pctx.pool, integration_id, &m, Some(job.id))
                    .await
                    .retryable()?;
                Err(JobError::permanent(format!(
                    "{platform} refused the credentials of integration {integration_id}: {m} (the integration is now marked error)"
                )))
            }
            Err(CallError::Rejected(m)) => {
                mark(AttemptState::NotSent, None, Some(&m)).await?;
                Err(JobError::permanent(format!(
                    "{platform} refused the post: {m}"
                )))
            }
        }
    }

    /// A throttled answer: the integration's key stops for every process until the
    /// platform's reset (its `Retry-After`, else `[limits] throttle_pause_secs`), and this
    /// job waits for it without spending the attempt.
    async fn throttled(&self, message: &str, retry_after: Option<std::time::Duration>) -> JobError {
        let (integration, platform) = (self.pctx.integration.id, self.pctx.integration.platform);
        let key = store::limits::platform_keys(platform, integration).remove(0);
        let pause =
            match store::limits::pause(&self.pctx.pool, self.limits, &key, retry_after).await {
                Ok(pause) => pause,
                Err(e) => {
                    let e = JobError::transient(format!(
                        "{platform} throttled ({message}); pausing {key} failed: {e}"
                    ));
                    return match retry_after {
                        Some(d) => e.retry_after(d),
                        None => e,
                    };
                }
            };
        tracing::warn!(%key, pause_ms = pause.as_millis() as u64, "throttled: key paused");
        JobError::wait(
            format!("waiting for limit {key}: {platform} throttled ({message})"),
            pause,
        )
    }
}

/// How long ago `at` was, in the largest whole unit.
fn ago(at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_seconds().max(0);
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn transient(e: CallError, doing: &str) -> JobError {
    match e {
        CallError::Throttled {
            message,
            retry_after: Some(d),
        }
        | CallError::Unknown {
            message,
            retry_after: Some(d),
        } => JobError::transient(format!("{doing}: {message}")).retry_after(d),
        other => JobError::transient(format!("{doing}: {other}")),
    }
}

fn where_to_look(ctx: &Ctx) -> String {
    let i = &ctx.integration;
    match i.platform {
        Platform::Wordpress => format!("the WordPress site {}", i.meta("site_url").unwrap_or("?")),
        Platform::Shopify => format!(
            "blog {} of {}",
            i.meta("blog_id").unwrap_or("?"),
            i.meta("shop_domain").unwrap_or("?")
        ),
        Platform::Linkedin => format!(
            "the LinkedIn feed of {}",
            i.meta("author_urn").unwrap_or("?")
        ),
        Platform::X => format!(
            "the X account {}",
            i.meta("username").unwrap_or("of the integration")
        ),
        Platform::Facebook => format!(
            "Facebook page {} (published and scheduled posts)",
            i.meta("page_id").unwrap_or("?")
        ),
    }
}

fn what_to_look_for(post: &Post, platform: Platform) -> String {
    match platform {
        Platform::Wordpress => format!("a post with the slug {:?}", post.slug),
        Platform::Shopify => format!("an article with the handle {:?}", post.slug),
        _ => format!(
            "a post starting {:?}",
            post.body.chars().take(60).collect::<String>()
        ),
    }
}
