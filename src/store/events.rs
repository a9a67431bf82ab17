//! `event_subscriptions`, `events`, `event_deliveries`: lifecycle events for other
//! services. The database raises the events (`copydesk_emit`, called by triggers on
//! approvals, publication artifacts and failed pipeline jobs), writing an event only
//! when a subscription of its tenant takes it, one delivery per subscription and one
//! `deliver_event` job per delivery. Subscriptions are another system's webhooks, kept
//! apart from the notification channels people read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::DeliveryStatus;

/// Every event type, as `type` names it in the message.
pub const TYPES: [&str; 5] = [
    "approval.waiting",
    "approval.decided",
    "publication.made",
    "publication.failed",
    "pipeline.channel_finished",
];

/// A subscription as listings show it: never its URL's path or its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Option<Uuid>,
    /// The URL as shown: its origin, the path hidden.
    pub target: String,
    /// The event types it takes; empty: every type.
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Its last delivery's status, answer status and time, if it has had one.
    pub last_status: Option<DeliveryStatus>,
    pub last_answer_status: Option<i32>,
    pub last_at: Option<DateTime<Utc>>,
}

/// A subscription to add: the URL and secret already sealed.
#[derive(Debug, Clone)]
pub struct NewSubscription<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub target: &'a str,
    pub url: &'a [u8],
    pub secret: &'a [u8],
    pub events: &'a [String],
    pub by: &'a str,
}

/// Checks event type names: each must be one of [`TYPES`].
pub fn check_types(events: &[String]) -> Result<()> {
    for e in events {
        if !TYPES.contains(&e.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown event type {e:?}: known types are {}",
                TYPES.join(", ")
            )));
        }
    }
    Ok(())
}

const COLUMNS: &str =
    "s.id, s.tenant_id, s.project_id, s.target, s.events, s.created_by, s.created_at,
     l.status AS last_status, l.answer_status AS last_answer_status,
     coalesce(l.delivered_at, l.created_at) AS last_at";

const LAST: &str = "LEFT JOIN LATERAL (
         SELECT d.status, d.answer_status, d.delivered_at, d.created_at FROM event_deliveries d
          WHERE d.subscription_id = s.id ORDER BY d.created_at DESC LIMIT 1) l ON true";

/// Adds a subscription; its id.
pub async fn subscribe(db: impl PgExecutor<'_>, s: &NewSubscription<'_>) -> Result<Uuid> {
    check_types(s.events)?;
    Ok(crate::db::query_scalar(
        "INSERT INTO event_subscriptions (tenant_id, project_id, target, url, secret, events, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(s.tenant)
    .bind(s.project)
    .bind(s.target)
    .bind(s.url)
    .bind(s.secret)
    .bind(s.events)
    .bind(s.by)
    .fetch_one(db)
    .await?)
}

/// Subscriptions, of one tenant or all, newest first, each with its last delivery.
pub async fn subscriptions(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
) -> Result<Vec<Subscription>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM event_subscriptions s {LAST}
          WHERE $1::uuid IS NULL OR s.tenant_id = $1
          ORDER BY s.created_at DESC, s.id DESC"
    )))
    .bind(tenant)
    .fetch_all(db)
    .await?)
}

/// Removes a subscription (its pending deliveries go with it): its tenant, or `None`
/// when there was none.
pub async fn unsubscribe(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>> {
    Ok(
        crate::db::query_scalar(
            "DELETE FROM event_subscriptions WHERE id = $1 RETURNING tenant_id",
        )
        .bind(id)
        .fetch_optional(db)
        .await?,
    )
}

/// Whether a subscription exists (that `db` may see).
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(
        crate::db::query_scalar("SELECT EXISTS (SELECT 1 FROM event_subscriptions WHERE id = $1)")
            .bind(id)
            .fetch_one(db)
            .await?,
    )
}

/// One delivery as listings show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub event_id: Uuid,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub answer_status: Option<i32>,
    pub answer: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The latest deliveries, of one subscription or all that `db` sees, newest first.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    subscription: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    Ok(crate::db::query_as(
        "SELECT d.id, d.subscription_id, d.event_id, e.type, d.status, d.attempts,
                d.answer_status, d.answer, d.created_at, d.delivered_at
           FROM event_deliveries d JOIN events e ON e.id = d.event_id
          WHERE $1::uuid IS NULL OR d.subscription_id = $1
          ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
    )
    .bind(subscription)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// A delivery to make: its event and its subscription's sealed webhook.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub status: DeliveryStatus,
    pub subscription_id: Uuid,
    pub target: String,
    pub url: Vec<u8>,
    pub secret: Vec<u8>,
    pub event_id: Uuid,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

/// A delivery with its event and subscription; `None` when it is gone (its
/// subscription was removed).
pub async fn delivery(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Delivery>> {
    Ok(crate::db::query_as(
        "SELECT d.id, d.status, s.id AS subscription_id, s.target, s.url, s.secret,
                e.id AS event_id, e.type, e.data, e.created_at
           FROM event_deliveries d
           JOIN event_subscriptions s ON s.id = d.subscription_id
           JOIN events e ON e.id = d.event_id
          WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Deletes (or with `dry_run`, counts) the events older than `days` none of whose
/// deliveries is still pending, their deliveries with them, in batches of `batch`.
pub async fn expire(pool: &crate::db::Db, days: i32, batch: i64, dry_run: bool) -> Result<u64> {
    const OLD: &str = "e.created_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                           WHERE d.event_id = e.id AND d.status = 'pending')";
    if dry_run {
        let n: i64 = crate::db::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM events e WHERE {OLD}"
        )))
        .bind(days)
        .fetch_one(pool)
        .await?;
        return Ok(n as u64);
    }
    super::in_batches(batch, || async move {
        Ok(crate::db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM events WHERE id IN (
                 SELECT e.id FROM events e WHERE {OLD}
                 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )))
        .bind(days)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected())
    })
    .await
}
