//! WordPress (self-hosted), REST API v2. Application-password Basic auth; the draft's
//! Markdown rendered to HTML; a slug unique to the job so a lost answer is reconciled by
//! looking the slug up; `status: future` with `date_gmt` when scheduled (natively). A
//! post's picture is uploaded to the media library first (its slug the post's own
//! plus `-image`, looked up before uploading) and set as `featured_media`.

use serde_json::{Value, json};

use super::{CallError, Candidate, Ctx, Image, Post, Published};

fn base(ctx: &Ctx) -> Result<String, CallError> {
    let site = ctx.meta("site_url").unwrap_or_default().to_owned();
    let base = ctx.base(&site);
    if base.is_empty() {
        return Err(CallError::Auth(
            "the wordpress integration has no site_url in its metadata".into(),
        ));
    }
    Ok(format!("{base}/wp-json/wp/v2"))
}

fn auth(ctx: &Ctx, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, CallError> {
    Ok(req.basic_auth(
        ctx.cred("username")?,
        Some(ctx.cred("application_password")?),
    ))
}

fn date_gmt(post: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    post["date_gmt"]
        .as_str()
        .and_then(|d| chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S").ok())
        .map(|d| d.and_utc())
}

fn published(post: &Value) -> Option<Published> {
    let id = post["id"].as_i64()?;
    Some(Published {
        external_id: id.to_string(),
        url: post["link"].as_str().unwrap_or_default().to_owned(),
        scheduled_for: (post["status"] == "future")
            .then(|| date_gmt(post))
            .flatten(),
        response: post.clone(),
    })
}

/// The media item of this job's picture: the one an earlier attempt uploaded (found by
/// its slug, which is the job's own), else a new upload. So an upload whose answer was
/// lost, or a crash after it, leaves one media item, not two.
async fn media(ctx: &Ctx, post: &Post, image: &Image) -> Result<i64, CallError> {
    let slug = format!("{}-image", post.slug);
    let req = auth(ctx, ctx.http.get(format!("{}/media", base(ctx)?)))?
        .query(&[("slug", slug.as_str()), ("context", "edit")]);
    let found = ctx.send("GET /wp/v2/media?slug", req).await?;
    if let Some(id) = found
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["slug"] == slug.as_str())
        .and_then(|m| m["id"].as_i64())
    {
        tracing::info!(
            media = id,
            "the picture was uploaded by an earlier attempt: using it"
        );
        return Ok(id);
    }
    let ext = match image.content_type.as_str() {
        "image/jpeg" => "jpg",
        other => other.strip_prefix("image/").unwrap_or("bin"),
    };
    let req = auth(ctx, ctx.http.post(format!("{}/media", base(ctx)?)))?
        .query(&[
            ("slug", slug.as_str()),
            ("title", post.title.as_str()),
            ("alt_text", image.alt.as_str()),
        ])
        .header(reqwest::header::CONTENT_TYPE, &image.content_type)
        .header(
            reqwest::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{slug}.{ext}\""),
        )
        .body(image.bytes.clone());
    let reply = ctx.send("POST /wp/v2/media", req).await?;
    reply.body["id"].as_i64().ok_or_else(|| {
        CallError::unknown(format!(
            "POST /wp/v2/media answered {} without a media id; the upload may exist",
            reply.status
        ))
    })
}

pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    let mut body = json!({
        "title": post.title,
        "content": super::markdown_to_html(&post.body),
        "slug": post.slug,
        "status": "publish",
    });
    if let Some(image) = &post.image {
        body["featured_media"] = json!(media(ctx, post, image).await?);
    }
    if let Some(at) = post.publish_at.filter(|at| *at > chrono::Utc::now()) {
        body["status"] = json!("future");
        body["date_gmt"] = json!(at.format("%Y-%m-%dT%H:%M:%S").to_string());
    }
    let req = auth(ctx, ctx.http.post(format!("{}/posts", base(ctx)?)))?.json(&body);
    let reply = ctx.send("POST /wp/v2/posts", req).await?;
    let p = published(&reply.body).ok_or_else(|| {
        CallError::unknown(format!(
            "POST /wp/v2/posts answered {} without a post id; the post may exist",
            reply.status
        ))
    })?;
    if reply.body["slug"].as_str().is_some_and(|s| s != post.slug) {
        tracing::warn!(slug = %post.slug, got = %reply.body["slug"], "WordPress changed the slug: a post with ours already existed");
    }
    Ok(p)
}

/// Posts with exactly this job's slug and title (`date_gmt` is when it was published,
/// or will be).
pub async fn find(ctx: &Ctx, post: &Post) -> Result<Vec<Candidate>, CallError> {
    let req = auth(ctx, ctx.http.get(format!("{}/posts", base(ctx)?)))?.query(&[
        ("slug", post.slug.as_str()),
        ("status", "publish,future,draft,pending,private"),
        ("context", "edit"),
    ]);
    let reply = ctx.send("GET /wp/v2/posts?slug", req).await?;
    Ok(reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["slug"] == post.slug.as_str())
        .filter(|p| {
            let title = p["title"]["raw"]
                .as_str()
                .or(p["title"]["rendered"].as_str());
            title.is_none_or(|t| t.trim() == post.title.trim())
        })
        .filter_map(|p| {
            Some(Candidate {
                created: date_gmt(p),
                post: published(p)?,
            })
        })
        .collect())
}

pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    let req =
        auth(ctx, ctx.http.get(format!("{}/users/me", base(ctx)?)))?.query(&[("context", "edit")]);
    let reply = ctx.send("GET /wp/v2/users/me", req).await?;
    Ok(format!(
        "signed in as {}",
        reply.body["name"]
            .as_str()
            .or(reply.body["slug"].as_str())
            .unwrap_or("?")
    ))
}
