//! `publishing`: sends an approved draft to its destination. Refuses any artifact
//! without an `approved` approval, whoever enqueued the job. The destinations
//! themselves (WordPress, Shopify, LinkedIn, X, Facebook) are not built yet: until they
//! are, a publishing job fails permanently and says so, so nothing is skipped silently.

use uuid::Uuid;

use super::JobContext;
use crate::queue::{JobError, Outcome, ResultExt};

pub const KIND: &str = "publishing";
pub const SCHEMA: &str = include_str!("../../jobs/publishing/schema.json");

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let artifact: Uuid =
        serde_json::from_value(ctx.job.input["artifact_id"].clone()).permanent()?;
    let (channel, approved): (Option<String>, bool) = sqlx::query_as(
        "SELECT a.channel, EXISTS (SELECT 1 FROM approvals p WHERE p.artifact_id = a.id AND p.status = 'approved')
         FROM artifacts a WHERE a.id = $1",
    )
    .bind(artifact)
    .fetch_optional(&ctx.pool)
    .await
    .retryable()?
    .ok_or_else(|| JobError::permanent(format!("artifact_id: no artifact {artifact}")))?;
    if !approved {
        return Err(JobError::permanent(format!(
            "artifact {artifact} has no approved approval: refusing to publish it"
        )));
    }
    let channel = channel.unwrap_or_default();
    let platforms: &[&str] = if channel == "blog" {
        &["wordpress", "shopify"]
    } else {
        &[channel.as_str()]
    };
    let integration: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, platform FROM integrations WHERE project_id = $1 AND platform = ANY($2) AND status = 'connected'
         ORDER BY platform LIMIT 1",
    )
    .bind(ctx.job.project_id)
    .bind(platforms)
    .fetch_optional(&ctx.pool)
    .await
    .retryable()?;
    Err(JobError::permanent(match integration {
        None => format!(
            "no integration for the {channel} channel in this project (tried {})",
            platforms.join(", ")
        ),
        Some((id, platform)) => {
            format!("publishing to {platform} (integration {id}) is not built yet")
        }
    }))
}
