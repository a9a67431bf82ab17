//! Facebook Pages, Graph API: `POST /{page-id}/feed` with the page access token in the
//! form body (never in a URL). A publish time 10 minutes to 30 days away is handed to
//! Facebook (`published=false` + `scheduled_publish_time`); closer than that the job
//! runs at the time and posts at once. Error code 506 (duplicate) is reconciled.

use serde_json::Value;

use super::{CallError, Candidate, Ctx, Post, Published};

fn graph(ctx: &Ctx) -> Result<(String, String), CallError> {
    let version = ctx
        .meta("graph_version")
        .unwrap_or(&ctx.settings.facebook_graph_version)
        .to_owned();
    let page = ctx.meta("page_id").map(str::to_owned).ok_or_else(|| {
        CallError::Auth("the facebook integration has no page_id in its metadata".into())
    })?;
    Ok((
        format!("{}/{version}", ctx.base("https://graph.facebook.com")),
        page,
    ))
}

/// Whether `at` can be handed to Facebook (10 minutes to 30 days from now, with margin).
pub fn natively_schedulable(at: chrono::DateTime<chrono::Utc>, min_minutes: i64) -> bool {
    let ahead = at - chrono::Utc::now();
    ahead >= chrono::Duration::minutes(min_minutes.max(10))
        && ahead <= chrono::Duration::days(30) - chrono::Duration::minutes(5)
}

fn published(
    id: &str,
    response: Value,
    scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
) -> Published {
    Published {
        external_id: id.to_owned(),
        url: format!("https://www.facebook.com/{id}"),
        response,
        scheduled_for,
    }
}

pub async fn create(ctx: &Ctx, post: &Post) -> Result<Published, CallError> {
    let (base, page) = graph(ctx)?;
    let mut form: Vec<(&str, String)> = vec![
        ("message", post.body.clone()),
        ("access_token", ctx.cred("page_access_token")?.to_owned()),
    ];
    let scheduled = post
        .publish_at
        .filter(|at| natively_schedulable(*at, ctx.settings.facebook_min_schedule_minutes));
    if let Some(at) = scheduled {
        form.push(("published", "false".into()));
        form.push(("scheduled_publish_time", at.timestamp().to_string()));
    }
    let req = ctx.http.post(format!("{base}/{page}/feed")).form(&form);
    let reply = ctx.send("POST /{page-id}/feed", req).await?;
    let id = reply.body["id"].as_str().ok_or_else(|| {
        CallError::unknown(format!(
            "POST /{{page-id}}/feed answered {} without an id; the post may exist",
            reply.status
        ))
    })?;
    Ok(published(id, reply.body.clone(), scheduled))
}

/// The page's recent and scheduled posts with the same message, with their
/// `created_time`.
pub async fn find(ctx: &Ctx, post: &Post) -> Result<Vec<Candidate>, CallError> {
    let (base, page) = graph(ctx)?;
    let limit = ctx.settings.reconcile_recent_posts.to_string();
    let mut found = Vec::new();
    for edge in ["feed", "scheduled_posts"] {
        let req = ctx
            .http
            .get(format!("{base}/{page}/{edge}"))
            .bearer_auth(ctx.cred("page_access_token")?)
            .query(&[
                ("fields", "id,message,created_time"),
                ("limit", limit.as_str()),
            ]);
        let reply = ctx.send(&format!("GET /{{page-id}}/{edge}"), req).await?;
        let scheduled = (edge == "scheduled_posts")
            .then_some(post.publish_at)
            .flatten();
        for p in reply.body["data"].as_array().into_iter().flatten() {
            let same = p["message"]
                .as_str()
                .is_some_and(|m| super::same_text(m, &post.body));
            if let (true, Some(id)) = (same, p["id"].as_str()) {
                found.push(Candidate {
                    created: p["created_time"].as_str().and_then(|t| {
                        // Graph API times look like 2026-11-22T10:00:00+0000.
                        chrono::DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z")
                            .ok()
                            .map(|d| d.with_timezone(&chrono::Utc))
                    }),
                    post: published(id, p.clone(), scheduled),
                });
            }
        }
    }
    Ok(found)
}

pub async fn check(ctx: &Ctx) -> Result<String, CallError> {
    let (base, page) = graph(ctx)?;
    let req = ctx
        .http
        .get(format!("{base}/{page}"))
        .bearer_auth(ctx.cred("page_access_token")?)
        .query(&[("fields", "id,name")]);
    let reply = ctx.send("GET /{page-id}", req).await?;
    Ok(format!(
        "page {}",
        reply.body["name"].as_str().unwrap_or(&page)
    ))
}
