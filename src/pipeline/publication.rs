//! Requesting a publication: the one way a `publishing` job is enqueued, whether the
//! pipeline asks (a draft approved, or `approve_drafts = false`) or an operator does
//! (`copydesk publish`). The same rules hold for both: the artifact is an approved
//! draft; the integration takes its channel and belongs to its project; a draft
//! already published to that integration is not published again unless asked
//! (`again`); and the idempotency key makes asking twice enqueue once.

use chrono::{DateTime, Utc};
use copydesk_queue::{Catalog, Enqueued, NewJob};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Error, Result};
use crate::{
    domain::Platform,
    jobs::publishing::PublishingArgs,
    publish::{
        eligibility::{self, Eligible},
        integrations::schedule,
    },
    store::{self, jobs::NewJobExt},
};

/// What to publish, where and when.
#[derive(Debug, Clone)]
pub struct PublicationRequest {
    /// The approved draft.
    pub artifact: Uuid,
    /// Where to; `None`: the project's integration for the draft's channel (a blog to
    /// WordPress, else Shopify). Without one the job still goes in and fails naming
    /// the missing integration, so an approved draft never disappears silently.
    pub integration: Option<Uuid>,
    /// When to publish (now when absent or past).
    pub at: Option<DateTime<Utc>>,
    /// Publish even though a publication to this integration exists, or the same text
    /// went to it within `[publish] duplicate_window_days`.
    pub again: bool,
    /// The job that asked (the evaluation whose draft was approved).
    pub parent: Option<Uuid>,
    /// The person who asked (`copydesk publish --by`, the API's token): the request is
    /// recorded in `audit_log`. `None` when the pipeline asks (the approval was).
    pub by: Option<String>,
}

/// What a request enqueued.
#[derive(Debug, Clone, Serialize)]
pub struct Requested {
    pub job: Enqueued,
    pub integration: Option<Uuid>,
    pub platform: Option<Platform>,
    /// When the job runs (`None`: now).
    pub run_at: Option<DateTime<Utc>>,
    /// The time handed to a platform that schedules natively.
    pub publish_at: Option<DateTime<Utc>>,
}

/// The idempotency key of a publication: one job per draft and integration, and one
/// more for each `again` after a publication exists.
pub fn idempotency_key(artifact: Uuid, integration: Option<Uuid>, again: Option<usize>) -> String {
    let mut key = format!("publish:{artifact}");
    if let Some(i) = integration {
        key.push_str(&format!(":{i}"));
    }
    if let Some(n) = again {
        key.push_str(&format!(":again:{n}"));
    }
    key
}

/// Checks the request and enqueues its `publishing` job inside the caller's
/// transaction.
pub async fn request(
    conn: &mut PgConnection,
    catalog: &Catalog,
    facebook_min_schedule_minutes: i64,
    req: &PublicationRequest,
) -> Result<Requested> {
    let Eligible {
        draft,
        channel,
        target,
    } = eligibility::check(&mut *conn, req.artifact, req.integration, None).await?;
    let integration = target.map(|t| (t.integration, t.platform, t.project));
    let mut again = None;
    if let Some((id, platform, _)) = integration {
        let earlier = store::artifacts::publications(&mut *conn, draft.id, id).await?;
        match (earlier.last(), req.again) {
            (Some(url), false) => {
                return Err(Error::AlreadyPublished {
                    artifact: draft.id,
                    platform,
                    url: url.clone(),
                });
            }
            (Some(_), true) => again = Some(earlier.len()),
            // Not published yet, but asked to post anyway (the same text went out
            // within the duplicate window): a key of its own, apart from the refused job.
            (None, true) => again = Some(0),
            (None, false) => {}
        }
    }
    let (run_at, publish_at) = match integration {
        Some((_, platform, _)) => {
            schedule(platform, req.at, Utc::now(), facebook_min_schedule_minutes)
        }
        None => (req.at.filter(|at| *at > Utc::now()), None),
    };
    let args = PublishingArgs {
        artifact_id: draft.id,
        integration_id: integration.map(|(id, _, _)| id),
        channel: Some(channel),
        publish_at,
        again: req.again,
    };
    let job = NewJob::of(&args)
        .project(integration.map(|(_, _, p)| p).or(draft.project_id))
        .parent(req.parent)
        .input_artifact(draft.id)
        .run_at(run_at)
        .idempotency_key(idempotency_key(
            draft.id,
            integration.map(|(id, _, _)| id),
            again,
        ));
    let job = copydesk_queue::enqueue(&mut *conn, catalog, &job).await?;
    if let Some(by) = &req.by {
        store::audit::record(
            &mut *conn,
            &store::audit::Entry {
                tenant: Some(draft.tenant_id),
                actor: by,
                action: "publication.requested",
                target_table: Some("artifacts"),
                target_id: Some(draft.id),
                details: serde_json::json!({
                    "job_id": job.id, "created": job.created,
                    "integration_id": integration.map(|(id, _, _)| id),
                    "at": req.at, "again": req.again,
                }),
            },
        )
        .await?;
    }
    Ok(Requested {
        job,
        integration: integration.map(|(id, _, _)| id),
        platform: integration.map(|(_, p, _)| p),
        run_at,
        publish_at,
    })
}
