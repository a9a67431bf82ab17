//! `copydesk events`: lifecycle events for other services — subscriptions (a
//! service's webhook, per tenant and optionally per project and event type) and their
//! deliveries. Kept apart from `notifications`, which are for people.

use std::io::Write;

use clap::Subcommand;
use uuid::Uuid;

use super::{Env, JsonFlag};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Subscribe a webhook: each event of the tenant (or of one project) is POSTed
    /// there as a Standard Webhooks message (`webhook-id` evt_<event id>,
    /// `webhook-timestamp`, `webhook-signature`); the signing secret is printed once,
    /// on the last line.
    Subscribe {
        url: String,
        /// The tenant whose events it gets (its slug; `default` without it).
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// Only this project's events.
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        /// Only these types (repeat, or separate with commas): approval.waiting,
        /// approval.decided, publication.made, publication.failed,
        /// pipeline.channel_finished. Every type without it.
        #[arg(long = "event", value_name = "TYPE", value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Every subscription, with its last delivery.
    Subscriptions {
        /// One tenant's (its slug); every tenant's without it.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a subscription (its pending deliveries go with it).
    Unsubscribe {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
    },
    /// The latest deliveries: event type, status, attempts and the receiver's answer.
    Deliveries {
        /// Only this subscription's.
        #[arg(long, value_parser = super::parse_id)]
        subscription: Option<Uuid>,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn run(
    cmd: EventsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        EventsCommand::Subscribe {
            url,
            tenant,
            project,
            events,
        } => {
            // Refused before anything is written: a type that is not one, a URL the
            // guard refuses, no keys to seal with.
            store::events::check_types(&events)?;
            let hook = super::notifications::seal_webhook(env, &url)?;
            let tenant = store::tenants::resolve(pool, tenant.as_deref())
                .await?
                .unwrap_or(crate::domain::DEFAULT_TENANT);
            let mut tx = pool.begin().await?;
            let id = store::events::subscribe(
                &mut *tx,
                &store::events::NewSubscription {
                    tenant,
                    project,
                    target: &hook.shown,
                    url: &hook.url,
                    secret: &hook.sealed_secret,
                    events: &events,
                    by,
                },
            )
            .await?;
            store::audit::record(
                &mut *tx,
                &store::audit::Entry {
                    tenant: Some(tenant),
                    actor: by,
                    action: "event_subscription.added",
                    target_table: Some("event_subscriptions"),
                    target_id: Some(id),
                    details: serde_json::json!({"url": hook.shown, "project_id": project,
                                                "events": events}),
                },
            )
            .await?;
            tx.commit().await?;
            let what = if events.is_empty() {
                "every event".to_owned()
            } else {
                events.join(", ")
            };
            writeln!(
                out,
                "subscription {id}: {}, {what}\n\
                 its signing secret (shown once; receivers verify webhook-signature with it):\n\
                 {}",
                hook.shown, hook.secret
            )?;
        }
        EventsCommand::Subscriptions { tenant, json } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            let list = store::events::subscriptions(pool, tenant).await?;
            json.print(
                out,
                list,
                "no event subscriptions",
                &["ID", "TARGET", "PROJECT", "EVENTS", "LAST DELIVERY", "BY"],
                |s| {
                    vec![
                        s.id.to_string(),
                        s.target,
                        s.project_id.map_or("-".into(), |p| p.to_string()),
                        if s.events.is_empty() {
                            "all".into()
                        } else {
                            s.events.join(",")
                        },
                        match (s.last_status, s.last_at) {
                            (Some(st), Some(at)) => format!(
                                "{st} {} ({})",
                                s.last_answer_status.map_or("-".into(), |c| c.to_string()),
                                at.format("%Y-%m-%d %H:%M UTC")
                            ),
                            _ => "none yet".into(),
                        },
                        s.created_by,
                    ]
                },
            )?;
        }
        EventsCommand::Unsubscribe { id } => {
            let mut tx = pool.begin().await?;
            let Some(tenant) = store::events::unsubscribe(&mut *tx, id).await? else {
                anyhow::bail!("no event subscription {id}");
            };
            store::audit::record(
                &mut *tx,
                &store::audit::Entry {
                    tenant: Some(tenant),
                    actor: by,
                    action: "event_subscription.removed",
                    target_table: Some("event_subscriptions"),
                    target_id: Some(id),
                    details: serde_json::json!({}),
                },
            )
            .await?;
            tx.commit().await?;
            writeln!(out, "subscription {id} removed")?;
        }
        EventsCommand::Deliveries {
            subscription,
            limit,
            json,
        } => {
            let list = store::events::deliveries(pool, subscription, limit).await?;
            json.print(
                out,
                list,
                "no event deliveries",
                &[
                    "ID",
                    "CREATED",
                    "TYPE",
                    "STATUS",
                    "ATTEMPTS",
                    "ANSWER",
                    "SUBSCRIPTION",
                ],
                |d| {
                    vec![
                        d.id.to_string(),
                        d.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        d.kind,
                        d.status.to_string(),
                        d.attempts.to_string(),
                        match (d.answer_status, d.answer) {
                            (Some(s), Some(a)) => {
                                format!("{s} {}", a.chars().take(60).collect::<String>())
                            }
                            (None, Some(a)) => a.chars().take(60).collect(),
                            _ => "-".into(),
                        },
                        d.subscription_id.to_string(),
                    ]
                },
            )?;
        }
    }
    Ok(())
}
