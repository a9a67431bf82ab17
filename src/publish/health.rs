//! What an integration will soon stop doing, checked at every post and every
//! `integrations test`: a token the credentials say expires within `[publish]
//! token_expiry_warning_days` (and that nothing renews by itself), and an API version
//! the platform retires within 60 days. Each raises a notification for the
//! integration's tenant (`token_expiring`, `api_version_retiring`), folded per cause.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::json;

use crate::{
    config::PublishSettings,
    db::Db,
    domain::{Platform, Severity},
    keys::Credentials,
    store::{self, integrations::Integration, notifications::New},
};

/// How long before a version's retirement copydesk starts saying so.
pub const VERSION_WARNING_DAYS: i64 = 60;

/// When the token the credentials hold expires, if they say and nothing renews it: X's
/// OAuth 2.0 pair with a refresh token renews itself, so then only the refresh token's
/// own expiry counts (`refresh_token_expires_at`), when given.
pub fn token_expiry(platform: Platform, creds: &Credentials) -> Option<DateTime<Utc>> {
    let field = if platform == Platform::X && creds.get("refresh_token").is_some() {
        "refresh_token_expires_at"
    } else {
        "expires_at"
    };
    creds
        .get(field)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The API version an integration is called with, and when the platform retires it
/// (LinkedIn's monthly `YYYYMM` versions about a year after release, Shopify's
/// quarterly `YYYY-MM` ones twelve months after; Facebook's `vNN.0` carry no date and
/// WordPress and X are not versioned by date).
pub fn api_version(
    platform: Platform,
    integration: &Integration,
    settings: &PublishSettings,
) -> Option<(String, NaiveDate)> {
    let (version, year, month) = match platform {
        Platform::Linkedin => {
            let v = integration
                .meta("api_version")
                .unwrap_or(&settings.linkedin_version);
            let (y, m) = (v.get(..4)?.parse().ok()?, v.get(4..6)?.parse().ok()?);
            (v.to_owned(), y, m)
        }
        Platform::Shopify => {
            let v = integration
                .meta("api_version")
                .unwrap_or(&settings.shopify_api_version);
            let (y, m) = v.split_once('-')?;
            (v.to_owned(), y.parse().ok()?, m.parse().ok()?)
        }
        _ => return None,
    };
    let released = NaiveDate::from_ymd_opt(year, month, 1)?;
    let retires = released.with_year(released.year() + 1)?;
    Some((version, retires))
}

/// Checks `integration` and raises what it finds; returns the titles raised.
pub async fn check(
    pool: &Db,
    settings: &PublishSettings,
    integration: &Integration,
    creds: &Credentials,
) -> store::Result<Vec<String>> {
    let platform = integration.platform;
    let now = Utc::now();
    let mut raised = Vec::new();
    if let Some(at) = token_expiry(platform, creds) {
        let days = (at - now).num_days();
        if at <= now + chrono::Duration::days(i64::from(settings.token_expiry_warning_days)) {
            let title = if at <= now {
                format!(
                    "The {platform} token of an integration expired on {}",
                    at.format("%Y-%m-%d")
                )
            } else {
                format!(
                    "The {platform} token of an integration expires in {days} day(s), on {}",
                    at.format("%Y-%m-%d")
                )
            };
            store::notifications::raise(
                pool,
                &New {
                    tenant: integration.tenant_id,
                    project: Some(integration.project_id),
                    job: None,
                    severity: if at <= now {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    kind: "token_expiring",
                    cause: &integration.id.to_string(),
                    title: &title,
                    body: "Connect the integration again with a new token \
                           (`copydesk integrations connect`) before it stops working.",
                    data: json!({"integration_id": integration.id, "platform": platform,
                                 "expires_at": at}),
                },
            )
            .await?;
            raised.push(title);
        }
    }
    if let Some((version, retires)) = api_version(platform, integration, settings) {
        let days = (retires - now.date_naive()).num_days();
        if days <= VERSION_WARNING_DAYS {
            let title = if days <= 0 {
                format!("{platform} API version {version} was retired about {retires}")
            } else {
                format!(
                    "{platform} API version {version} retires about {retires}, in {days} day(s)"
                )
            };
            let setting = match platform {
                Platform::Linkedin => "[publish] linkedin_version",
                _ => "[publish] shopify_api_version",
            };
            store::notifications::raise(
                pool,
                &New {
                    tenant: integration.tenant_id,
                    project: None,
                    job: None,
                    severity: if days <= 0 {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    kind: "api_version_retiring",
                    cause: &format!("{platform}:{version}"),
                    title: &title,
                    body: &format!(
                        "copydesk calls {platform} with version {version} (the integration's \
                         metadata api_version, else {setting}); move it to a newer version."
                    ),
                    data: json!({"platform": platform, "version": version, "retires": retires,
                                 "integration_id": integration.id}),
                },
            )
            .await?;
            raised.push(title);
        }
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_retire_a_year_after_their_month() {
        let settings = crate::config::Settings::defaults().publish;
        let integration = |platform: Platform, v: Option<&str>| Integration {
            id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            project_id: uuid::Uuid::nil(),
            platform,
            metadata: v.map_or(json!({}), |v| json!({"api_version": v})),
            status: crate::domain::IntegrationStatus::Connected,
            last_error: None,
            last_sync_at: None,
            updated_at: Utc::now(),
        };
        let day = |y, m| NaiveDate::from_ymd_opt(y, m, 1).unwrap();
        assert_eq!(
            api_version(
                Platform::Linkedin,
                &integration(Platform::Linkedin, Some("202512")),
                &settings
            ),
            Some(("202512".into(), day(2026, 12)))
        );
        assert_eq!(
            api_version(
                Platform::Shopify,
                &integration(Platform::Shopify, Some("2025-01")),
                &settings
            ),
            Some(("2025-01".into(), day(2026, 1)))
        );
        assert_eq!(
            api_version(
                Platform::Linkedin,
                &integration(Platform::Linkedin, Some("latest")),
                &settings
            ),
            None
        );
        assert!(
            api_version(
                Platform::Facebook,
                &integration(Platform::Facebook, None),
                &settings
            )
            .is_none()
        );
    }
}
