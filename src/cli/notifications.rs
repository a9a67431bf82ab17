//! `copydesk notifications`: what needs a person (jobs failed for good, approvals
//! waiting), raised with their cause; repeats of one cause are one row with a count.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::{Env, JsonFlag};
use crate::{domain::Severity, store};

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
    /// Where notifications are delivered: webhooks and email addresses.
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Send a test notification through a channel now and print the receiver's answer.
    Test {
        #[arg(value_parser = super::parse_id)]
        channel: Uuid,
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

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Add a channel. `webhook URL`: each new notification is POSTed there, signed as
    /// Standard Webhooks says; the signing secret is printed once, on the last line.
    /// `email ADDRESS`: each is mailed there through `[notifications.email]`.
    Add {
        #[command(subcommand)]
        channel: NewChannel,
    },
    /// Every channel, with its latest delivery.
    List {
        /// One tenant's (its slug); every tenant's without it.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a channel (its deliveries go with it).
    Remove {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum NewChannel {
    /// A webhook (http or https; the URL goes through the same guard as store pages).
    Webhook {
        url: String,
        /// The tenant it serves (its slug; `default` without it).
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// Only this project's notifications (else all of the tenant's).
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        /// The least severity it gets: info, warning or error.
        #[arg(long, default_value = "info")]
        min_severity: Severity,
    },
    /// An email address, sent to through the SMTP server of `[notifications.email]`
    /// (its login from COPYDESK_SMTP_USERNAME and COPYDESK_SMTP_PASSWORD).
    Email {
        address: String,
        /// The tenant it serves (its slug; `default` without it).
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// Only this project's notifications (else all of the tenant's).
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        /// The least severity it gets: info, warning or error.
        #[arg(long, default_value = "info")]
        min_severity: Severity,
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
            let empty = format!("no {}notifications", if unread { "unread " } else { "" });
            json.print(
                out,
                list,
                &empty,
                &["ID", "LAST", "SEVERITY", "KIND", "TIMES", "TITLE", "READ"],
                |n| {
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
                },
            )?;
        }
        NotificationsCommand::Channels(cmd) => channels(cmd, env, by, out).await?,
        NotificationsCommand::Test { channel } => {
            let Some((kind, shown, url, secret)) =
                store::notifications::channel_secret(pool, channel).await?
            else {
                anyhow::bail!("no notification channel {channel}");
            };
            if kind == "email" {
                let mailer = crate::mail::Mailer::new(&env.settings.notifications.email)?;
                let to = crate::mail::parse_address(&shown)?;
                let id = format!("test.{}", uuid::Uuid::new_v4().simple());
                let (code, answer) = mailer
                    .send(
                        &to,
                        &id,
                        "[copydesk info] A test of copydesk's notifications",
                        format!("A test of copydesk's notifications, sent by {by}.\n"),
                    )
                    .await?;
                writeln!(
                    out,
                    "the SMTP server took the email for {shown}: {code} {answer}"
                )?;
                return Ok(());
            }
            let keys = env_keys()?;
            let open = |sealed: &Option<Vec<u8>>, what: &str| -> anyhow::Result<String> {
                let sealed = sealed
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("channel {channel} has no {what}"))?;
                Ok(String::from_utf8(keys.decrypt(
                    sealed,
                    &format!("the {what} of notification channel {channel}"),
                )?)?)
            };
            let (url, secret) = (open(&url, "URL")?, open(&secret, "signing secret")?);
            let now = chrono::Utc::now();
            let body = serde_json::json!({
                "text": format!("[info] A test of copydesk's notifications, sent by {by}"),
                "notification_id": null, "severity": "info", "kind": "test",
                "title": "A test of copydesk's notifications", "body": "",
                "job_id": null, "project_id": null, "data": {}, "created_at": now,
            });
            let fetcher = crate::fetch::Fetcher::new(&env.settings.fetch);
            let id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
            let (status, answer) =
                crate::jobs::notify::send(&fetcher, &url, &secret, &id, serde_json::to_vec(&body)?)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.to_string().replace(url.as_str(), &shown)))?;
            writeln!(out, "{shown} answered {status}: {answer}")?;
            if !(200..300).contains(&status) {
                anyhow::bail!("the webhook did not take the test notification ({status})");
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

/// A webhook to store: its URL checked by the SSRF guard and shown by origin, a new
/// signing secret, both sealed with the Fernet keys. Refused before anything is written.
pub(super) struct SealedWebhook {
    pub shown: String,
    pub url: Vec<u8>,
    /// The secret in the clear, to print once.
    pub secret: String,
    pub sealed_secret: Vec<u8>,
}

pub(super) fn seal_webhook(env: &Env, url: &str) -> anyhow::Result<SealedWebhook> {
    crate::fetch::Fetcher::new(&env.settings.fetch).check_url(url)?;
    let keys = env_keys()?;
    let secret = crate::jobs::notify::new_secret();
    Ok(SealedWebhook {
        shown: crate::jobs::notify::shown(url),
        url: keys.encrypt(url.as_bytes()),
        sealed_secret: keys.encrypt(secret.as_bytes()),
        secret,
    })
}

fn env_keys() -> anyhow::Result<crate::keys::Keys> {
    crate::keys::Keys::from_env().map_err(|e| {
        anyhow::anyhow!("webhook secrets are kept encrypted with COPYDESK_FERNET_KEYS: {e}")
    })
}

/// Audits a channel added in `tx`, and commits.
async fn added(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: Uuid,
    by: &str,
    id: Uuid,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    store::audit::record(
        &mut *tx,
        &store::audit::Entry {
            tenant: Some(tenant),
            actor: by,
            action: "notification_channel.added",
            target_table: Some("notification_channels"),
            target_id: Some(id),
            details,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn channels(
    cmd: ChannelsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        ChannelsCommand::Add {
            channel:
                NewChannel::Webhook {
                    url,
                    tenant,
                    project,
                    min_severity,
                },
        } => {
            let hook = seal_webhook(env, &url)?;
            let shown = hook.shown.clone();
            let secret = hook.secret.clone();
            let tenant = store::tenants::resolve(pool, tenant.as_deref())
                .await?
                .unwrap_or(crate::domain::DEFAULT_TENANT);
            let mut tx = pool.begin().await?;
            let id = store::notifications::add_webhook(
                &mut *tx,
                &store::notifications::NewWebhook {
                    tenant,
                    project,
                    shown: &hook.shown,
                    url: &hook.url,
                    secret: &hook.sealed_secret,
                    min_severity,
                },
                by,
            )
            .await?;
            let details = serde_json::json!({"kind": "webhook", "url": shown,
                "project_id": project, "min_severity": min_severity});
            added(tx, tenant, by, id, details).await?;
            writeln!(
                out,
                "channel {id}: webhook {shown}, {min_severity} and above\n\
                 its signing secret (shown once; receivers verify webhook-signature with it):\n\
                 {secret}"
            )?;
        }
        ChannelsCommand::Add {
            channel:
                NewChannel::Email {
                    address,
                    tenant,
                    project,
                    min_severity,
                },
        } => {
            // Refused before anything is written: an address that is not one, or no
            // server to send through.
            let to = crate::mail::parse_address(&address)?;
            crate::mail::Mailer::new(&env.settings.notifications.email)?;
            let tenant = store::tenants::resolve(pool, tenant.as_deref())
                .await?
                .unwrap_or(crate::domain::DEFAULT_TENANT);
            let address = to.to_string();
            let mut tx = pool.begin().await?;
            let id = store::notifications::add_email(
                &mut *tx,
                tenant,
                project,
                &address,
                min_severity,
                by,
            )
            .await?;
            let details = serde_json::json!({"kind": "email", "address": address,
                "project_id": project, "min_severity": min_severity});
            added(tx, tenant, by, id, details).await?;
            writeln!(
                out,
                "channel {id}: email to {address}, {min_severity} and above"
            )?;
        }
        ChannelsCommand::List { tenant, json } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            let list = store::notifications::channels(pool, tenant).await?;
            json.print(
                out,
                list,
                "no notification channels",
                &[
                    "ID",
                    "TENANT",
                    "KIND",
                    "TARGET",
                    "FROM",
                    "PROJECT",
                    "LAST DELIVERY",
                ],
                |c| {
                    vec![
                        c.id.to_string(),
                        c.tenant,
                        c.kind.to_string(),
                        c.target,
                        c.min_severity.to_string(),
                        c.project_id.map_or("all".into(), |p| p.to_string()),
                        match (c.last_status, c.last_answer_status) {
                            (Some(s), Some(code)) => format!("{s} ({code})"),
                            (Some(s), None) => s.to_string(),
                            _ => "-".into(),
                        },
                    ]
                },
            )?;
        }
        ChannelsCommand::Remove { id } => {
            let mut tx = pool.begin().await?;
            if !store::notifications::remove_channel(&mut *tx, id).await? {
                anyhow::bail!("no notification channel {id}");
            }
            store::audit::record(
                &mut *tx,
                &store::audit::Entry {
                    tenant: None,
                    actor: by,
                    action: "notification_channel.removed",
                    target_table: Some("notification_channels"),
                    target_id: Some(id),
                    details: serde_json::json!({}),
                },
            )
            .await?;
            tx.commit().await?;
            writeln!(out, "channel {id} removed")?;
        }
    }
    Ok(())
}
