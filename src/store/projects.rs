//! `projects`: one brand or store.

use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::Result;

/// Creates a project and returns its id.
pub async fn create(db: impl PgExecutor<'_>, name: &str, store_url: Option<&str>) -> Result<Uuid> {
    Ok(
        sqlx::query_scalar("INSERT INTO projects (name, store_url) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(store_url)
            .fetch_one(db)
            .await?,
    )
}

/// The project's name, if it exists.
pub async fn name(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Whether the project exists.
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(name(db, id).await?.is_some())
}

/// The store URLs of projects that are not archived.
pub async fn active_store_urls(pool: &PgPool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT store_url FROM projects WHERE archived_at IS NULL AND store_url IS NOT NULL",
    )
    .fetch_all(pool)
    .await?)
}

/// Archives projects with no job in the last `days`, none in flight or waiting, and no
/// change; with `dry_run`, counts them.
pub async fn archive_idle(pool: &PgPool, days: i32, dry_run: bool) -> Result<u64> {
    let idle = "FROM projects p
        WHERE p.archived_at IS NULL AND p.updated_at < now() - $1 * interval '1 day'
          AND NOT EXISTS (
              SELECT 1 FROM jobs j WHERE j.project_id = p.id
                AND (j.created_at > now() - $1 * interval '1 day'
                     OR j.status IN ('queued', 'running', 'needs_approval')))";
    if dry_run {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {idle}")))
            .bind(days)
            .fetch_one(pool)
            .await?;
        return Ok(n as u64);
    }
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE projects SET archived_at = now(), updated_at = now()
         WHERE id IN (SELECT p.id {idle})"
    )))
    .bind(days)
    .execute(pool)
    .await?
    .rows_affected())
}
