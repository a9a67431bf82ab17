//! `publish_attempts`: the record that makes publishing safe to retry. An attempt is
//! committed as `sending` before its request leaves; the answer turns it into `sent`
//! (with the external id and URL) or `not_sent`; a lost answer leaves it `sending`, and
//! the next attempt reconciles with the platform before it posts again.

use crate::db::Db;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Published;
use crate::{
    domain::{AttemptState, Platform},
    store::Result,
};

/// One recorded attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: Uuid,
    pub attempt: i32,
    pub state: AttemptState,
    pub external_id: Option<String>,
    pub url: Option<String>,
    /// When the attempt was recorded (the database's clock): its post cannot be older.
    pub created_at: DateTime<Utc>,
}

/// The attempts of a publishing job to one integration, oldest first.
pub async fn for_job(pool: &Db, job: Uuid, integration: Uuid) -> Result<Vec<Attempt>> {
    Ok(crate::db::query_as(
        "SELECT id, attempt, state, external_id, url, created_at FROM publish_attempts
         WHERE job_id = $1 AND integration_id = $2 ORDER BY created_at",
    )
    .bind(job)
    .bind(integration)
    .fetch_all(pool)
    .await?)
}

/// What identifies the post on the platform without its id.
pub struct NewAttempt<'a> {
    pub job_id: Uuid,
    pub attempt: i32,
    pub artifact_id: Uuid,
    pub integration_id: Uuid,
    pub platform: Platform,
    /// The slug or handle (WordPress, Shopify) or the exact text (LinkedIn, X, Facebook).
    pub lookup_key: &'a str,
    /// The normalised text's SHA-256 ([`super::content_hash`]): what the duplicate
    /// guard compares.
    pub content_hash: &'a str,
}

/// Another job's post of the same text to the same integration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Earlier {
    pub job_id: Uuid,
    /// `sent`, or `sending` (its answer not in yet, or lost).
    pub state: AttemptState,
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Records an attempt as `sending` (committed at once: before the request leaves) —
/// unless, with a window of `window_days` (0: none) and not `again`, another job sent
/// or is sending the same text to the same integration within it: then that one, and
/// nothing is recorded. The check and the record hold a transaction-scoped lock on the
/// integration and the text, so two jobs racing with the same text do not both pass.
pub async fn record_sending(
    pool: &Db,
    a: &NewAttempt<'_>,
    window_days: u32,
    again: bool,
) -> Result<std::result::Result<Attempt, Earlier>> {
    let mut tx = pool.begin().await?;
    if window_days > 0 && !again {
        crate::db::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || $2, 0))")
            .bind(a.integration_id)
            .bind(a.content_hash)
            .execute(&mut *tx)
            .await?;
        let earlier: Option<Earlier> = crate::db::query_as(
            "SELECT job_id, state, url, created_at FROM publish_attempts
              WHERE integration_id = $1 AND content_hash = $2 AND state <> 'not_sent'
                AND job_id <> $3 AND created_at > now() - $4 * interval '1 day'
              ORDER BY created_at DESC LIMIT 1",
        )
        .bind(a.integration_id)
        .bind(a.content_hash)
        .bind(a.job_id)
        .bind(f64::from(window_days))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(e) = earlier {
            return Ok(Err(e));
        }
    }
    let attempt = crate::db::query_as(
        "INSERT INTO publish_attempts
                (job_id, attempt, artifact_id, integration_id, platform, lookup_key, content_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, attempt, state, external_id, url, created_at",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.artifact_id)
    .bind(a.integration_id)
    .bind(a.platform)
    .bind(a.lookup_key)
    .bind(a.content_hash)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(attempt))
}

/// Sets the outcome of attempts: `sent` with the post, or `not_sent` with why.
pub async fn mark(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    state: AttemptState,
    post: Option<&Published>,
    error: Option<&str>,
) -> Result<()> {
    crate::db::query(
        "UPDATE publish_attempts SET state = $2, external_id = $3, url = $4, error = coalesce($5, error),
                updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .bind(state)
    .bind(post.map(|p| &p.external_id))
    .bind(post.map(|p| &p.url))
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Notes why an attempt's outcome is unknown; it stays `sending`.
pub async fn note_unknown(db: impl PgExecutor<'_>, id: Uuid, error: &str) -> Result<()> {
    crate::db::query("UPDATE publish_attempts SET error = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(error)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether another job already recorded `external_id` on `integration` as its post:
/// reconciliation must never take another job's post for its own.
pub async fn recorded_by_another_job(
    db: impl PgExecutor<'_>,
    integration: Uuid,
    external_id: &str,
    job: Uuid,
) -> Result<bool> {
    Ok(crate::db::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM publish_attempts
                        WHERE integration_id = $1 AND external_id = $2 AND state = 'sent' AND job_id <> $3)",
    )
    .bind(integration)
    .bind(external_id)
    .bind(job)
    .fetch_one(db)
    .await?)
}
