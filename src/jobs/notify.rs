//! `notify`: delivers one notification to one channel. A webhook is signed as the
//! Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the channel's
//! `whsec_` secret), so receivers can verify it with that specification's libraries and
//! refuse replays (the id is the delivery's, the same on every retry). The body carries
//! a Slack-compatible `text`. The database enqueues one such job per channel when it
//! raises a notification; each attempt is recorded on the delivery (the receiver's
//! status and answer), and an answer other than 2xx, or none, is retried with backoff.
//! An email goes through the SMTP server of `[notifications.email]` as plain text, with
//! the delivery's id as its `Message-ID`; a 4xx reply or no answer is retried, a 5xx
//! is not.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use copydesk_queue::{JobArgs, JobError, Outcome, ResultExt};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{ChannelKind, DeliveryStatus},
    fetch::{FetchError, Fetcher},
    store::{
        self,
        notifications::{Deliveries, Delivery},
    },
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

/// A channel's signing secret that cannot sign.
#[derive(Debug, thiserror::Error)]
#[error("the channel's signing secret is not base64: {0}")]
pub struct BadSecret(#[from] base64::DecodeError);

/// The `webhook-signature` of `body`, sent as message `id` at `timestamp` (Unix
/// seconds), with a `whsec_` secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = B64.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))?;
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
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
    let signature = sign(secret, id, timestamp, &body).map_err(|e| FetchError::BadUrl {
        url: url.to_owned(),
        why: e.to_string(),
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

/// One attempt's outcome: the receiver's status (an HTTP status or an SMTP reply code;
/// none when there was no answer), its words, and the job's error when not delivered.
pub(crate) struct Attempt {
    pub status: Option<u16>,
    pub answer: String,
    pub error: Option<JobError>,
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
    if d.status == DeliveryStatus::Delivered {
        return Ok(Outcome::done_with(json!({"delivered": true})));
    }
    let attempt = match d.channel_kind {
        ChannelKind::Email => email(&ctx, &d).await,
        ChannelKind::Webhook => webhook(&ctx, &d).await?,
    };
    attempt
        .recorded(&ctx, Deliveries::Notifications, d.id, json!({}))
        .await
}

impl Attempt {
    /// Records the attempt on its delivery (in `table`), then ends the job: done with
    /// `{"delivered", "status"}` and `more`, or the attempt's error (retried).
    pub(crate) async fn recorded(
        self,
        ctx: &Ctx,
        table: Deliveries,
        delivery: uuid::Uuid,
        more: Value,
    ) -> Result<Outcome, JobError> {
        store::notifications::record_attempt_in(
            &ctx.pool,
            table,
            delivery,
            self.status,
            &self.answer,
            self.error.is_none(),
        )
        .await
        .retryable()?;
        match self.error {
            None => {
                let mut out = json!({"delivered": true, "status": self.status});
                if let (Some(out), Value::Object(more)) = (out.as_object_mut(), more) {
                    out.extend(more);
                }
                Ok(Outcome::done_with(out))
            }
            Some(e) => Err(e),
        }
    }
}

async fn webhook(ctx: &Ctx, d: &Delivery) -> Result<Attempt, JobError> {
    let sealed = |v: &Option<Vec<u8>>, what: &str| {
        v.clone().ok_or_else(|| {
            JobError::permanent(format!("webhook channel {} has no {what}", d.channel_id))
        })
    };
    let webhook = Sealed {
        owner: format!("notification channel {}", d.channel_id),
        target: d.target.clone(),
        url: sealed(&d.url, "URL")?,
        secret: sealed(&d.secret, "signing secret")?,
    };
    let body = serde_json::to_vec(&payload(d)).expect("JSON values serialise");
    post_sealed(ctx, &webhook, &format!("msg_{}", d.id), body).await
}

/// A webhook whose URL and signing secret are sealed with the Fernet keys: a
/// notification channel's or an event subscription's.
pub(crate) struct Sealed {
    /// What it belongs to, for errors (`notification channel <id>`).
    pub owner: String,
    /// The URL as shown (its path hidden).
    pub target: String,
    pub url: Vec<u8>,
    pub secret: Vec<u8>,
}

/// One signed POST of `body` as message `id` to a sealed webhook: delivered on a 2xx;
/// any other answer, or none, is the attempt's error (transient but for a URL that can
/// never be reached). The whole URL stays out of rows and logs.
pub(crate) async fn post_sealed(
    ctx: &Ctx,
    webhook: &Sealed,
    id: &str,
    body: Vec<u8>,
) -> Result<Attempt, JobError> {
    let keys = ctx.app.keys.clone().map_err(|e| {
        JobError::permanent(format!(
            "cannot read the URL and signing secret of {}: {e}",
            webhook.owner
        ))
    })?;
    let open = |sealed: &[u8], what: &str| {
        keys.decrypt(sealed, &format!("the {what} of {}", webhook.owner))
            .map_err(|e| JobError::permanent(e.to_string()))
            .and_then(|v| {
                String::from_utf8(v).map_err(|_| {
                    JobError::permanent(format!("the {what} of {} is not text", webhook.owner))
                })
            })
    };
    let (url, secret) = (
        open(&webhook.url, "URL")?,
        open(&webhook.secret, "signing secret")?,
    );
    let target = &webhook.target;
    let hide = |text: String| text.replace(url.as_str(), target);
    Ok(
        match send(&ctx.app.fetcher, &url, &secret, id, body).await {
            Ok((s, answer)) if (200..300).contains(&s) => Attempt {
                status: Some(s),
                answer,
                error: None,
            },
            Ok((s, answer)) => Attempt {
                error: Some(JobError::transient(format!(
                    "the webhook {target} answered {s}: {answer}"
                ))),
                status: Some(s),
                answer,
            },
            Err(e) => {
                let why = hide(e.to_string());
                Attempt {
                    status: None,
                    error: Some(if e.is_transient() {
                        JobError::transient(why.clone())
                    } else {
                        JobError::permanent(why.clone())
                    }),
                    answer: why,
                }
            }
        },
    )
}

/// An email's subject and plain-text body for a notification.
pub fn email_text(d: &Delivery, public_url: &str) -> (String, String) {
    let subject = format!("[copydesk {}] {}", d.severity, d.title);
    let mut body = format!("{}\n", d.title);
    if !d.body.is_empty() {
        body.push_str(&format!("\n{}\n", d.body));
    }
    body.push_str(&format!("\nSeverity: {}\nKind: {}\n", d.severity, d.kind));
    if let Some(p) = d.project_id {
        body.push_str(&format!("Project: {p}\n"));
    }
    if let Some(j) = d.job_id {
        body.push_str(&format!("Job: {j}\n"));
    }
    body.push_str(&format!("Notification: {}\n", d.notification_id));
    if !public_url.is_empty() {
        body.push_str(&format!(
            "\n{}/console/notifications\n",
            public_url.trim_end_matches('/')
        ));
    }
    body.push_str(&format!(
        "\nSent by copydesk to this channel ({}); `copydesk notifications channels remove {}` stops it.\n",
        d.target, d.channel_id
    ));
    (subject, body)
}

async fn email(ctx: &Ctx, d: &Delivery) -> Attempt {
    let settings = &ctx.app.settings;
    let sent = async {
        let mailer = crate::mail::Mailer::new(&settings.notifications.email)?;
        let to = crate::mail::parse_address(&d.target)?;
        let (subject, body) = email_text(d, &settings.http.public_url);
        mailer.send(&to, &d.id.to_string(), &subject, body).await
    }
    .await;
    match sent {
        Ok((code, answer)) => Attempt {
            status: Some(code),
            answer,
            error: None,
        },
        Err(e) => Attempt {
            status: e.code(),
            answer: e.to_string(),
            error: Some(if e.is_transient() {
                JobError::transient(e.to_string())
            } else {
                JobError::permanent(e.to_string())
            }),
        },
    }
}
