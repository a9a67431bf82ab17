//! `publishing`: sends an approved draft to one integration, exactly once.
//!
//! 1. Refuse any artifact without an `approved` approval, whoever enqueued the job;
//!    refuse content over the platform's limit before any call.
//! 2. If an earlier attempt of this job recorded a post (`publish_attempts.state =
//!    'sent'`), finish with it. If one was left `sending` (its answer was lost: a crash,
//!    a timeout, a 5xx), reconcile: look the post up on the platform (by slug or handle,
//!    or by text among the recent posts) and finish with what is there; post again only
//!    when the lookup says nothing went out; fail, telling the operator what to check,
//!    when the lookup itself is refused.
//! 3. Record the attempt (`sending`, committed) before the request leaves; then `sent`
//!    with the external id, or `not_sent` when the platform refused it.
//! 4. The `publication` artifact is written in the job's finish transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use copydesk_queue::{Effects, JobArgs, JobError, Outcome, ResultExt, text_enum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{
        ArtifactKind, ArtifactSource, AttemptState, Channel, IntegrationStatus, Platform, Severity,
    },
    publish::{
        self, CallError, Ctx as PublishCtx, Post, Published,
        attempts::{self, NewAttempt},
        integrations,
    },
    store::{self, artifacts::NewArtifact, limits::Taken},
};

/// The input of a `publishing` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishingArgs {
    /// The approved draft.
    pub artifact_id: Uuid,
    /// Where to; without it, the project's integration for the draft's channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// Handed to platforms that schedule natively (the job's `run_at` is when it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_at: Option<DateTime<Utc>>,
    /// Post even when the same text went to this integration within `[publish]
    /// duplicate_window_days`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub again: bool,
}

impl JobArgs for PublishingArgs {
    const KIND: &'static str = "publishing";
    const SCHEMA: &'static str = include_str!("../../jobs/publishing/schema.json");
}

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

/// The output of a `publishing` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishingOutput {
    pub artifact_id: Uuid,
    pub platform: Platform,
    pub external_id: String,
    pub url: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub how: How,
}

pub async fn run(ctx: Ctx, args: PublishingArgs) -> Result<Outcome, JobError> {
    let artifact = args.artifact_id;
    let (draft, channel, pctx) = destination(&ctx, &args).await?;
    let platform = pctx.integration.platform;
    let mut post = post_of(&draft, channel, ctx.job.id, args.publish_at);
    if channel == Channel::Blog {
        post.image = image(&ctx, artifact, &post.title).await?;
    }
    publish::validate(platform, &post)
        .map_err(|e| JobError::permanent(format!("not sent to {platform}: {e}")))?;

    if platform == Platform::Facebook
        && let Some(at) = post.publish_at
        && at > Utc::now()
        && !publish::facebook::natively_schedulable(
            at,
            ctx.app.settings.publish.facebook_min_schedule_minutes,
        )
    {
        // Too close for Facebook's scheduler (the job ran late): post at the time.
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        return Err(JobError::transient(format!(
            "{at} is too close for Facebook's scheduler: posting at that time instead"
        ))
        .retry_after(wait));
    }
    if let Some(done) = earlier_attempts(&ctx, &pctx, &post, artifact).await? {
        return Ok(done);
    }
    post_once(&ctx, &pctx, &post, &args).await
}

/// The approved draft, its channel, and the integration it goes to (the job's, else the
/// project's for the channel), loaded and checked: the same tenant and project,
/// connected, and healthy.
async fn destination(
    ctx: &Ctx,
    args: &PublishingArgs,
) -> Result<(store::artifacts::Publishable, Channel, PublishCtx), JobError> {
    let artifact = args.artifact_id;
    let draft = store::artifacts::publishable(&ctx.pool, artifact).await?;
    if draft.tenant_id != ctx.job.tenant_id {
        return Err(JobError::permanent(format!(
            "artifact {artifact} belongs to another tenant than this job's: refusing to publish it"
        )));
    }
    if draft.kind != ArtifactKind::Draft {
        return Err(JobError::permanent(format!(
            "artifact {artifact} is a {}, not a draft",
            draft.kind
        )));
    }
    if !draft.approved {
        return Err(JobError::permanent(format!(
            "artifact {artifact} has no approved approval: refusing to publish it"
        )));
    }
    let channel = draft.channel.ok_or_else(|| {
        JobError::permanent(format!("artifact {artifact} has no channel to publish to"))
    })?;
    let project = draft.project_id.or(ctx.job.project_id);
    let integration_id = match args.integration_id {
        Some(id) => id,
        None => {
            let found = match project {
                Some(p) => store::integrations::for_channel(&ctx.pool, p, channel).await?,
                None => None,
            };
            found.map(|(id, _)| id).ok_or_else(|| {
                JobError::permanent(format!(
                    "no integration for the {channel} channel in this project (add one with `copydesk integrations set --platform {}`)",
                    Platform::for_channel(channel)[0]
                ))
            })?
        }
    };
    let keys = ctx.app.keys.clone().map_err(|e| {
        JobError::permanent(format!("cannot read the integration's credentials: {e}"))
    })?;
    let (integration, creds) = integrations::load(&ctx.pool, &keys, integration_id)
        .await
        .map_err(|e| match e {
            publish::Error::Store(e) if e.is_transient() => {
                JobError::transient(format!("loading integration {integration_id}: {e}"))
            }
            other => JobError::permanent(other.to_string()),
        })?;
    let platform = integration.platform;
    publish::health::check(&ctx.pool, &ctx.app.settings.publish, &integration, &creds)
        .await
        .retryable()?;
    if platform.channel() != channel {
        return Err(JobError::permanent(format!(
            "integration {integration_id} publishes to {platform}, which does not take {channel} drafts"
        )));
    }
    if integration.tenant_id != ctx.job.tenant_id {
        return Err(JobError::permanent(format!(
            "integration {integration_id} belongs to another tenant than this job's"
        )));
    }
    if project.is_some_and(|p| p != integration.project_id) {
        return Err(JobError::permanent(format!(
            "integration {integration_id} belongs to another project than artifact {artifact}"
        )));
    }
    if integration.status != IntegrationStatus::Connected {
        return Err(JobError::permanent(format!(
            "integration {integration_id} ({platform}) is {}{}: fix it (`copydesk integrations set`, then `copydesk integrations test {integration_id}`) and retry this job",
            integration.status,
            integration
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )));
    }
    Ok((
        draft,
        channel,
        PublishCtx::new(
            ctx.app.publish_http.clone(),
            ctx.pool.clone(),
            ctx.app.settings.publish.clone(),
            (integration, creds),
            Some((ctx.job.id, ctx.job.attempts)),
            Some(keys),
        ),
    ))
}

/// What earlier attempts of this job left: a recorded post finishes the job with it; a
/// post whose answer was lost is looked up on the platform (found: finished with it;
/// not there: marked not sent, and this attempt posts); a lookup refused fails the job
/// and tells a person what to check.
async fn earlier_attempts(
    ctx: &Ctx,
    pctx: &PublishCtx,
    post: &Post,
    artifact: Uuid,
) -> Result<Option<Outcome>, JobError> {
    let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
    let finish = |p: Published, how: How, attempt: Option<Uuid>| {
        publication(ctx, pctx, post, artifact, p, how, attempt)
    };
    let earlier = attempts::for_job(&ctx.pool, ctx.job.id, integration_id)
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
        match publish::find(pctx, post, first.created_at).await {
            Ok(Some(p)) => {
                attempts::mark(&ctx.pool, &ids, AttemptState::Sent, Some(&p), None)
                    .await
                    .retryable()?;
                tracing::info!(external_id = %p.external_id, "found the earlier attempt's post: not posting again");
                return Ok(Some(finish(p, How::Reconciled, ids.last().copied())));
            }
            Ok(None) => {
                tracing::info!("the platform has no post from the earlier attempts: posting");
                attempts::mark(
                    &ctx.pool,
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
                return Err(throttled(ctx, platform, integration_id, &message, retry_after).await);
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
                    &ctx.pool,
                    &store::notifications::New {
                        tenant: ctx.job.tenant_id,
                        project: ctx.job.project_id,
                        job: Some(ctx.job.id),
                        severity: Severity::Error,
                        kind: "publication_unconfirmed",
                        cause: &ctx.job.id.to_string(),
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
async fn post_once(
    ctx: &Ctx,
    pctx: &PublishCtx,
    post: &Post,
    args: &PublishingArgs,
) -> Result<Outcome, JobError> {
    let (artifact, channel) = (args.artifact_id, post.channel);
    let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
    let lookup_key = if channel == Channel::Blog {
        &post.slug
    } else {
        &post.body
    };
    // The post takes from the integration's and the platform's limits first; with no
    // capacity the job waits, nothing sent and no attempt spent.
    let limit_keys = store::limits::platform_keys(platform, integration_id);
    let slots = match store::limits::take(
        &ctx.pool,
        &ctx.app.settings.limits,
        &limit_keys,
        0,
        Some(ctx.job.id),
    )
    .await
    .retryable()?
    {
        Taken::Granted(slots) => slots,
        Taken::Wait { key, after } => {
            return Err(JobError::wait(format!("waiting for limit {key}"), after));
        }
    };
    let content_hash = publish::content_hash(post);
    let attempt = attempts::record_sending(
        &ctx.pool,
        &NewAttempt {
            job_id: ctx.job.id,
            attempt: ctx.job.attempts,
            artifact_id: artifact,
            integration_id,
            platform,
            lookup_key,
            content_hash: &content_hash,
        },
        ctx.app.settings.publish.duplicate_window_days,
        args.again,
    )
    .await;
    let attempt = match attempt {
        Ok(Ok(a)) => a,
        Ok(Err(earlier)) => {
            let _ = store::limits::release(&ctx.pool, &slots).await;
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
            let _ = store::limits::release(&ctx.pool, &slots).await;
            return Err(e).retryable();
        }
    };
    let created = publish::create(pctx, post).await;
    if let Err(e) = store::limits::release(&ctx.pool, &slots).await {
        tracing::warn!(error = %e, "could not free rate-limit slots; they expire with their lease");
    }
    answered(ctx, pctx, post, artifact, &attempt, created).await
}

/// What the platform's answer to this attempt's post means: the attempt marked `sent`
/// or `not_sent` (or left `sending` when the answer is unknown, for the next attempt to
/// reconcile), and the job done, retried later, or failed with what to do.
async fn answered(
    ctx: &Ctx,
    pctx: &PublishCtx,
    post: &Post,
    artifact: Uuid,
    attempt: &attempts::Attempt,
    created: Result<Published, CallError>,
) -> Result<Outcome, JobError> {
    let (integration_id, platform) = (pctx.integration.id, pctx.integration.platform);
    let finish =
        |p: Published, how: How| publication(ctx, pctx, post, artifact, p, how, Some(attempt.id));
    let ids = [attempt.id];
    let mark = |state, p: Option<&Published>, error: Option<&str>| {
        let pool = ctx.pool.clone();
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
            match publish::find(pctx, post, attempt.created_at).await {
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
            Err(throttled(ctx, platform, integration_id, &message, retry_after).await)
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
            attempts::note_unknown(&ctx.pool, attempt.id, &m)
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
            store::integrations::mark_error(&ctx.pool, integration_id, &m, Some(ctx.job.id))
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

/// The picture a blog draft names (or an earlier version of it), read from the file
/// store and checked against its SHA-256.
async fn image(ctx: &Ctx, artifact: Uuid, title: &str) -> Result<Option<publish::Image>, JobError> {
    let Some(file) = store::files::image_of(&ctx.pool, artifact)
        .await
        .retryable()?
    else {
        return Ok(None);
    };
    if file.tenant_id != ctx.job.tenant_id {
        return Err(JobError::permanent(format!(
            "the image of artifact {artifact} (file {}) belongs to another tenant: refusing to publish it",
            file.id
        )));
    }
    let files = ctx.app.files.as_ref().map_err(|e| {
        JobError::permanent(format!(
            "the draft's image (file {}) cannot be read: {e}",
            file.id
        ))
    })?;
    let bytes = files.read(&file).await.map_err(|e| {
        let why = format!("reading the draft's image (file {}): {e}", file.id);
        if e.is_transient() {
            JobError::transient(why)
        } else {
            JobError::permanent(why)
        }
    })?;
    Ok(Some(publish::Image {
        name: file.name,
        content_type: file.content_type,
        bytes,
        alt: title.to_owned(),
    }))
}

/// The draft as the destination takes it. A blog post's leading `# Title` heading is
/// taken off (WordPress and Shopify show the title themselves) and names the post when
/// the draft has no title; the slug is the job's own.
fn post_of(
    draft: &store::artifacts::Publishable,
    channel: Channel,
    job: Uuid,
    publish_at: Option<DateTime<Utc>>,
) -> Post {
    let (heading, body) = if channel == Channel::Blog {
        publish::split_title_heading(&draft.content)
    } else {
        (None, draft.content.clone())
    };
    let title = draft
        .title
        .clone()
        .filter(|t| !t.trim().is_empty())
        .or(heading)
        .unwrap_or_else(|| {
            body.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim_start_matches('#')
                .trim()
                .chars()
                .take(80)
                .collect()
        });
    Post {
        channel,
        slug: publish::slug_for(&title, job),
        title,
        body,
        publish_at,
        image: None,
    }
}

/// A throttled answer: the integration's key stops for every process until the
/// platform's reset (its `Retry-After`, else `[limits] throttle_pause_secs`), and this
/// job waits for it without spending the attempt.
async fn throttled(
    ctx: &Ctx,
    platform: Platform,
    integration: Uuid,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> JobError {
    let key = store::limits::platform_keys(platform, integration).remove(0);
    let pause =
        match store::limits::pause(&ctx.pool, &ctx.app.settings.limits, &key, retry_after).await {
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

fn where_to_look(ctx: &PublishCtx) -> String {
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

/// Done, with the `publication` artifact written in the finish transaction.
fn publication(
    ctx: &Ctx,
    pctx: &PublishCtx,
    post: &Post,
    draft: Uuid,
    p: Published,
    how: How,
    attempt: Option<Uuid>,
) -> Outcome {
    let integration = &pctx.integration;
    let response: Value =
        serde_json::from_str(&pctx.creds.redact(&p.response.to_string())).unwrap_or(Value::Null);
    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: Some(integration.project_id),
        job_id: Some(ctx.job.id),
        kind: ArtifactKind::Publication,
        channel: Some(post.channel),
        based_on_id: Some(draft),
        source: ArtifactSource::System,
        title: Some(post.title.clone()),
        content: p.url.clone(),
        data: json!({
            "platform": integration.platform,
            "integration_id": integration.id,
            "external_id": p.external_id,
            "url": p.url,
            "scheduled_for": p.scheduled_for,
            "how": how,
            "attempt_id": attempt,
            "response": response,
        }),
    };
    let output = PublishingOutput {
        artifact_id: artifact.id,
        platform: integration.platform,
        external_id: p.external_id,
        url: p.url,
        scheduled_for: p.scheduled_for,
        how,
    };
    let (job_id, integration_id) = (ctx.job.id, integration.id);
    let effects: Effects = Arc::new(move |conn| {
        let a = artifact.clone();
        Box::pin(async move {
            store::artifacts::insert(&mut *conn, &a).await?;
            store::jobs::set_output_artifact(&mut *conn, job_id, a.id).await?;
            store::integrations::mark_ok(&mut *conn, integration_id).await?;
            Ok(())
        })
    });
    Outcome::done_with(json!(output)).with_effects(effects)
}
