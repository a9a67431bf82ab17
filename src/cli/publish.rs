//! `copydesk keys`, `integrations`, `publish` and `settings`: credentials and the last
//! mile. Nothing here prints a secret: listings show platform, status, last sync and
//! last error; `keys generate` prints a new key only because that is what it is for.

use std::{io::Write, path::PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Env, JsonFlag, parse_id, table};
use crate::{
    keys::{self, Keys},
    pipeline::Channel,
    publish::{self, Platform, integrations},
    queue::{self, NewJob},
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
        #[arg(long, value_parser = Platform::parse)]
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
    /// Publish even though a publication of this draft to this integration exists.
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
    },
    /// Keys of every app setting; secret values are never shown.
    List(JsonFlag),
}

pub fn keys_generate(out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    writeln!(out, "{}", Keys::generate())?;
    Ok(())
}

pub async fn keys(cmd: KeysCommand, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Generate => keys_generate(out),
        KeysCommand::Rotate(json) => {
            let k = Keys::from_env()?;
            let done = keys::rotate(&env.db.pool, &k).await?;
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
            let id = integrations::set(pool, &k, project, platform, &creds, &metadata).await?;
            writeln!(out, "{id}")?;
        }
        IntegrationsCommand::List { project, json } => {
            let list = integrations::list(pool, project).await?;
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
                            i.status.clone(),
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
            let k = std::sync::Arc::new(Keys::from_env()?);
            let loaded = integrations::load(pool, &k, id).await?;
            let platform = loaded.0.platform;
            let ctx = publish::Ctx::new(
                publish::client(&env.settings.publish),
                pool.clone(),
                env.settings.publish.clone(),
                loaded,
                None,
                Some(k),
            );
            let result = publish::check(&ctx).await;
            match &result {
                Ok(_) => integrations::mark_ok(pool, id).await?,
                Err(publish::CallError::Auth(m)) => integrations::mark_error(pool, id, m).await?,
                Err(_) => {}
            }
            let report = match &result {
                Ok(seen) => {
                    json!({"id": id, "platform": platform, "ok": true, "status": "connected", "detail": seen})
                }
                Err(e) => json!({"id": id, "platform": platform, "ok": false,
                                 "status": if matches!(e, publish::CallError::Auth(_)) { "error" } else { "unchanged" },
                                 "detail": e.to_string()}),
            };
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else if let Ok(seen) = &result {
                writeln!(out, "{platform}: ok, {seen}; status connected")?;
            }
            if let Err(e) = result {
                bail!("integration {id} ({platform}) failed its test: {e}");
            }
        }
    }
    Ok(())
}

pub async fn publish(
    args: PublishArgs,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    let row: Option<(String, Option<String>, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT kind, channel, project_id,
                EXISTS (SELECT 1 FROM approvals p WHERE p.artifact_id = a.id AND p.status = 'approved')
         FROM artifacts a WHERE id = $1",
    )
    .bind(args.artifact)
    .fetch_optional(pool)
    .await?;
    let Some((kind, channel, project, approved)) = row else {
        bail!("no artifact {}", args.artifact);
    };
    if kind != "draft" {
        bail!("artifact {} is a {kind}, not a draft", args.artifact);
    }
    if !approved {
        bail!(
            "artifact {} has no approved approval: approve it first (`copydesk approvals approve`)",
            args.artifact
        );
    }
    let integration = integrations::get(pool, args.integration).await?;
    let channel =
        Channel::parse(channel.as_deref().unwrap_or_default()).map_err(anyhow::Error::msg)?;
    if integration.platform.channel() != channel {
        bail!(
            "integration {} publishes to {}, which does not take {} drafts",
            integration.id,
            integration.platform,
            channel.as_str()
        );
    }
    if project.is_some_and(|p| p != integration.project_id) {
        bail!("integration {} belongs to another project", integration.id);
    }
    let published: Option<String> = sqlx::query_scalar(
        "SELECT content FROM artifacts WHERE kind = 'publication' AND based_on_id = $1
           AND data->>'integration_id' = $2::text LIMIT 1",
    )
    .bind(args.artifact)
    .bind(integration.id)
    .fetch_optional(pool)
    .await?;
    if let (Some(url), false) = (&published, args.again) {
        bail!(
            "artifact {} is already published to {} ({url}); pass --again to publish it once more",
            args.artifact,
            integration.platform
        );
    }
    let (run_at, publish_at) = integrations::schedule(
        integration.platform,
        args.at,
        Utc::now(),
        env.settings.publish.facebook_min_schedule_minutes,
    );
    let mut input = json!({"artifact_id": args.artifact, "integration_id": integration.id, "channel": channel.as_str()});
    if let Some(p) = publish_at {
        input["publish_at"] = json!(p.to_rfc3339());
    }
    let mut job = NewJob::new("publishing", input);
    job.project_id = Some(integration.project_id);
    if let Some(at) = run_at {
        job = job.run_at(at);
    }
    let mut conn = pool.acquire().await?;
    let e = queue::enqueue(&mut conn, &job).await?;
    if args.json.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"job_id": e.id, "run_at": run_at, "publish_at": publish_at})
            )?
        )?;
    } else {
        let when = match (run_at, publish_at) {
            (_, Some(p)) => format!("handed to {} to publish at {p}", integration.platform),
            (Some(r), None) => format!("runs at {r}"),
            (None, None) => "runs now".into(),
        };
        writeln!(out, "{} ({when})", e.id)?;
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
        SettingsCommand::Set { key, value, secret } => {
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
            keys::put_setting(pool, k.as_ref(), &key, &value).await?;
            writeln!(out, "{key} set{}", if secret { " (encrypted)" } else { "" })?;
        }
        SettingsCommand::List(json) => {
            let rows: Vec<(String, Option<String>, bool, DateTime<Utc>)> = sqlx::query_as(
                "SELECT key, value, secret IS NOT NULL, updated_at FROM app_settings ORDER BY key",
            )
            .fetch_all(pool)
            .await?;
            if json.json {
                let list: Vec<Value> = rows
                    .iter()
                    .map(|(k, v, s, u)| json!({"key": k, "value": v, "secret": s, "updated_at": u}))
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if rows.is_empty() {
                writeln!(out, "no settings")?;
            } else {
                let rows = rows
                    .into_iter()
                    .map(|(k, v, s, u)| {
                        vec![
                            k,
                            if s {
                                "(secret)".into()
                            } else {
                                v.unwrap_or_default()
                            },
                            u.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                writeln!(out, "{}", table(&["KEY", "VALUE", "UPDATED"], rows))?;
            }
        }
    }
    Ok(())
}
