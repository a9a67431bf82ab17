//! Publishing: one module per destination, each a thin client of the platform's real
//! API over reqwest, plus what they share: integrations (encrypted credentials), the
//! record of attempts (`attempts.rs`), the HTTP call that records a `runs` row and
//! classifies the answer, and the post itself.
//!
//! A destination offers four things: `validate` (limits, before any call), `create`
//! (the one POST), `find` (reconciliation: is this job's post there?) and `check` (the
//! cheapest authenticated read, for `copydesk integrations test`). The publishing job
//! (`jobs/publishing.rs`, through `once.rs`) decides when each is called.

pub mod attempts;
pub mod eligibility;
pub mod errors;
pub mod facebook;
pub mod health;
pub mod integrations;
pub mod linkedin;
pub mod once;
pub mod shopify;
pub mod wordpress;
pub mod x;

use std::time::{Duration, Instant};

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use errors::CallError;
pub use integrations::Integration;

use crate::{
    config::PublishSettings,
    domain::{Channel, Platform},
    keys::{Credentials, KeyError},
    store,
};

/// Errors of publishing outside a platform call: credentials, integrations, the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A post no platform call is made for: it breaks the destination's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unpublishable(pub String);

/// What is published: an approved draft, shaped for one destination.
#[derive(Debug, Clone)]
pub struct Post {
    pub channel: Channel,
    pub title: String,
    /// The draft's text (Markdown for blog posts, plain text for social posts).
    pub body: String,
    /// Deterministic per publishing job: WordPress slug, Shopify handle.
    pub slug: String,
    /// Handed to platforms that schedule natively (WordPress, Shopify, Facebook).
    pub publish_at: Option<DateTime<Utc>>,
    /// A blog post's picture: WordPress's featured image, Shopify's article image.
    pub image: Option<Image>,
}

/// The SHA-256 (hex) of what a post says, normalised so that spacing, case and Unicode
/// forms do not make the same text look new: NFKC, lower case, white space runs as one
/// space. A blog post's title counts with its body.
pub fn content_hash(post: &Post) -> String {
    use sha2::Digest;
    use unicode_normalization::UnicodeNormalization;
    let text = if post.channel == Channel::Blog {
        format!("{}\n{}", post.title, post.body)
    } else {
        post.body.clone()
    };
    let normal = text
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    sha2::Sha256::digest(normal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A picture to publish with a post.
#[derive(Clone)]
pub struct Image {
    /// The file name it is uploaded with.
    pub name: String,
    pub content_type: String,
    pub bytes: bytes::Bytes,
    /// Alternative text for people who cannot see it.
    pub alt: String,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A post the platform has (or had already).
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub external_id: String,
    pub url: String,
    /// The platform's answer (or, when reconciled, what the lookup found).
    pub response: Value,
    /// When the platform will publish it, when it was handed a time.
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// One HTTP answer from a platform.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// Where a destination's calls go and what they are recorded under.
pub struct Ctx {
    pub http: reqwest::Client,
    pub pool: Db,
    pub settings: PublishSettings,
    pub integration: Integration,
    pub creds: Credentials,
    /// The job and attempt runs rows hang off (`None`: `copydesk integrations test`).
    pub job: Option<(Uuid, i32)>,
    /// Present when credentials may be rewritten (X's OAuth 2.0 refresh).
    pub keys: Option<std::sync::Arc<crate::keys::Keys>>,
    /// Credentials renewed during this attempt (X's refreshed token pair).
    pub refreshed: std::sync::Mutex<Option<Credentials>>,
}

/// The HTTP client for platform calls (TLS, timeouts, no redirects followed blindly).
pub fn client(cfg: &PublishSettings) -> reqwest::Client {
    crate::fetch::install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
        .timeout(Duration::from_secs(cfg.timeout_secs))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("copydesk/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client builds")
}

impl Ctx {
    /// The context of calls to `integration`, recorded under `job` (attempt) when given.
    pub fn new(
        http: reqwest::Client,
        pool: Db,
        settings: PublishSettings,
        (integration, creds): (Integration, Credentials),
        job: Option<(Uuid, i32)>,
        keys: Option<std::sync::Arc<crate::keys::Keys>>,
    ) -> Self {
        Self {
            http,
            pool,
            settings,
            integration,
            creds,
            job,
            keys,
            refreshed: std::sync::Mutex::new(None),
        }
    }

    pub fn platform(&self) -> Platform {
        self.integration.platform
    }

    /// A metadata string field.
    pub fn meta(&self, field: &str) -> Option<&str> {
        self.integration.meta(field)
    }

    /// The API base: metadata `api_base` when set, else `default`; no trailing slash.
    pub fn base(&self, default: &str) -> String {
        self.meta("api_base")
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_owned()
    }

    /// A credential field the platform needs; its absence is the integration's fault.
    pub fn cred(&self, field: &str) -> Result<&str, CallError> {
        self.creds.get(field).ok_or_else(|| {
            CallError::Auth(format!(
                "the {} credentials have no {field:?}: store them again with `copydesk integrations set`",
                self.platform()
            ))
        })
    }

    /// Sends one request, classifies the answer and writes a `runs` row for it.
    /// `op` names the call in runs rows and errors (e.g. `POST /wp/v2/posts`).
    pub async fn send(&self, op: &str, req: reqwest::RequestBuilder) -> Result<Reply, CallError> {
        use tracing::Instrument;
        let started = Instant::now();
        let (client, req) = req.build_split();
        let req = match req {
            Ok(req) => req,
            Err(e) => {
                let e = errors::transport(&e).redacted(&self.creds);
                return Err(e.context(op));
            }
        };
        let span = crate::telemetry::platform_call_span(self.platform().as_str(), op, req.url());
        let result = match client.execute(req).instrument(span.clone()).await {
            Err(e) => Err(errors::transport(&e)),
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                match res.bytes().await {
                    Err(e) => Err(CallError::unknown(format!(
                        "the answer ({status}) was cut off: {e}"
                    ))),
                    Ok(bytes) => {
                        let body = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                                Value::String(
                                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                                )
                            })
                        };
                        let reply = Reply {
                            status,
                            headers,
                            body,
                        };
                        errors::classify(self.platform(), &reply).map(|()| reply)
                    }
                }
            }
        };
        let result = result.map_err(|e| e.redacted(&self.creds));
        match &result {
            Ok(r) => crate::telemetry::describe(
                &span,
                vec![opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    i64::from(r.status),
                )],
            ),
            Err(e) => crate::telemetry::span_failed(&span, e.kind_label()),
        }
        let ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        self.record(op, ms, result.as_ref().err()).await;
        match &result {
            Ok(r) => {
                tracing::info!(platform = %self.platform(), op, status = r.status, ms, "platform call")
            }
            Err(e) => {
                tracing::warn!(platform = %self.platform(), op, ms, error = %e, "platform call failed")
            }
        }
        result.map_err(|e| e.context(op))
    }

    /// A `runs` row for one platform call. Recording must not turn a post that went
    /// out into a failure, so a database error here is logged, not returned.
    async fn record(&self, op: &str, ms: i32, error: Option<&CallError>) {
        let (job, attempt) = match self.job {
            Some((j, a)) => (Some(j), a),
            None => (None, 0),
        };
        let error = error.map(|e| e.to_string());
        let run = store::runs::NewRun {
            job_id: job,
            project_id: Some(self.integration.project_id),
            attempt,
            duration_ms: ms,
            error: error.as_deref(),
            ..store::runs::NewRun::call("publisher", self.platform().as_str(), op)
        };
        if let Err(e) = store::runs::record(&self.pool, &run).await {
            tracing::error!(error = %e, op, "could not record a runs row for a platform call");
        }
    }
}

/// Checks the post against the destination's limits; no call is made. Lengths come
/// from [`Channel::max_chars`], the same limits draft generation writes to; X counts
/// weighted characters (`x::weighted_len`).
pub fn validate(platform: Platform, post: &Post) -> Result<(), Unpublishable> {
    if post.body.trim().is_empty() {
        return Err(Unpublishable("the draft is empty".into()));
    }
    match (platform, post.channel.max_chars()) {
        (Platform::Wordpress | Platform::Shopify, _) if post.title.trim().is_empty() => {
            Err(Unpublishable(format!(
                "a {platform} post needs a title; the draft has none"
            )))
        }
        (Platform::X, _) => x::validate(post),
        (_, Some(max)) if post.body.chars().count() > max => Err(Unpublishable(format!(
            "the {platform} post has {} characters; {platform} takes at most {max}",
            post.body.chars().count()
        ))),
        _ => Ok(()),
    }
}

/// Creates the post.
pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    match ctx.platform() {
        Platform::Wordpress => wordpress::create(ctx, post).await,
        Platform::Shopify => shopify::create(ctx, post).await,
        Platform::Linkedin => linkedin::create(ctx, post).await,
        Platform::X => x::create(ctx, post).await,
        Platform::Facebook => facebook::create(ctx, post).await,
    }
}

/// A post a platform lookup found that looks like ours, with when the platform says it
/// was created (when it says).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub post: Published,
    pub created: Option<DateTime<Utc>>,
}

/// How far a platform's clock may lag the database's before a post made for an
/// attempt looks older than the attempt.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(2);

/// Looks for the post an earlier attempt of this job may have made. A platform's lookup
/// finds posts that carry this job's identifier (WordPress slug, Shopify handle) or its
/// text (LinkedIn, X, Facebook); one counts as this job's only when it was created after
/// the attempt was recorded (`since`, less [`CLOCK_SKEW`]) and no other job recorded it
/// as its own. Oldest first, so two lost answers of one job find its first post.
pub async fn find(
    ctx: &Ctx,
    post: &Post,
    since: DateTime<Utc>,
) -> Result<Option<Published>, CallError> {
    let mut found = match ctx.platform() {
        Platform::Wordpress => wordpress::find(ctx, post).await?,
        Platform::Shopify => shopify::find(ctx, post).await?,
        Platform::Linkedin => linkedin::find(ctx, post).await?,
        Platform::X => x::find(ctx, post).await?,
        Platform::Facebook => facebook::find(ctx, post).await?,
    };
    found.sort_by_key(|c| c.created);
    for c in found {
        if c.created.is_some_and(|t| t < since - CLOCK_SKEW) {
            tracing::info!(external_id = %c.post.external_id, created = ?c.created, %since,
                "a matching post predates this attempt: not ours");
            continue;
        }
        if let Some((job, _)) = ctx.job {
            let theirs = attempts::recorded_by_another_job(
                &ctx.pool,
                ctx.integration.id,
                &c.post.external_id,
                job,
            )
            .await
            .map_err(|e| CallError::NotSent(format!("reading earlier attempts: {e}")))?;
            if theirs {
                tracing::info!(external_id = %c.post.external_id,
                    "a matching post is recorded as another job's: not ours");
                continue;
            }
        }
        return Ok(Some(c.post));
    }
    Ok(None)
}

/// The cheapest authenticated read; returns what it saw (an account or page name).
pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    match ctx.platform() {
        Platform::Wordpress => wordpress::check(ctx).await,
        Platform::Shopify => shopify::check(ctx).await,
        Platform::Linkedin => linkedin::check(ctx).await,
        Platform::X => x::check(ctx).await,
        Platform::Facebook => facebook::check(ctx).await,
    }
}

/// Blog Markdown as HTML (WordPress content, Shopify body_html).
pub fn markdown_to_html(markdown: &str) -> String {
    let parser = pulldown_cmark::Parser::new_ext(markdown, pulldown_cmark::Options::ENABLE_TABLES);
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

/// A slug (WordPress) or handle (Shopify) unique to a publishing job: the title's words
/// (ASCII letters and digits, at most 60 characters) and the last 12 hex digits of the
/// job id. Every attempt of one job sends the same slug, so a lookup by it finds an
/// earlier attempt's post; two jobs never send the same one, even for the same title at
/// the same moment (the tail of a UUID, v4 or v7, is random, where the head of a v7 is
/// its creation time).
pub fn slug_for(title: &str, job: Uuid) -> String {
    let mut words = String::new();
    for part in title
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if words.len() + part.len() + 1 > 60 {
            break;
        }
        if !words.is_empty() {
            words.push('-');
        }
        words.push_str(part);
    }
    let id = job.simple().to_string();
    let tail = &id[id.len() - 12..];
    if words.is_empty() {
        format!("post-{tail}")
    } else {
        format!("{words}-{tail}")
    }
}

/// A blog draft split into its title heading and the rest: WordPress and Shopify show
/// the post's title themselves, so a leading `# Title` line would show it twice.
/// Returns the heading's text (when the draft starts with a level-one heading) and the
/// body without it.
pub fn split_title_heading(markdown: &str) -> (Option<String>, String) {
    let trimmed = markdown.trim_start();
    let (first, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
    match first.trim_end().strip_prefix("# ") {
        Some(heading) if !heading.trim().is_empty() => (
            Some(heading.trim().trim_end_matches('#').trim_end().to_owned()),
            rest.trim_start_matches(['\n', '\r']).to_owned(),
        ),
        _ => (None, markdown.to_owned()),
    }
}

/// Text compared the way platforms give it back: URLs (X shortens them to t.co) and
/// runs of whitespace do not count.
pub fn same_text(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        s.split_whitespace()
            .filter(|w| !(w.starts_with("http://") || w.starts_with("https://")))
            .collect::<Vec<_>>()
            .join(" ")
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_deterministic_ascii_and_carry_the_jobs_random_bits() {
        let job = Uuid::parse_str("0192f1c4-7b1e-7000-8000-a1b2c3d4e5f6").unwrap();
        assert_eq!(
            slug_for("Linen, Washed & Worn: 5 Ways!", job),
            "linen-washed-worn-5-ways-a1b2c3d4e5f6"
        );
        assert_eq!(slug_for("Été", job), "t-a1b2c3d4e5f6");
        assert_eq!(slug_for("", job), "post-a1b2c3d4e5f6");
        assert!(slug_for(&"word ".repeat(40), job).len() <= 73);
        // Two jobs created in the same instant (UUIDv7: same timestamp) differ.
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(a.simple().to_string()[..8], b.simple().to_string()[..8]);
        assert_ne!(slug_for("Same title", a), slug_for("Same title", b));
    }

    #[test]
    fn a_leading_title_heading_is_split_off() {
        assert_eq!(
            split_title_heading("# Why linen lasts\n\nWoven slowly.\n\n## Care\n"),
            (
                Some("Why linen lasts".into()),
                "Woven slowly.\n\n## Care\n".into()
            )
        );
        let body = "## Why linen lasts\n\nWoven slowly.";
        assert_eq!(split_title_heading(body), (None, body.into()));
        let body = "Intro first.\n\n# Later heading";
        assert_eq!(split_title_heading(body), (None, body.into()));
    }

    #[test]
    fn markdown_becomes_html() {
        let html = markdown_to_html("# Linen\n\nSoft **and** cool.\n\n- one\n- two\n");
        assert!(html.contains("<h1>Linen</h1>"), "{html}");
        assert!(html.contains("<strong>and</strong>"));
        assert!(html.contains("<li>one</li>"));
    }

    #[test]
    fn text_matching_ignores_urls_and_spacing() {
        assert!(same_text(
            "New linen\n https://shop.example/linen",
            "New linen https://t.co/abc"
        ));
        assert!(!same_text("New linen", "Old linen"));
    }
}
