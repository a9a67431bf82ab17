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
pub async fn register_kinds<'c, E: sqlx::PgExecutor<'c> + Copy>(
    pool: E,
    catalog: &Catalog,
) -> Result<u64> {
    let names: Vec<&str> = catalog.names();
    let (mut versioned, mut versions, mut schemas, mut aliases) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (kind, contract) in catalog.contracts() {
        aliases.push(contract.alias_of.as_deref());
        // An alias's contract is its kind's, registered under that kind.
        if contract.alias_of.is_none() {
            versioned.push(kind);
            versions.push(contract.version as i32);
            schemas.push(contract.text.as_deref().cloned());
        }
    }
    // The kinds first (an alias and its kind in one statement: the reference is
    // checked at its end), then each version's schema (the last registrant's, should
    // two releases disagree).
    let new: i64 = crate::db::query_scalar(
        "WITH kinds AS (
             INSERT INTO job_kinds AS k (name, alias_of)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (name) DO UPDATE SET alias_of = EXCLUDED.alias_of
                 WHERE EXCLUDED.alias_of IS NOT NULL
                   AND k.alias_of IS DISTINCT FROM EXCLUDED.alias_of
             RETURNING xmax = 0 AS inserted)
         SELECT count(*) FILTER (WHERE inserted) FROM kinds",
    )
    .bind(&names)
    .bind(&aliases)
    .fetch_one(pool)
    .await?;
    crate::db::query(
        "INSERT INTO job_kind_versions (kind, version, schema)
         SELECT * FROM unnest($1::text[], $2::int[], $3::jsonb[])
         ON CONFLICT (kind, version) DO UPDATE SET schema = EXCLUDED.schema, registered_at = now()
             WHERE job_kind_versions.schema IS DISTINCT FROM EXCLUDED.schema",
    )
    .bind(&versioned)
    .bind(&versions)
    .bind(&schemas)
    .execute(pool)
    .await?;
    Ok(new as u64)
}

/// The kinds a `jobs` row may name, sorted.
pub async fn known_kinds<'c, E: sqlx::PgExecutor<'c>>(pool: E) -> Result<Vec<String>> {
    Ok(
        crate::db::query_scalar("SELECT name FROM job_kinds ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}
