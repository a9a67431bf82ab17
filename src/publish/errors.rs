//! How a platform's answer is read: which failures are safe to retry, which mean the
//! post may have gone out, which are the integration's fault, and which are final.
//! Throttling is found wherever platforms put it: HTTP 429, and error bodies that come
//! with other statuses, 200 included (Facebook codes 4/17/32/613/80001, Shopify
//! GraphQL `THROTTLED`, OpenRouter-style `{"error":{"code":429}}`).

use std::time::Duration;

use serde_json::Value;

use super::Reply;
use crate::domain::Platform;
use crate::keys::Credentials;

/// How a platform call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The request never reached the platform (connection refused, DNS): nothing was
    /// posted, retrying is safe.
    #[error("{0}")]
    NotSent(String),
    /// The request may have been applied (timeout after sending, 5xx, a cut-off
    /// answer): reconcile before posting again.
    #[error("{message}")]
    Unknown {
        message: String,
        /// The wait a 503 (or similar) asked for.
        retry_after: Option<Duration>,
    },
    /// Rate limited: nothing was posted; retry after `retry_after` when known.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 401: the platform did not take the token (expired, revoked or wrong). A platform
    /// whose tokens are refreshed (X) refreshes once and tries again; otherwise, as
    /// `Auth`, the integration's credentials are at fault.
    #[error("{0}")]
    TokenRefused(String),
    /// 403 or a token error in the body, or the integration's setup lacking what the
    /// platform needs (its metadata): the integration is at fault.
    #[error("{0}")]
    Auth(String),
    /// Any other refusal (4xx): retrying the same request cannot help.
    #[error("{0}")]
    Rejected(String),
    /// The platform refused identical content: evidence an earlier attempt went out.
    #[error("{0}")]
    Duplicate(String),
}

impl CallError {
    /// The request may have been applied; no wait was asked for.
    /// The kind of failure, as a trace's `error.type` says it.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::NotSent(_) => "not_sent",
            Self::Unknown { .. } => "unknown",
            Self::Throttled { .. } => "throttled",
            Self::TokenRefused(_) => "token_refused",
            Self::Auth(_) => "auth",
            Self::Rejected(_) => "rejected",
            Self::Duplicate(_) => "duplicate",
        }
    }

    pub fn unknown(message: impl Into<String>) -> Self {
        Self::Unknown {
            message: message.into(),
            retry_after: None,
        }
    }

    fn map_message(self, f: impl Fn(String) -> String) -> Self {
        match self {
            Self::NotSent(m) => Self::NotSent(f(m)),
            Self::Unknown {
                message,
                retry_after,
            } => Self::Unknown {
                message: f(message),
                retry_after,
            },
            Self::Throttled {
                message,
                retry_after,
            } => Self::Throttled {
                message: f(message),
                retry_after,
            },
            Self::TokenRefused(m) => Self::TokenRefused(f(m)),
            Self::Auth(m) => Self::Auth(f(m)),
            Self::Rejected(m) => Self::Rejected(f(m)),
            Self::Duplicate(m) => Self::Duplicate(f(m)),
        }
    }

    /// Prefixes the message with the call it came from.
    pub fn context(self, op: &str) -> Self {
        self.map_message(|m| format!("{op}: {m}"))
    }

    /// The message with every credential value removed.
    pub fn redacted(self, creds: &Credentials) -> Self {
        self.map_message(|m| creds.redact(&m))
    }
}

/// A transport error: did the request leave?
pub fn transport(e: &reqwest::Error) -> CallError {
    if e.is_connect() || e.is_builder() {
        CallError::NotSent(format!("could not connect: {e}"))
    } else if e.is_timeout() {
        CallError::unknown(format!(
            "no answer in time ({e}); the request may have been applied"
        ))
    } else {
        CallError::unknown(format!("{e}; the request may have been applied"))
    }
}

/// Classifies an answer: `Ok` for a success that carries no error.
pub fn classify(platform: Platform, r: &Reply) -> Result<(), CallError> {
    let message = || message(&r.body, r.status);
    if let Some(wait) = throttled(r) {
        return Err(CallError::Throttled {
            message: format!("rate limited ({}): {}", r.status, message()),
            retry_after: wait,
        });
    }
    let fb_code = r.body["error"]["code"].as_i64();
    match platform {
        Platform::X if r.status == 403 && message().to_lowercase().contains("duplicate") => {
            return Err(CallError::Duplicate(message()));
        }
        Platform::Facebook if fb_code == Some(506) => {
            return Err(CallError::Duplicate(message()));
        }
        Platform::Facebook if matches!(fb_code, Some(190 | 102 | 10 | 200..=299)) => {
            return Err(CallError::Auth(message()));
        }
        _ => {}
    }
    match r.status {
        200..=299 if r.body.get("error").is_some_and(|e| e.is_object()) => {
            // An error delivered with 200 (OpenRouter-style, some proxies).
            Err(CallError::unknown(message()))
        }
        200..=299 => Ok(()),
        401 => Err(CallError::TokenRefused(message())),
        403 => Err(CallError::Auth(message())),
        408 => Err(CallError::unknown(message())),
        500..=599 => Err(CallError::Unknown {
            message: format!("{}; the request may have been applied", message()),
            retry_after: retry_after(&r.headers),
        }),
        _ => Err(CallError::Rejected(message())),
    }
}

/// `Some(wait)` when the answer says "slow down", with the wait when it is given.
fn throttled(r: &Reply) -> Option<Option<Duration>> {
    let b = &r.body;
    let graphql = b["errors"]
        .as_array()
        .is_some_and(|es| es.iter().any(|e| e["extensions"]["code"] == "THROTTLED"));
    let fb = matches!(b["error"]["code"].as_i64(), Some(4 | 17 | 32 | 613 | 80001));
    let openrouter = b["error"]["code"].as_i64() == Some(429);
    if r.status != 429 && !graphql && !fb && !openrouter {
        return None;
    }
    Some(retry_after(&r.headers))
}

/// The wait a platform asks for: `Retry-After` (seconds, fractions, HTTP date), X's
/// `x-rate-limit-reset` (Unix seconds), Facebook's `estimated_time_to_regain_access`
/// (minutes, in `X-Business-Use-Case-Usage` or `X-App-Usage`).
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(d) = get("retry-after").and_then(crate::retry_after::parse) {
        return Some(d);
    }
    if let Some(reset) = get("x-rate-limit-reset").and_then(|v| v.trim().parse::<i64>().ok()) {
        let now = chrono::Utc::now().timestamp();
        return Some(Duration::from_secs((reset - now).max(1) as u64));
    }
    for name in ["x-business-use-case-usage", "x-app-usage"] {
        if let Some(v) = get(name).and_then(|v| serde_json::from_str::<Value>(v).ok()) {
            let mut minutes: Vec<i64> = Vec::new();
            collect_regain(&v, &mut minutes);
            if let Some(m) = minutes.into_iter().max().filter(|m| *m > 0) {
                return Some(Duration::from_secs(m as u64 * 60));
            }
        }
    }
    None
}

fn collect_regain(v: &Value, out: &mut Vec<i64>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "estimated_time_to_regain_access" {
                    out.extend(v.as_i64());
                } else {
                    collect_regain(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_regain(v, out)),
        _ => {}
    }
}

/// The platform's own words for an error, from whichever shape it uses.
pub fn message(body: &Value, status: u16) -> String {
    let pick = |v: &Value| v.as_str().map(str::to_owned);
    let text = pick(&body["error"]["message"])
        .map(|m| match body["error"]["code"].as_i64() {
            Some(c) => format!("{m} (code {c})"),
            None => m,
        })
        .or_else(|| {
            pick(&body["message"]).map(|m| {
                match (pick(&body["code"]), body["serviceErrorCode"].as_i64()) {
                    (Some(c), _) => format!("{m} ({c})"),
                    (None, Some(c)) => format!("{m} (serviceErrorCode {c})"),
                    _ => m,
                }
            })
        })
        .or_else(|| pick(&body["detail"]))
        .or_else(|| pick(&body["title"]))
        .or_else(|| pick(&body["errors"]))
        .or_else(|| {
            body["errors"].as_array().map(|es| {
                es.iter()
                    .filter_map(|e| pick(&e["message"]))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .or_else(|| {
            body["errors"].as_object().map(|o| {
                o.iter()
                    .map(|(k, v)| match v {
                        Value::Array(a) => format!(
                            "{k} {}",
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        other => format!("{k} {other}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .or_else(|| pick(body))
        .filter(|s| !s.is_empty());
    match text {
        Some(t) => format!("HTTP {status}: {t}"),
        None => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::json;

    fn reply(status: u16, body: Value, headers: &[(&'static str, &str)]) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Reply {
            status,
            headers: h,
            body,
        }
    }

    #[test]
    fn throttling_is_found_in_statuses_headers_and_200_bodies() {
        let r = reply(429, json!({}), &[("retry-after", "2.0")]);
        assert_eq!(
            classify(Platform::Shopify, &r),
            Err(CallError::Throttled {
                message: "rate limited (429): HTTP 429".into(),
                retry_after: Some(Duration::from_secs(2))
            })
        );
        let fb = reply(
            200,
            json!({"error": {"message": "Application request limit reached", "code": 4}}),
            &[(
                "x-business-use-case-usage",
                r#"{"123":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":3}]}"#,
            )],
        );
        assert!(matches!(
            classify(Platform::Facebook, &fb),
            Err(CallError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(180)
        ));
        let gql = reply(
            200,
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}),
            &[],
        );
        assert!(matches!(
            classify(Platform::Shopify, &gql),
            Err(CallError::Throttled { .. })
        ));
        let or = reply(
            200,
            json!({"error": {"code": 429, "message": "slow down"}}),
            &[],
        );
        assert!(matches!(
            classify(Platform::X, &or),
            Err(CallError::Throttled { .. })
        ));
        let reset = (chrono::Utc::now().timestamp() + 30).to_string();
        let x = reply(
            429,
            json!({"title": "Too Many Requests"}),
            &[("x-rate-limit-reset", &reset)],
        );
        assert!(matches!(
            classify(Platform::X, &x),
            Err(CallError::Throttled { retry_after: Some(d), .. }) if d.as_secs() >= 28 && d.as_secs() <= 31
        ));
    }

    #[test]
    fn duplicates_auth_and_refusals_are_told_apart() {
        let dup = reply(
            403,
            json!({"title": "Forbidden", "detail": "You are not allowed to create a Tweet with duplicate content.", "status": 403}),
            &[],
        );
        assert!(matches!(
            classify(Platform::X, &dup),
            Err(CallError::Duplicate(_))
        ));
        let fb_dup = reply(
            400,
            json!({"error": {"message": "Duplicate status message", "code": 506}}),
            &[],
        );
        assert!(matches!(
            classify(Platform::Facebook, &fb_dup),
            Err(CallError::Duplicate(_))
        ));
        let fb_token = reply(
            400,
            json!({"error": {"message": "Error validating access token", "type": "OAuthException", "code": 190}}),
            &[],
        );
        assert!(
            matches!(classify(Platform::Facebook, &fb_token), Err(CallError::Auth(m)) if m.contains("validating access token"))
        );
        let wp = reply(
            401,
            json!({"code": "rest_cannot_create", "message": "Sorry, you are not allowed to create posts as this user.", "data": {"status": 401}}),
            &[],
        );
        assert_eq!(
            classify(Platform::Wordpress, &wp),
            Err(CallError::TokenRefused("HTTP 401: Sorry, you are not allowed to create posts as this user. (rest_cannot_create)".into()))
        );
        let shop = reply(422, json!({"errors": {"title": ["can't be blank"]}}), &[]);
        assert_eq!(
            classify(Platform::Shopify, &shop),
            Err(CallError::Rejected("HTTP 422: title can't be blank".into()))
        );
        let gw = reply(
            503,
            Value::String("<html>503</html>".into()),
            &[("retry-after", "5")],
        );
        assert!(matches!(
            classify(Platform::Wordpress, &gw),
            Err(CallError::Unknown { retry_after: Some(d), .. }) if d == Duration::from_secs(5)
        ));
        let li = reply(500, json!({"message": "Internal error"}), &[]);
        assert!(matches!(
            classify(Platform::Linkedin, &li),
            Err(CallError::Unknown { .. })
        ));
        assert_eq!(
            classify(Platform::Linkedin, &reply(201, Value::Null, &[])),
            Ok(())
        );
    }
}
