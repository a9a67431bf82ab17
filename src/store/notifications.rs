//! `notifications`: what needs a person, as rows of its tenant. They are raised in the
//! transaction of their cause — by the database's own triggers for a job that failed
//! for good and an approval waiting (so plain SQL raises them too), by [`raise`] for
//! causes the application sees — and repeats of one cause fold into its unread row
//! (`count`, `last_at`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;
use crate::domain::{ChannelKind, DeliveryStatus, Severity};

/// A notification to raise.
#[derive(Debug, Clone)]
pub struct New<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub job: Option<Uuid>,
    pub severity: Severity,
    /// What happened, e.g. `job_failed`, `approval_waiting`.
    pub kind: &'a str,
    /// The cause within its kind: repeats of it fold into one unread row.
    pub cause: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub data: Value,
}

/// Raises `n` in the caller's transaction (or folds it into the unread one of its
/// cause); returns its id.
pub async fn raise(db: impl PgExecutor<'_>, n: &New<'_>) -> Result<Uuid> {
    Ok(
        crate::db::query_scalar("SELECT copydesk_notify($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(n.tenant)
            .bind(n.project)
            .bind(n.job)
            .bind(n.severity)
            .bind(n.kind)
            .bind(n.cause)
            .bind(n.title)
            .bind(n.body)
            .bind(&n.data)
            .fetch_one(db)
            .await?,
    )
}

/// One notification as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub tenant: String,
    pub project_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub severity: Severity,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub count: i32,
    pub created_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub read_by: Option<String>,
}

/// Notifications, latest first: of one tenant or all, unread ones only or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    unread: bool,
    limit: i64,
) -> Result<Vec<Notification>> {
    Ok(crate::db::query_as(
        "SELECT n.id, t.slug AS tenant, n.project_id, n.job_id, n.severity, n.kind, n.title,
                n.body, n.data, n.count, n.created_at, n.last_at, n.read_at, n.read_by
           FROM notifications n JOIN tenants t ON t.id = n.tenant_id
          WHERE ($1::uuid IS NULL OR n.tenant_id = $1) AND (NOT $2 OR n.read_at IS NULL)
          ORDER BY n.last_at DESC, n.id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(unread)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Marks one notification read by `by`; false when there is no such unread one (of
/// `tenant`, when given).
pub async fn read(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    id: Uuid,
    by: &str,
) -> Result<bool> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $3
          WHERE id = $1 AND read_at IS NULL AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Marks the unread notification of `tenant`'s `kind` and `cause` read by `by`: a
/// condition the application saw end (keys readable again); whether there was one.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    kind: &str,
    cause: &str,
    by: &str,
) -> Result<bool> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $4
          WHERE tenant_id = $1 AND kind = $2 AND cause = $3 AND read_at IS NULL",
    )
    .bind(tenant)
    .bind(kind)
    .bind(cause)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected()
        > 0)
}

/// Marks the unread notifications of `tenant`'s `kind` read by `by`, but those of the
/// causes in `but` (conditions still going on): how many ended.
pub async fn resolve_all_but(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    kind: &str,
    but: &[String],
    by: &str,
) -> Result<u64> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $4
          WHERE tenant_id = $1 AND kind = $2 AND read_at IS NULL AND NOT (cause = ANY ($3))",
    )
    .bind(tenant)
    .bind(kind)
    .bind(but)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected())
}

/// Marks every unread notification (of `tenant`, when given) read by `by`; how many.
pub async fn read_all(db: impl PgExecutor<'_>, tenant: Option<Uuid>, by: &str) -> Result<u64> {
    Ok(crate::db::query(
        "UPDATE notifications SET read_at = now(), read_by = $2
          WHERE read_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1)",
    )
    .bind(tenant)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected())
}

/// Raises `approval_reminder` for every approval still pending `hours` after it was
/// created and not reminded of before (or with `dry_run`, counts them: the CASE keeps
/// the raise from being evaluated); how many.
pub async fn remind_approvals(db: impl PgExecutor<'_>, hours: u32, dry_run: bool) -> Result<u64> {
    let n: i64 = crate::db::query_scalar(
        "SELECT count(*) FILTER (WHERE CASE WHEN $2 THEN true ELSE copydesk_notify(
                    a.tenant_id, ar.project_id, a.job_id, 'warning', 'approval_reminder', a.id::text,
                    format('%s has waited %s hours for approval',
                           copydesk_approval_subject(a.artifact_id),
                           floor(extract(epoch FROM now() - a.created_at) / 3600)),
                    '', jsonb_build_object('approval_id', a.id, 'waiting_since', a.created_at))
                  IS NOT NULL END)
           FROM approvals a JOIN artifacts ar ON ar.id = a.artifact_id
          WHERE a.status = 'pending' AND a.created_at < now() - $1 * interval '1 hour'
            AND NOT EXISTS (SELECT 1 FROM notifications n
                             WHERE n.tenant_id = a.tenant_id AND n.kind = 'approval_reminder'
                               AND n.cause = a.id::text)",
    )
    .bind(f64::from(hours))
    .bind(dry_run)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// A delivery channel of a tenant (a webhook or an email address), as listed: never a
/// webhook's secret, nor its URL's path.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Channel {
    pub id: Uuid,
    pub tenant: String,
    pub project_id: Option<Uuid>,
    pub kind: ChannelKind,
    pub target: String,
    pub min_severity: Severity,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Its latest delivery: status, the receiver's status code, when.
    pub last_status: Option<DeliveryStatus>,
    pub last_answer_status: Option<i32>,
    pub last_at: Option<DateTime<Utc>>,
}

/// A webhook channel to add: what is shown of it, and its URL and signing secret, both
/// encrypted.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    pub tenant: Uuid,
    pub project: Option<Uuid>,
    pub shown: &'a str,
    pub url: &'a [u8],
    pub secret: &'a [u8],
    pub min_severity: Severity,
}

/// Adds a webhook channel; returns its id.
pub async fn add_webhook(db: impl PgExecutor<'_>, w: &NewWebhook<'_>, by: &str) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO notification_channels
                (tenant_id, project_id, kind, target, url, min_severity, secret, created_by)
         VALUES ($1, $2, 'webhook', $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(w.tenant)
    .bind(w.project)
    .bind(w.shown)
    .bind(w.url)
    .bind(w.min_severity)
    .bind(w.secret)
    .bind(by)
    .fetch_one(db)
    .await?)
}

/// Adds an email channel sending to `address`; returns its id.
pub async fn add_email(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    project: Option<Uuid>,
    address: &str,
    min_severity: Severity,
    by: &str,
) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO notification_channels
                (tenant_id, project_id, kind, target, min_severity, created_by)
         VALUES ($1, $2, 'email', $3, $4, $5) RETURNING id",
    )
    .bind(tenant)
    .bind(project)
    .bind(address)
    .bind(min_severity)
    .bind(by)
    .fetch_one(db)
    .await?)
}

/// Channels (of one tenant, or all), oldest first, each with its latest delivery.
pub async fn channels(db: impl PgExecutor<'_>, tenant: Option<Uuid>) -> Result<Vec<Channel>> {
    Ok(crate::db::query_as(
        "SELECT c.id, t.slug AS tenant, c.project_id, c.kind, c.target, c.min_severity,
                c.created_by, c.created_at, d.status AS last_status,
                d.answer_status AS last_answer_status, d.created_at AS last_at
           FROM notification_channels c JOIN tenants t ON t.id = c.tenant_id
           LEFT JOIN LATERAL (SELECT status, answer_status, created_at FROM notification_deliveries
                               WHERE channel_id = c.id ORDER BY created_at DESC LIMIT 1) d ON true
          WHERE $1::uuid IS NULL OR c.tenant_id = $1
          ORDER BY c.created_at, c.id",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?)
}

/// Removes a channel (and its deliveries); false when there is none.
pub async fn remove_channel(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(
        crate::db::query("DELETE FROM notification_channels WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?
            .rows_affected()
            == 1,
    )
}

/// What a delivery sends, and where.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub channel_id: Uuid,
    pub channel_kind: ChannelKind,
    /// A webhook's URL as shown (its path hidden), or an email address.
    pub target: String,
    /// A webhook's whole URL and signing secret, encrypted.
    pub url: Option<Vec<u8>>,
    pub secret: Option<Vec<u8>>,
    pub notification_id: Uuid,
    pub project_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub severity: Severity,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

/// A delivery with its notification and channel; `None` when it is gone (its channel
/// was removed).
pub async fn delivery(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Delivery>> {
    Ok(crate::db::query_as(
        "SELECT d.id, d.status, d.attempts, c.id AS channel_id, c.kind AS channel_kind, c.target, c.url, c.secret,
                n.id AS notification_id, n.project_id, n.job_id, n.severity, n.kind, n.title,
                n.body, n.data, n.created_at
           FROM notification_deliveries d
           JOIN notification_channels c ON c.id = d.channel_id
           JOIN notifications n ON n.id = d.notification_id
          WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The two tables of deliveries: a notification's to a channel, an event's to a
/// subscription.
#[derive(Debug, Clone, Copy)]
pub enum Deliveries {
    Notifications,
    Events,
}

/// Records one attempt of a delivery in its table: the receiver's status (none:
/// unreachable) and answer (kept to 2,000 characters), and whether it took it.
pub async fn record_attempt_in(
    db: impl PgExecutor<'_>,
    table: Deliveries,
    id: Uuid,
    answer_status: Option<u16>,
    answer: &str,
    delivered: bool,
) -> Result<()> {
    let table = match table {
        Deliveries::Notifications => "notification_deliveries",
        Deliveries::Events => "event_deliveries",
    };
    crate::db::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table}
            SET attempts = attempts + 1, answer_status = $2, answer = left($3, 2000),
                status = CASE WHEN $4 THEN 'delivered' ELSE status END,
                delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END
          WHERE id = $1"
    )))
    .bind(id)
    .bind(answer_status.map(i32::from))
    .bind(answer)
    .bind(delivered)
    .execute(db)
    .await?;
    Ok(())
}

/// A channel to send through: its kind, its target (a webhook's URL as shown, or an
/// address), and a webhook's encrypted URL and secret.
pub type ChannelSecret = (String, String, Option<Vec<u8>>, Option<Vec<u8>>);

/// A channel's kind, target, and a webhook's encrypted URL and secret, for a test
/// delivery.
pub async fn channel_secret(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ChannelSecret>> {
    Ok(crate::db::query_as(
        "SELECT kind, target, url, secret FROM notification_channels WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}
