//! `draft_generation`: blog-writer, then blog-editor (and for the blog, seo-specialist
//! and senior-editor) write one channel's draft in the approved brand voice, as a
//! `draft` artifact (versioned, `based_on` the draft it rewrites). What follows (its
//! evaluation) is `pipeline`'s.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use copydesk_queue::{JobArgs, JobError, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{ArtifactKind, ArtifactSource, Channel},
    llm::{Call, render},
    store::{self, artifacts::NewArtifact},
};

/// The input of a `draft_generation` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftArgs {
    pub channel: Channel,
    pub brand_voice_artifact_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog_item_ids: Vec<String>,
    /// What the reviewer or a person asked to change (a rewrite).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback: Vec<String>,
    /// The draft this one rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<Uuid>,
    /// 1 for the first draft of a channel, one more for each rewrite.
    #[serde(default = "first_iteration")]
    pub iteration: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<DateTime<Utc>>,
}

fn first_iteration() -> i64 {
    1
}

impl JobArgs for DraftArgs {
    const KIND: &'static str = "draft_generation";
    const SCHEMA: &'static str = include_str!("../../jobs/draft_generation/schema.json");
}

/// The output of a `draft_generation` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftOutput {
    pub artifact_id: Uuid,
    pub iteration: i64,
}

/// What the step produced.
#[derive(Debug, Clone)]
pub struct Drafted {
    pub artifact: NewArtifact,
    pub output: DraftOutput,
}
const WRITER: &str = include_str!("../../jobs/draft_generation/writer.md");
const USER: &str = include_str!("../../jobs/draft_generation/user.md");
const EDITOR: &str = include_str!("../../jobs/draft_generation/editor.md");
const SEO: &str = include_str!("../../jobs/draft_generation/seo.md");
const SENIOR: &str = include_str!("../../jobs/draft_generation/senior_editor.md");

static SEO_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "required": ["title", "meta_description", "keywords"],
        "properties": {
            "title": {"type": "string", "maxLength": 70},
            "meta_description": {"type": "string", "maxLength": 170},
            "keywords": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": false,
    })
});

/// The rules a channel's post must keep, in words for the prompts.
pub fn channel_rules(c: Channel) -> &'static str {
    match c {
        Channel::Blog => "Markdown with a title heading and section headings; 400 to 900 words",
        Channel::Linkedin => {
            "plain text, at most 3,000 characters, a question at the end invites comments"
        }
        Channel::X => {
            "at most 280 characters as X counts them (links count 23), one or two hashtags"
        }
        Channel::Facebook => "plain text, friendly, at most a few short paragraphs",
    }
}

/// Makes a post keep its channel's hard rules; says what it had to change.
pub fn enforce_rules(c: Channel, text: &str, title: Option<&str>) -> String {
    let text = text.trim().to_owned();
    match c {
        Channel::Blog if !text.lines().any(|l| l.starts_with('#')) => {
            format!("# {}\n\n{text}", title.unwrap_or("Untitled"))
        }
        Channel::X if crate::publish::x::weighted_len(&text) > 280 => {
            let mut out = String::new();
            for ch in text.chars() {
                if crate::publish::x::weighted_len(&format!("{out}{ch}…")) > 280 {
                    break;
                }
                out.push(ch);
            }
            format!("{}…", out.trim_end())
        }
        c => match c.max_chars() {
            Some(max) if text.chars().count() > max => {
                text.chars().take(max - 1).collect::<String>() + "…"
            }
            _ => text,
        },
    }
}

pub async fn run(ctx: &Ctx, args: &DraftArgs) -> Result<Drafted, JobError> {
    let channel = args.channel;
    let bv_id = args.brand_voice_artifact_id;
    let brand_voice = store::artifacts::brand_voice_analysis(&ctx.pool, bv_id, ctx.job.tenant_id)
        .await
        .retryable()?
        .ok_or_else(|| {
            JobError::permanent(format!(
                "brand_voice_artifact_id: no brand voice artifact {bv_id}"
            ))
        })?;
    let previous = match args.based_on {
        Some(id) => Some(
            store::artifacts::content(&ctx.pool, id, ctx.job.tenant_id)
                .await
                .retryable()?
                .ok_or_else(|| JobError::permanent(format!("based_on: no artifact {id}")))?,
        ),
        None => None,
    };
    refresh_stale_items(ctx, &args.catalog_item_ids).await?;
    let products = if args.catalog_item_ids.is_empty() {
        Vec::new()
    } else {
        store::caches::catalog_products(&ctx.pool, ctx.job.tenant_id, &args.catalog_item_ids)
            .await
            .retryable()?
    };
    let feedback = &args.feedback;
    let vars = json!({
        "channel": channel.as_str(),
        "channel_rules": channel_rules(channel),
        "brand_voice": brand_voice,
        "topic": args.topic.as_deref().unwrap_or("(the writer's choice, from the brand voice)"),
        "instructions": args.instructions.as_deref().unwrap_or("(none)"),
        "products": products,
        "previous": previous.clone().unwrap_or_else(|| "(none: first draft)".into()),
        "feedback": if feedback.is_empty() { "(none)".to_owned() } else { feedback.join("\n- ") },
    });
    let llm = &ctx.app.llm;
    let scope = super::llm_scope(ctx);
    let mut hints = vars.clone();
    hints["feedback"] = json!(feedback);
    let call =
        |agent: &str, system: &str, user: String, schema: Option<(String, Value)>, hints: Value| {
            Call {
                agent: agent.into(),
                system: render(system, &vars),
                user,
                schema,
                hints,
            }
        };
    // Which model wrote each step (a fallback when an agent's own model was down).
    let mut models = serde_json::Map::new();
    let mut note = |agent: &str, reply: &crate::llm::Reply| {
        models.insert(agent.to_owned(), json!(reply.model));
    };
    let reply = llm
        .call(
            &scope,
            &call(
                "blog-writer",
                WRITER,
                render(USER, &vars),
                None,
                hints.clone(),
            ),
        )
        .await?;
    note("blog-writer", &reply);
    let draft = reply.text;
    let mut edit_hints = hints.clone();
    edit_hints["draft"] = json!(draft);
    let reply = llm
        .call(
            &scope,
            &call("blog-editor", EDITOR, draft.clone(), None, edit_hints),
        )
        .await?;
    note("blog-editor", &reply);
    let mut written_by = reply.model.clone();
    let mut text = reply.text;
    let mut seo: Option<Value> = None;
    if channel == Channel::Blog {
        let mut h = hints.clone();
        h["draft"] = json!(text);
        let reply = llm
            .call(
                &scope,
                &call(
                    "seo-specialist",
                    SEO,
                    text.clone(),
                    Some(("seo".into(), SEO_SCHEMA.clone())),
                    h.clone(),
                ),
            )
            .await?;
        note("seo-specialist", &reply);
        seo = reply.json;
        h["seo"] = seo.clone().unwrap_or(Value::Null);
        let user = format!("SEO: {}\n\n{text}", seo.clone().unwrap_or(Value::Null));
        let reply = llm
            .call(&scope, &call("senior-editor", SENIOR, user, None, h))
            .await?;
        note("senior-editor", &reply);
        written_by = reply.model.clone();
        text = reply.text;
    }
    let title = seo
        .as_ref()
        .and_then(|s| s["title"].as_str())
        .map(str::to_owned);
    let text = enforce_rules(channel, &text, title.as_deref().or(args.topic.as_deref()));
    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: ctx.job.project_id,
        job_id: Some(ctx.job.id),
        kind: ArtifactKind::Draft,
        channel: Some(channel),
        based_on_id: args.based_on,
        source: ArtifactSource::Ai,
        title: title.or_else(|| args.topic.clone()),
        content: text,
        data: json!({"iteration": args.iteration, "seo": seo, "feedback": feedback,
                     "provider": llm.provider.label(), "model": written_by, "models": models}),
    };
    Ok(Drafted {
        output: DraftOutput {
            artifact_id: artifact.id,
            iteration: args.iteration,
        },
        artifact,
    })
}

/// Refreshes the catalogue first when an item the draft draws on is missing or past its
/// `expires_at` and a catalogue is configured. A refresh that fails is logged and the
/// draft is written from what the table holds: a catalogue outage does not stop drafts.
async fn refresh_stale_items(ctx: &Ctx, ids: &[String]) -> Result<(), JobError> {
    if ids.is_empty() || ctx.app.settings.catalog.url.trim().is_empty() {
        return Ok(());
    }
    let fresh = store::caches::catalog_fresh(&ctx.pool, ctx.job.tenant_id, ids)
        .await
        .retryable()?;
    if fresh >= ids.len() {
        return Ok(());
    }
    tracing::info!(
        stale = ids.len() - fresh,
        "catalogue items are stale: refreshing first"
    );
    let token = super::cache_refresh::catalog_token(ctx).await?;
    if let Err(e) = super::cache_refresh::refresh_catalog(
        &ctx.pool,
        &ctx.steps(),
        ctx.job.tenant_id,
        &ctx.app.fetcher,
        &ctx.app.settings.catalog,
        token.as_deref(),
    )
    .await
    {
        tracing::warn!(error = %e, "catalogue refresh failed: writing from the items on hand");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rules_hold_in_the_output() {
        let long = "word ".repeat(100);
        let x = enforce_rules(Channel::X, &long, None);
        assert!(crate::publish::x::weighted_len(&x) <= 280, "{}", x.len());
        let li = enforce_rules(Channel::Linkedin, &"a".repeat(5000), None);
        assert_eq!(li.chars().count(), 3000);
        let blog = enforce_rules(Channel::Blog, "No heading here.", Some("Linen"));
        assert!(blog.starts_with("# Linen\n"));
    }
}
