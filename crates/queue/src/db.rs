//! How statements reach Postgres: straight to the server, or through a pooler in
//! transaction mode (PgBouncer, Supavisor), where each transaction may run on a
//! different server connection.
//!
//! sqlx prepares a statement in one round trip (`Parse`, `Describe`, `Sync`) and runs
//! it in a second (`Bind`, `Execute`, `Sync`). Straight to the server, statements are
//! named and cached per connection, which is what makes them fast. Behind a pooler in
//! transaction mode both habits break: a named statement stays on the server
//! connection it was prepared on (the next transaction elsewhere does not find it, or
//! finds another client's of the same name), and between the two round trips a
//! statement outside a transaction may move to another server connection. So in that
//! mode ([`set_pooled`]) **every statement is unnamed, and every statement runs inside a
//! transaction**: [`query`], [`query_as`] and [`query_scalar`] make unnamed statements,
//! and [`Db`], the pool every part of copydesk runs statements on, wraps each one that
//! is not already in a transaction in a transaction of its own.
//!
//! The mode is chosen once per process, before the first statement, from
//! `[database] pooler`; it is a property of the connection string, like the server's
//! address, and every pool of the process shares it.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::{
    FutureExt, StreamExt, TryFutureExt, TryStreamExt, future::BoxFuture, stream::BoxStream,
};
use sqlx::{
    Database, Either, Error, Execute, Executor, PgPool, Postgres, SqlSafeStr,
    pool::PoolConnection,
    postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo},
    query::{Query, QueryAs, QueryScalar},
};

static POOLED: AtomicBool = AtomicBool::new(false);

/// Switches this process to statements that survive a pooler in transaction mode.
/// There is no switching back: a process talks to one kind of server.
pub fn set_pooled() {
    POOLED.store(true, Ordering::Relaxed);
}

/// Whether statements go through a pooler in transaction mode.
pub fn pooled() -> bool {
    POOLED.load(Ordering::Relaxed)
}

/// `sqlx::query`, unnamed behind a pooler.
pub fn query<'a>(sql: impl SqlSafeStr) -> Query<'a, Postgres, PgArguments> {
    sqlx::query(sql).persistent(!pooled())
}

/// `sqlx::query_as`, unnamed behind a pooler.
pub fn query_as<'a, O>(sql: impl SqlSafeStr) -> QueryAs<'a, Postgres, O, PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(!pooled())
}

/// `sqlx::query_scalar`, unnamed behind a pooler.
pub fn query_scalar<'a, O>(sql: impl SqlSafeStr) -> QueryScalar<'a, Postgres, O, PgArguments>
where
    (O,): for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(!pooled())
}

/// The connection pool, as an executor that is safe behind a pooler: each statement run
/// on `&Db` directly gets a transaction of its own there (one more round trip at each
/// end), and runs as sqlx runs it on a pool everywhere else. Transactions begun with
/// [`Db::begin`] are sqlx's own; statements in them are made unnamed by [`query`].
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The sqlx pool underneath, for what needs one connection for several statements
    /// of a session (migrations, which hold an advisory lock; LISTEN).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, Error> {
        self.pool.begin().await
    }

    /// A connection for several statements in a row. Behind a pooler, run them in a
    /// transaction ([`Db::begin`]) instead: a bare connection's statements may move
    /// between server connections.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, Error> {
        self.pool.acquire().await
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Self::new(pool)
    }
}

/// A statement forced unnamed: behind a pooler, whatever built it.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(self) -> sqlx::SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

type Step = Either<PgQueryResult, PgRow>;

impl<'c> Executor<'c> for &'c Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !pooled() {
            return self.pool.fetch_many(query);
        }
        let pool = self.pool.clone();
        // The whole answer is read inside the transaction, then handed out: a stream
        // cannot commit after its last item is taken.
        async move {
            let mut tx = pool.begin().await?;
            let steps: Vec<Step> = tx.fetch_many(Unnamed(query)).try_collect().await?;
            tx.commit().await?;
            Ok::<_, Error>(futures::stream::iter(steps.into_iter().map(Ok)))
        }
        .try_flatten_stream()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !pooled() {
            return self.pool.fetch_optional(query);
        }
        let pool = self.pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let row = tx.fetch_optional(Unnamed(query)).await?;
            tx.commit().await?;
            Ok(row)
        }
        .boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<<Postgres as Database>::Statement, Error>>
    where
        'c: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    #[doc(hidden)]
    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, Error>>
    where
        'c: 'e,
    {
        self.pool.describe(sql)
    }
}
