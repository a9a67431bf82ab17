//! `brand_voice_analysis`: reads a store's website (through the SSRF guard) and/or text
//! samples, asks brand-voice-analyzer for a structured analysis, writes a `brand_voice`
//! artifact, and caches the analysis by normalised URL for 7 days, so a second project
//! with the same URL makes no model call. Then waits for approval (or, without
//! `[pipeline] approve_brand_voice`, enqueues the drafts at once).

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use uuid::Uuid;

use super::JobContext;
use crate::{
    llm::Call,
    pipeline::{self, NewArtifact, Plan},
    queue::{self, JobError, Outcome, ResultExt},
};

pub const KIND: &str = "brand_voice_analysis";
pub const SCHEMA: &str = include_str!("../../jobs/brand_voice_analysis/schema.json");
const SYSTEM: &str = include_str!("../../jobs/brand_voice_analysis/analyzer.md");
const USER: &str = include_str!("../../jobs/brand_voice_analysis/user.md");

/// The shape brand-voice-analyzer must answer with.
pub static ANALYSIS_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let list = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "required": ["tone", "audience", "vocabulary", "do", "dont", "sample_phrases"],
        "properties": {
            "tone": list, "audience": {"type": "string"}, "vocabulary": list,
            "do": list, "dont": list, "sample_phrases": list,
        },
        "additionalProperties": false,
    })
});

/// A URL reduced to what identifies the site page: lower-case host, no fragment, no
/// trailing slash, no `www.`.
pub fn normalise_url(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    u.set_fragment(None);
    let host = u.host_str()?.to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    u.set_host(Some(&host)).ok()?;
    Some(u.as_str().trim_end_matches('/').to_owned())
}

/// The readable text of a page: its title and the text of headings, paragraphs and
/// list items, without scripts, styles and navigation chrome.
pub fn page_text(html: &str) -> (String, String) {
    let doc = scraper::Html::parse_document(html);
    let sel = |s: &str| scraper::Selector::parse(s).expect("valid selector");
    let title = doc
        .select(&sel("title"))
        .next()
        .map(|t| t.text().collect::<String>().trim().to_owned())
        .unwrap_or_default();
    let mut parts = Vec::new();
    for el in doc.select(&sel("h1, h2, h3, p, li, blockquote")) {
        let t = el.text().collect::<Vec<_>>().join(" ");
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() && !parts.contains(&t) {
            parts.push(t);
        }
    }
    let mut text = parts.join("\n");
    text.truncate(
        text.char_indices()
            .nth(20_000)
            .map_or(text.len(), |(i, _)| i),
    );
    (title, text)
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let input = ctx.job.input.clone();
    let plan: Option<Plan> = input
        .get("pipeline")
        .map(|p| serde_json::from_value(p.clone()))
        .transpose()
        .permanent()?;
    let store_url = input["store_url"].as_str().map(str::to_owned);
    let key = store_url.as_deref().and_then(normalise_url);

    // A fresh analysis of the same site is reused: no fetch, no model call.
    let cached: Option<Value> = match &key {
        Some(k) => sqlx::query_scalar(
            "SELECT analysis FROM brand_voice_cache WHERE url = $1 AND expires_at > now()",
        )
        .bind(k)
        .fetch_optional(&ctx.pool)
        .await
        .retryable()?,
        None => None,
    };
    let (analysis, from_cache) = match cached {
        Some(a) => {
            tracing::info!(
                url = key.as_deref().unwrap_or_default(),
                "brand voice from cache"
            );
            (a, true)
        }
        None => (analyse(&ctx, store_url.as_deref(), &input).await?, false),
    };

    let artifact = Uuid::now_v7();
    let content = summary(&analysis);
    let a = NewArtifact {
        id: artifact,
        project_id: ctx.job.project_id,
        job_id: ctx.job.id,
        kind: "brand_voice",
        channel: None,
        based_on_id: None,
        source: "ai",
        title: Some(format!(
            "Brand voice of {}",
            store_url.as_deref().unwrap_or("the samples")
        )),
        content,
        data: json!({"analysis": analysis, "store_url": store_url, "from_cache": from_cache}),
    };
    let approve = ctx.settings.pipeline.approve_brand_voice;
    let (job_id, project) = (ctx.job.id, ctx.job.project_id);
    let follow_ups = match (&plan, approve) {
        (Some(plan), false) => pipeline::drafts_for(plan, artifact, project, Some(job_id)),
        _ => Vec::new(),
    };
    let cache = (!from_cache)
        .then(|| (key.clone(), analysis.clone()))
        .and_then(|(k, a)| k.map(|k| (k, a)));
    let effects: queue::Effects = Arc::new(move |conn| {
        let (a, follow_ups, cache) = (a.clone(), follow_ups.clone(), cache.clone());
        Box::pin(async move {
            pipeline::artifact_insert(conn, &a).await?;
            pipeline::job_set_output(conn, job_id, a.id).await?;
            if let Some((url, analysis)) = cache {
                sqlx::query(
                    "INSERT INTO brand_voice_cache (url, analysis, artifact_id) VALUES ($1, $2, $3)
                     ON CONFLICT (url) DO UPDATE SET analysis = $2, artifact_id = $3,
                         created_at = now(), expires_at = now() + interval '7 days'",
                )
                .bind(url)
                .bind(analysis)
                .bind(a.id)
                .execute(&mut *conn)
                .await?;
            }
            if approve {
                pipeline::approval_create(conn, job_id, a.id).await?;
            }
            queue::enqueue_many(conn, &follow_ups).await?;
            Ok(())
        })
    });
    let output = Some(json!({"artifact_id": artifact, "from_cache": from_cache}));
    Ok(if approve {
        Outcome::NeedsApproval {
            output,
            effects: Some(effects),
        }
    } else {
        Outcome::Done {
            output,
            effects: Some(effects),
        }
    })
}

pub(crate) async fn analyse(
    ctx: &JobContext,
    store_url: Option<&str>,
    input: &Value,
) -> Result<Value, JobError> {
    let mut title = String::new();
    let mut text = String::new();
    if let Some(url) = store_url {
        let page = ctx.services.fetcher.get_html(url).await.map_err(|e| {
            if e.is_transient() {
                JobError::transient(e.to_string())
            } else {
                JobError::permanent(e.to_string())
            }
        })?;
        (title, text) = page_text(&page.body);
    }
    for s in input["samples"].as_array().into_iter().flatten() {
        let sample = match s {
            Value::String(t) => t.clone(),
            other => {
                let id: Uuid = serde_json::from_value(other["artifact_id"].clone()).permanent()?;
                sqlx::query_scalar::<_, String>(
                    "SELECT content FROM artifacts WHERE id = $1 AND kind = 'source'",
                )
                .bind(id)
                .fetch_optional(&ctx.pool)
                .await
                .retryable()?
                .ok_or_else(|| JobError::permanent(format!("samples: no source artifact {id}")))?
            }
        };
        text.push('\n');
        text.push_str(&sample);
    }
    if text.trim().is_empty() {
        return Err(JobError::permanent(
            "the store page and samples have no readable text to analyse",
        ));
    }
    let vars = json!({"store_url": store_url.unwrap_or("(samples only)"), "page_title": title, "text": text});
    let reply = ctx
        .services
        .llm
        .call(
            &ctx.llm_scope(),
            &Call {
                agent: "brand-voice-analyzer".into(),
                system: SYSTEM.into(),
                user: pipeline::render(USER, &vars),
                schema: Some(("brand_voice".into(), ANALYSIS_SCHEMA.clone())),
                hints: vars,
            },
        )
        .await?;
    reply
        .json
        .ok_or_else(|| JobError::transient("brand-voice-analyzer gave no structured answer"))
}

fn summary(a: &Value) -> String {
    let list = |k: &str| {
        a[k].as_array()
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    format!(
        "Tone: {}\nAudience: {}\nVocabulary: {}\nDo: {}\nDon't: {}",
        list("tone"),
        a["audience"].as_str().unwrap_or_default(),
        list("vocabulary"),
        list("do"),
        list("dont")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_to_one_cache_key() {
        let k = normalise_url("https://WWW.Example.com/#about").unwrap();
        assert_eq!(k, "https://example.com");
        assert_eq!(normalise_url("https://example.com/").unwrap(), k);
    }

    #[test]
    fn page_text_keeps_words_and_drops_scripts() {
        let (title, text) = page_text(
            "<html><head><title> Linen &amp; Co </title><script>var x=1;</script></head>
             <body><h1>Made slowly</h1><p>Our linen is woven in Lithuania.</p><li>Free repairs</li></body></html>",
        );
        assert_eq!(title, "Linen & Co");
        assert_eq!(
            text,
            "Made slowly\nOur linen is woven in Lithuania.\nFree repairs"
        );
    }
}
