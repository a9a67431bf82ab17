//! `copydesk tenants create|list|grant-role`, `tokens create|list|revoke` and
//! `audit list`. Passwords come from standard input and token secrets are printed once;
//! neither is ever logged or stored in the clear.

use std::{io::Write, time::Duration};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag, parse_duration, parse_id, table};
use crate::{domain::TokenRole, store};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; with --db-role, also a LOGIN role that is this tenant (its
    /// password is read from one line of standard input).
    Create {
        /// Lower-case letters, digits, - and _ (e.g. acme).
        slug: String,
        #[arg(long)]
        name: String,
        /// Create this LOGIN role and map it to the tenant.
        #[arg(long, value_name = "ROLE")]
        db_role: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Every tenant with its database roles.
    List(JsonFlag),
    /// Map an existing database role to a tenant: it then sees and changes only that
    /// tenant's rows.
    GrantRole { slug: String, role: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token; its secret is printed once, alone on the last line (with --json,
    /// the `secret` field) and stored only as a SHA-256.
    Create {
        /// The tenant the token acts for (`default` without it).
        #[arg(long, value_name = "SLUG", default_value = "default")]
        tenant: String,
        /// viewer, approver, operator or admin.
        #[arg(long)]
        role: TokenRole,
        /// Who or what the token is for (recorded in the audit log as its actor).
        #[arg(long)]
        name: String,
        /// Expire after this long (s, m, h or d: 90d, 12h); never when absent.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Tokens, newest first (never a secret).
    List {
        #[command(flatten)]
        tenant: TenantFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke a token: the API refuses it from now on.
    Revoke {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recorded actions, newest first.
    List {
        #[command(flatten)]
        tenant: TenantFlag,
        /// Only actions since this long ago (s, m, h or d) or this time (RFC 3339).
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// `--since`: a duration back from now, or a time.
fn parse_since(s: &str) -> Result<DateTime<Utc>, super::BadArg> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = parse_duration(s).map_err(|_| {
        super::BadArg(format!(
            "{s:?} is neither a duration (90d, 12h, 30m) nor a time (RFC 3339)"
        ))
    })?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| super::BadArg(format!("{s:?} reaches back too far")))
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// One line of standard input, without its line end.
fn read_password(role: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("password for role {role} (one line): ");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the role's password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!(
            "no password for role {role:?} on standard input (give it one line, e.g. from a file or a pipe)"
        );
    }
    Ok(password)
}

pub async fn tenants(
    cmd: TenantsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        TenantsCommand::Create {
            slug,
            name,
            db_role,
            json,
        } => {
            let password = db_role.as_deref().map(read_password).transpose()?;
            // The tenant, its role and their audit rows commit together or not at all.
            let mut tx = pool.begin().await?;
            let mut tenant = store::tenants::create(&mut tx, &slug, &name, by).await?;
            if let (Some(role), Some(password)) = (&db_role, &password) {
                store::tenants::create_login_role(&mut tx, role, password).await?;
                store::tenants::grant_role(&mut tx, tenant.id, role, by).await?;
                tenant.roles.push(role.clone());
            }
            tx.commit().await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&tenant)?)?;
            } else {
                writeln!(
                    out,
                    "tenant {} ({}) created: {}",
                    tenant.slug, tenant.name, tenant.id
                )?;
                if let Some(role) = db_role {
                    writeln!(
                        out,
                        "role {role} logs in as {slug}: it sees and changes {slug}'s rows only"
                    )?;
                }
            }
        }
        TenantsCommand::List(json) => {
            let all = store::tenants::list(pool).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                let rows = all
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.slug,
                            t.name,
                            t.id.to_string(),
                            t.roles.join(","),
                            when(Some(t.created_at)),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(&["SLUG", "NAME", "ID", "DB ROLES", "CREATED"], rows)
                )?;
            }
        }
        TenantsCommand::GrantRole { slug, role } => {
            let tenant = store::tenants::by_slug(pool, &slug).await?;
            let mut tx = pool.begin().await?;
            store::tenants::grant_role(&mut tx, tenant.id, &role, by).await?;
            tx.commit().await?;
            writeln!(
                out,
                "role {role} is tenant {slug}: it sees and changes {slug}'s rows only"
            )?;
        }
    }
    Ok(())
}

pub async fn tokens(
    cmd: TokensCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        TokensCommand::Create {
            tenant,
            role,
            name,
            expires,
            json,
        } => {
            let tenant = store::tenants::by_slug(pool, &tenant).await?;
            let mut tx = pool.begin().await?;
            let (token, secret) =
                store::tokens::create(&mut tx, tenant.id, &name, role, expires, by).await?;
            tx.commit().await?;
            if json.json {
                let mut v = serde_json::to_value(&token)?;
                v["secret"] = json!(secret.expose());
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(
                    out,
                    "token {} ({} for {}, {role}) expires {}",
                    token.id,
                    token.name,
                    tenant.slug,
                    token.expires_at.map_or("never".into(), |t| t.to_rfc3339())
                )?;
                writeln!(out, "the secret, shown this once:")?;
                writeln!(out, "{}", secret.expose())?;
            }
        }
        TokensCommand::List { tenant, json } => {
            let list = store::tokens::list(pool, tenant.id(env).await?).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                writeln!(out, "no tokens")?;
            } else {
                let rows = list
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name,
                            t.role.to_string(),
                            format!("cdk_{}_…", t.prefix),
                            when(t.expires_at),
                            when(t.last_used_at),
                            when(t.revoked_at),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(
                        &[
                            "ID",
                            "NAME",
                            "ROLE",
                            "PREFIX",
                            "EXPIRES",
                            "LAST USED",
                            "REVOKED"
                        ],
                        rows
                    )
                )?;
            }
        }
        TokensCommand::Revoke { id, json } => {
            let mut tx = pool.begin().await?;
            let token = store::tokens::revoke(&mut tx, id, by).await?;
            tx.commit().await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&token)?)?;
            } else {
                writeln!(out, "token {id} ({}) revoked", token.name)?;
            }
        }
    }
    Ok(())
}

pub async fn audit(
    cmd: AuditCommand,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let AuditCommand::List {
        tenant,
        since,
        limit,
        json,
    } = cmd;
    let rows = store::audit::list(&env.db.pool, tenant.id(env).await?, since, None, limit).await?;
    if json.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if rows.is_empty() {
        writeln!(out, "no recorded actions")?;
    } else {
        let rows = rows
            .into_iter()
            .map(|a| {
                vec![
                    when(Some(a.at)),
                    a.tenant,
                    a.actor,
                    a.action,
                    match (a.target_table, a.target_id) {
                        (Some(t), Some(id)) => format!("{t} {id}"),
                        (Some(t), None) => t,
                        _ => "-".into(),
                    },
                    a.details.to_string(),
                ]
            })
            .collect();
        writeln!(
            out,
            "{}",
            table(&["AT", "TENANT", "BY", "ACTION", "TARGET", "DETAILS"], rows)
        )?;
    }
    Ok(())
}
