//! `copydesk enqueue`.

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;
use uuid::Uuid;

use super::Env;
use crate::queue::{self, NewJob};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job kind (see jobs/README.md).
    pub kind: String,
    /// The job's input, as JSON; checked against jobs/KIND/schema.json.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// The project the job belongs to.
    #[arg(long, value_parser = super::parse_id)]
    pub project: Option<Uuid>,
    /// The tenant the job runs for (its slug); the project's, or `default`, without it.
    #[arg(long, value_name = "SLUG")]
    pub tenant: Option<String>,
    /// Do not start before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Attempts before the job fails for good (default 5).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_attempts: Option<i32>,
    /// Enqueue at most once per key: the same key gives back the existing job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print the whole row as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: EnqueueArgs, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let input: Value = serde_json::from_str(&args.input)
        .with_context(|| format!("--input is not valid JSON: {}", args.input))?;
    let tenant = crate::store::tenants::resolve(&env.db.pool, args.tenant.as_deref()).await?;
    let job = NewJob {
        kind: args.kind,
        input,
        tenant_id: tenant,
        project_id: args.project,
        run_at: args.run_at,
        priority: args.priority,
        max_attempts: args.max_attempts,
        idempotency_key: args.idempotency_key,
        ..NewJob::default()
    };
    // One transaction: behind a pooler, a bare connection's statements may each run on
    // another server connection.
    let mut tx = env.db.pool.begin().await?;
    let e = queue::enqueue(&mut tx, &crate::app::catalog(), &job).await?;
    tx.commit().await?;
    if args.json {
        let row = queue::ops::find(&env.db.pool, e.id).await?;
        let mut v = serde_json::to_value(row)?;
        v["created"] = Value::Bool(e.created);
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "{}", e.id)?;
        if !e.created {
            eprintln!("note: a job with this idempotency key exists already; nothing was enqueued");
        }
    }
    Ok(())
}
