//! `draft_generation`: blog-writer, then blog-editor (and for the blog, seo-specialist
//! and senior-editor) write one channel's draft in the approved brand voice; the draft
//! artifact (versioned, `based_on` the draft it rewrites) and its evaluation job commit
//! with the finish.

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use uuid::Uuid;

use super::JobContext;
use crate::{
    llm::Call,
    pipeline::{self, Channel, NewArtifact},
    queue::{self, JobError, NewJob, Outcome, ResultExt},
};

pub const KIND: &str = "draft_generation";
pub const SCHEMA: &str = include_str!("../../jobs/draft_generation/schema.json");
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

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let input = ctx.job.input.clone();
    let channel = Channel::parse(input["channel"].as_str().unwrap_or_default())
        .map_err(JobError::permanent)?;
    let bv_id: Uuid =
        serde_json::from_value(input["brand_voice_artifact_id"].clone()).permanent()?;
    let brand_voice: Value = sqlx::query_scalar(
        "SELECT data->'analysis' FROM artifacts WHERE id = $1 AND kind = 'brand_voice'",
    )
    .bind(bv_id)
    .fetch_optional(&ctx.pool)
    .await
    .retryable()?
    .ok_or_else(|| {
        JobError::permanent(format!(
            "brand_voice_artifact_id: no brand voice artifact {bv_id}"
        ))
    })?;
    let based_on: Option<Uuid> = input
        .get("based_on")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .permanent()?;
    let previous: Option<String> = match based_on {
        Some(id) => Some(
            sqlx::query_scalar("SELECT content FROM artifacts WHERE id = $1")
                .bind(id)
                .fetch_optional(&ctx.pool)
                .await
                .retryable()?
                .ok_or_else(|| JobError::permanent(format!("based_on: no artifact {id}")))?,
        ),
        None => None,
    };
    let wanted: Vec<&str> = input["catalog_item_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    refresh_stale_items(&ctx, &wanted).await?;
    let products: Vec<Value> = match input["catalog_item_ids"].as_array() {
        Some(ids) if !ids.is_empty() => sqlx::query_scalar(
            "SELECT jsonb_build_object('name', name, 'designer', designer, 'description', description, 'price', price)
             FROM catalog_items WHERE external_id = ANY($1)",
        )
        .bind(ids.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .fetch_all(&ctx.pool)
        .await
        .retryable()?,
        _ => Vec::new(),
    };
    let feedback: Vec<String> = input["feedback"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let vars = json!({
        "channel": channel.as_str(),
        "channel_rules": channel_rules(channel),
        "brand_voice": brand_voice,
        "topic": input["topic"].as_str().unwrap_or("(the writer's choice, from the brand voice)"),
        "instructions": input["instructions"].as_str().unwrap_or("(none)"),
        "products": products,
        "previous": previous.clone().unwrap_or_else(|| "(none: first draft)".into()),
        "feedback": if feedback.is_empty() { "(none)".to_owned() } else { feedback.join("\n- ") },
    });
    let llm = &ctx.services.llm;
    let scope = ctx.llm_scope();
    let mut hints = vars.clone();
    hints["feedback"] = json!(feedback);
    let call =
        |agent: &str, system: &str, user: String, schema: Option<(String, Value)>, hints: Value| {
            Call {
                agent: agent.into(),
                system: pipeline::render(system, &vars),
                user,
                schema,
                hints,
            }
        };
    let draft = llm
        .call(
            &scope,
            &call(
                "blog-writer",
                WRITER,
                pipeline::render(USER, &vars),
                None,
                hints.clone(),
            ),
        )
        .await?
        .text;
    let mut edit_hints = hints.clone();
    edit_hints["draft"] = json!(draft);
    let mut text = llm
        .call(
            &scope,
            &call("blog-editor", EDITOR, draft.clone(), None, edit_hints),
        )
        .await?
        .text;
    let mut seo: Option<Value> = None;
    if channel == Channel::Blog {
        let mut h = hints.clone();
        h["draft"] = json!(text);
        seo = llm
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
            .await?
            .json;
        h["seo"] = seo.clone().unwrap_or(Value::Null);
        let user = format!("SEO: {}\n\n{text}", seo.clone().unwrap_or(Value::Null));
        text = llm
            .call(&scope, &call("senior-editor", SENIOR, user, None, h))
            .await?
            .text;
    }
    let title = seo
        .as_ref()
        .and_then(|s| s["title"].as_str())
        .map(str::to_owned);
    let text = enforce_rules(channel, &text, title.as_deref().or(input["topic"].as_str()));
    let iteration = input["iteration"].as_i64().unwrap_or(1);

    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: ctx.job.project_id,
        job_id: ctx.job.id,
        kind: "draft",
        channel: Some(channel),
        based_on_id: based_on,
        source: "ai",
        title: title.or_else(|| input["topic"].as_str().map(str::to_owned)),
        content: text,
        data: json!({"iteration": iteration, "seo": seo, "feedback": feedback, "provider": llm.provider.label()}),
    };
    let mut eval_input = json!({
        "draft_artifact_id": artifact.id,
        "channel": channel.as_str(),
        "brand_voice_artifact_id": bv_id,
        "iteration": iteration,
    });
    for k in ["topic", "instructions", "schedule"] {
        if let Some(v) = input.get(k) {
            eval_input[k] = v.clone();
        }
    }
    let mut eval = NewJob::new("evaluation", eval_input);
    eval.project_id = ctx.job.project_id;
    eval.parent_id = Some(ctx.job.id);
    let job_id = ctx.job.id;
    let output = json!({"artifact_id": artifact.id, "iteration": iteration});
    let effects: queue::Effects = Arc::new(move |conn| {
        let (a, eval) = (artifact.clone(), eval.clone());
        Box::pin(async move {
            pipeline::artifact_insert(conn, &a).await?;
            pipeline::job_set_output(conn, job_id, a.id).await?;
            queue::enqueue(conn, &eval).await?;
            Ok(())
        })
    });
    Ok(Outcome::done_with(output).with_effects(effects))
}

/// Refreshes the catalogue first when an item the draft draws on is missing or past its
/// `expires_at` and a catalogue is configured. A refresh that fails is logged and the
/// draft is written from what the table holds: a catalogue outage does not stop drafts.
async fn refresh_stale_items(ctx: &JobContext, ids: &[&str]) -> Result<(), JobError> {
    if ids.is_empty() || ctx.settings.catalog.url.trim().is_empty() {
        return Ok(());
    }
    let fresh: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM catalog_items WHERE external_id = ANY($1) AND expires_at > now()",
    )
    .bind(ids)
    .fetch_one(&ctx.pool)
    .await
    .retryable()?;
    if fresh as usize >= ids.len() {
        return Ok(());
    }
    tracing::info!(
        stale = ids.len() - fresh as usize,
        "catalogue items are stale: refreshing first"
    );
    let token = super::cache_refresh::catalog_token(ctx).await?;
    if let Err(e) = super::cache_refresh::refresh_catalog(
        &ctx.pool,
        &ctx.services.fetcher,
        &ctx.settings.catalog,
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
