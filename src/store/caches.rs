//! The caches drafts draw on: `brand_voice_cache` (an analysis per normalised store URL,
//! seven days) and `catalog_items` (the external catalogue, `[catalog] ttl_hours`).
//! Both are per tenant: an analysis may include a tenant's private samples, and a
//! catalogue is a store's own; no tenant ever reads another's entry.

use std::collections::HashMap;

use crate::db::Db;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::Result;

/// A fresh cached analysis of `url` (a normalised URL) for `tenant`, if there is one.
pub async fn brand_voice(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    url: &str,
) -> Result<Option<Value>> {
    Ok(crate::db::query_scalar(
        "SELECT analysis FROM brand_voice_cache
         WHERE tenant_id = $1 AND url = $2 AND expires_at > now()",
    )
    .bind(tenant)
    .bind(url)
    .fetch_optional(db)
    .await?)
}

/// Caches an analysis of `url` for seven days, from the artifact that holds it.
pub async fn put_brand_voice(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    url: &str,
    analysis: &Value,
    artifact: Uuid,
) -> Result<()> {
    crate::db::query(
        "INSERT INTO brand_voice_cache (tenant_id, url, analysis, artifact_id) VALUES ($4, $1, $2, $3)
         ON CONFLICT (tenant_id, url) DO UPDATE SET analysis = $2, artifact_id = $3,
             created_at = now(), expires_at = now() + interval '7 days'",
    )
    .bind(url)
    .bind(analysis)
    .bind(artifact)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(())
}

/// Replaces a cached analysis with a fresh one for another seven days.
pub async fn refresh_brand_voice(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    url: &str,
    analysis: &Value,
) -> Result<()> {
    crate::db::query(
        "UPDATE brand_voice_cache SET analysis = $2, created_at = now(), expires_at = now() + interval '7 days'
         WHERE url = $1 AND tenant_id = $3",
    )
    .bind(url)
    .bind(analysis)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(())
}

/// `tenant`'s cached URLs that expire within `hours`, soonest first.
pub async fn expiring_brand_voices(pool: &Db, tenant: Uuid, hours: i32) -> Result<Vec<String>> {
    Ok(crate::db::query_scalar(
        "SELECT url FROM brand_voice_cache
         WHERE tenant_id = $2 AND expires_at < now() + make_interval(hours => $1)
         ORDER BY expires_at",
    )
    .bind(hours)
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// The tenants with cached analyses that expire within `hours`.
pub async fn tenants_with_expiring_brand_voices(pool: &Db, hours: i32) -> Result<Vec<Uuid>> {
    Ok(crate::db::query_scalar(
        "SELECT DISTINCT tenant_id FROM brand_voice_cache
         WHERE expires_at < now() + make_interval(hours => $1) ORDER BY tenant_id",
    )
    .bind(hours)
    .fetch_all(pool)
    .await?)
}

/// One catalogue item, mapped to our columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogItem {
    pub external_id: String,
    pub name: String,
    pub designer: Option<String>,
    pub description: Option<String>,
    pub price: Option<f64>,
    pub image_url: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    /// The item as the API gave it; a change here counts as an update.
    pub raw: Value,
}

/// The stored `raw` of each of `tenant`'s `ids` that exists, locked for the caller's
/// transaction.
pub async fn catalog_raw_for_update(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[&str],
) -> Result<HashMap<String, Value>> {
    Ok(crate::db::query_as::<(String, Value)>(
        "SELECT external_id, raw FROM catalog_items
         WHERE tenant_id = $2 AND external_id = ANY($1) FOR UPDATE",
    )
    .bind(ids)
    .bind(tenant)
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect())
}

/// Inserts or updates `tenant`'s `items` in one statement, each fresh for `ttl_hours`.
pub async fn catalog_upsert(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    items: &[&CatalogItem],
    ttl_hours: i32,
) -> Result<()> {
    let col =
        |f: fn(&CatalogItem) -> Option<String>| items.iter().map(|i| f(i)).collect::<Vec<_>>();
    crate::db::query(
        "INSERT INTO catalog_items (tenant_id, external_id, name, designer, description, price, image_url, category,
                                    tags, raw, fetched_at, expires_at)
         SELECT $11, i.external_id, i.name, i.designer, i.description, i.price::numeric(12,2), i.image_url, i.category,
                coalesce(ARRAY(SELECT jsonb_array_elements_text(i.tags)), '{}'), i.raw,
                now(), now() + make_interval(hours => $10)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[],
                     $8::jsonb[], $9::jsonb[])
              AS i(external_id, name, designer, description, price, image_url, category, tags, raw)
         ON CONFLICT (tenant_id, external_id) DO UPDATE SET
             name = excluded.name, designer = excluded.designer, description = excluded.description,
             price = excluded.price, image_url = excluded.image_url, category = excluded.category,
             tags = excluded.tags, raw = excluded.raw, fetched_at = excluded.fetched_at,
             expires_at = excluded.expires_at",
    )
    .bind(col(|i| Some(i.external_id.clone())))
    .bind(col(|i| Some(i.name.clone())))
    .bind(col(|i| i.designer.clone()))
    .bind(col(|i| i.description.clone()))
    .bind(items.iter().map(|i| i.price).collect::<Vec<_>>())
    .bind(col(|i| i.image_url.clone()))
    .bind(col(|i| i.category.clone()))
    .bind(items.iter().map(|i| json!(i.tags)).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.raw.clone()).collect::<Vec<_>>())
    .bind(ttl_hours)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(())
}

/// How many of `ids` are in `tenant`'s catalogue and not expired.
pub async fn catalog_fresh(db: impl PgExecutor<'_>, tenant: Uuid, ids: &[String]) -> Result<usize> {
    let n: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM catalog_items
         WHERE tenant_id = $2 AND external_id = ANY($1) AND expires_at > now()",
    )
    .bind(ids)
    .bind(tenant)
    .fetch_one(db)
    .await?;
    Ok(n as usize)
}

/// The products of `tenant`'s catalogue a draft draws on, as the prompts show them.
pub async fn catalog_products(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    ids: &[String],
) -> Result<Vec<Value>> {
    Ok(crate::db::query_scalar(
        "SELECT jsonb_build_object('name', name, 'designer', designer, 'description', description, 'price', price)
         FROM catalog_items WHERE tenant_id = $2 AND external_id = ANY($1)",
    )
    .bind(ids)
    .bind(tenant)
    .fetch_all(db)
    .await?)
}

/// Which cache [`expire`] clears.
#[derive(Debug, Clone, Copy)]
pub enum Cache {
    BrandVoices,
    CatalogItems,
}

/// Deletes expired rows of `cache`, `batch` per statement; with `dry_run`, counts them.
pub async fn expire(pool: &Db, cache: Cache, batch: i64, dry_run: bool) -> Result<u64> {
    let (table, key) = match cache {
        Cache::BrandVoices => ("brand_voice_cache", "url"),
        Cache::CatalogItems => ("catalog_items", "id"),
    };
    if dry_run {
        let n: i64 = crate::db::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE expires_at < now()"
        )))
        .fetch_one(pool)
        .await?;
        return Ok(n as u64);
    }
    super::in_batches(batch, || async move {
        Ok(crate::db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {key} IN (
                 SELECT {key} FROM {table} WHERE expires_at < now()
                 LIMIT $1 FOR UPDATE SKIP LOCKED)"
        )))
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}
