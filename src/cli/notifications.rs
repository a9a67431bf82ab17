//! `copydesk notifications`: what needs a person (jobs failed for good, approvals
//! waiting), raised with their cause; repeats of one cause are one row with a count.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::{Env, JsonFlag};
use crate::{report::table, store};

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Notifications, latest first.
    List {
        /// Only the ones nobody has read.
        #[arg(long)]
        unread: bool,
        /// One tenant's (its slug); every tenant's without it.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Mark a notification read (`--by` names who), or with --all every unread one.
    Read {
        #[arg(value_parser = super::parse_id, required_unless_present = "all", conflicts_with = "all")]
        id: Option<Uuid>,
        #[arg(long)]
        all: bool,
        /// Only this tenant's (its slug).
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
}

pub async fn run(
    cmd: NotificationsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        NotificationsCommand::List {
            unread,
            tenant,
            limit,
            json,
        } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            let list = store::notifications::list(pool, tenant, unread, limit).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                writeln!(
                    out,
                    "no {}notifications",
                    if unread { "unread " } else { "" }
                )?;
            } else {
                let rows = list
                    .into_iter()
                    .map(|n| {
                        vec![
                            n.id.to_string(),
                            n.last_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                            n.severity.to_string(),
                            n.kind,
                            n.count.to_string(),
                            n.title,
                            n.read_by
                                .map_or("unread".into(), |b| format!("read by {b}")),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(
                        &["ID", "LAST", "SEVERITY", "KIND", "TIMES", "TITLE", "READ"],
                        rows
                    )
                )?;
            }
        }
        NotificationsCommand::Read { id, all, tenant } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            if all {
                let n = store::notifications::read_all(pool, tenant, by).await?;
                writeln!(out, "{n} notification(s) marked read by {by}")?;
            } else if let Some(id) = id {
                if !store::notifications::read(pool, tenant, id, by).await? {
                    anyhow::bail!("no unread notification {id}");
                }
                writeln!(out, "{id} marked read by {by}")?;
            }
        }
    }
    Ok(())
}
