//! Shopify blog articles, Admin REST API on a pinned version (custom-app token in
//! `X-Shopify-Access-Token`). The article carries an explicit handle (the job's own
//! slug) so a lost answer is reconciled by handle; `published_at` schedules natively. The
//! answer has no URL: it is built from the shop's domain, the blog's handle and the
//! article's.

use serde_json::{Value, json};

use super::{CallError, Candidate, Ctx, Post, Published};

fn base(ctx: &Ctx) -> Result<String, CallError> {
    let shop = ctx.meta("shop_domain").unwrap_or_default();
    let version = ctx
        .meta("api_version")
        .unwrap_or(&ctx.settings.shopify_api_version)
        .to_owned();
    let root = ctx.base(&format!("https://{shop}"));
    Ok(format!("{root}/admin/api/{version}"))
}

fn blog_id(ctx: &Ctx) -> Result<String, CallError> {
    match ctx.integration.metadata.get("blog_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(CallError::Auth(
            "the shopify integration has no blog_id in its metadata".into(),
        )),
    }
}

fn authed(ctx: &Ctx, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, CallError> {
    let mut token =
        reqwest::header::HeaderValue::from_str(ctx.cred("access_token")?).map_err(|_| {
            CallError::Auth("the shopify access_token is not a valid header value".into())
        })?;
    token.set_sensitive(true);
    Ok(req.header("X-Shopify-Access-Token", token))
}

async fn blog_handle(ctx: &Ctx) -> Result<String, CallError> {
    let url = format!("{}/blogs/{}.json", base(ctx)?, blog_id(ctx)?);
    let reply = ctx
        .send("GET /blogs/{id}.json", authed(ctx, ctx.http.get(url))?)
        .await?;
    Ok(reply.body["blog"]["handle"]
        .as_str()
        .unwrap_or("news")
        .to_owned())
}

fn published(ctx: &Ctx, blog: &str, article: &Value) -> Option<Published> {
    let id = article["id"].as_i64().map(|i| i.to_string())?;
    let domain = ctx
        .meta("public_domain")
        .or(ctx.meta("shop_domain"))
        .unwrap_or_default();
    let handle = article["handle"].as_str().unwrap_or_default();
    Some(Published {
        external_id: id,
        url: format!("https://{domain}/blogs/{blog}/{handle}"),
        scheduled_for: article["published_at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
            .filter(|d| *d > chrono::Utc::now()),
        response: article.clone(),
    })
}

pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    let blog = blog_handle(ctx).await?;
    let mut article = json!({
        "title": post.title,
        "author": ctx.meta("author").unwrap_or("copydesk"),
        "body_html": super::markdown_to_html(&post.body),
        "handle": post.slug,
        "published": true,
    });
    if let Some(at) = post.publish_at.filter(|at| *at > chrono::Utc::now()) {
        article["published_at"] = json!(at.to_rfc3339());
    }
    if let Some(image) = &post.image {
        // The image goes in the article's own request: one call, reconciled with it.
        use base64::Engine;
        article["image"] = json!({
            "attachment": base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            "filename": image.name,
            "alt": image.alt,
        });
    }
    let url = format!("{}/blogs/{}/articles.json", base(ctx)?, blog_id(ctx)?);
    let req = authed(ctx, ctx.http.post(url))?.json(&json!({"article": article}));
    let reply = ctx.send("POST /blogs/{id}/articles.json", req).await?;
    published(ctx, &blog, &reply.body["article"]).ok_or_else(|| {
        CallError::unknown(format!(
            "POST articles.json answered {} without an article id; the article may exist",
            reply.status
        ))
    })
}

/// Articles with exactly this job's handle and title, with their `created_at`.
pub async fn find(ctx: &Ctx, post: &Post) -> Result<Vec<Candidate>, CallError> {
    let blog = blog_handle(ctx).await?;
    let url = format!("{}/blogs/{}/articles.json", base(ctx)?, blog_id(ctx)?);
    let req = authed(ctx, ctx.http.get(url))?.query(&[("handle", post.slug.as_str())]);
    let reply = ctx
        .send("GET /blogs/{id}/articles.json?handle", req)
        .await?;
    Ok(reply.body["articles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["handle"] == post.slug.as_str())
        .filter(|a| {
            a["title"]
                .as_str()
                .is_none_or(|t| t.trim() == post.title.trim())
        })
        .filter_map(|a| {
            Some(Candidate {
                created: a["created_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&chrono::Utc)),
                post: published(ctx, &blog, a)?,
            })
        })
        .collect())
}

pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    let blog = blog_handle(ctx).await?;
    Ok(format!("blog {:?} readable", blog))
}
