//! `copydesk limits`: the rate limits every worker process shares.

use std::io::Write;

use clap::Subcommand;
use serde_json::json;

use super::{Env, JsonFlag, parse_duration};
use crate::{config::LimitSpec, report::table, store};

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Override a key's limit for every process (fields not given keep their value).
    /// KEY: llm:HOST[:PORT], llm:HOST[:PORT]/MODEL, platform:PLATFORM or
    /// platform:PLATFORM:INTEGRATION_ID.
    Set {
        key: String,
        /// At most N requests in any window of --per.
        #[arg(long, requires = "per", value_parser = clap::value_parser!(u32).range(1..))]
        requests: Option<u32>,
        /// The window of --requests: s, m, h or d (1s, 15m, 24h).
        #[arg(long, requires = "requests", value_parser = parse_duration)]
        per: Option<std::time::Duration>,
        /// Model calls: tokens a minute (the prompt's estimate plus max_tokens).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        tokens_per_minute: Option<u32>,
        /// Calls under this key at once, across every process.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
    },
    /// Every key: its limit and where it comes from, current use, pauses.
    List(JsonFlag),
    /// Drop a key's override (and any pause): its configured default applies again.
    Clear { key: String },
}

pub async fn run(
    cmd: LimitsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        LimitsCommand::Set {
            key,
            requests,
            per,
            tokens_per_minute,
            concurrency,
        } => {
            let spec = LimitSpec {
                requests,
                per,
                tokens_per_minute,
                concurrency,
            };
            let mut tx = pool.begin().await?;
            store::limits::set(&mut *tx, &key, &spec, by).await?;
            store::audit::record(
                &mut *tx,
                &store::audit::Entry {
                    tenant: None,
                    actor: by,
                    action: "limit.set",
                    target_table: Some("limits"),
                    target_id: None,
                    details: json!({"key": key, "limit": spec}),
                },
            )
            .await?;
            tx.commit().await?;
            writeln!(out, "{key}: {} for every process", describe(&spec))?;
        }
        LimitsCommand::Clear { key } => {
            let mut tx = pool.begin().await?;
            let had = store::limits::clear(&mut *tx, &key, by).await?;
            if had {
                store::audit::record(
                    &mut *tx,
                    &store::audit::Entry {
                        tenant: None,
                        actor: by,
                        action: "limit.cleared",
                        target_table: Some("limits"),
                        target_id: None,
                        details: json!({"key": key}),
                    },
                )
                .await?;
            }
            tx.commit().await?;
            match store::limits::default_for(&env.settings.limits, &key) {
                _ if !had => writeln!(out, "{key} had no override; nothing changed")?,
                Some(d) => writeln!(out, "{key}: back to the default, {}", describe(d))?,
                None => writeln!(out, "{key}: no limit now (none configured)")?,
            }
        }
        LimitsCommand::List(json) => {
            let keys = store::limits::list(pool, &env.settings.limits).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&keys)?)?;
                return Ok(());
            }
            let rows = keys
                .into_iter()
                .map(|k| {
                    vec![
                        k.key,
                        k.source.to_owned(),
                        match (k.requests, k.per_secs) {
                            (Some(n), Some(p)) => {
                                format!("{}/{} ({} now)", n, secs(p), k.requests_in_window)
                            }
                            _ => "-".into(),
                        },
                        match k.tokens_per_minute {
                            Some(t) => format!("{t} ({} now)", k.tokens_in_use),
                            None => "-".into(),
                        },
                        match k.concurrency {
                            Some(c) => format!("{c} ({} now)", k.in_flight),
                            None => "-".into(),
                        },
                        k.paused_until
                            .map_or("-".into(), |t| t.format("%H:%M:%S UTC").to_string()),
                        format!("{}/{}/{}", k.granted, k.waited, k.throttled),
                    ]
                })
                .collect::<Vec<_>>();
            if rows.is_empty() {
                writeln!(out, "no limits")?;
            } else {
                writeln!(
                    out,
                    "{}",
                    table(
                        &[
                            "KEY",
                            "FROM",
                            "REQUESTS",
                            "TOKENS/MIN",
                            "AT ONCE",
                            "PAUSED UNTIL",
                            "GRANTED/WAITED/THROTTLED"
                        ],
                        rows
                    )
                )?;
            }
        }
    }
    Ok(())
}

fn secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn describe(spec: &LimitSpec) -> String {
    let mut parts = Vec::new();
    if let (Some(n), Some(p)) = (spec.requests, spec.per) {
        parts.push(format!("{n} requests per {}", secs(p.as_secs_f64())));
    }
    if let Some(t) = spec.tokens_per_minute {
        parts.push(format!("{t} tokens a minute"));
    }
    if let Some(c) = spec.concurrency {
        parts.push(format!("{c} at once"));
    }
    parts.join(", ")
}
