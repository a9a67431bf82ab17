//! `projects`: one brand or store.

use crate::db::Db;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;

/// Creates a project of `tenant` (none: the writer's, `default` for the owner) and
/// returns its id.
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant: Option<Uuid>,
    name: &str,
    store_url: Option<&str>,
) -> Result<Uuid> {
    Ok(crate::db::query_scalar(
        "INSERT INTO projects (tenant_id, name, store_url) VALUES ($3, $1, $2) RETURNING id",
    )
    .bind(name)
    .bind(store_url)
    .bind(tenant)
    .fetch_one(db)
    .await?)
}

/// The project's tenant, if the project exists.
pub async fn tenant(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>> {
    Ok(
        crate::db::query_scalar("SELECT tenant_id FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The project's name, if it exists.
pub async fn name(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<String>> {
    Ok(
        crate::db::query_scalar("SELECT name FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Whether the project exists.
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(name(db, id).await?.is_some())
}

/// The store URLs of `tenant`'s projects that are not archived.
pub async fn active_store_urls(pool: &Db, tenant: Uuid) -> Result<Vec<String>> {
    Ok(crate::db::query_scalar(
        "SELECT store_url FROM projects
         WHERE tenant_id = $1 AND archived_at IS NULL AND store_url IS NOT NULL",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Archives projects with no job in the last `days`, none in flight or waiting, and no
/// change; with `dry_run`, counts them.
pub async fn archive_idle(pool: &Db, days: i32, dry_run: bool) -> Result<u64> {
    let idle = "FROM projects p
        WHERE p.archived_at IS NULL AND p.updated_at < now() - $1 * interval '1 day'
          AND NOT EXISTS (
              SELECT 1 FROM jobs j WHERE j.project_id = p.id
                AND (j.created_at > now() - $1 * interval '1 day'
                     OR j.status IN ('queued', 'running', 'needs_approval')))";
    if dry_run {
        let n: i64 =
            crate::db::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {idle}")))
                .bind(days)
                .fetch_one(pool)
                .await?;
        return Ok(n as u64);
    }
    Ok(crate::db::query(sqlx::AssertSqlSafe(format!(
        "UPDATE projects SET archived_at = now(), updated_at = now()
         WHERE id IN (SELECT p.id {idle})"
    )))
    .bind(days)
    .execute(pool)
    .await?
    .rows_affected())
}
