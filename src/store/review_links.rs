//! `review_links`: who may decide one approval through a signed URL, until when, and
//! whether they already did. The URL's signature is `links`' business; a link row is
//! the state the URL cannot carry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result};

/// A review link as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReviewLink {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub approval_id: Uuid,
    pub name: String,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_action: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ReviewLink {
    /// Why the link can no longer be used (`None`: it can).
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<String> {
        if let Some(at) = self.used_at {
            let action = self.used_action.as_deref().unwrap_or("used");
            return Some(format!(
                "this link was used: the draft was {action} on {}",
                at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        if self.revoked_at.is_some() {
            return Some("this link was withdrawn".into());
        }
        if self.expires_at <= now {
            return Some(format!(
                "this link expired on {}",
                self.expires_at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        None
    }
}

const COLUMNS: &str = "id, tenant_id, approval_id, name, created_by, expires_at, used_at, used_action, revoked_at, created_at";

/// A link to the pending approval `approval` (of the session's tenant: another
/// tenant's approval is not found).
pub async fn create(
    conn: &mut PgConnection,
    approval: Uuid,
    name: &str,
    by: &str,
    expires_at: DateTime<Utc>,
) -> Result<ReviewLink> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::Invalid(
            "a review link needs a name of 1 to 200 characters (whom it is for)".into(),
        ));
    }
    let a = super::approvals::get(&mut *conn, approval)
        .await?
        .ok_or(Error::NotFound {
            what: "approval",
            id: approval,
        })?;
    if a.status != crate::domain::ApprovalStatus::Pending {
        return Err(Error::WrongState {
            what: "approval",
            id: approval,
            state: a.status.to_string(),
            action: "a review link",
            needs: "pending",
        });
    }
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO review_links (tenant_id, approval_id, name, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(a.tenant_id)
    .bind(approval)
    .bind(name)
    .bind(by)
    .bind(expires_at)
    .fetch_one(conn)
    .await?)
}

/// One link.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ReviewLink>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM review_links WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The links of one approval, newest first.
pub async fn for_approval(db: impl PgExecutor<'_>, approval: Uuid) -> Result<Vec<ReviewLink>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM review_links WHERE approval_id = $1 ORDER BY created_at DESC"
    )))
    .bind(approval)
    .fetch_all(db)
    .await?)
}

/// Uses the link for `action` if it is still usable, in one statement (of two people
/// who open the link at once, one decides). `None`: it is not (used, revoked, expired).
pub async fn use_once(
    db: impl PgExecutor<'_>,
    id: Uuid,
    action: &str,
) -> Result<Option<ReviewLink>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE review_links SET used_at = now(), used_action = $2
         WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(action)
    .fetch_optional(db)
    .await?)
}

/// Withdraws a link (of the session's tenant). Revoking twice is not an error.
pub async fn revoke(db: impl PgExecutor<'_>, id: Uuid) -> Result<ReviewLink> {
    crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE review_links SET revoked_at = coalesce(revoked_at, now())
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound {
        what: "review link",
        id,
    })
}
