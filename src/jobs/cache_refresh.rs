//! `cache_refresh`: keeps the caches drafts draw on fresh.
//!
//! - `catalog`: pages through the external catalogue API (`[catalog]`), fetched
//!   through the SSRF guard, and upserts `catalog_items` with `expires_at` a TTL on,
//!   counting inserted, updated (the item's JSON changed) and unchanged rows. An item
//!   without an id or a name is skipped and counted, never fatal to the rest.
//! - `brand_voice`: re-analyses cached store URLs that expire within a day and are still
//!   used by an active project (one failure does not stop the others).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::JobContext;
use crate::{
    config::CatalogSettings,
    fetch::Fetcher,
    queue::{JobError, Outcome, ResultExt},
};

pub const KIND: &str = "cache_refresh";
pub const SCHEMA: &str = include_str!("../../jobs/cache_refresh/schema.json");

/// What a catalogue refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatalogCounts {
    pub pages: u32,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    match ctx.job.input["source"].as_str() {
        Some("catalog") => {
            let token = catalog_token(&ctx).await?;
            let counts = refresh_catalog(
                &ctx.pool,
                &ctx.services.fetcher,
                &ctx.settings.catalog,
                token.as_deref(),
            )
            .await?;
            tracing::info!(?counts, "catalogue refreshed");
            Ok(Outcome::done_with(
                json!({"source": "catalog", "counts": counts}),
            ))
        }
        Some("brand_voice") => {
            let hours = ctx.job.input["within_hours"].as_i64().unwrap_or(24);
            refresh_brand_voices(&ctx, hours).await
        }
        other => Err(JobError::permanent(format!(
            "/source: {other:?} is not catalog or brand_voice"
        ))),
    }
}

/// The catalogue token: COPYDESK_CATALOG_TOKEN, else the encrypted app setting
/// `catalog_token`, else none.
pub(crate) async fn catalog_token(ctx: &JobContext) -> Result<Option<String>, JobError> {
    if let Ok(t) = std::env::var("COPYDESK_CATALOG_TOKEN")
        && !t.is_empty()
    {
        return Ok(Some(t));
    }
    let stored: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM app_settings WHERE key = 'catalog_token' AND secret IS NOT NULL)",
    )
    .fetch_one(&ctx.pool)
    .await
    .retryable()?;
    if !stored {
        return Ok(None);
    }
    let keys =
        ctx.services.keys.clone().map_err(|e| {
            JobError::permanent(format!("the catalog_token setting is encrypted: {e}"))
        })?;
    crate::keys::secret_setting(&ctx.pool, &keys, "catalog_token")
        .await
        .permanent()
}

/// One catalogue item as the API gives it, mapped to our columns.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    external_id: String,
    name: String,
    designer: Option<String>,
    description: Option<String>,
    price: Option<f64>,
    image_url: Option<String>,
    category: Option<String>,
    tags: Vec<String>,
    raw: Value,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn item(raw: &Value) -> Result<Item, String> {
    let external_id = text(&raw["external_id"])
        .or_else(|| text(&raw["id"]))
        .ok_or("no id")?;
    let name = text(&raw["name"])
        .or_else(|| text(&raw["title"]))
        .ok_or_else(|| format!("item {external_id} has no name"))?;
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
    Ok(Item {
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

/// Fetches every page of the catalogue and upserts it in one transaction.
pub async fn refresh_catalog(
    pool: &PgPool,
    fetcher: &Fetcher,
    cfg: &CatalogSettings,
    token: Option<&str>,
) -> Result<CatalogCounts, JobError> {
    if cfg.url.trim().is_empty() {
        return Err(JobError::permanent(
            "no catalogue is configured: [catalog] url is empty",
        ));
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
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for page in 1..=cfg.max_pages.max(1) {
        let mut url = url::Url::parse(&cfg.url)
            .map_err(|e| JobError::permanent(format!("[catalog] url {:?}: {e}", cfg.url)))?;
        url.query_pairs_mut()
            .append_pair(&cfg.page_param, &page.to_string())
            .append_pair(&cfg.per_page_param, &cfg.per_page.to_string());
        let body = fetcher
            .get_json(url.as_str(), &headers)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    JobError::transient(format!("catalogue page {page}: {e}"))
                } else {
                    JobError::permanent(format!("catalogue page {page}: {e}"))
                }
            })?;
        let list = if cfg.items_field.is_empty() {
            &body
        } else {
            &body[cfg.items_field.as_str()]
        };
        let Some(list) = list.as_array() else {
            return Err(JobError::permanent(format!(
                "catalogue page {page} has no {:?} array",
                cfg.items_field
            )));
        };
        counts.pages = page;
        for raw in list {
            match item(raw) {
                Ok(i) => {
                    items.insert(i.external_id.clone(), i);
                }
                Err(why) => {
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
    let existing: HashMap<String, Value> = sqlx::query_as::<_, (String, Value)>(
        "SELECT external_id, raw FROM catalog_items WHERE external_id = ANY($1) FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .retryable()?
    .into_iter()
    .collect();
    for i in items.values() {
        match existing.get(&i.external_id) {
            None => counts.inserted += 1,
            Some(old) if *old == i.raw => counts.unchanged += 1,
            Some(_) => counts.updated += 1,
        }
    }
    let col = |f: fn(&Item) -> Option<String>| items.values().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO catalog_items (external_id, name, designer, description, price, image_url, category, tags, raw,
                                    fetched_at, expires_at)
         SELECT i.external_id, i.name, i.designer, i.description, i.price::numeric(12,2), i.image_url, i.category,
                coalesce(ARRAY(SELECT jsonb_array_elements_text(i.tags)), '{}'), i.raw,
                now(), now() + make_interval(hours => $10)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[],
                     $8::jsonb[], $9::jsonb[])
              AS i(external_id, name, designer, description, price, image_url, category, tags, raw)
         ON CONFLICT (external_id) DO UPDATE SET
             name = excluded.name, designer = excluded.designer, description = excluded.description,
             price = excluded.price, image_url = excluded.image_url, category = excluded.category,
             tags = excluded.tags, raw = excluded.raw, fetched_at = excluded.fetched_at,
             expires_at = excluded.expires_at",
    )
    .bind(col(|i| Some(i.external_id.clone())))
    .bind(col(|i| Some(i.name.clone())))
    .bind(col(|i| i.designer.clone()))
    .bind(col(|i| i.description.clone()))
    .bind(items.values().map(|i| i.price).collect::<Vec<_>>())
    .bind(col(|i| i.image_url.clone()))
    .bind(col(|i| i.category.clone()))
    .bind(items.values().map(|i| json!(i.tags)).collect::<Vec<_>>())
    .bind(items.values().map(|i| i.raw.clone()).collect::<Vec<_>>())
    .bind(cfg.ttl_hours.clamp(1, 24 * 365) as i32)
    .execute(&mut *tx)
    .await
    .retryable()?;
    tx.commit().await.retryable()?;
    Ok(counts)
}

async fn refresh_brand_voices(ctx: &JobContext, within_hours: i64) -> Result<Outcome, JobError> {
    let expiring: Vec<String> = sqlx::query_scalar(
        "SELECT url FROM brand_voice_cache WHERE expires_at < now() + make_interval(hours => $1) ORDER BY expires_at",
    )
    .bind(within_hours as i32)
    .fetch_all(&ctx.pool)
    .await
    .retryable()?;
    let projects: Vec<String> = sqlx::query_scalar(
        "SELECT store_url FROM projects WHERE archived_at IS NULL AND store_url IS NOT NULL",
    )
    .fetch_all(&ctx.pool)
    .await
    .retryable()?;
    // The cache key is the normalised URL; fetch the project's own spelling of it.
    let in_use: HashMap<String, String> = projects
        .into_iter()
        .filter_map(|u| super::brand_voice_analysis::normalise_url(&u).map(|k| (k, u)))
        .collect();
    let (mut refreshed, mut failed, mut unused) = (Vec::new(), Vec::new(), 0u64);
    for key in expiring {
        let Some(url) = in_use.get(&key) else {
            unused += 1;
            continue;
        };
        match super::brand_voice_analysis::analyse(ctx, Some(url), &json!({})).await {
            Ok(analysis) => {
                sqlx::query(
                    "UPDATE brand_voice_cache SET analysis = $2, created_at = now(), expires_at = now() + interval '7 days'
                     WHERE url = $1",
                )
                .bind(&key)
                .bind(analysis)
                .execute(&ctx.pool)
                .await
                .retryable()?;
                refreshed.push(key);
            }
            Err(e) => {
                tracing::warn!(url = %key, error = %e, "brand voice refresh failed");
                failed.push(json!({"url": key, "error": e.message}));
            }
        }
    }
    tracing::info!(
        refreshed = refreshed.len(),
        failed = failed.len(),
        unused,
        "brand voices refreshed"
    );
    Ok(Outcome::done_with(json!({
        "source": "brand_voice", "refreshed": refreshed, "failed": failed, "not_in_use": unused,
    })))
}
