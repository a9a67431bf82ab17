//! `copydesk keys`, `integrations`, `publish` and `settings`: credentials and the last
//! mile. Nothing here prints a secret: listings show platform, status, last sync and
//! last error; `keys generate` prints a new key only because that is what it is for.

use std::{io::Write, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag, parse_id, table};
use crate::{
    domain::Platform,
    keys::Keys,
    pipeline::publication::{self, PublicationRequest},
    publish::integrations,
    store,
};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new Fernet key (for COPYDESK_FERNET_KEYS).
    Generate,
    /// Re-encrypt every credential and secret setting under the first key in
    /// COPYDESK_FERNET_KEYS, in one transaction.
    Rotate(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Store (or replace) a project's credentials for a platform, encrypted.
    Set {
        #[arg(long, value_parser = parse_id)]
        project: Uuid,
        /// wordpress, shopify, linkedin, x or facebook.
        #[arg(long)]
        platform: Platform,
        /// A JSON file with the credentials (see README: fields per platform).
        #[arg(long)]
        credentials_file: PathBuf,
        /// Non-secret settings as JSON (site_url, shop_domain, page_id, api_base, ...).
        #[arg(long, default_value = "{}")]
        metadata: String,
    },
    /// Platform, status, last sync and last error of each integration (no secrets).
    List {
        #[arg(long, value_parser = parse_id)]
        project: Option<Uuid>,
        #[command(flatten)]
        tenant: TenantFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make the platform's cheapest authenticated read and set the status from it.
    Test {
        #[arg(value_parser = parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The approved draft to publish.
    #[arg(value_parser = parse_id)]
    pub artifact: Uuid,
    /// The integration to publish it to.
    #[arg(long, value_parser = parse_id)]
    pub integration: Uuid,
    /// When to publish (RFC 3339); now when absent.
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
    /// Publish even though this draft was published to this integration already, or
    /// the same text was within `[publish] duplicate_window_days`.
    #[arg(long)]
    pub again: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Set an app setting; --secret stores it Fernet-encrypted (value read from stdin
    /// when not given, so it stays out of shell history).
    Set {
        key: String,
        value: Option<String>,
        #[arg(long)]
        secret: bool,
        /// Set this tenant's override instead of the global setting.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
    },
    /// Keys of every app setting; secret values are never shown.
    List {
        /// The global settings and this tenant's overrides only.
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub fn keys_generate(out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(out, "{}", Keys::generate())?;
    Ok(())
}

pub async fn keys(
    cmd: KeysCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate => keys_generate(out),
        KeysCommand::Rotate(json) => {
            let k = Keys::from_env()?;
            let done = store::settings::rotate(&env.db.pool, &k, by).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            } else {
                writeln!(
                    out,
                    "re-encrypted under the first key: {} integration credential(s), {} secret setting(s)",
                    done.integrations, done.app_settings
                )?;
            }
            Ok(())
        }
    }
}

pub async fn integrations(
    cmd: IntegrationsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        IntegrationsCommand::Set {
            project,
            platform,
            credentials_file,
            metadata,
        } => {
            let text = std::fs::read_to_string(&credentials_file)
                .with_context(|| format!("reading {}", credentials_file.display()))?;
            let creds: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", credentials_file.display()))?;
            let metadata: Value =
                serde_json::from_str(&metadata).context("--metadata is not JSON")?;
            let k = Keys::from_env()?;
            let id =
                integrations::connect(pool, &k, project, platform, &creds, &metadata, by).await?;
            writeln!(out, "{id}")?;
        }
        IntegrationsCommand::List {
            project,
            tenant,
            json,
        } => {
            let tenant = tenant.id(env).await?;
            let list = store::integrations::list(pool, project, tenant).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                writeln!(out, "no integrations")?;
            } else {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                let rows = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.to_string(),
                            i.project_id.to_string(),
                            i.platform.to_string(),
                            i.status.to_string(),
                            opt(i
                                .last_sync_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())),
                            opt(i.last_error.clone()),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(
                        &[
                            "ID",
                            "PROJECT",
                            "PLATFORM",
                            "STATUS",
                            "LAST SYNC",
                            "LAST ERROR"
                        ],
                        rows
                    )
                )?;
            }
        }
        IntegrationsCommand::Test { id, json } => {
            let k = Arc::new(Keys::from_env()?);
            let t = integrations::test(pool, &env.settings.publish, k, id, by).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&t)?)?;
            } else if t.ok {
                writeln!(out, "{}: ok, {}; status connected", t.platform, t.detail)?;
            }
            if !t.ok {
                bail!(
                    "integration {id} ({}) failed its test: {} (status {})",
                    t.platform,
                    t.detail,
                    t.status
                );
            }
        }
    }
    Ok(())
}

/// `copydesk publish`: the same request the pipeline makes when a draft is approved
/// (`pipeline::publication`), with an explicit integration.
pub async fn publish(
    args: PublishArgs,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let request = PublicationRequest {
        artifact: args.artifact,
        integration: Some(args.integration),
        at: args.at,
        again: args.again,
        parent: None,
        by: Some(by.to_owned()),
    };
    let mut tx = env.db.pool.begin().await?;
    let r = publication::request(
        &mut tx,
        &crate::app::catalog(),
        env.settings.publish.facebook_min_schedule_minutes,
        &request,
    )
    .await?;
    tx.commit().await?;
    if args.json.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "job_id": r.job.id, "created": r.job.created,
                "run_at": r.run_at, "publish_at": r.publish_at
            }))?
        )?;
    } else {
        let platform = r.platform.map(|p| p.as_str()).unwrap_or("the platform");
        let when = match (r.run_at, r.publish_at) {
            (_, Some(p)) => format!("handed to {platform} to publish at {p}"),
            (Some(run), None) => format!("runs at {run}"),
            (None, None) => "runs now".into(),
        };
        writeln!(out, "{} ({when})", r.job.id)?;
        if !r.job.created {
            eprintln!("note: this publication was requested already; that job is the one above");
        }
    }
    Ok(())
}

pub async fn settings(
    cmd: SettingsCommand,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        SettingsCommand::Set {
            key,
            value,
            secret,
            tenant,
        } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            let value = match value {
                Some(v) => v,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            let k = if secret {
                Some(Keys::from_env()?)
            } else {
                None
            };
            store::settings::put(pool, k.as_ref(), tenant, &key, &value).await?;
            writeln!(out, "{key} set{}", if secret { " (encrypted)" } else { "" })?;
        }
        SettingsCommand::List { tenant, json } => {
            let tenant = store::tenants::resolve(pool, tenant.as_deref()).await?;
            let rows = store::settings::list(pool, tenant).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else if rows.is_empty() {
                writeln!(out, "no settings")?;
            } else {
                let rows = rows
                    .into_iter()
                    .map(|s| {
                        vec![
                            s.key,
                            s.tenant.unwrap_or_else(|| "(global)".into()),
                            if s.secret {
                                "(secret)".into()
                            } else {
                                s.value.unwrap_or_default()
                            },
                            s.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(&["KEY", "TENANT", "VALUE", "UPDATED"], rows)
                )?;
            }
        }
    }
    Ok(())
}
