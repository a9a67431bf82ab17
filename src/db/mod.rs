//! Connecting to Postgres: `DATABASE_URL` when set, otherwise the embedded cluster under
//! `COPYDESK_HOME`; and the migrations in `migrations/`, compiled into the binary.

pub mod embedded;

pub use copydesk_queue::db::{Db, query, query_as, query_scalar};

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{Pooler, Settings};

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
    #[error("{0}")]
    Setting(String),
    #[error(
        "{0} need a session, which a pooler in transaction mode does not keep: set \
         [database] listen_url (COPYDESK__DATABASE__LISTEN_URL) to a direct postgres:// URL \
         of the server, or run them with [database] pooler = \"none\" and DATABASE_URL \
         pointing at the server"
    )]
    NeedsDirect(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open pool, and the embedded cluster behind it when there is one. The cluster is
/// stopped when the last copydesk process using it drops its `Database`.
pub struct Database {
    pub pool: Db,
    /// Held for its `Drop`: stops the embedded cluster when this process was its last user.
    pub cluster: Option<embedded::Cluster>,
    /// Behind a pooler in transaction mode, where statements that need a session
    /// (migrations hold an advisory lock) go: `[database] listen_url`.
    direct: Direct,
}

enum Direct {
    /// No pooler: the pool's own connections are sessions.
    Pool,
    /// A pooler, and a direct URL to the server.
    Url(Box<PgConnectOptions>),
    /// A pooler and no direct URL: nothing that needs a session can run.
    None,
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
                let mut opts: PgConnectOptions = url.parse().map_err(Error::BadUrl)?;
                let direct = match settings.database.pooler {
                    Pooler::None => Direct::Pool,
                    Pooler::Transaction => {
                        copydesk_queue::db::set_pooled();
                        // Nothing cached per connection: the server behind it changes.
                        opts = opts.statement_cache_capacity(0);
                        match settings.database.listen_options() {
                            Ok(Some(o)) => Direct::Url(Box::new(o)),
                            Ok(None) => Direct::None,
                            Err(e) => return Err(Error::Setting(e.to_string())),
                        }
                    }
                };
                let pool = pool_options(settings).connect_with(opts).await?;
                Ok(Self {
                    pool: Db::new(pool),
                    cluster: None,
                    direct,
                })
            }
            _ => {
                let home = settings.home();
                let cluster = tokio::task::spawn_blocking(move || {
                    embedded::Cluster::ensure(&home, embedded::Options::default())
                })
                .await
                .expect("embedded cluster start does not panic")?;
                cluster.create_database("copydesk").await?;
                let pool = pool_options(settings)
                    .connect_with(cluster.connect_options("copydesk"))
                    .await?;
                // The embedded cluster is never behind a pooler.
                Ok(Self {
                    pool: Db::new(pool),
                    cluster: Some(cluster),
                    direct: Direct::Pool,
                })
            }
        }
    }
}

impl Database {
    /// Applies every pending migration; returns how many were applied. Behind a pooler,
    /// through the direct connection (`[database] listen_url`); with none, only when
    /// nothing is pending.
    pub async fn migrate(&self) -> Result<usize> {
        // Nothing to apply needs no session.
        if matches!(self.direct, Direct::None) && pending(&self.pool).await?.is_empty() {
            return Ok(0);
        }
        migrate(&*self.sessions("migrations").await?).await
    }

    /// Reverts the newest applied migration, as [`revert_newest`] does.
    pub async fn revert_newest(&self) -> Result<Option<String>> {
        revert_newest(&*self.sessions("migration reverts").await?).await
    }

    /// A pool whose connections are sessions, for `what`: the pool itself, or behind a
    /// pooler one connection to the direct URL (closed when dropped).
    async fn sessions(&self, what: &'static str) -> Result<std::borrow::Cow<'_, PgPool>> {
        match &self.direct {
            Direct::Pool => Ok(std::borrow::Cow::Borrowed(self.pool.pool())),
            Direct::Url(o) => Ok(std::borrow::Cow::Owned(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with((**o).clone())
                    .await?,
            )),
            Direct::None => Err(Error::NeedsDirect(what)),
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
pub async fn pending(pool: &Db) -> Result<Vec<String>> {
    let applied = applied_versions(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() || !m.migration_type.is_down_migration())
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

async fn applied_versions<'c, E: sqlx::PgExecutor<'c> + Copy>(pool: E) -> Result<Vec<i64>> {
    let exists: bool =
        crate::db::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(crate::db::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await?)
}
