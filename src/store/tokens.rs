//! `api_tokens`: the HTTP API's credentials. A token is `cdk_<prefix>_<secret>`; only a
//! SHA-256 of the whole token is stored, the prefix finds its row, and the comparison
//! takes the same time whatever the bytes. The secret is shown once, when it is made.

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::TokenRole;

/// A token as anyone may see it: never its secret nor its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Token {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub role: TokenRole,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, name, role, prefix, created_at, expires_at, last_used_at, revoked_at";

/// A secret: never printed by `Debug`.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn random(n: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Makes a token for `tenant`; the secret is returned once and stored only as a hash.
/// Recorded in `audit_log` as done `by`.
pub async fn create(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
    role: TokenRole,
    expires_in: Option<std::time::Duration>,
    by: &str,
) -> Result<(Token, Secret)> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("a token needs a name".into()));
    }
    let prefix = random(8);
    let token = format!("cdk_{prefix}_{}", random(40));
    let row: Token = crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (tenant_id, name, role, prefix, secret_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(name)
    .bind(role)
    .bind(&prefix)
    .bind(digest(&token).as_slice())
    .bind(expires_in.map(|d| d.as_secs() as i64))
    .fetch_one(&mut *conn)
    .await?;
    record(conn, &row, "token.created", by).await?;
    Ok((row, Secret(token)))
}

/// Tokens, newest first, of one tenant or all.
pub async fn list(db: impl sqlx::PgExecutor<'_>, tenant: Option<Uuid>) -> Result<Vec<Token>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens WHERE ($1::uuid IS NULL OR tenant_id = $1)
         ORDER BY created_at DESC"
    )))
    .bind(tenant)
    .fetch_all(db)
    .await?)
}

/// Revokes a token: the lookup refuses it from now on. Recorded in `audit_log` as
/// done `by`.
pub async fn revoke(conn: &mut PgConnection, id: Uuid, by: &str) -> Result<Token> {
    let row: Token = crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { what: "token", id })?;
    record(conn, &row, "token.revoked", by).await?;
    Ok(row)
}

async fn record(conn: &mut PgConnection, t: &Token, action: &str, by: &str) -> Result<()> {
    super::audit::record(
        conn,
        &super::audit::Entry {
            tenant: Some(t.tenant_id),
            actor: by,
            action,
            target_table: Some("api_tokens"),
            target_id: Some(t.id),
            details: serde_json::json!({
                "name": t.name, "role": t.role, "prefix": t.prefix, "expires_at": t.expires_at,
            }),
        },
    )
    .await
}

/// The token `presented` stands for, if it is one that is neither revoked nor expired
/// (the lookup the HTTP API uses). Its last use is recorded to the minute (a write per
/// minute, not per request).
pub async fn authenticate(pool: &Db, presented: &str) -> Result<Option<Token>> {
    let Some(prefix) = presented
        .strip_prefix("cdk_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(p, _)| p)
    else {
        return Ok(None);
    };
    #[derive(sqlx::FromRow)]
    struct Row {
        secret_sha256: Vec<u8>,
        #[sqlx(flatten)]
        token: Token,
    }
    let row: Option<Row> = crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT secret_sha256, {COLUMNS} FROM api_tokens
         WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    )))
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if !constant_time_eq(&row.secret_sha256, &digest(presented)) {
        return Ok(None);
    }
    let stale = row
        .token
        .last_used_at
        .is_none_or(|at| Utc::now() - at > chrono::Duration::minutes(1));
    let mut token = row.token;
    if stale {
        token.last_used_at = crate::db::query_scalar(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 RETURNING last_used_at",
        )
        .bind(token.id)
        .fetch_optional(pool)
        .await?
        .flatten();
    }
    Ok(Some(token))
}

/// Compares two byte strings in time that depends on their length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_only() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!format!("{:?}", Secret("cdk_x_y".into())).contains("cdk"));
    }
}
