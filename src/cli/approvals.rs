//! `copydesk approvals list|show|approve|reject`, `pipeline start|show`, `drafts edit`
//! and `artifacts search`.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use uuid::Uuid;

use super::{Env, JsonFlag, TenantFlag, table};
use crate::{
    domain::{ApprovalStatus, Channel},
    pipeline::{
        Plan, decisions,
        start::{ProjectRef, start},
    },
    report, store,
};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Approvals, newest first.
    List {
        #[arg(long)]
        status: Option<ApprovalStatus>,
        /// Only approvals of this project's jobs.
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        #[command(flatten)]
        tenant: TenantFlag,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// One approval with the artifact it is about.
    Show {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Approve: the next step follows (drafts, or publishing). `--by` names who.
    Approve {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[arg(long)]
        notes: Option<String>,
    },
    /// Reject with notes: the draft is rewritten with them while iterations remain.
    Reject {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        #[arg(long)]
        notes: String,
    },
    /// A client review link: a URL that lets a person with no account see this pending
    /// approval and decide it (approve, reject with notes, edit) once, until it expires.
    /// Signed with COPYDESK_LINK_KEY; printed on [http] public_url.
    Link {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
        /// Whom it is for; the audit log names the decision by it.
        #[arg(long, default_value = "client")]
        name: String,
        /// How long it works: s, m, h or d.
        #[arg(long, default_value = "72h", value_parser = super::parse_duration)]
        expires: std::time::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Withdraw a review link (its id is in `copydesk approvals link --json` and the audit log).
    RevokeLink {
        #[arg(value_parser = super::parse_id)]
        id: Uuid,
    },
}

pub async fn run(
    cmd: ApprovalsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let pool = &env.db.pool;
    match cmd {
        ApprovalsCommand::List {
            status,
            project,
            tenant,
            limit,
            json,
        } => {
            let tenant = tenant.id(env).await?;
            let rows = store::approvals::list(pool, status, project, tenant, limit).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else if rows.is_empty() {
                writeln!(out, "no approvals")?;
            } else {
                let t = rows
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            a.status.to_string(),
                            a.artifact_id.to_string(),
                            a.decided_by.clone().unwrap_or_default(),
                            a.applied_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_default(),
                            a.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                writeln!(
                    out,
                    "{}",
                    table(
                        &[
                            "ID",
                            "STATUS",
                            "ARTIFACT",
                            "DECIDED BY",
                            "APPLIED",
                            "LAST ERROR"
                        ],
                        t
                    )
                )?;
            }
        }
        ApprovalsCommand::Show { id, json } => {
            let a = store::approvals::show(pool, id).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&a)?)?;
            } else {
                writeln!(
                    out,
                    "approval {id}: {}",
                    a["status"].as_str().unwrap_or_default()
                )?;
                if let Some(e) = a["last_error"].as_str() {
                    writeln!(out, "could not be applied yet: {e}")?;
                }
                let art = &a["artifact"];
                writeln!(
                    out,
                    "{} v{} ({}): {}\n\n{}",
                    art["kind"].as_str().unwrap_or_default(),
                    art["version"],
                    art["channel"].as_str().unwrap_or("-"),
                    art["title"].as_str().unwrap_or_default(),
                    art["content"].as_str().unwrap_or_default()
                )?;
            }
        }
        ApprovalsCommand::Link {
            id,
            name,
            expires,
            json,
        } => {
            let key = crate::links::LinkKey::from_env()?;
            let expires_at = Utc::now() + chrono::Duration::from_std(expires)?;
            let mut tx = pool.begin().await?;
            let link = crate::pipeline::review_links::create_in(&mut tx, id, &name, by, expires_at)
                .await?;
            tx.commit().await?;
            let url = crate::links::url(
                &crate::http::api::public_url(&env.settings),
                &key.sign(link.id),
            );
            if json.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "id": link.id, "approval_id": link.approval_id, "name": link.name,
                        "expires_at": link.expires_at, "url": url,
                    }))?
                )?;
            } else {
                writeln!(
                    out,
                    "review link {} for {:?}, works once until {}:",
                    link.id,
                    link.name,
                    link.expires_at.format("%Y-%m-%d %H:%M UTC")
                )?;
                writeln!(out, "{url}")?;
            }
        }
        ApprovalsCommand::RevokeLink { id } => {
            let mut tx = pool.begin().await?;
            let link = crate::pipeline::review_links::revoke_in(&mut tx, id, by).await?;
            tx.commit().await?;
            writeln!(out, "review link {} for {:?} withdrawn", link.id, link.name)?;
        }
        ApprovalsCommand::Approve { id, notes } => {
            let a = decisions::decide(pool, id, true, by, notes.as_deref()).await?;
            writeln!(out, "{} approved by {by}; workers apply it next", a.id)?;
        }
        ApprovalsCommand::Reject { id, notes } => {
            let a = decisions::decide(pool, id, false, by, Some(&notes)).await?;
            writeln!(out, "{} rejected by {by}; workers apply it next", a.id)?;
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Start the pipeline for a project: brand voice first, then drafts per channel.
    Start(StartArgs),
    /// Each channel's state, current draft, score and approval, and the cost so far.
    Show {
        #[arg(value_parser = super::parse_id)]
        project: Uuid,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum DraftsCommand {
    /// Store your edit of a draft as a new human version; its pending approval then
    /// refers to your version.
    Edit {
        #[arg(value_parser = super::parse_id)]
        artifact: Uuid,
        /// The edited text ("-" for standard input).
        #[arg(long)]
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Full-text search over titles and contents ("phrases", -excluded words).
    Search {
        words: String,
        #[arg(long, value_parser = super::parse_id)]
        project: Option<Uuid>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn drafts(
    cmd: DraftsCommand,
    env: &Env,
    by: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let DraftsCommand::Edit { artifact, file } = cmd;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("reading --file {}: {e}", file.display()))?
    };
    let id = decisions::edit_draft(&env.db.pool, artifact, &text, by).await?;
    writeln!(out, "{id}")?;
    Ok(())
}

pub async fn artifacts(
    cmd: ArtifactsCommand,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let ArtifactsCommand::Search {
        words,
        project,
        limit,
        json,
    } = cmd;
    let hits = store::artifacts::search(&env.db.pool, &words, project, limit).await?;
    if json.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&hits)?)?;
    } else if hits.is_empty() {
        writeln!(out, "no artifact matches {words:?}")?;
    } else {
        let rows = hits
            .iter()
            .map(|h| {
                vec![
                    h.id.to_string(),
                    format!("{} v{}", h.kind, h.version),
                    h.channel.map(|c| c.to_string()).unwrap_or_default(),
                    h.snippet.replace('\n', " "),
                ]
            })
            .collect();
        writeln!(out, "{}", table(&["ID", "KIND", "CHANNEL", "MATCH"], rows))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["project", "new"])))]
pub struct StartArgs {
    /// An existing project.
    #[arg(long, value_parser = super::parse_id)]
    pub project: Option<Uuid>,
    /// Create a project with this name.
    #[arg(long)]
    pub new: Option<String>,
    /// The store's website, analysed for its brand voice.
    #[arg(long)]
    pub store_url: String,
    /// Channels to write for (comma-separated): blog, linkedin, x, facebook.
    #[arg(long, value_delimiter = ',', required = true)]
    pub channels: Vec<Channel>,
    #[arg(long)]
    pub topic: Option<String>,
    /// Publish approved drafts at this time (RFC 3339).
    #[arg(long)]
    pub schedule: Option<DateTime<Utc>>,
    /// The tenant the project is (or is created) in; `default` without it.
    #[arg(long, value_name = "SLUG")]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub async fn pipeline(
    cmd: PipelineCommand,
    env: &Env,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let a = match cmd {
        PipelineCommand::Start(a) => a,
        PipelineCommand::Show { project, json } => {
            let s = store::status::project(&mut *env.db.pool.begin().await?, project).await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
            } else {
                report::project_status(out, &s)?;
            }
            return Ok(());
        }
    };
    let project = match (a.project, a.new) {
        (Some(p), _) => ProjectRef::Existing(p),
        (None, Some(name)) => ProjectRef::New(name),
        (None, None) => unreachable!("clap requires one of --project and --new"),
    };
    let plan = Plan {
        channels: a.channels,
        topic: a.topic,
        instructions: None,
        schedule: a.schedule,
    };
    let tenant = match &a.tenant {
        Some(slug) => Some(store::tenants::by_slug(&env.db.pool, slug).await?),
        None => None,
    };
    let mut tx = env.db.pool.begin().await?;
    let started = start(
        &mut tx,
        &crate::app::catalog(),
        tenant.as_ref(),
        project,
        &a.store_url,
        plan,
    )
    .await?;
    tx.commit().await?;
    if a.json.json {
        writeln!(
            out,
            "{}",
            json!({"project_id": started.project_id, "job_id": started.job.id})
        )?;
    } else {
        writeln!(
            out,
            "project {}: brand voice analysis enqueued as job {}",
            started.project_id, started.job.id
        )?;
    }
    Ok(())
}
