//! Client review links: making one for a pending approval, withdrawing it, and a
//! decision taken through it. The link is used in the same transaction as the decision
//! it carries (one statement that succeeds only while it is unused, unrevoked and
//! unexpired), so a link decides once even when two people open it together, and a
//! decision that fails (the approval was decided meanwhile) leaves it unused.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Result, decisions};
use crate::store::{self, review_links::ReviewLink};

/// A new link to the pending approval `approval`, audited as made by `by`.
pub async fn create_in(
    conn: &mut PgConnection,
    approval: Uuid,
    name: &str,
    by: &str,
    expires_at: DateTime<Utc>,
) -> Result<ReviewLink> {
    let link = store::review_links::create(&mut *conn, approval, name, by, expires_at).await?;
    audit(conn, &link, by, "review_link.created").await?;
    Ok(link)
}

/// Withdraws a link, audited.
pub async fn revoke_in(conn: &mut PgConnection, id: Uuid, by: &str) -> Result<ReviewLink> {
    let link = store::review_links::revoke(&mut *conn, id).await?;
    audit(conn, &link, by, "review_link.revoked").await?;
    Ok(link)
}

async fn audit(conn: &mut PgConnection, link: &ReviewLink, by: &str, action: &str) -> Result<()> {
    store::audit::record(
        &mut *conn,
        &store::audit::Entry {
            tenant: Some(link.tenant_id),
            actor: by,
            action,
            target_table: Some("review_links"),
            target_id: Some(link.id),
            details: json!({"name": link.name, "approval_id": link.approval_id,
                            "expires_at": link.expires_at}),
        },
    )
    .await?;
    Ok(())
}

/// What a person decided through a link.
#[derive(Debug, Clone)]
pub enum LinkDecision {
    Approve {
        notes: Option<String>,
    },
    Reject {
        notes: String,
    },
    /// Their version of the draft (a new human version the approval moves to; it
    /// stays pending for the team).
    Edit {
        content: String,
    },
}

impl LinkDecision {
    fn action(&self) -> &'static str {
        match self {
            LinkDecision::Approve { .. } => "approved",
            LinkDecision::Reject { .. } => "rejected",
            LinkDecision::Edit { .. } => "edited",
        }
    }
}

/// Who the audit log and the approval name for a link's decision.
pub fn actor(link: &ReviewLink) -> String {
    format!("{} (review link)", link.name)
}

/// Takes `decision` through link `id`: uses the link, then decides (or edits) as
/// [`actor`]. A link that is used, revoked or expired decides nothing
/// (`Error::Store(WrongState)`).
pub async fn decide_in(
    conn: &mut PgConnection,
    id: Uuid,
    decision: &LinkDecision,
) -> Result<ReviewLink> {
    let link = store::review_links::use_once(&mut *conn, id, decision.action())
        .await?
        .ok_or(store::Error::WrongState {
            what: "review link",
            id,
            state: "used, withdrawn or expired".into(),
            action: "a decision",
            needs: "a link not used yet",
        })?;
    let by = actor(&link);
    match decision {
        LinkDecision::Approve { notes } => {
            decisions::decide_in(conn, link.approval_id, true, &by, notes.as_deref()).await?;
        }
        LinkDecision::Reject { notes } => {
            decisions::decide_in(conn, link.approval_id, false, &by, Some(notes)).await?;
        }
        LinkDecision::Edit { content } => {
            let approval = store::approvals::get(&mut *conn, link.approval_id)
                .await?
                .ok_or(store::Error::NotFound {
                    what: "approval",
                    id: link.approval_id,
                })?;
            if approval.status != crate::domain::ApprovalStatus::Pending {
                return Err(store::Error::WrongState {
                    what: "approval",
                    id: approval.id,
                    state: approval.status.to_string(),
                    action: "an edit through a review link",
                    needs: "pending",
                }
                .into());
            }
            decisions::edit_draft_in(conn, approval.artifact_id, content, &by).await?;
        }
    }
    audit(conn, &link, &by, "review_link.used").await?;
    Ok(link)
}
