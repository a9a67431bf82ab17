//! Integrations: a project's account on one destination. Credentials are checked
//! against what the platform needs, stored Fernet-encrypted (`store::integrations`
//! keeps the token) and decrypted only in the process that calls the platform;
//! everything listed or logged is the non-secret part. Also: when a publishing job runs
//! and which time it hands the platform (`schedule`).

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{CallError, Ctx, Error};
pub use crate::store::integrations::Integration;
use crate::{
    config::PublishSettings,
    domain::{IntegrationStatus, Platform},
    keys::{Credentials, Keys},
    store,
};

/// Fields the credentials file and the metadata must have.
fn required(platform: Platform, creds: &Value) -> (Vec<&'static str>, Vec<&'static str>) {
    match platform {
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

/// Checks a credentials object and metadata against what the platform needs.
pub fn check_fields(platform: Platform, creds: &Value, metadata: &Value) -> Result<(), Error> {
    let invalid = |m: String| Err(Error::Invalid(m));
    if !creds.is_object() {
        return invalid("the credentials file must hold a JSON object".into());
    }
    if !metadata.is_object() {
        return invalid("--metadata must be a JSON object".into());
    }
    let (need_creds, need_meta) = required(platform, creds);
    let missing = |v: &Value, fields: &[&str]| -> Vec<String> {
        fields
            .iter()
            .filter(|f| match v.get(**f) {
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Number(_)) => false,
                _ => true,
            })
            .map(|f| (*f).to_owned())
            .collect()
    };
    let mc = missing(creds, &need_creds);
    if !mc.is_empty() {
        return invalid(format!(
            "{platform} credentials need {} (missing: {})",
            need_creds.join(", "),
            mc.join(", ")
        ));
    }
    let mm = missing(metadata, &need_meta);
    if !mm.is_empty() {
        return invalid(format!(
            "{platform} metadata needs {} (missing: {})",
            need_meta.join(", "),
            mm.join(", ")
        ));
    }
    for field in ["api_base", "site_url"] {
        if let Some(u) = metadata.get(field).and_then(Value::as_str) {
            let parsed = url::Url::parse(u)
                .map_err(|e| Error::Invalid(format!("metadata {field} {u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return invalid(format!("metadata {field} {u:?} must be an http(s) URL"));
            }
        }
    }
    Ok(())
}

/// Stores (or replaces) a project's integration with a platform, credentials
/// encrypted; status `connected`. Recorded in `audit_log` as done `by` (never the
/// credentials, only which fields were given).
pub async fn connect(
    pool: &Db,
    keys: &Keys,
    project: Uuid,
    platform: Platform,
    creds: &Value,
    metadata: &Value,
    by: &str,
) -> Result<Uuid, Error> {
    check_fields(platform, creds, metadata)?;
    let mut tx = pool.begin().await.map_err(store::Error::from)?;
    let Some(tenant) = store::projects::tenant(&mut *tx, project).await? else {
        return Err(Error::Invalid(format!("no project {project}")));
    };
    let id = store::integrations::upsert(
        &mut *tx,
        project,
        platform,
        &keys.encrypt_json(creds),
        metadata,
    )
    .await?;
    let fields: Vec<&String> = creds
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    store::audit::record(
        &mut *tx,
        &store::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action: "integration.set",
            target_table: Some("integrations"),
            target_id: Some(id),
            details: serde_json::json!({
                "project_id": project, "platform": platform,
                "credential_fields": fields, "metadata": metadata,
            }),
        },
    )
    .await?;
    tx.commit().await.map_err(store::Error::from)?;
    Ok(id)
}

/// The integration with its credentials decrypted.
pub async fn load(pool: &Db, keys: &Keys, id: Uuid) -> Result<(Integration, Credentials), Error> {
    let integration = store::integrations::get(pool, id).await?;
    let token = store::integrations::credentials(pool, id).await?;
    let creds = keys.decrypt_credentials(
        &token,
        &format!(
            "the credentials of integration {id} ({})",
            integration.platform
        ),
    )?;
    Ok((integration, creds))
}

/// What `copydesk integrations test` found.
#[derive(Debug, Clone, Serialize)]
pub struct Tested {
    pub id: Uuid,
    pub platform: Platform,
    pub ok: bool,
    /// The integration's status after the test (unchanged when the platform could
    /// not be asked, e.g. it was down).
    pub status: IntegrationStatus,
    /// What the platform showed (an account or page name), or why it failed.
    pub detail: String,
}

/// Makes the platform's cheapest authenticated read with the integration's
/// credentials, and sets its status from the answer: `connected`, or `error` when the
/// credentials were refused.
///
/// The test is recorded in `audit_log` as done `by`, with its result.
pub async fn test(
    pool: &Db,
    settings: &PublishSettings,
    keys: std::sync::Arc<Keys>,
    id: Uuid,
    by: &str,
) -> Result<Tested, Error> {
    let tested = test_unrecorded(pool, settings, keys, id).await?;
    let tenant = store::integrations::get(pool, id).await?.tenant_id;
    store::audit::record(
        pool,
        &store::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action: "integration.tested",
            target_table: Some("integrations"),
            target_id: Some(id),
            details: serde_json::json!({
                "platform": tested.platform, "ok": tested.ok, "status": tested.status,
            }),
        },
    )
    .await?;
    Ok(tested)
}

async fn test_unrecorded(
    pool: &Db,
    settings: &PublishSettings,
    keys: std::sync::Arc<Keys>,
    id: Uuid,
) -> Result<Tested, Error> {
    let loaded = load(pool, &keys, id).await?;
    super::health::check(pool, settings, &loaded.0, &loaded.1).await?;
    let (platform, before) = (loaded.0.platform, loaded.0.status);
    let ctx = Ctx::new(
        super::client(settings),
        pool.clone(),
        settings.clone(),
        loaded,
        None,
        Some(keys),
    );
    Ok(match super::check(&ctx).await {
        Ok(seen) => {
            store::integrations::mark_ok(pool, id).await?;
            Tested {
                id,
                platform,
                ok: true,
                status: IntegrationStatus::Connected,
                detail: seen,
            }
        }
        Err(e) => {
            let status = match &e {
                CallError::Auth(m) | CallError::TokenRefused(m) => {
                    store::integrations::mark_error(pool, id, m, None).await?;
                    IntegrationStatus::Error
                }
                _ => before,
            };
            Tested {
                id,
                platform,
                ok: false,
                status,
                detail: e.to_string(),
            }
        }
    })
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
