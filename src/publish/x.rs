//! X (Twitter) API v2: `POST /2/tweets` with a user-context token, either OAuth 2.0
//! (Bearer; refreshed with the stored refresh token when it has expired or is refused,
//! the new pair stored encrypted) or OAuth 1.0a (HMAC-SHA1 signed header). Text is
//! limited to 280 weighted characters, counted as twitter-text counts them. No native
//! scheduling. A 403 "duplicate content" is reconciled against the account's recent
//! posts.

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

use super::{CallError, Candidate, Ctx, Post, Published, Unpublishable};
use crate::{keys::Credentials, store};

pub const MAX_WEIGHTED: usize = 280;

/// Length as X counts it (twitter-text v3): NFC first; a URL counts 23; an emoji
/// (a whole grapheme cluster, ZWJ sequences included) counts 2; code points in the
/// Latin, general-punctuation ranges count 1; everything else (CJK, ...) counts 2.
pub fn weighted_len(text: &str) -> usize {
    let text: String = text.nfc().collect();
    text.split_inclusive(char::is_whitespace)
        .map(|piece| {
            let word = piece.trim_end();
            let is_url = word.starts_with("http://")
                || word.starts_with("https://")
                || (word.starts_with("www.") && word.len() > 4);
            if is_url {
                // The URL counts 23; the whitespace after it counts as itself.
                23 + piece[word.len()..]
                    .graphemes(true)
                    .map(grapheme_weight)
                    .sum::<usize>()
            } else {
                piece.graphemes(true).map(grapheme_weight).sum()
            }
        })
        .sum()
}

fn grapheme_weight(g: &str) -> usize {
    let is_emoji = g.chars().any(|c| {
        let c = c as u32;
        (0x1F000..=0x1FAFF).contains(&c)
            || (0x2600..=0x27BF).contains(&c)
            || c == 0xFE0F
            || c == 0x200D
    });
    if is_emoji {
        return 2;
    }
    g.chars()
        .map(|c| {
            let c = c as u32;
            if c <= 4351
                || (8192..=8205).contains(&c)
                || (8208..=8223).contains(&c)
                || (8242..=8247).contains(&c)
            {
                1
            } else {
                2
            }
        })
        .sum()
}

pub fn validate(post: &Post) -> Result<(), Unpublishable> {
    let n = weighted_len(&post.body);
    if n > MAX_WEIGHTED {
        return Err(Unpublishable(format!(
            "the post weighs {n} characters as X counts them (URLs 23, emoji and CJK 2); X takes at most {MAX_WEIGHTED}"
        )));
    }
    Ok(())
}

fn base(ctx: &Ctx) -> String {
    ctx.base("https://api.x.com")
}

fn oauth1(ctx: &Ctx) -> bool {
    ctx.creds.get("consumer_key").is_some()
}

/// The credentials in force (a refresh during this attempt replaces them).
fn current(ctx: &Ctx) -> Credentials {
    ctx.refreshed
        .lock()
        .expect("not poisoned")
        .clone()
        .unwrap_or_else(|| ctx.creds.clone())
}

/// Adds user-context auth to a request to `url` (OAuth 1.0a signs `query` too).
fn authorize(
    ctx: &Ctx,
    req: reqwest::RequestBuilder,
    method: &str,
    url: &str,
    query: &[(&str, &str)],
) -> Result<reqwest::RequestBuilder, CallError> {
    let creds = current(ctx);
    let need = |f: &str| {
        creds.get(f).map(str::to_owned).ok_or_else(|| {
            CallError::Auth(format!(
                "the x credentials have no {f:?}: store them again with `copydesk integrations set`"
            ))
        })
    };
    if oauth1(ctx) {
        let header = oauth1_header(
            method,
            url,
            query,
            &need("consumer_key")?,
            &need("consumer_secret")?,
            &need("access_token")?,
            &need("access_token_secret")?,
            &nonce(),
            chrono::Utc::now().timestamp(),
        );
        let mut value = reqwest::header::HeaderValue::from_str(&header)
            .map_err(|_| CallError::Auth("the x OAuth 1.0a header is not valid".into()))?;
        value.set_sensitive(true);
        Ok(req
            .header(reqwest::header::AUTHORIZATION, value)
            .query(query))
    } else {
        Ok(req.bearer_auth(need("access_token")?).query(query))
    }
}

fn nonce() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

const OAUTH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, OAUTH).to_string()
}

/// An OAuth 1.0a `Authorization` header (HMAC-SHA1). A JSON body is not signed;
/// query parameters are.
#[allow(clippy::too_many_arguments)]
pub fn oauth1_header(
    method: &str,
    url: &str,
    params: &[(&str, &str)],
    consumer_key: &str,
    consumer_secret: &str,
    token: &str,
    token_secret: &str,
    nonce: &str,
    timestamp: i64,
) -> String {
    let ts = timestamp.to_string();
    let oauth: Vec<(&str, &str)> = vec![
        ("oauth_consumer_key", consumer_key),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", &ts),
        ("oauth_token", token),
        ("oauth_version", "1.0"),
    ];
    let mut all: Vec<(String, String)> = oauth
        .iter()
        .chain(params.iter())
        .map(|(k, v)| (enc(k), enc(v)))
        .collect();
    all.sort();
    let param_string = all
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!(
        "{}&{}&{}",
        method.to_uppercase(),
        enc(url),
        enc(&param_string)
    );
    let key = format!("{}&{}", enc(consumer_secret), enc(token_secret));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(base.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut fields: Vec<(String, String)> = oauth
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fields.push(("oauth_signature".into(), signature));
    fields.sort();
    format!(
        "OAuth {}",
        fields
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether the stored OAuth 2.0 token has expired (or will within a minute).
fn expired(creds: &Credentials) -> bool {
    creds
        .get("expires_at")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|at| at <= chrono::Utc::now() + chrono::Duration::seconds(60))
}

/// Refreshes the OAuth 2.0 token pair and stores the new pair encrypted.
async fn refresh(ctx: &Ctx) -> Result<(), CallError> {
    let creds = current(ctx);
    let (Some(refresh_token), Some(client_id)) =
        (creds.get("refresh_token"), creds.get("client_id"))
    else {
        return Err(CallError::Auth(
            "the x access token has expired and the credentials have no refresh_token and client_id to renew it"
                .into(),
        ));
    };
    let Some(keys) = ctx.keys.clone() else {
        return Err(CallError::Auth(
            "the x token needs a refresh, which needs COPYDESK_FERNET_KEYS".into(),
        ));
    };
    // One refresh of an integration at a time, in every process: X's refresh tokens are
    // single-use, so a second refresh with the same one would be refused. The lock is
    // the transaction's; whoever waited reads the pair the first one stored.
    let unknown =
        |e: &dyn std::fmt::Display| CallError::unknown(format!("refreshing the x token: {e}"));
    let mut tx = ctx.pool.begin().await.map_err(|e| unknown(&e))?;
    crate::db::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('x-token-refresh:' || $1::text, 0))",
    )
    .bind(ctx.integration.id)
    .execute(&mut *tx)
    .await
    .map_err(|e| unknown(&e))?;
    let stored = store::integrations::credentials(&mut *tx, ctx.integration.id)
        .await
        .map_err(|e| unknown(&e))?;
    let stored = keys
        .decrypt_credentials(
            &stored,
            &format!("the credentials of integration {}", ctx.integration.id),
        )
        .map_err(|e| unknown(&e))?;
    if stored.get("access_token") != creds.get("access_token") {
        tracing::info!(integration = %ctx.integration.id, "another process refreshed the x token: using its pair");
        *ctx.refreshed.lock().expect("not poisoned") = Some(stored);
        return Ok(());
    }
    let mut req = ctx
        .http
        .post(format!("{}/2/oauth2/token", base(ctx)))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ]);
    if let Some(secret) = creds.get("client_secret") {
        req = req.basic_auth(client_id, Some(secret));
    }
    // X answers a refresh token it no longer honours (revoked, used, expired) with
    // 400 `invalid_request`: the credentials are refused, like a 401.
    let reply = ctx
        .send("POST /2/oauth2/token", req)
        .await
        .map_err(|e| match e {
            CallError::Rejected(m) => CallError::Auth(format!("x refused the refresh token: {m}")),
            other => other,
        })?;
    let token = reply.body["access_token"].as_str().ok_or_else(|| {
        CallError::Auth("the token refresh answered without an access_token".into())
    })?;
    let mut next = creds.clone();
    next.0.insert("access_token".into(), json!(token));
    if let Some(r) = reply.body["refresh_token"].as_str() {
        next.0.insert("refresh_token".into(), json!(r));
    }
    if let Some(secs) = reply.body["expires_in"].as_i64() {
        let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
        next.0.insert("expires_at".into(), json!(at.to_rfc3339()));
    }
    let token = keys.encrypt_json(&Value::Object(next.0.clone()));
    store::integrations::set_credentials(&mut *tx, ctx.integration.id, &token)
        .await
        .map_err(|e| CallError::unknown(format!("storing the refreshed x token: {e}")))?;
    tx.commit()
        .await
        .map_err(|e| CallError::unknown(format!("storing the refreshed x token: {e}")))?;
    tracing::info!(integration = %ctx.integration.id, "refreshed the x OAuth 2.0 token");
    *ctx.refreshed.lock().expect("not poisoned") = Some(next);
    Ok(())
}

/// Refreshes an OAuth 2.0 token that expires within `ahead` (the scheduled refresh, so
/// no post has to): whether it did. OAuth 1.0a tokens, and tokens that do not say
/// when they expire or cannot be refreshed, are left alone.
pub async fn refresh_ahead(ctx: &Ctx, ahead: chrono::Duration) -> Result<bool, CallError> {
    let creds = current(ctx);
    let due = creds
        .get("expires_at")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|at| at <= chrono::Utc::now() + ahead);
    if oauth1(ctx) || !due || creds.get("refresh_token").is_none() {
        return Ok(false);
    }
    refresh(ctx).await?;
    Ok(true)
}

/// Runs `call`, refreshing an OAuth 2.0 token first when it has expired and once more
/// when the platform refuses it with 401 (a refused request posted nothing).
async fn with_token<F, Fut, T>(ctx: &Ctx, call: F) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    if oauth1(ctx) {
        return call().await;
    }
    if expired(&current(ctx)) {
        refresh(ctx).await?;
    }
    match call().await {
        Err(CallError::TokenRefused(_))
            if ctx.refreshed.lock().expect("not poisoned").is_none() =>
        {
            tracing::info!("x answered 401: refreshing the token once");
            refresh(ctx).await?;
            call().await
        }
        other => other,
    }
}

fn url_of(ctx: &Ctx, id: &str) -> String {
    match ctx.meta("username") {
        Some(u) => format!("https://x.com/{u}/status/{id}"),
        None => format!("https://x.com/i/web/status/{id}"),
    }
}

pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    let url = format!("{}/2/tweets", base(ctx));
    let reply = with_token(ctx, || async {
        let req = authorize(ctx, ctx.http.post(&url), "POST", &url, &[])?
            .json(&json!({"text": post.body}));
        ctx.send("POST /2/tweets", req).await
    })
    .await?;
    let id = reply.body["data"]["id"].as_str().ok_or_else(|| {
        CallError::unknown(format!(
            "POST /2/tweets answered {} without data.id; the post may exist",
            reply.status
        ))
    })?;
    Ok(Published {
        external_id: id.to_owned(),
        url: url_of(ctx, id),
        response: reply.body.clone(),
        scheduled_for: None,
    })
}

async fn me(ctx: &Ctx) -> Result<Value, CallError> {
    let url = format!("{}/2/users/me", base(ctx));
    let reply = with_token(ctx, || async {
        let req = authorize(ctx, ctx.http.get(&url), "GET", &url, &[])?;
        ctx.send("GET /2/users/me", req).await
    })
    .await?;
    Ok(reply.body["data"].clone())
}

/// The account's recent posts with this text, with their `created_at`.
pub async fn find(ctx: &Ctx, post: &Post) -> Result<Vec<Candidate>, CallError> {
    let user = match ctx.meta("user_id") {
        Some(id) => id.to_owned(),
        None => me(ctx).await?["id"]
            .as_str()
            .ok_or_else(|| CallError::unknown("GET /2/users/me answered without data.id"))?
            .to_owned(),
    };
    let url = format!("{}/2/users/{user}/tweets", base(ctx));
    let max = ctx
        .settings
        .reconcile_recent_posts
        .clamp(5, 100)
        .to_string();
    let reply = with_token(ctx, || async {
        let req = authorize(
            ctx,
            ctx.http.get(&url),
            "GET",
            &url,
            &[("max_results", &max), ("tweet.fields", "created_at")],
        )?;
        ctx.send("GET /2/users/{id}/tweets", req).await
    })
    .await?;
    Ok(reply.body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["text"]
                .as_str()
                .is_some_and(|x| super::same_text(x, &post.body))
        })
        .filter_map(|t| {
            let id = t["id"].as_str()?;
            Some(Candidate {
                created: t["created_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&chrono::Utc)),
                post: Published {
                    external_id: id.to_owned(),
                    url: url_of(ctx, id),
                    response: t.clone(),
                    scheduled_for: None,
                },
            })
        })
        .collect())
}

pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    let me = me(ctx).await?;
    Ok(format!(
        "signed in as @{}",
        me["username"].as_str().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_twitter_text() {
        assert_eq!(weighted_len("hello"), 5);
        assert_eq!(
            weighted_len("see https://example.com/a/very/long/path"),
            4 + 23
        );
        assert_eq!(weighted_len("ok 🎉"), 3 + 2);
        // A family emoji is one grapheme (ZWJ sequence): 2, not 2 per person.
        assert_eq!(weighted_len("👨‍👩‍👧"), 2);
        assert_eq!(weighted_len("日本"), 4);
        // NFC: e + combining acute is one character.
        assert_eq!(weighted_len("e\u{301}"), 1);
        // Curly quotes and the dash are in the light ranges; the ellipsis (U+2026) is not.
        assert_eq!(weighted_len("“quoted” — yes…"), 16);
        assert_eq!(weighted_len(&"a".repeat(280)), 280);
    }

    #[test]
    fn oauth1_signature_matches_the_documented_example() {
        // The example from X's "Creating a signature" page.
        let header = oauth1_header(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            &[
                ("include_entities", "true"),
                (
                    "status",
                    "Hello Ladies + Gentlemen, a signed OAuth request!",
                ),
            ],
            "xvz1evFS4wEEPTGEFPHBog",
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
            "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            1318622958,
        );
        assert!(
            header.contains("oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\""),
            "{header}"
        );
        assert!(header.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\""));
    }
}
