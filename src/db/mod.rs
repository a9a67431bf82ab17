//! Connecting to Postgres: `DATABASE_URL` when set, otherwise the embedded cluster under
//! `COPYDESK_HOME`; and the migrations, compiled into the binary: the engine's first
//! (`crates/queue/migrations`, history `copydesk_queue_migrations`), then the
//! application's layer on top (`migrations/`, history `copydesk_migrations`).
//!
//! A database made before the engine owned its schema has the migrations now in
//! `migrations/legacy/` in `_sqlx_migrations`: those still missing run first, then both
//! baselines are recorded as applied (they describe what those migrations made), and
//! everything after them runs as on any database.

pub use copydesk_cluster as embedded;

pub use copydesk_queue::db::{Db, query, query_as, query_scalar};

use std::{sync::LazyLock, time::Duration};

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use copydesk_queue::{Catalog, schema};

use crate::config::{Pooler, Settings};

/// The application's migrations (`migrations/`), compiled in, with their history table.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut m = sqlx::migrate!("./migrations");
    m.dangerous_set_table_name(HISTORY);
    m
});

/// Where the application's migrations are recorded.
pub const HISTORY: &str = "copydesk_migrations";

/// The application's first migration: its layer as it stood when the engine took its
/// own schema over.
pub const BASELINE: i64 = 20261207000010;

/// The migrations of a copydesk from before the engine owned its schema, recorded in
/// `_sqlx_migrations`: run only to bring such a database to where the baselines start.
pub static LEGACY: Migrator = sqlx::migrate!("./migrations/legacy");

const LEGACY_HISTORY: &str = "_sqlx_migrations";

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
    #[error(transparent)]
    Queue(#[from] copydesk_queue::Error),
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
    /// Applies every pending migration and registers `catalog`'s kinds, as [`migrate`]
    /// does; returns how many migrations ran. Behind a pooler, through the direct
    /// connection (`[database] listen_url`); with none, only when nothing is pending.
    pub async fn migrate(&self, catalog: &Catalog) -> Result<usize> {
        // Nothing to apply needs no session.
        let ran = if matches!(self.direct, Direct::None) && pending(&self.pool).await?.is_empty() {
            0
        } else {
            migrate_schema(&*self.sessions("migrations").await?).await?
        };
        schema::register_kinds(&self.pool, catalog).await?;
        Ok(ran)
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

/// Applies every pending migration, the engine's first, then makes every kind of
/// `catalog` one a job may name; returns how many migrations ran.
pub async fn migrate(pool: &PgPool, catalog: &Catalog) -> Result<usize> {
    let ran = migrate_schema(pool).await?;
    schema::register_kinds(pool, catalog).await?;
    Ok(ran)
}

async fn migrate_schema(pool: &PgPool) -> Result<usize> {
    let mut ran = 0;
    if schema::table_exists(pool, LEGACY_HISTORY).await?
        && !schema::table_exists(pool, HISTORY).await?
    {
        // Made by a copydesk from before the engine owned its schema: finish its
        // migrations, then record this layer's baseline instead of running it (the
        // engine, seeing `jobs`, records its own just below).
        let before = schema::history(pool, LEGACY_HISTORY).await?.len();
        LEGACY.run(pool).await?;
        ran += schema::history(pool, LEGACY_HISTORY).await?.len() - before;
        MIGRATOR.skip(pool, Some(BASELINE)).await?;
    }
    ran += schema::migrate(pool).await?;
    let before = schema::history(pool, HISTORY).await?.len();
    MIGRATOR.run(pool).await?;
    Ok(ran + schema::history(pool, HISTORY).await?.len() - before)
}

/// Reverts the newest applied migration (the application's, and once none of those is
/// left, the engine's); returns its description, if any was applied.
pub async fn revert_newest(pool: &PgPool) -> Result<Option<String>> {
    for (migrator, table) in [(&*MIGRATOR, HISTORY), (schema::migrator(), schema::HISTORY)] {
        let applied = schema::history(pool, table).await?;
        let Some(newest) = applied.last().copied() else {
            continue;
        };
        let target = applied.iter().rev().nth(1).copied().unwrap_or(0);
        migrator.undo(pool, target).await?;
        return Ok(migrator
            .iter()
            .find(|m| m.version == newest)
            .map(|m| format!("{} {}", m.version, m.description)));
    }
    Ok(None)
}

/// Migrations compiled into this binary that the database has not applied, the
/// engine's first.
pub async fn pending(pool: &Db) -> Result<Vec<String>> {
    let mut pending = Vec::new();
    for (migrator, table) in [(schema::migrator(), schema::HISTORY), (&*MIGRATOR, HISTORY)] {
        let applied = schema::history(pool, table).await?;
        pending.extend(
            migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .filter(|m| !applied.contains(&m.version))
                .map(|m| format!("{} {}", m.version, m.description)),
        );
    }
    Ok(pending)
}
