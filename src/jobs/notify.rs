//! `notify`: delivers one notification to one channel, a webhook, signed as the
//! Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the channel's
//! `whsec_` secret), so receivers can verify it with that specification's libraries and
//! refuse replays (the id is the delivery's, the same on every retry). The body carries
//! a Slack-compatible `text`. The database enqueues one such job per channel when it
//! raises a notification; each attempt is recorded on the delivery (the receiver's
//! status and answer), and an answer other than 2xx, or none, is retried with backoff.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use copydesk_queue::{JobArgs, JobError, Outcome, ResultExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::Ctx;
use crate::{
    fetch::{FetchError, Fetcher},
    store::{self, notifications::Delivery},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyArgs {
    pub delivery_id: Uuid,
}

impl JobArgs for NotifyArgs {
    const KIND: &'static str = "notify";
    const SCHEMA: &'static str = include_str!("../../jobs/notify/schema.json");
}

const SECRET_PREFIX: &str = "whsec_";

/// How a webhook URL is shown (in listings, errors, the audit log): its origin, the
/// path hidden, since a Slack or Teams webhook URL is itself a credential.
pub fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}/…", u.origin().ascii_serialization()),
        Err(_) => "a webhook URL".into(),
    }
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", B64.encode(rand::random::<[u8; 32]>()))
}

/// The `webhook-signature` of `body`, sent as message `id` at `timestamp` (Unix
/// seconds), with a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = B64
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|e| format!("the channel's signing secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// What a webhook receives: a Slack-compatible `text`, and the notification.
pub fn payload(d: &Delivery) -> Value {
    let text = if d.body.is_empty() {
        format!("[{}] {}", d.severity, d.title)
    } else {
        format!("[{}] {}\n{}", d.severity, d.title, d.body)
    };
    json!({
        "text": text,
        "notification_id": d.notification_id,
        "severity": d.severity,
        "kind": d.kind,
        "title": d.title,
        "body": d.body,
        "job_id": d.job_id,
        "project_id": d.project_id,
        "data": d.data,
        "created_at": d.created_at,
    })
}

/// POSTs `body` to a webhook, signed as message `id`: the receiver's status and answer.
pub async fn send(
    fetcher: &Fetcher,
    url: &str,
    secret: &str,
    id: &str,
    body: Vec<u8>,
) -> Result<(u16, String), FetchError> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(secret, id, timestamp, &body).map_err(|why| FetchError::BadUrl {
        url: url.to_owned(),
        why,
    })?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        headers.insert(
            name,
            value
                .parse()
                .expect("ids, numbers and base64 are header values"),
        );
    }
    fetcher.post_json(url, headers, body).await
}

pub async fn run(ctx: Ctx, args: NotifyArgs) -> Result<Outcome, JobError> {
    let Some(d) = store::notifications::delivery(&ctx.pool, args.delivery_id)
        .await
        .retryable()?
    else {
        return Ok(Outcome::done_with(
            json!({"delivered": false, "why": "the delivery is gone (its channel was removed)"}),
        ));
    };
    if d.status == "delivered" {
        return Ok(Outcome::done_with(json!({"delivered": true})));
    }
    let keys = ctx.app.keys.clone().map_err(|e| {
        JobError::permanent(format!(
            "cannot read the channel's URL and signing secret: {e}"
        ))
    })?;
    let open = |sealed: &[u8], what: &str| {
        keys.decrypt(
            sealed,
            &format!("the {what} of notification channel {}", d.channel_id),
        )
        .map_err(|e| JobError::permanent(e.to_string()))
        .and_then(|v| {
            String::from_utf8(v)
                .map_err(|_| JobError::permanent(format!("the channel's {what} is not text")))
        })
    };
    let (url, secret) = (open(&d.url, "URL")?, open(&d.secret, "signing secret")?);
    let body = serde_json::to_vec(&payload(&d)).expect("JSON values serialise");
    let id = format!("msg_{}", d.id);
    let sent = send(&ctx.app.fetcher, &url, &secret, &id, body).await;
    // The whole URL stays out of rows and logs: errors name it as shown.
    let hide = |text: String| text.replace(url.as_str(), &d.target);
    let (status, answer, delivered) = match &sent {
        Ok((s, a)) => (Some(*s), a.clone(), (200..300).contains(s)),
        Err(e) => (None, hide(e.to_string()), false),
    };
    store::notifications::record_attempt(&ctx.pool, d.id, status, &answer, delivered)
        .await
        .retryable()?;
    match sent {
        Ok((s, _)) if delivered => Ok(Outcome::done_with(json!({"delivered": true, "status": s}))),
        Ok((s, a)) => Err(JobError::transient(format!(
            "the webhook {} answered {s}: {a}",
            d.target
        ))),
        Err(e) if e.is_transient() => Err(JobError::transient(hide(e.to_string()))),
        Err(e) => Err(JobError::permanent(hide(e.to_string()))),
    }
}
