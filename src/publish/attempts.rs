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
}

/// Records an attempt as `sending` (committed at once: before the request leaves).
pub async fn record_sending(db: impl PgExecutor<'_>, a: &NewAttempt<'_>) -> Result<Attempt> {
    Ok(crate::db::query_as(
        "INSERT INTO publish_attempts (job_id, attempt, artifact_id, integration_id, platform, lookup_key)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, attempt, state, external_id, url, created_at",
    )
    .bind(a.job_id)
    .bind(a.attempt)
    .bind(a.artifact_id)
    .bind(a.integration_id)
    .bind(a.platform)
    .bind(a.lookup_key)
    .fetch_one(db)
    .await?)
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
