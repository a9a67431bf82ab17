//! A held horizon, told: a session that keeps a transaction (and so a snapshot) open,
//! a prepared transaction, or a replication slot's xmin, past `[alerts]
//! xmin_held_after_secs`, keeps vacuum from removing the dead rows every finished job
//! leaves. Each one is a `horizon_held` warning (the operators', in the `default`
//! tenant) naming the session — pid, user, application name, state, age — and what it
//! costs the queue; it is resolved at the first look that finds it gone.
//!
//! Postgres shows other roles' sessions' `backend_xmin` only to a superuser or a
//! member of `pg_read_all_stats` (`pg_monitor`): grant it to copydesk's role on a
//! managed server, or the look sees only copydesk's own sessions.

use std::time::Duration;

use serde_json::json;

use super::alerts::{Condition, tell};
use crate::{db::Db, store};

/// The notification's kind.
pub const KIND: &str = "horizon_held";

/// One holder of the horizon, as a look found it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Holder {
    /// `pid:<pid>`, `prepared:<gid>` or `slot:<name>`: the notification's cause.
    pub cause: String,
    pub pid: Option<i32>,
    pub user_name: Option<String>,
    pub application_name: Option<String>,
    /// The session's state (`idle in transaction`, `active`…), or what holds it.
    pub state: Option<String>,
    /// Seconds it has held (since its transaction began, or it was prepared); a
    /// slot's is unknown.
    pub held_secs: Option<f64>,
}

/// Sessions and prepared transactions of this database, and the slots holding its
/// horizon (a physical slot holds every database's), past `after`.
pub async fn holders(pool: &Db, after: Duration) -> Result<Vec<Holder>, store::Error> {
    Ok(crate::db::query_as(
        "SELECT 'pid:' || pid AS cause, pid, usename::text AS user_name,
                nullif(application_name, '') AS application_name, state,
                extract(epoch FROM now() - xact_start)::float8 AS held_secs
           FROM pg_stat_activity
          WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
            AND datname = current_database()
            AND xact_start < now() - make_interval(secs => $1)
         UNION ALL
         SELECT 'prepared:' || gid, NULL, owner::text, NULL, 'prepared transaction',
                extract(epoch FROM now() - prepared)::float8
           FROM pg_prepared_xacts
          WHERE database = current_database()
            AND prepared < now() - make_interval(secs => $1)
         UNION ALL
         SELECT 'slot:' || slot_name, active_pid, NULL, NULL,
                'replication slot (' || slot_type || ', ' ||
                    CASE WHEN active THEN 'active' ELSE 'inactive' END || ')', NULL
           FROM pg_replication_slots
          WHERE (xmin IS NOT NULL OR catalog_xmin IS NOT NULL)
            AND (database IS NULL OR database = current_database())
          ORDER BY held_secs DESC NULLS LAST",
    )
    .bind(after.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// One look: raises (or counts again) `horizon_held` for each holder past `after`, and
/// resolves the ones that are gone.
pub async fn check(pool: &Db, after: Duration) -> Result<Vec<Holder>, store::Error> {
    let found = holders(pool, after).await?;
    let dead: Option<i64> = if found.is_empty() {
        None
    } else {
        crate::db::query_scalar(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs' LIMIT 1",
        )
        .fetch_optional(pool)
        .await?
    };
    let conditions: Vec<Condition> = found
        .iter()
        .map(|h| {
            let (title, body) = words(h, dead);
            Condition {
                cause: h.cause.clone(),
                title,
                body,
                data: json!({"pid": h.pid, "user": h.user_name,
                             "application_name": h.application_name, "state": h.state,
                             "held_secs": h.held_secs.map(f64::round),
                             "jobs_dead_rows": dead}),
            }
        })
        .collect();
    tell(
        pool,
        KIND,
        &conditions,
        "copydesk (the horizon moved again)",
    )
    .await?;
    Ok(found)
}

fn words(h: &Holder, dead: Option<i64>) -> (String, String) {
    let held = h.held_secs.map(|s| {
        let s = s.round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    });
    let who = match h.pid {
        Some(pid) => format!(
            "pid {pid} (user {}, application {}, {})",
            h.user_name.as_deref().unwrap_or("?"),
            h.application_name.as_deref().unwrap_or("none"),
            h.state.as_deref().unwrap_or("state unknown")
        ),
        None => format!(
            "{} ({})",
            h.cause,
            h.state.as_deref().unwrap_or("state unknown")
        ),
    };
    let title = match &held {
        Some(held) => format!("A transaction has held the database's horizon for {held}: {who}"),
        None => format!("The database's horizon is held: {who}"),
    };
    let cost = match dead {
        Some(n) => format!("`jobs` has {n} dead row versions now"),
        None => "`jobs` keeps its dead row versions".to_owned(),
    };
    let end = match h.pid {
        Some(pid) if h.cause.starts_with("pid:") => {
            format!("End it when it is not needed: `SELECT pg_terminate_backend({pid})`.")
        }
        _ if h.cause.starts_with("prepared:") => format!(
            "Commit or roll it back: `COMMIT PREPARED '{}'` or `ROLLBACK PREPARED '{0}'`.",
            h.cause.trim_start_matches("prepared:")
        ),
        _ => format!(
            "Drop the slot if nothing reads it: `SELECT pg_drop_replication_slot('{}')`.",
            h.cause.trim_start_matches("slot:")
        ),
    };
    let body = format!(
        "While it lasts vacuum removes no row version it might see: {cost}, and the table \
         and its indexes grow until it ends (the workers keep their pace: each claims from \
         where its last claim ended). {end}"
    );
    (title, body)
}
