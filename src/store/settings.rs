//! `app_settings`: key/value settings, secrets among them as Fernet tokens; a global row
//! (`tenant_id IS NULL`) per key and optional per-tenant overrides, read in that order.
//! And key rotation, which re-encrypts every secret at rest.

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use uuid::Uuid;

use super::Result;
use crate::keys::Keys;

/// One setting as listings show it: a secret's value never leaves the table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Setting {
    pub key: String,
    /// The tenant (slug) this row overrides the global setting for; `None` for the
    /// global row.
    pub tenant: Option<String>,
    /// The value of a plain setting; `None` for a secret.
    pub value: Option<String>,
    pub secret: bool,
    pub updated_at: DateTime<Utc>,
}

/// Stores a setting, encrypted when `keys` is given: the global row, or `tenant`'s
/// override.
pub async fn put(
    db: impl PgExecutor<'_>,
    keys: Option<&Keys>,
    tenant: Option<Uuid>,
    key: &str,
    value: &str,
) -> Result<()> {
    let (plain, secret) = match keys {
        Some(k) => (None, Some(k.encrypt(value.as_bytes()))),
        None => (Some(value), None),
    };
    crate::db::query(
        "INSERT INTO app_settings (tenant_id, key, value, secret) VALUES ($4, $1, $2, $3)
         ON CONFLICT ON CONSTRAINT app_settings_key
         DO UPDATE SET value = excluded.value, secret = excluded.secret, updated_at = now()",
    )
    .bind(key)
    .bind(plain)
    .bind(secret)
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(())
}

/// Every setting (global rows, then overrides), by key; with `tenant`, the global rows
/// and that tenant's overrides.
pub async fn list(pool: &Db, tenant: Option<Uuid>) -> Result<Vec<Setting>> {
    Ok(crate::db::query_as(
        "SELECT s.key, t.slug AS tenant, s.value, s.secret IS NOT NULL AS secret, s.updated_at
         FROM app_settings s LEFT JOIN tenants t ON t.id = s.tenant_id
         WHERE $1::uuid IS NULL OR s.tenant_id IS NULL OR s.tenant_id = $1
         ORDER BY s.key, t.slug NULLS FIRST",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Whether `key` is stored as a secret, for `tenant` or globally.
pub async fn has_secret(db: impl PgExecutor<'_>, key: &str, tenant: Option<Uuid>) -> Result<bool> {
    Ok(crate::db::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM app_settings WHERE key = $1 AND secret IS NOT NULL
                          AND (tenant_id IS NULL OR tenant_id = $2))",
    )
    .bind(key)
    .bind(tenant)
    .fetch_one(db)
    .await?)
}

/// A secret setting, decrypted (e.g. the catalogue API token): `tenant`'s override if
/// it has one, else the global row.
pub async fn secret(
    pool: &Db,
    keys: &Keys,
    key: &str,
    tenant: Option<Uuid>,
) -> Result<Option<String>> {
    let token: Option<Vec<u8>> = crate::db::query_scalar(
        "SELECT secret FROM app_settings
         WHERE key = $1 AND secret IS NOT NULL AND (tenant_id IS NULL OR tenant_id = $2)
         ORDER BY tenant_id NULLS LAST LIMIT 1",
    )
    .bind(key)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    match token {
        None => Ok(None),
        Some(t) => {
            let plain = keys.decrypt(&t, &format!("app setting {key:?}"))?;
            Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
        }
    }
}

/// What `copydesk keys rotate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rotated {
    pub integrations: u64,
    pub app_settings: u64,
}

/// Re-encrypts every integration's credentials and every secret setting under the
/// first key, in one transaction: either everything moves to the new key or nothing
/// does (the error names the first row no key can read).
/// Recorded in `audit_log` as done `by`.
pub async fn rotate(pool: &Db, keys: &Keys, by: &str) -> Result<Rotated> {
    let mut tx = pool.begin().await?;
    let mut done = Rotated::default();
    for (id, token) in super::integrations::all_credentials_for_update(&mut tx).await? {
        let plain = keys.decrypt(&token, &format!("credentials of integration {id}"))?;
        super::integrations::set_credentials(&mut *tx, id, &keys.encrypt(&plain)).await?;
        done.integrations += 1;
    }
    let rows: Vec<(String, Option<Uuid>, Vec<u8>)> = crate::db::query_as(
        "SELECT key, tenant_id, secret FROM app_settings WHERE secret IS NOT NULL
         ORDER BY key, tenant_id NULLS FIRST FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (key, tenant, token) in rows {
        let plain = keys.decrypt(&token, &format!("app setting {key:?}"))?;
        crate::db::query(
            "UPDATE app_settings SET secret = $2, updated_at = now()
             WHERE key = $1 AND tenant_id IS NOT DISTINCT FROM $3",
        )
        .bind(&key)
        .bind(keys.encrypt(&plain))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        done.app_settings += 1;
    }
    super::audit::record(
        &mut *tx,
        &super::audit::Entry {
            tenant: None,
            actor: by,
            action: "keys.rotated",
            target_table: None,
            target_id: None,
            details: serde_json::json!(done),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}
