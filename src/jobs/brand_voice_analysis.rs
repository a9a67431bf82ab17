//! `brand_voice_analysis`: reads a store's website (through the SSRF guard) and/or text
//! samples, asks brand-voice-analyzer for a structured analysis and makes the
//! `brand_voice` artifact; an analysis of the same normalised URL cached in the last 7
//! days is reused (no fetch, no model call). What follows (an approval, or the drafts)
//! is `pipeline`'s.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use copydesk_queue::{JobArgs, JobError, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{ArtifactKind, ArtifactSource, Channel},
    llm::Call,
    store::{self, artifacts::NewArtifact},
};

/// The input of a `brand_voice_analysis` job: a store URL, samples, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandVoiceArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    /// What follows once the voice is approved: drafts per channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Plan>,
}

impl JobArgs for BrandVoiceArgs {
    const KIND: &'static str = "brand_voice_analysis";
    const SCHEMA: &'static str = include_str!("../../jobs/brand_voice_analysis/schema.json");
}

/// A style sample: text, or a `source` artifact holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sample {
    Text(String),
    Artifact { artifact_id: Uuid },
}

/// What the pipeline was asked for; carried from step to step in job inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub channels: Vec<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// When approved drafts are published (now when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<DateTime<Utc>>,
}

/// The output of a `brand_voice_analysis` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrandVoiceOutput {
    pub artifact_id: Uuid,
    pub from_cache: bool,
}

/// What the step produced: the artifact, and the analysis to cache under a URL when it
/// is new.
#[derive(Debug, Clone)]
pub struct Analysed {
    pub artifact: NewArtifact,
    pub cache: Option<(String, Value)>,
    pub output: BrandVoiceOutput,
}

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

pub async fn run(ctx: &Ctx, args: &BrandVoiceArgs) -> Result<Analysed, JobError> {
    let key = args.store_url.as_deref().and_then(normalise_url);

    // A fresh analysis of the same site is reused: no fetch, no model call.
    let cached = match &key {
        Some(k) => store::caches::brand_voice(&ctx.pool, ctx.job.tenant_id, k).await?,
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
        None => (
            analyse(ctx, args.store_url.as_deref(), &args.samples).await?,
            false,
        ),
    };
    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: ctx.job.project_id,
        job_id: Some(ctx.job.id),
        kind: ArtifactKind::BrandVoice,
        channel: None,
        based_on_id: None,
        source: ArtifactSource::Ai,
        title: Some(format!(
            "Brand voice of {}",
            args.store_url.as_deref().unwrap_or("the samples")
        )),
        content: summary(&analysis),
        data: json!({"analysis": analysis, "store_url": args.store_url, "from_cache": from_cache}),
    };
    let cache = match (from_cache, key) {
        (false, Some(k)) => Some((k, analysis)),
        _ => None,
    };
    Ok(Analysed {
        output: BrandVoiceOutput {
            artifact_id: artifact.id,
            from_cache,
        },
        artifact,
        cache,
    })
}

/// Asks brand-voice-analyzer for the voice of the store page and samples.
pub(crate) async fn analyse(
    ctx: &Ctx,
    store_url: Option<&str>,
    samples: &[Sample],
) -> Result<Value, JobError> {
    let mut title = String::new();
    let mut text = String::new();
    if let Some(url) = store_url {
        // A step: the analysis after a wait or a retry reads the page it read before.
        (title, text) = ctx
            .steps()
            .run("store page", &url, || async {
                let page = ctx.app.fetcher.get_html(url).await.map_err(|e| {
                    if e.is_transient() {
                        JobError::transient(e.to_string())
                    } else {
                        JobError::permanent(e.to_string())
                    }
                })?;
                Ok::<_, JobError>(page_text(&page.body))
            })
            .await?
            .output;
    }
    for s in samples {
        let sample = match s {
            Sample::Text(t) => t.clone(),
            Sample::Artifact { artifact_id: id } => {
                store::artifacts::source_text(&ctx.pool, *id, ctx.job.tenant_id)
                    .await
                    .retryable()?
                    .ok_or_else(|| {
                        JobError::permanent(format!("samples: no source artifact {id}"))
                    })?
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
        .app
        .llm
        .call(
            &super::llm_scope(ctx),
            &Call {
                agent: "brand-voice-analyzer".into(),
                system: SYSTEM.into(),
                user: crate::llm::render(USER, &vars),
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
    fn plans_and_samples_decode_both_shapes() {
        let stored =
            r#"{"channels":["blog","x"],"topic":"Linen","schedule":"2026-12-01T09:00:00Z"}"#;
        let plan: Plan = serde_json::from_str(stored).unwrap();
        assert_eq!(plan.channels, vec![Channel::Blog, Channel::X]);
        assert_eq!(serde_json::to_string(&plan).unwrap(), stored);
        let samples: Vec<Sample> = serde_json::from_str(
            r#"["Warm words.", {"artifact_id": "00000000-0000-0000-0000-000000000000"}]"#,
        )
        .unwrap();
        assert_eq!(samples[0], Sample::Text("Warm words.".into()));
        assert_eq!(
            samples[1],
            Sample::Artifact {
                artifact_id: Uuid::nil()
            }
        );
    }

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
