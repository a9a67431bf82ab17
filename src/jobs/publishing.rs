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
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::JobContext;
use crate::{
    pipeline::{self, Channel, NewArtifact},
    publish::{self, CallError, Ctx, Platform, Post, Published, integrations},
    queue::{self, JobError, Outcome, ResultExt},
};

pub const KIND: &str = "publishing";
pub const SCHEMA: &str = include_str!("../../jobs/publishing/schema.json");

#[derive(Debug, Deserialize)]
struct Input {
    artifact_id: Uuid,
    integration_id: Option<Uuid>,
    publish_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Draft {
    channel: Option<String>,
    title: Option<String>,
    content: String,
    project_id: Option<Uuid>,
    approved: bool,
}

#[derive(sqlx::FromRow)]
struct Attempt {
    id: Uuid,
    attempt: i32,
    state: String,
    external_id: Option<String>,
    url: Option<String>,
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let input: Input = serde_json::from_value(ctx.job.input.clone()).permanent()?;
    let artifact = input.artifact_id;
    let draft: Draft = sqlx::query_as(
        "SELECT a.channel, a.title, a.content, a.project_id,
                EXISTS (SELECT 1 FROM approvals p WHERE p.artifact_id = a.id AND p.status = 'approved') AS approved
         FROM artifacts a WHERE a.id = $1",
    )
    .bind(artifact)
    .fetch_optional(&ctx.pool)
    .await
    .retryable()?
    .ok_or_else(|| JobError::permanent(format!("artifact_id: no artifact {artifact}")))?;
    if !draft.approved {
        return Err(JobError::permanent(format!(
            "artifact {artifact} has no approved approval: refusing to publish it"
        )));
    }
    let channel = Channel::parse(draft.channel.as_deref().unwrap_or_default()).map_err(|e| {
        JobError::permanent(format!(
            "artifact {artifact} has no publishable channel: {e}"
        ))
    })?;
    let project = draft.project_id.or(ctx.job.project_id);
    let integration_id = match input.integration_id {
        Some(id) => id,
        None => {
            let found = match project {
                Some(p) => integrations::for_channel(&ctx.pool, p, channel)
                    .await
                    .retryable()?,
                None => None,
            };
            found.map(|(id, _)| id).ok_or_else(|| {
                JobError::permanent(format!(
                    "no integration for the {} channel in this project (add one with `copydesk integrations set --platform {}`)",
                    channel.as_str(),
                    Platform::for_channel(channel)[0]
                ))
            })?
        }
    };
    let keys = ctx.services.keys.clone().map_err(|e| {
        JobError::permanent(format!("cannot read the integration's credentials: {e}"))
    })?;
    let (integration, creds) = integrations::load(&ctx.pool, &keys, integration_id)
        .await
        .map_err(|e| match e {
            integrations::Error::Db(e) => {
                JobError::transient(format!("loading integration {integration_id}: {e}"))
            }
            other => JobError::permanent(other.to_string()),
        })?;
    let platform = integration.platform;
    if platform.channel() != channel {
        return Err(JobError::permanent(format!(
            "integration {integration_id} publishes to {platform}, which does not take {} drafts",
            channel.as_str()
        )));
    }
    if project.is_some_and(|p| p != integration.project_id) {
        return Err(JobError::permanent(format!(
            "integration {integration_id} belongs to another project than artifact {artifact}"
        )));
    }
    if integration.status != "connected" {
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
    let title = draft
        .title
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| {
            draft
                .content
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect()
        });
    let post = Post {
        channel,
        title,
        body: draft.content.clone(),
        slug: publish::slug_for(draft.title.as_deref().unwrap_or_default(), ctx.job.id),
        publish_at: input.publish_at,
    };
    publish::validate(platform, &post)
        .map_err(|e| JobError::permanent(format!("not sent to {platform}: {e}")))?;

    if platform == Platform::Facebook
        && let Some(at) = post.publish_at
        && at > Utc::now()
        && !publish::facebook::natively_schedulable(
            at,
            ctx.settings.publish.facebook_min_schedule_minutes,
        )
    {
        // Too close for Facebook's scheduler (the job ran late): post at the time.
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        return Err(JobError::transient(format!(
            "{at} is too close for Facebook's scheduler: posting at that time instead"
        ))
        .retry_after(wait));
    }
    let pctx = Ctx::new(
        ctx.services.publish_http.clone(),
        ctx.pool.clone(),
        ctx.settings.publish.clone(),
        (integration, creds),
        Some((ctx.job.id, ctx.job.attempts)),
        Some(keys),
    );
    let finish = |p: Published, how: &'static str, attempt: Option<Uuid>| {
        publication(&ctx, &pctx, &post, artifact, p, how, attempt)
    };

    let earlier: Vec<Attempt> = sqlx::query_as(
        "SELECT id, attempt, state, external_id, url FROM publish_attempts
         WHERE job_id = $1 AND integration_id = $2 ORDER BY created_at",
    )
    .bind(ctx.job.id)
    .bind(integration_id)
    .fetch_all(&ctx.pool)
    .await
    .retryable()?;
    if let Some(sent) = earlier.iter().find(|a| a.state == "sent") {
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
        return Ok(finish(p, "recorded", Some(sent.id)));
    }
    let unknown: Vec<&Attempt> = earlier.iter().filter(|a| a.state == "sending").collect();
    if !unknown.is_empty() {
        let which = unknown
            .iter()
            .map(|a| a.attempt.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(attempts = %which, "earlier attempts have no recorded outcome: reconciling");
        let ids: Vec<Uuid> = unknown.iter().map(|a| a.id).collect();
        match publish::find(&pctx, &post).await {
            Ok(Some(p)) => {
                mark_attempts(&ctx, &ids, "sent", Some(&p), None).await?;
                tracing::info!(external_id = %p.external_id, "found the earlier attempt's post: not posting again");
                return Ok(finish(p, "reconciled", ids.last().copied()));
            }
            Ok(None) => {
                tracing::info!("the platform has no post from the earlier attempts: posting");
                mark_attempts(
                    &ctx,
                    &ids,
                    "not_sent",
                    None,
                    Some("reconciled: the platform has no such post"),
                )
                .await?;
            }
            Err(
                e @ (CallError::Throttled { .. }
                | CallError::Unknown { .. }
                | CallError::NotSent(_)),
            ) => {
                return Err(transient(e, "reconciling an earlier attempt"));
            }
            Err(e) => {
                return Err(JobError::permanent(format!(
                    "attempt {which} may have posted to {platform} (its answer was lost) and the lookup to confirm it failed: {e}. \
                     Check {} for {}; if it is there, nothing more is needed; if not, publish again with \
                     `copydesk publish {artifact} --integration {integration_id}`",
                    where_to_look(&pctx),
                    what_to_look_for(&post, platform)
                )));
            }
        }
    }

    let attempt_id: Uuid = sqlx::query_scalar(
        "INSERT INTO publish_attempts (job_id, attempt, artifact_id, integration_id, platform, lookup_key)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(ctx.job.id)
    .bind(ctx.job.attempts)
    .bind(artifact)
    .bind(integration_id)
    .bind(platform.as_str())
    .bind(if platform.channel() == Channel::Blog { &post.slug } else { &post.body })
    .fetch_one(&ctx.pool)
    .await
    .retryable()?;
    let ids = [attempt_id];
    match publish::create(&pctx, &post).await {
        Ok(p) => {
            mark_attempts(&ctx, &ids, "sent", Some(&p), None).await?;
            Ok(finish(p, "posted", Some(attempt_id)))
        }
        Err(CallError::Duplicate(m)) => {
            tracing::info!(refusal = %m, "the platform refused the post as a duplicate: reconciling");
            match publish::find(&pctx, &post).await {
                Ok(Some(p)) => {
                    mark_attempts(&ctx, &ids, "sent", Some(&p), Some(&m)).await?;
                    Ok(finish(
                        p,
                        "reconciled after a duplicate refusal",
                        Some(attempt_id),
                    ))
                }
                Ok(None)
                | Err(CallError::Auth(_) | CallError::Rejected(_) | CallError::Duplicate(_)) => {
                    mark_attempts(&ctx, &ids, "not_sent", None, Some(&m)).await?;
                    Err(JobError::permanent(format!(
                        "{platform} refused the post as a duplicate ({m}), but no matching post was found among the recent ones: \
                         check {} for {}",
                        where_to_look(&pctx),
                        what_to_look_for(&post, platform)
                    )))
                }
                Err(e) => Err(transient(e, "reconciling a duplicate refusal")),
            }
        }
        Err(e @ (CallError::Throttled { .. } | CallError::NotSent(_))) => {
            mark_attempts(&ctx, &ids, "not_sent", None, Some(&e.to_string())).await?;
            Err(transient(e, "posting"))
        }
        Err(CallError::Unknown {
            message: m,
            retry_after,
        }) => {
            // Left `sending`: the next attempt reconciles before it posts.
            sqlx::query("UPDATE publish_attempts SET error = $2, updated_at = now() WHERE id = $1")
                .bind(attempt_id)
                .bind(&m)
                .execute(&ctx.pool)
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
        Err(CallError::Auth(m)) => {
            mark_attempts(&ctx, &ids, "not_sent", None, Some(&m)).await?;
            integrations::mark_error(&ctx.pool, integration_id, &m)
                .await
                .retryable()?;
            Err(JobError::permanent(format!(
                "{platform} refused the credentials of integration {integration_id}: {m} (the integration is now marked error)"
            )))
        }
        Err(CallError::Rejected(m)) => {
            mark_attempts(&ctx, &ids, "not_sent", None, Some(&m)).await?;
            Err(JobError::permanent(format!(
                "{platform} refused the post: {m}"
            )))
        }
    }
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

async fn mark_attempts(
    ctx: &JobContext,
    ids: &[Uuid],
    state: &str,
    p: Option<&Published>,
    error: Option<&str>,
) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE publish_attempts SET state = $2, external_id = $3, url = $4, error = coalesce($5, error), updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(state)
    .bind(p.map(|p| &p.external_id))
    .bind(p.map(|p| &p.url))
    .bind(error)
    .execute(&ctx.pool)
    .await
    .retryable()?;
    Ok(())
}

/// Done, with the `publication` artifact written in the finish transaction.
fn publication(
    ctx: &JobContext,
    pctx: &Ctx,
    post: &Post,
    draft: Uuid,
    p: Published,
    how: &'static str,
    attempt: Option<Uuid>,
) -> Outcome {
    let integration = &pctx.integration;
    let response: Value =
        serde_json::from_str(&pctx.creds.redact(&p.response.to_string())).unwrap_or(Value::Null);
    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: Some(integration.project_id),
        job_id: ctx.job.id,
        kind: "publication",
        channel: Some(post.channel),
        based_on_id: Some(draft),
        source: "system",
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
    let output = json!({
        "artifact_id": artifact.id,
        "platform": integration.platform,
        "external_id": p.external_id,
        "url": p.url,
        "scheduled_for": p.scheduled_for,
        "how": how,
    });
    let (job_id, integration_id) = (ctx.job.id, integration.id);
    let effects: queue::Effects = Arc::new(move |conn| {
        let a = artifact.clone();
        Box::pin(async move {
            pipeline::artifact_insert(conn, &a).await?;
            pipeline::job_set_output(conn, job_id, a.id).await?;
            sqlx::query(
                "UPDATE integrations SET last_sync_at = now(), status = 'connected', last_error = NULL, updated_at = now()
                 WHERE id = $1",
            )
            .bind(integration_id)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
    });
    Outcome::done_with(output).with_effects(effects)
}
