//! Integrations: a project's account on one destination. Credentials are stored
//! Fernet-encrypted (`keys.rs`) and decrypted only in the process that calls the
//! platform; everything listed or logged is the non-secret part.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    keys::{Credentials, KeyError, Keys},
    pipeline::Channel,
};

/// A destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Wordpress,
    Shopify,
    Linkedin,
    X,
    Facebook,
}

impl Platform {
    pub const ALL: [Platform; 5] = [
        Platform::Wordpress,
        Platform::Shopify,
        Platform::Linkedin,
        Platform::X,
        Platform::Facebook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Wordpress => "wordpress",
            Platform::Shopify => "shopify",
            Platform::Linkedin => "linkedin",
            Platform::X => "x",
            Platform::Facebook => "facebook",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown platform {s:?}: expected wordpress, shopify, linkedin, x or facebook"
                )
            })
    }

    /// The channel whose drafts this destination publishes.
    pub fn channel(self) -> Channel {
        match self {
            Platform::Wordpress | Platform::Shopify => Channel::Blog,
            Platform::Linkedin => Channel::Linkedin,
            Platform::X => Channel::X,
            Platform::Facebook => Channel::Facebook,
        }
    }

    /// The destinations of a channel, in the order the pipeline prefers them.
    pub fn for_channel(channel: Channel) -> &'static [Platform] {
        match channel {
            Channel::Blog => &[Platform::Wordpress, Platform::Shopify],
            Channel::Linkedin => &[Platform::Linkedin],
            Channel::X => &[Platform::X],
            Channel::Facebook => &[Platform::Facebook],
        }
    }

    /// Whether the platform takes a publish time itself (see ARCHITECTURE.md).
    pub fn schedules_natively(self) -> bool {
        // Kept in step with [`schedule`].
        matches!(
            self,
            Platform::Wordpress | Platform::Shopify | Platform::Facebook
        )
    }

    /// Fields the credentials file and the metadata must have.
    fn required(self, creds: &Value) -> (Vec<&'static str>, Vec<&'static str>) {
        match self {
            Platform::Wordpress => (vec!["username", "application_password"], vec!["site_url"]),
            Platform::Shopify => (vec!["access_token"], vec!["shop_domain", "blog_id"]),
            Platform::Linkedin => (vec!["access_token"], vec!["author_urn"]),
            Platform::X if creds.get("consumer_key").is_some() => (
                vec![
                    "consumer_key",
                    "consumer_secret",
                    "access_token",
                    "access_token_secret",
                ],
                vec![],
            ),
            Platform::X => (vec!["access_token", "refresh_token", "client_id"], vec![]),
            Platform::Facebook => (vec!["page_access_token"], vec!["page_id"]),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An integration as anyone may see it: no credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Integration {
    pub id: Uuid,
    pub project_id: Uuid,
    pub platform: Platform,
    pub metadata: Value,
    pub status: String,
    pub last_error: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Integration {
    pub fn meta(&self, field: &str) -> Option<&str> {
        self.metadata
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    project_id: Uuid,
    platform: String,
    metadata: Value,
    status: String,
    last_error: Option<String>,
    last_sync_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Integration {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            // The CHECK constraint keeps the column to the five names.
            platform: Platform::parse(&r.platform).unwrap_or(Platform::Wordpress),
            metadata: r.metadata,
            status: r.status,
            last_error: r.last_error,
            last_sync_at: r.last_sync_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Invalid(String),
    #[error("no integration {0}")]
    NotFound(Uuid),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Checks a credentials object and metadata against what the platform needs.
pub fn check_fields(platform: Platform, creds: &Value, metadata: &Value) -> Result<(), String> {
    if !creds.is_object() {
        return Err("the credentials file must hold a JSON object".into());
    }
    if !metadata.is_object() {
        return Err("--metadata must be a JSON object".into());
    }
    let (need_creds, need_meta) = platform.required(creds);
    let missing = |v: &Value, fields: Vec<&str>| -> Vec<String> {
        fields
            .into_iter()
            .filter(|f| match v.get(*f) {
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Number(_)) => false,
                _ => true,
            })
            .map(str::to_owned)
            .collect()
    };
    let mc = missing(creds, need_creds);
    if !mc.is_empty() {
        return Err(format!(
            "{platform} credentials need {} (missing: {})",
            platform.required(creds).0.join(", "),
            mc.join(", ")
        ));
    }
    let mm = missing(metadata, need_meta);
    if !mm.is_empty() {
        return Err(format!(
            "{platform} metadata needs {} (missing: {})",
            platform.required(creds).1.join(", "),
            mm.join(", ")
        ));
    }
    for field in ["api_base", "site_url"] {
        if let Some(u) = metadata.get(field).and_then(Value::as_str) {
            let parsed = url::Url::parse(u).map_err(|e| format!("metadata {field} {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("metadata {field} {u:?} must be an http(s) URL"));
            }
        }
    }
    Ok(())
}

/// Stores (or replaces) a project's integration with a platform; status `connected`.
pub async fn set(
    pool: &PgPool,
    keys: &Keys,
    project: Uuid,
    platform: Platform,
    creds: &Value,
    metadata: &Value,
) -> Result<Uuid, Error> {
    check_fields(platform, creds, metadata).map_err(Error::Invalid)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)")
        .bind(project)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Err(Error::Invalid(format!("no project {project}")));
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO integrations (project_id, platform, credentials, metadata)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (project_id, platform) DO UPDATE
           SET credentials = excluded.credentials, metadata = excluded.metadata,
               status = 'connected', last_error = NULL, updated_at = now()
         RETURNING id",
    )
    .bind(project)
    .bind(platform.as_str())
    .bind(keys.encrypt_json(creds))
    .bind(metadata)
    .fetch_one(pool)
    .await?)
}

pub async fn list(pool: &PgPool, project: Option<Uuid>) -> Result<Vec<Integration>, Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, project_id, platform, metadata, status, last_error, last_sync_at, updated_at
         FROM integrations WHERE ($1::uuid IS NULL OR project_id = $1)
         ORDER BY project_id, platform",
    )
    .bind(project)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Integration::from).collect())
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Integration, Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, project_id, platform, metadata, status, last_error, last_sync_at, updated_at
         FROM integrations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(Integration::from).ok_or(Error::NotFound(id))
}

/// The integration with its credentials decrypted.
pub async fn load(
    pool: &PgPool,
    keys: &Keys,
    id: Uuid,
) -> Result<(Integration, Credentials), Error> {
    let integration = get(pool, id).await?;
    let token: Vec<u8> = sqlx::query_scalar("SELECT credentials FROM integrations WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?;
    let creds = keys.decrypt_credentials(
        &token,
        &format!(
            "the credentials of integration {id} ({})",
            integration.platform
        ),
    )?;
    Ok((integration, creds))
}

/// The project's integration for a channel (WordPress before Shopify for blogs).
pub async fn for_channel<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    project: Uuid,
    channel: Channel,
) -> Result<Option<(Uuid, Platform)>, sqlx::Error> {
    let names: Vec<&str> = Platform::for_channel(channel)
        .iter()
        .map(|p| p.as_str())
        .collect();
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, platform FROM integrations WHERE project_id = $1 AND platform = ANY($2)
         ORDER BY array_position($2, platform) LIMIT 1",
    )
    .bind(project)
    .bind(&names)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(id, p)| Platform::parse(&p).ok().map(|p| (id, p))))
}

/// When a publishing job runs and which time, if any, it hands the platform: platforms
/// that schedule natively get the time at once (Facebook only within its 10-minute to
/// 30-day window: further out, the job waits until the window opens; closer, it runs
/// at the time); the others run at the time. Returns `(run_at, publish_at)`.
pub fn schedule(
    platform: Platform,
    at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    facebook_min_minutes: i64,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let Some(at) = at.filter(|at| *at > now) else {
        return (None, None);
    };
    match platform {
        Platform::Wordpress | Platform::Shopify => (None, Some(at)),
        Platform::Facebook
            if at - now < chrono::Duration::minutes(facebook_min_minutes.max(10)) =>
        {
            (Some(at), None)
        }
        Platform::Facebook if at - now > chrono::Duration::days(29) => {
            (Some(at - chrono::Duration::days(29)), Some(at))
        }
        Platform::Facebook => (None, Some(at)),
        Platform::Linkedin | Platform::X => (Some(at), None),
    }
}

/// Marks the integration broken (401/403, token errors), with the platform's words.
pub async fn mark_error(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integrations SET status = 'error', last_error = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks the integration working after a successful authenticated call.
pub async fn mark_ok(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE integrations SET status = 'connected', last_error = NULL, last_sync_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replaces the stored credentials (X's refreshed token pair), encrypted.
pub async fn store_credentials(
    pool: &PgPool,
    keys: &Keys,
    id: Uuid,
    creds: &Credentials,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE integrations SET credentials = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(keys.encrypt_json(&Value::Object(creds.0.clone())))
        .execute(pool)
        .await?;
    Ok(())
}
