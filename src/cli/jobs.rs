//! `copydesk jobs list|show|retry|cancel` and `copydesk queue stats`.

use std::io::Write;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag, table};
use crate::{
    pipeline::operator,
    queue::{Job, JobStatus, ops},
    report, store,
};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Newest jobs first.
    List(ListArgs),
    /// One job: the row, its runs, artifacts and approvals, its last error.
    Show {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// A failed or cancelled job back to queued, attempts reset.
    Retry {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Cancel a queued job, or a running one (its result is discarded when it reports).
    Cancel {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status.
    #[arg(long)]
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    #[command(flatten)]
    pub tenant: TenantFlag,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub async fn run(
    cmd: JobsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        JobsCommand::List(a) => {
            let tenant = a.tenant.id(env).await?;
            let filter = ops::JobFilter {
                status: a.status,
                kind: a.kind.clone(),
                tenant_id: tenant,
                ..Default::default()
            };
            let jobs = ops::page(pool, &filter, None, a.limit).await?;
            if a.json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&jobs)?)?;
            } else if jobs.is_empty() {
                writeln!(out, "no jobs")?;
            } else {
                writeln!(out, "{}", list_table(&jobs))?;
            }
        }
        JobsCommand::Show { id, json } => {
            let d = store::status::job(&mut *pool.begin().await?, id).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
            } else {
                let j = &d.job;
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                let fields = [
                    ("id", j.id.to_string()),
                    ("kind", j.kind.clone()),
                    ("status", j.status.to_string()),
                    ("tenant", j.tenant_id.to_string()),
                    ("project", opt(j.project_id.map(|p| p.to_string()))),
                    (
                        "input artifact",
                        opt(d.job_artifacts.input_artifact_id.map(|p| p.to_string())),
                    ),
                    (
                        "output artifact",
                        opt(d.job_artifacts.output_artifact_id.map(|p| p.to_string())),
                    ),
                    ("attempts", format!("{} of {}", j.attempts, j.max_attempts)),
                    ("priority", j.priority.to_string()),
                    ("run at", j.run_at.to_rfc3339()),
                    ("created", j.created_at.to_rfc3339()),
                    ("started", opt(j.started_at.map(|t| t.to_rfc3339()))),
                    ("finished", opt(j.finished_at.map(|t| t.to_rfc3339()))),
                    ("locked by", opt(j.locked_by.clone())),
                    ("lease until", opt(j.locked_until.map(|t| t.to_rfc3339()))),
                    ("idempotency key", opt(j.idempotency_key.clone())),
                    ("parent", opt(j.parent_id.map(|p| p.to_string()))),
                    ("traceparent", opt(j.traceparent.clone())),
                    ("input", j.input.to_string()),
                    ("output", opt(j.output.as_ref().map(|o| o.to_string()))),
                    ("last error", opt(j.last_error.clone())),
                    ("waiting", opt(j.waiting_for.clone())),
                ];
                for (k, v) in fields {
                    writeln!(out, "{k:>16}: {v}")?;
                }
                writeln!(out, "{:>16}: {}", "steps", d.steps.len())?;
                for s in &d.steps {
                    let how = match s.replays {
                        0 => "called".to_owned(),
                        n => format!("called, then replayed {n} time(s)"),
                    };
                    writeln!(
                        out,
                        "{:>16}  {} (attempt {}, {}): {how}",
                        "",
                        s.name,
                        s.attempt,
                        s.created_at.to_rfc3339()
                    )?;
                }
                for (label, items) in [
                    ("runs", &d.runs),
                    ("artifacts", &d.artifacts),
                    ("approvals", &d.approvals),
                ] {
                    writeln!(out, "{label:>16}: {}", items.len())?;
                    for i in items {
                        writeln!(out, "{:>16}  {i}", "")?;
                    }
                }
            }
        }
        JobsCommand::Retry { id, json } => {
            let job = operator::retry(pool, id, by).await?;
            print_job(out, &job, json, "queued again (attempts reset)")?;
        }
        JobsCommand::Cancel { id, json } => {
            let job = operator::cancel(pool, id, by).await?;
            print_job(out, &job, json, "cancelled")?;
        }
    }
    Ok(())
}

fn print_job(
    out: &mut (dyn Write + Send),
    job: &Job,
    json: JsonFlag,
    what: &str,
) -> anyhow::Result<()> {
    if json.json {
        writeln!(out, "{}", serde_json::to_string_pretty(job)?)?;
    } else {
        writeln!(out, "{} {what}", job.id)?;
    }
    Ok(())
}

fn list_table(jobs: &[Job]) -> String {
    table(
        &[
            "ID",
            "KIND",
            "STATUS",
            "ATTEMPTS",
            "RUN AT",
            "CREATED",
            "LAST ERROR / WAITING",
        ],
        jobs.iter()
            .map(|j| {
                let mut err = j
                    .waiting_for
                    .clone()
                    .or_else(|| j.last_error.clone())
                    .unwrap_or_default();
                if err.chars().count() > 60 {
                    err = err.chars().take(57).collect::<String>() + "...";
                }
                vec![
                    j.id.to_string(),
                    j.kind.clone(),
                    j.status.to_string(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    err,
                ]
            })
            .collect(),
    )
}

/// `copydesk queue workers`.
pub async fn workers(
    json: JsonFlag,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let rows = ops::workers(&env.db.pool).await?;
    json.print(
        out,
        rows,
        "no worker process has said it is alive",
        &["NAME", "KINDS", "RELEASE", "STARTED", "SEEN", "ALIVE"],
        |w| {
            vec![
                w.name,
                w.kinds.join(","),
                w.version,
                w.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                w.seen_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                if w.alive { "yes" } else { "no" }.to_owned(),
            ]
        },
    )
}

/// `copydesk queue kinds`.
pub async fn kinds(json: JsonFlag, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let rows = ops::kinds(&env.db.pool).await?;
    json.print(
        out,
        rows,
        "no kind is registered: run `copydesk migrate`",
        &["KIND", "VERSIONS", "ALIAS OF", "REGISTERED", "WORKERS"],
        |k| {
            vec![
                k.kind,
                k.versions
                    .iter()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                k.alias_of.unwrap_or_default(),
                k.registered_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                k.workers.to_string(),
            ]
        },
    )
}

pub async fn stats(json: JsonFlag, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let s = ops::stats(&env.db.pool).await?;
    if json.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(());
    }
    Ok(report::queue_stats(out, &s)?)
}
