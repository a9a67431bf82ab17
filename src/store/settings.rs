//! `app_settings`: key/value settings of the whole installation, secrets among them as
//! Fernet tokens; and key rotation, which re-encrypts every secret at rest.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::Result;
use crate::keys::Keys;

/// One setting as listings show it: a secret's value never leaves the table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Setting {
    pub key: String,
    /// The value of a plain setting; `None` for a secret.
    pub value: Option<String>,
    pub secret: bool,
    pub updated_at: DateTime<Utc>,
}

/// Stores a setting, encrypted when `keys` is given.
pub async fn put(
    db: impl PgExecutor<'_>,
    keys: Option<&Keys>,
    key: &str,
    value: &str,
) -> Result<()> {
    let (plain, secret) = match keys {
        Some(k) => (None, Some(k.encrypt(value.as_bytes()))),
        None => (Some(value), None),
    };
    sqlx::query(
        "INSERT INTO app_settings (key, value, secret) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, secret = excluded.secret, updated_at = now()",
    )
    .bind(key)
    .bind(plain)
    .bind(secret)
    .execute(db)
    .await?;
    Ok(())
}

/// Every setting, by key.
pub async fn list(pool: &PgPool) -> Result<Vec<Setting>> {
    Ok(sqlx::query_as(
        "SELECT key, value, secret IS NOT NULL AS secret, updated_at FROM app_settings ORDER BY key",
    )
    .fetch_all(pool)
    .await?)
}

/// Whether `key` is stored as a secret.
pub async fn has_secret(db: impl PgExecutor<'_>, key: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM app_settings WHERE key = $1 AND secret IS NOT NULL)",
    )
    .bind(key)
    .fetch_one(db)
    .await?)
}

/// A secret setting, decrypted (e.g. the catalogue API token).
pub async fn secret(pool: &PgPool, keys: &Keys, key: &str) -> Result<Option<String>> {
    let token: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT secret FROM app_settings WHERE key = $1 AND secret IS NOT NULL")
            .bind(key)
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
pub async fn rotate(pool: &PgPool, keys: &Keys) -> Result<Rotated> {
    let mut tx = pool.begin().await?;
    let mut done = Rotated::default();
    for (id, token) in super::integrations::all_credentials_for_update(&mut tx).await? {
        let plain = keys.decrypt(&token, &format!("credentials of integration {id}"))?;
        super::integrations::set_credentials(&mut *tx, id, &keys.encrypt(&plain)).await?;
        done.integrations += 1;
    }
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT key, secret FROM app_settings WHERE secret IS NOT NULL ORDER BY key FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (key, token) in rows {
        let plain = keys.decrypt(&token, &format!("app setting {key:?}"))?;
        sqlx::query("UPDATE app_settings SET secret = $2, updated_at = now() WHERE key = $1")
            .bind(&key)
            .bind(keys.encrypt(&plain))
            .execute(&mut *tx)
            .await?;
        done.app_settings += 1;
    }
    tx.commit().await?;
    Ok(done)
}
