//! LinkedIn Posts API (`/rest/posts`) with the `LinkedIn-Version` and
//! `X-Restli-Protocol-Version` headers. The commentary is escaped in the little-text
//! format (an unescaped reserved character silently truncates the post there) and
//! hashtags become `{hashtag|\#|tag}`. The post id arrives in the `x-restli-id` header.
//! No native scheduling: the job runs at the publish time.

use serde_json::json;

use super::{CallError, Candidate, Ctx, Post, Published};

/// Escapes text for LinkedIn's little-text format, turning `#word` into a hashtag.
pub fn little_text(text: &str) -> String {
    const RESERVED: &[char] = &[
        '\\', '|', '{', '}', '@', '[', ']', '(', ')', '<', '>', '#', '*', '_', '~',
    ];
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at_word_start = i == 0 || text[..i].ends_with(char::is_whitespace);
        if c == '#' && at_word_start {
            let tag: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            if !tag.is_empty() {
                out.push_str(&format!("{{hashtag|\\#|{tag}}}"));
                for _ in 0..tag.chars().count() {
                    chars.next();
                }
                continue;
            }
        }
        if RESERVED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn headers(ctx: &Ctx, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, CallError> {
    let version = ctx
        .meta("api_version")
        .unwrap_or(&ctx.settings.linkedin_version)
        .to_owned();
    Ok(req
        .bearer_auth(ctx.cred("access_token")?)
        .header("LinkedIn-Version", version)
        .header("X-Restli-Protocol-Version", "2.0.0"))
}

fn author(ctx: &Ctx) -> Result<String, CallError> {
    ctx.meta("author_urn").map(str::to_owned).ok_or_else(|| {
        CallError::Auth("the linkedin integration has no author_urn in its metadata".into())
    })
}

fn url_of(urn: &str) -> String {
    format!("https://www.linkedin.com/feed/update/{urn}/")
}

pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    let body = json!({
        "author": author(ctx)?,
        "commentary": little_text(&post.body),
        "visibility": "PUBLIC",
        "distribution": {
            "feedDistribution": "MAIN_FEED",
            "targetEntities": [],
            "thirdPartyDistributionChannels": [],
        },
        "lifecycleState": "PUBLISHED",
        "isReshareDisabledByAuthor": false,
    });
    let base = ctx.base("https://api.linkedin.com");
    let req = headers(ctx, ctx.http.post(format!("{base}/rest/posts")))?.json(&body);
    let reply = ctx.send("POST /rest/posts", req).await?;
    let urn = reply
        .headers
        .get("x-restli-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            CallError::unknown(format!(
                "POST /rest/posts answered {} without an x-restli-id header; the post may exist",
                reply.status
            ))
        })?;
    Ok(Published {
        url: url_of(&urn),
        external_id: urn,
        response: json!({"status": reply.status, "x-restli-id": reply.headers.get("x-restli-id").and_then(|v| v.to_str().ok())}),
        scheduled_for: None,
    })
}

/// The author's recent posts with this text, with their `createdAt` (needs the
/// `r_*_social` read scope; without it the 403 says we cannot be sure, and the job asks
/// the operator to check).
pub async fn find(ctx: &Ctx, post: &Post) -> Result<Vec<Candidate>, CallError> {
    let base = ctx.base("https://api.linkedin.com");
    let author = author(ctx)?;
    let count = ctx.settings.reconcile_recent_posts.to_string();
    let req = headers(ctx, ctx.http.get(format!("{base}/rest/posts")))?.query(&[
        ("q", "author"),
        ("author", author.as_str()),
        ("count", count.as_str()),
    ]);
    let reply = ctx.send("GET /rest/posts?q=author", req).await?;
    let want = little_text(&post.body);
    Ok(reply.body["elements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["commentary"]
                .as_str()
                .is_some_and(|c| super::same_text(c, &want) || super::same_text(c, &post.body))
        })
        .filter_map(|e| {
            let urn = e["id"].as_str()?.to_owned();
            Some(Candidate {
                created: e["createdAt"]
                    .as_i64()
                    .and_then(chrono::DateTime::from_timestamp_millis),
                post: Published {
                    url: url_of(&urn),
                    external_id: urn,
                    response: e.clone(),
                    scheduled_for: None,
                },
            })
        })
        .collect())
}

pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    let base = ctx.base("https://api.linkedin.com");
    let req = ctx
        .http
        .get(format!("{base}/v2/userinfo"))
        .bearer_auth(ctx.cred("access_token")?);
    let reply = ctx.send("GET /v2/userinfo", req).await?;
    Ok(format!(
        "token of {} (sub {})",
        reply.body["name"].as_str().unwrap_or("?"),
        reply.body["sub"].as_str().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_are_escaped_and_hashtags_kept() {
        assert_eq!(
            little_text("Linen (50% off) #summer sale @ shop_name *now* {x} [y] <z> ~ | \\"),
            "Linen \\(50% off\\) {hashtag|\\#|summer} sale \\@ shop\\_name \\*now\\* \\{x\\} \\[y\\] \\<z\\> \\~ \\| \\\\"
        );
        assert_eq!(little_text("no#tag here"), "no\\#tag here");
        assert_eq!(little_text("# heading"), "\\# heading");
    }
}
