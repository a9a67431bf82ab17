//! `publishing`: sends an approved draft to one integration, exactly once.
//!
//! 1. Check the draft and the integration again (`publish::eligibility`: approved,
//!    the right channel, the same tenant and project), whoever enqueued the job; the
//!    integration connected and healthy; the content within the platform's limits.
//! 2. Post exactly once (`publish::once`: earlier attempts reconciled first, the
//!    attempt recorded before the request leaves).
//! 3. The `publication` artifact is written in the job's finish transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use copydesk_queue::{Effects, JobArgs, JobError, Outcome, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{ArtifactKind, ArtifactSource, Channel, IntegrationStatus, Platform},
    publish::{
        self, Ctx as PublishCtx, Post, eligibility, integrations,
        once::{self, Delivered, Once},
    },
    store::{self, artifacts::NewArtifact},
};

pub use crate::publish::once::How;

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
    let job = once::Job {
        id: ctx.job.id,
        attempt: ctx.job.attempts,
        tenant: ctx.job.tenant_id,
        project: ctx.job.project_id,
    };
    let delivered = Once {
        pctx: &pctx,
        limits: &ctx.app.settings.limits,
        job,
        post: &post,
        artifact,
        again: args.again,
    }
    .post()
    .await?;
    Ok(publication(&ctx, &pctx, &post, artifact, delivered))
}

/// The approved draft, its channel, and the integration it goes to (the job's, else the
/// project's for the channel), loaded and checked: the same tenant and project,
/// connected, and healthy.
async fn destination(
    ctx: &Ctx,
    args: &PublishingArgs,
) -> Result<(store::artifacts::Publishable, Channel, PublishCtx), JobError> {
    let artifact = args.artifact_id;
    // The check's reads in one transaction (one server connection behind a pooler).
    let mut tx = ctx.pool.begin().await.retryable()?;
    let project = ctx.job.project_id;
    let checked = eligibility::check(&mut tx, artifact, args.integration_id, project).await;
    tx.commit().await.retryable()?;
    let eligible = checked.map_err(|e| match e {
        eligibility::Error::Store(e) if e.is_transient() => JobError::transient(e.to_string()),
        e => JobError::permanent(format!("not publishing: {e}")),
    })?;
    // The job's tenant, not only the rows' own: a job inserted by SQL for one tenant
    // never publishes another's draft.
    if eligible.draft.tenant_id != ctx.job.tenant_id {
        return Err(JobError::permanent(format!(
            "artifact {artifact} belongs to another tenant than this job's: refusing to publish it"
        )));
    }
    let integration_id = eligible
        .target()
        .map_err(|e| JobError::permanent(e.to_string()))?
        .integration;
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
        eligible.draft,
        eligible.channel,
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

/// Done, with the `publication` artifact written in the finish transaction.
fn publication(ctx: &Ctx, pctx: &PublishCtx, post: &Post, draft: Uuid, d: Delivered) -> Outcome {
    let Delivered {
        published: p,
        how,
        attempt,
    } = d;
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
