//! `cache_refresh`: keeps the caches drafts draw on fresh.
//!
//! Each refresh acts on its job's tenant's cache (caches are per tenant); the scheduled
//! brand-voice refresh (`every_tenant`) also enqueues one for every other tenant with
//! entries about to expire, so each tenant's refresh is its own job, costs and all.
//!
//! - `catalog`: pages through the external catalogue API (`[catalog]`), fetched
//!   through the SSRF guard, and upserts `catalog_items` with `expires_at` a TTL on,
//!   counting inserted, updated (the item's JSON changed) and unchanged rows. An item
//!   without an id or a name is skipped and counted, never fatal to the rest.
//! - `brand_voice`: re-analyses cached store URLs that expire within a day and are still
//!   used by an active project (one failure does not stop the others).

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use crate::db::Db;
use copydesk_queue::{JobArgs, JobError, NewJob, Outcome, ResultExt, Steps, text_enum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    config::CatalogSettings,
    fetch::Fetcher,
    store::{self, caches::CatalogItem},
};

text_enum! {
    /// Which cache a `cache_refresh` job refreshes.
    pub enum CacheSource("cache source") {
        Catalog = "catalog",
        BrandVoice = "brand_voice",
    }
}

/// The input of a `cache_refresh` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRefreshArgs {
    pub source: CacheSource,
    /// Brand voices: refresh those that expire within this many hours (default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_hours: Option<i32>,
    /// Brand voices: also enqueue a refresh for every other tenant with expiring entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_tenant: bool,
}

impl JobArgs for CacheRefreshArgs {
    const KIND: &'static str = "cache_refresh";
    const SCHEMA: &'static str = include_str!("../../jobs/cache_refresh/schema.json");
}

/// The output of a `cache_refresh` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum CacheRefreshOutput {
    Catalog {
        counts: CatalogCounts,
        /// Why nothing was refreshed: the catalogue refused the request (401/403).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    BrandVoice {
        refreshed: Vec<String>,
        failed: Vec<RefreshFailure>,
        not_in_use: u64,
        /// Refreshes enqueued for other tenants (`every_tenant`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tenants_enqueued: Vec<Uuid>,
    },
}

/// A brand voice whose refresh failed (the others still ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshFailure {
    pub url: String,
    pub error: String,
}

/// What a catalogue refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCounts {
    pub pages: u32,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

pub async fn run(ctx: Ctx, args: CacheRefreshArgs) -> Result<Outcome, JobError> {
    let mut others = Vec::new();
    let output = match args.source {
        CacheSource::Catalog => {
            let token = catalog_token(&ctx).await?;
            let refreshed = refresh_catalog(
                &ctx.pool,
                &ctx.steps(),
                ctx.job.tenant_id,
                &ctx.app.fetcher,
                &ctx.app.settings.catalog,
                token.as_deref(),
            )
            .await;
            match refreshed {
                Ok(counts) => {
                    tracing::info!(?counts, "catalogue refreshed");
                    store::notifications::resolve(
                        &ctx.pool,
                        ctx.job.tenant_id,
                        CATALOG_REFUSED,
                        CATALOG_REFUSED_CAUSE,
                        "copydesk (the catalogue answered again)",
                    )
                    .await
                    .retryable()?;
                    CacheRefreshOutput::Catalog {
                        counts,
                        refused: None,
                    }
                }
                // Said once, as a warning that stays until a refresh is taken again;
                // not a failed job each day.
                Err(CatalogError::Refused { status, message }) => {
                    refused(&ctx, status, &message, token.is_some()).await?;
                    CacheRefreshOutput::Catalog {
                        counts: CatalogCounts::default(),
                        refused: Some(message),
                    }
                }
                Err(CatalogError::Job(e)) => return Err(e),
            }
        }
        CacheSource::BrandVoice => {
            let within = args.within_hours.unwrap_or(24);
            if args.every_tenant {
                others = store::caches::tenants_with_expiring_brand_voices(&ctx.pool, within)
                    .await?
                    .into_iter()
                    .filter(|t| *t != ctx.job.tenant_id)
                    .collect();
            }
            let mut out = refresh_brand_voices(&ctx, within).await?;
            if let CacheRefreshOutput::BrandVoice {
                tenants_enqueued, ..
            } = &mut out
            {
                tenants_enqueued.clone_from(&others);
            }
            out
        }
    };
    let done = Outcome::done_with(json!(output));
    if others.is_empty() {
        return Ok(done);
    }
    // One job per tenant, keyed by this job: a retried finish enqueues each once.
    let parent = ctx.job.id;
    let jobs: Vec<NewJob> = others
        .iter()
        .map(|t| {
            NewJob::of(&CacheRefreshArgs {
                source: CacheSource::BrandVoice,
                within_hours: args.within_hours,
                every_tenant: false,
            })
            .tenant(*t)
            .parent(parent)
            .idempotency_key(format!("cache_refresh:brand_voice:{parent}:{t}"))
        })
        .collect();
    let catalog = ctx.catalog.clone();
    Ok(done.with_effects(Arc::new(move |conn| {
        let (jobs, catalog) = (jobs.clone(), catalog.clone());
        Box::pin(async move {
            copydesk_queue::enqueue_many(conn, &catalog, &jobs).await?;
            Ok(())
        })
    })))
}

/// Raises (or counts again) the warning that the catalogue refuses copydesk.
async fn refused(ctx: &Ctx, status: u16, message: &str, had_token: bool) -> Result<(), JobError> {
    tracing::warn!(status, message, "the catalogue refused the refresh");
    let fix = if had_token {
        "it refused the catalog_token copydesk sent: set the right one with \
         `copydesk settings set catalog_token --secret` (or COPYDESK_CATALOG_TOKEN)"
    } else {
        "no catalog_token is set: set it with `copydesk settings set catalog_token --secret` \
         (or COPYDESK_CATALOG_TOKEN on the workers), or empty [catalog] url to turn the \
         refresh off"
    };
    store::notifications::raise(
        &ctx.pool,
        &store::notifications::New {
            tenant: ctx.job.tenant_id,
            project: None,
            job: Some(ctx.job.id),
            severity: crate::domain::Severity::Warning,
            kind: CATALOG_REFUSED,
            cause: CATALOG_REFUSED_CAUSE,
            title: &format!("The catalogue refuses copydesk's requests (HTTP {status})"),
            body: &format!("{message}; {fix}. Drafts write from the items on hand."),
            data: json!({"status": status, "token_set": had_token}),
        },
    )
    .await
    .retryable()?;
    Ok(())
}

/// The catalogue token: COPYDESK_CATALOG_TOKEN, else the encrypted app setting
/// `catalog_token` (the job's tenant's override, else the global row), else none.
pub(crate) async fn catalog_token(ctx: &Ctx) -> Result<Option<String>, JobError> {
    if let Ok(t) = std::env::var("COPYDESK_CATALOG_TOKEN")
        && !t.is_empty()
    {
        return Ok(Some(t));
    }
    let tenant = Some(ctx.job.tenant_id);
    if !store::settings::has_secret(&ctx.pool, "catalog_token", tenant).await? {
        return Ok(None);
    }
    let keys =
        ctx.app.keys.clone().map_err(|e| {
            JobError::permanent(format!("the catalog_token setting is encrypted: {e}"))
        })?;
    Ok(store::settings::secret(&ctx.pool, &keys, "catalog_token", tenant).await?)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Why a catalogue item was skipped (the others are kept).
#[derive(Debug)]
struct Skipped(String);

/// One catalogue item as the API gives it, mapped to our columns, or why it is skipped.
fn item(raw: &Value) -> Result<CatalogItem, Skipped> {
    let external_id = text(&raw["external_id"])
        .or_else(|| text(&raw["id"]))
        .ok_or_else(|| Skipped("no id".into()))?;
    let name = text(&raw["name"])
        .or_else(|| text(&raw["title"]))
        .ok_or_else(|| Skipped(format!("item {external_id} has no name")))?;
    let price = match &raw["price"] {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let tags = match &raw["tags"] {
        Value::Array(a) => a.iter().filter_map(text).collect(),
        Value::String(s) => s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    Ok(CatalogItem {
        external_id,
        name,
        designer: text(&raw["designer"]).or_else(|| text(&raw["brand"])),
        description: text(&raw["description"]),
        price,
        image_url: text(&raw["image_url"]).or_else(|| text(&raw["image"])),
        category: text(&raw["category"]),
        tags,
        raw: raw.clone(),
    })
}

/// Why a catalogue refresh did not finish.
#[derive(Debug)]
pub enum CatalogError {
    /// The catalogue answered 401 or 403: its token (or the lack of one) is a setting
    /// to fix, not a failure of the job that found it.
    Refused {
        status: u16,
        message: String,
    },
    Job(JobError),
}

impl From<JobError> for CatalogError {
    fn from(e: JobError) -> Self {
        Self::Job(e)
    }
}

impl From<store::Error> for CatalogError {
    fn from(e: store::Error) -> Self {
        Self::Job(e.into())
    }
}

impl From<copydesk_queue::Error> for CatalogError {
    fn from(e: copydesk_queue::Error) -> Self {
        Self::Job(e.into())
    }
}

impl From<CatalogError> for JobError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Refused { message, .. } => JobError::permanent(message),
            CatalogError::Job(e) => e,
        }
    }
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { message, .. } => f.write_str(message),
            Self::Job(e) => f.write_str(&e.message),
        }
    }
}

/// The notification of a catalogue that refuses copydesk's requests, and its cause.
pub const CATALOG_REFUSED: &str = "catalog_refused";
const CATALOG_REFUSED_CAUSE: &str = "catalog_token";

/// Fetches every page of the catalogue and upserts it in one transaction.
/// Each page is a step of the job: a retry after a failed page starts at that page.
pub async fn refresh_catalog(
    pool: &Db,
    steps: &Steps,
    tenant: Uuid,
    fetcher: &Fetcher,
    cfg: &CatalogSettings,
    token: Option<&str>,
) -> Result<CatalogCounts, CatalogError> {
    if cfg.url.trim().is_empty() {
        return Err(
            JobError::permanent("no catalogue is configured: [catalog] url is empty").into(),
        );
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let name = reqwest::header::HeaderName::from_bytes(cfg.auth_header.as_bytes())
            .map_err(|e| JobError::permanent(format!("[catalog] auth_header: {e}")))?;
        let mut value = reqwest::header::HeaderValue::from_str(&format!("{}{t}", cfg.auth_prefix))
            .map_err(|_| JobError::permanent("the catalogue token is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut counts = CatalogCounts::default();
    let mut items: BTreeMap<String, CatalogItem> = BTreeMap::new();
    for page in 1..=cfg.max_pages.max(1) {
        let mut url = url::Url::parse(&cfg.url)
            .map_err(|e| JobError::permanent(format!("[catalog] url {:?}: {e}", cfg.url)))?;
        url.query_pairs_mut()
            .append_pair(&cfg.page_param, &page.to_string())
            .append_pair(&cfg.per_page_param, &cfg.per_page.to_string());
        let body: Value = steps
            .run(&format!("catalogue page {page}"), &url.as_str(), || async {
                fetcher
                    .get_json(url.as_str(), &headers)
                    .await
                    .map_err(|e| match e {
                        crate::fetch::FetchError::Status {
                            status: status @ (401 | 403),
                            ..
                        } => CatalogError::Refused {
                            status,
                            message: format!("catalogue page {page}: {e}"),
                        },
                        e if e.is_transient() => {
                            JobError::transient(format!("catalogue page {page}: {e}")).into()
                        }
                        e => JobError::permanent(format!("catalogue page {page}: {e}")).into(),
                    })
            })
            .await?
            .output;
        let list = if cfg.items_field.is_empty() {
            &body
        } else {
            &body[cfg.items_field.as_str()]
        };
        let Some(list) = list.as_array() else {
            return Err(JobError::permanent(format!(
                "catalogue page {page} has no {:?} array",
                cfg.items_field
            ))
            .into());
        };
        counts.pages = page;
        for raw in list {
            match item(raw) {
                Ok(i) => {
                    items.insert(i.external_id.clone(), i);
                }
                Err(Skipped(why)) => {
                    counts.skipped += 1;
                    tracing::warn!(page, why, "catalogue item skipped");
                }
            }
        }
        tracing::info!(page, items = list.len(), "catalogue page read");
        if list.len() < cfg.per_page as usize {
            break;
        }
    }
    let mut tx = pool.begin().await.retryable()?;
    let ids: Vec<&str> = items.keys().map(String::as_str).collect();
    let existing: HashMap<String, Value> =
        store::caches::catalog_raw_for_update(&mut tx, tenant, &ids).await?;
    for i in items.values() {
        match existing.get(&i.external_id) {
            None => counts.inserted += 1,
            Some(old) if *old == i.raw => counts.unchanged += 1,
            Some(_) => counts.updated += 1,
        }
    }
    let all: Vec<&CatalogItem> = items.values().collect();
    store::caches::catalog_upsert(
        &mut *tx,
        tenant,
        &all,
        cfg.ttl_hours.clamp(1, 24 * 365) as i32,
    )
    .await?;
    tx.commit().await.retryable()?;
    Ok(counts)
}

async fn refresh_brand_voices(
    ctx: &Ctx,
    within_hours: i32,
) -> Result<CacheRefreshOutput, JobError> {
    let tenant = ctx.job.tenant_id;
    let expiring = store::caches::expiring_brand_voices(&ctx.pool, tenant, within_hours).await?;
    let projects = store::projects::active_store_urls(&ctx.pool, tenant).await?;
    // The cache key is the normalised URL; fetch the project's own spelling of it.
    let in_use: HashMap<String, String> = projects
        .into_iter()
        .filter_map(|u| super::brand_voice_analysis::normalise_url(&u).map(|k| (k, u)))
        .collect();
    let (mut refreshed, mut failed, mut not_in_use) = (Vec::new(), Vec::new(), 0u64);
    for key in expiring {
        let Some(url) = in_use.get(&key) else {
            not_in_use += 1;
            continue;
        };
        match super::brand_voice_analysis::analyse(ctx, Some(url), &[]).await {
            Ok(analysis) => {
                store::caches::refresh_brand_voice(&ctx.pool, tenant, &key, &analysis).await?;
                refreshed.push(key);
            }
            Err(e) => {
                tracing::warn!(url = %key, error = %e, "brand voice refresh failed");
                failed.push(RefreshFailure {
                    url: key,
                    error: e.message,
                });
            }
        }
    }
    tracing::info!(
        refreshed = refreshed.len(),
        failed = failed.len(),
        not_in_use,
        "brand voices refreshed"
    );
    Ok(CacheRefreshOutput::BrandVoice {
        refreshed,
        failed,
        not_in_use,
        tenants_enqueued: Vec::new(),
    })
}
