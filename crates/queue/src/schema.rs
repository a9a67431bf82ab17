//! The engine's schema: the migrations in `crates/queue/migrations`, compiled in and
//! applied with a history of their own (`copydesk_queue_migrations`), and the kinds a
//! `jobs` row may name (`job_kinds`, filled from a [`Catalog`]).
//!
//! An application migrates the engine first, then adds its own layer (its columns,
//! keys, triggers and row security) on top. A database whose `jobs` table predates this
//! history (made by an application's migrations before the engine owned them) gets the
//! baseline recorded as applied without running it; every later migration runs as usual.

use std::sync::LazyLock;

use sqlx::{PgPool, migrate::Migrator};

use crate::{Catalog, Result};

/// The table holding which engine migrations a database has applied.
pub const HISTORY: &str = "copydesk_queue_migrations";

/// The first engine migration: the schema as the engine took it over.
pub const BASELINE: i64 = 20261207000001;

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut m = sqlx::migrate!("./migrations");
    m.dangerous_set_table_name(HISTORY);
    m
});

/// The engine's migrations, compiled in, with their history table set.
pub fn migrator() -> &'static Migrator {
    &MIGRATOR
}

/// Applies the engine's pending migrations; returns how many ran. On a database whose
/// `jobs` table is older than the engine's history, the baseline is recorded, not run.
///
/// Takes a pool of sessions (migrations hold a session's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<usize> {
    if !table_exists(pool, HISTORY).await? && table_exists(pool, "jobs").await? {
        MIGRATOR.skip(pool, Some(BASELINE)).await?;
    }
    let before = applied(pool).await?.len();
    MIGRATOR.run(pool).await?;
    Ok(applied(pool).await?.len().saturating_sub(before))
}

/// Versions of the engine's migrations the database has applied, oldest first.
pub async fn applied<'c, E: sqlx::PgExecutor<'c> + Copy>(pool: E) -> Result<Vec<i64>> {
    history(pool, HISTORY).await
}

/// Versions recorded in the sqlx migration history `table`, oldest first; none when the
/// table does not exist.
pub async fn history<'c, E: sqlx::PgExecutor<'c> + Copy>(pool: E, table: &str) -> Result<Vec<i64>> {
    if !table_exists(pool, table).await? {
        return Ok(Vec::new());
    }
    Ok(crate::db::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    )))
    .fetch_all(pool)
    .await?)
}

/// Whether `table` exists on the search path.
pub async fn table_exists<'c, E: sqlx::PgExecutor<'c>>(pool: E, table: &str) -> Result<bool> {
    Ok(
        crate::db::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await?,
    )
}

/// Makes every kind of `catalog` one a `jobs` row may name (`job_kinds`); returns how
/// many were new. Workers call it as they start; an application calls it after
/// migrating, so plain-SQL writers can enqueue at once.
pub async fn register_kinds<'c, E: sqlx::PgExecutor<'c>>(
    pool: E,
    catalog: &Catalog,
) -> Result<u64> {
    let names: Vec<&str> = catalog.names();
    Ok(crate::db::query(
        "INSERT INTO job_kinds (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&names)
    .execute(pool)
    .await?
    .rows_affected())
}

/// The kinds a `jobs` row may name, sorted.
pub async fn known_kinds<'c, E: sqlx::PgExecutor<'c>>(pool: E) -> Result<Vec<String>> {
    Ok(
        crate::db::query_scalar("SELECT name FROM job_kinds ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}
