//! Connecting to Postgres: `DATABASE_URL` when set, otherwise the embedded cluster under
//! `COPYDESK_HOME`; and the migrations in `migrations/`, compiled into the binary.

pub mod embedded;

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Settings;

/// Every migration in `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// What went wrong reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    BadUrl(sqlx::Error),
    #[error(transparent)]
    Embedded(#[from] embedded::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open pool, and the embedded cluster behind it when there is one. The cluster is
/// stopped when the last copydesk process using it drops its `Database`.
pub struct Database {
    pub pool: PgPool,
    /// Held for its `Drop`: stops the embedded cluster when this process was its last user.
    pub cluster: Option<embedded::Cluster>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("embedded", &self.cluster.is_some())
            .finish()
    }
}

impl Database {
    /// Opens `DATABASE_URL`, or starts (or reuses) the embedded cluster.
    pub async fn open(settings: &Settings) -> Result<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                let opts: PgConnectOptions = url.parse().map_err(Error::BadUrl)?;
                let pool = pool_options(settings).connect_with(opts).await?;
                Ok(Self {
                    pool,
                    cluster: None,
                })
            }
            _ => {
                let home = std::env::var_os("COPYDESK_HOME")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| settings.database.home.clone());
                let cluster = tokio::task::spawn_blocking(move || {
                    embedded::Cluster::ensure(&home, embedded::Options::default())
                })
                .await
                .expect("embedded cluster start does not panic")?;
                cluster.create_database("copydesk").await?;
                let pool = pool_options(settings)
                    .connect_with(cluster.connect_options("copydesk"))
                    .await?;
                Ok(Self {
                    pool,
                    cluster: Some(cluster),
                })
            }
        }
    }
}

/// Pool settings shared by every way of connecting.
pub fn pool_options(settings: &Settings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.database.max_connections.max(2))
        .acquire_timeout(Duration::from_secs(settings.database.acquire_timeout_secs))
}

/// Applies every pending migration; returns how many were applied.
pub async fn migrate(pool: &PgPool) -> Result<usize> {
    let before = applied_versions(pool).await?.len();
    MIGRATOR.run(pool).await?;
    Ok(applied_versions(pool).await?.len().saturating_sub(before))
}

/// Reverts the newest applied migration; returns its description, if any was applied.
pub async fn revert_newest(pool: &PgPool) -> Result<Option<String>> {
    let applied = applied_versions(pool).await?;
    let Some(newest) = applied.iter().max().copied() else {
        return Ok(None);
    };
    let target = applied
        .iter()
        .filter(|v| **v < newest)
        .max()
        .copied()
        .unwrap_or(0);
    MIGRATOR.undo(pool, target).await?;
    Ok(MIGRATOR
        .iter()
        .find(|m| m.version == newest)
        .map(|m| format!("{} {}", m.version, m.description)))
}

/// Migrations compiled into this binary that the database has not applied.
pub async fn pending(pool: &PgPool) -> Result<Vec<String>> {
    let applied = applied_versions(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() || !m.migration_type.is_down_migration())
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}
