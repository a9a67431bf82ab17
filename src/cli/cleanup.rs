//! `copydesk cleanup`.

use std::io::Write;

use clap::Args;

use super::Env;

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Count what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CleanupArgs, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let r =
        crate::jobs::cleanup::cleanup(&env.db.pool, &env.settings.cleanup, args.dry_run).await?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(());
    }
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    writeln!(
        out,
        "{verb} {} done, {} failed, {} cancelled job(s) past retention",
        r.deleted_done, r.deleted_failed, r.deleted_cancelled
    )?;
    if !r.dry_run {
        writeln!(
            out,
            "deleted {} step(s) kept by those jobs",
            r.deleted_job_steps
        )?;
    }
    writeln!(
        out,
        "{verb} {} brand-voice cache row(s) and {} catalogue item(s) past expiry",
        r.deleted_brand_voice_cache, r.deleted_catalog_items
    )?;
    let (rescue, archive) = if r.dry_run {
        ("would rescue", "would archive")
    } else {
        ("rescued", "archived")
    };
    writeln!(
        out,
        "{rescue} {} expired lease(s); {archive} {} idle project(s)",
        r.rescued_leases, r.archived_projects
    )?;
    if !r.dry_run {
        writeln!(
            out,
            "gave back {} budget reservation(s) of model calls whose process died",
            r.released_reservations
        )?;
    }
    writeln!(
        out,
        "{} {} approval(s) waiting past [cleanup] approval_reminder_hours",
        if r.dry_run {
            "would remind of"
        } else {
            "reminded of"
        },
        r.reminded_approvals
    )?;
    writeln!(
        out,
        "{verb} {} lifecycle event(s) past [cleanup] event_retention_days, none pending",
        r.deleted_events
    )?;
    Ok(())
}
