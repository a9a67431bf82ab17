//! The `copydesk` command line: argument types (clap) and one module per command
//! group. Each command writes its output to the writer it is given (stdout in the
//! binary, a buffer in tests) and calls the same library functions the worker uses.

mod approvals;
mod cleanup;
mod enqueue;
mod events;
mod files;
mod jobs;
mod limits;
mod models;
mod notifications;
mod publish;
mod serve;
mod tenants;
mod worker;

use std::{io::Write, net::SocketAddr};

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::app::Env;
pub use crate::report::table;

/// copydesk: a job-queue worker service for AI content pipelines, driven by Postgres rows.
///
/// DATABASE_URL selects the database; without it copydesk runs its own Postgres under
/// COPYDESK_HOME (default ./.copydesk). COPYDESK_CONFIG names a settings file (see
/// config/default.toml); COPYDESK__SECTION__KEY variables override single settings.
#[derive(Debug, Parser)]
#[command(name = "copydesk", version, about, long_about)]
pub struct Cli {
    /// Who is acting: recorded in audit_log and on decisions (default: the OS user).
    #[arg(long, global = true, value_name = "NAME")]
    pub by: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Who the audit log names: `--by`, else the OS user (`USER`, `LOGNAME`, or the
    /// name of the process's user id), else `cli`.
    pub fn actor(&self) -> String {
        let account = || {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        };
        self.by
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .or_else(account)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "cli".into())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (or, with --revert, undo the newest one).
    Migrate {
        /// Undo the newest applied migration.
        #[arg(long)]
        revert: bool,
    },
    /// Run workers until SIGTERM or Ctrl-C.
    Worker(worker::WorkerArgs),
    /// Serve the HTTP API (and health, metrics) until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Enqueue one job and print its id.
    Enqueue(enqueue::EnqueueArgs),
    /// Inspect and steer jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Queue-wide views.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Human approvals between pipeline steps.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Start the content pipeline for a project, or see where it stands.
    #[command(subcommand)]
    Pipeline(approvals::PipelineCommand),
    /// Human edits of drafts.
    #[command(subcommand)]
    Drafts(approvals::DraftsCommand),
    /// What the steps produced.
    #[command(subcommand)]
    Artifacts(approvals::ArtifactsCommand),
    /// Publish an approved draft to an integration (now, or --at a time).
    Publish(publish::PublishArgs),
    /// Destinations of a project: encrypted credentials, status, a test call.
    #[command(subcommand)]
    Integrations(publish::IntegrationsCommand),
    /// Fernet keys for credentials: generate one, or re-encrypt under the first.
    #[command(subcommand)]
    Keys(publish::KeysCommand),
    /// App settings (key/value; secrets encrypted).
    #[command(subcommand)]
    Settings(publish::SettingsCommand),
    /// Delete finished jobs past retention, expired cache rows; rescue expired leases;
    /// archive idle projects (for an external cron; workers also schedule it).
    Cleanup(cleanup::CleanupArgs),
    /// Run a small workload end to end on the embedded Postgres and show the result.
    Demo(DemoArgs),
    /// Database helpers.
    #[command(subcommand)]
    Db(DbCommand),
    /// The companies sharing this database, and the database roles that are each.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Tokens for the HTTP API (the secret is shown once, when made).
    #[command(subcommand)]
    Tokens(tenants::TokensCommand),
    /// Who did what to which row, and when.
    #[command(subcommand)]
    Audit(tenants::AuditCommand),
    /// Rate limits on model servers and platforms, shared by every worker process.
    #[command(subcommand)]
    Limits(limits::LimitsCommand),
    /// Model servers: what each is (its dialect), and the structured mode each model
    /// answers in.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// What needs a person: jobs failed for good, approvals waiting.
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// Lifecycle events for other services: webhook subscriptions and their deliveries.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Images for posts, style samples and exports, stored once per tenant by SHA-256.
    #[command(subcommand)]
    Files(files::FilesCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run N plain noop jobs instead of the content pipeline (a queue workout).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub noop: Option<u32>,
    /// Afterwards, keep the console and the API up over what the demo made and print a
    /// token to log in with, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` listens (default: [http] serve, 127.0.0.1:8080).
    #[arg(long, value_parser = parse_addr, requires = "serve")]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts per kind and status, the oldest ready job's age, recent throughput.
    Stats(JsonFlag),
    /// Worker processes: their kinds, release, when each was last seen alive (a process
    /// that died is listed, not alive, for a day).
    Workers(JsonFlag),
    /// The kinds jobs may name: the versions of each input contract the workers
    /// registered (a rolling deploy shows two), former names, live processes claiming it.
    Kinds(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print the connection URL (for psql), starting the embedded cluster if needed.
    Url,
}

/// `--json`, shared by every listing.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl JsonFlag {
    /// Prints a listing: JSON with `--json`; else `empty` when there is nothing; else
    /// a table of `headers`, one row per item.
    pub fn print<T: serde::Serialize>(
        self,
        out: &mut (dyn Write + Send),
        list: Vec<T>,
        empty: &str,
        headers: &[&str],
        row: impl FnMut(T) -> Vec<String>,
    ) -> anyhow::Result<()> {
        if self.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        } else if list.is_empty() {
            writeln!(out, "{empty}")?;
        } else {
            writeln!(
                out,
                "{}",
                table(headers, list.into_iter().map(row).collect())
            )?;
        }
        Ok(())
    }
}

/// Runs one parsed command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    if let Command::Demo(args) = cli.command {
        let serve = args.serve.then(|| (args.http, worker::shutdown_signal()));
        return crate::demo::run(args.noop, serve, out).await;
    }
    if let Command::Keys(publish::KeysCommand::Generate) = cli.command {
        return publish::keys_generate(out);
    }
    // A worker listens for SIGTERM from the start, before the database is up.
    let shutdown =
        matches!(cli.command, Command::Worker(_) | Command::Serve(_)).then(worker::shutdown_signal);
    let env = Env::open().await?;
    let by = cli.actor();
    let result = dispatch(cli.command, &env, &by, shutdown, out).await;
    env.db.pool.close().await;
    result
}

async fn dispatch(
    command: Command,
    env: &Env,
    by: &str,
    shutdown: Option<impl std::future::Future<Output = ()> + Send + 'static>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        Command::Migrate { revert: false } => {
            let n = env.db.migrate(&crate::app::catalog()).await?;
            writeln!(out, "applied {n} migration(s); the schema is current")?;
        }
        Command::Migrate { revert: true } => match env.db.revert_newest().await? {
            Some(m) => writeln!(out, "reverted {m}")?,
            None => writeln!(out, "no migration is applied; nothing to revert")?,
        },
        Command::Worker(args) => {
            let shutdown = shutdown.expect("installed for the worker command");
            worker::run(args, env, shutdown, out).await?
        }
        Command::Serve(args) => {
            let shutdown = shutdown.expect("installed for the serve command");
            serve::run(args, env, shutdown, out).await?
        }
        Command::Enqueue(args) => enqueue::run(args, env, out).await?,
        Command::Jobs(cmd) => jobs::run(cmd, env, by, out).await?,
        Command::Queue(QueueCommand::Stats(f)) => jobs::stats(f, env, out).await?,
        Command::Queue(QueueCommand::Workers(f)) => jobs::workers(f, env, out).await?,
        Command::Queue(QueueCommand::Kinds(f)) => jobs::kinds(f, env, out).await?,
        Command::Cleanup(args) => cleanup::run(args, env, out).await?,
        Command::Approvals(cmd) => approvals::run(cmd, env, by, out).await?,
        Command::Pipeline(cmd) => approvals::pipeline(cmd, env, out).await?,
        Command::Drafts(cmd) => approvals::drafts(cmd, env, by, out).await?,
        Command::Artifacts(cmd) => approvals::artifacts(cmd, env, out).await?,
        Command::Publish(args) => publish::publish(args, env, by, out).await?,
        Command::Integrations(cmd) => publish::integrations(cmd, env, by, out).await?,
        Command::Keys(cmd) => publish::keys(cmd, env, by, out).await?,
        Command::Tenants(cmd) => tenants::tenants(cmd, env, by, out).await?,
        Command::Tokens(cmd) => tenants::tokens(cmd, env, by, out).await?,
        Command::Audit(cmd) => tenants::audit(cmd, env, out).await?,
        Command::Limits(cmd) => limits::run(cmd, env, by, out).await?,
        Command::Models(cmd) => models::run(cmd, env, out).await?,
        Command::Notifications(cmd) => notifications::run(cmd, env, by, out).await?,
        Command::Events(cmd) => events::run(cmd, env, by, out).await?,
        Command::Files(cmd) => files::run(cmd, env, by, out).await?,
        Command::Settings(cmd) => publish::settings(cmd, env, out).await?,
        Command::Db(DbCommand::Url) => match &env.db.cluster {
            Some(c) => writeln!(out, "{}", c.url("copydesk"))?,
            None => writeln!(out, "{}", std::env::var("DATABASE_URL").unwrap_or_default())?,
        },
        Command::Demo(_) => unreachable!("handled before opening the database"),
    }
    Ok(())
}

/// An argument that is not what it should be (clap shows the message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArg(String);

/// Parses an id, naming the argument when it is not a UUID.
pub fn parse_id(s: &str) -> Result<Uuid, BadArg> {
    Uuid::parse_str(s).map_err(|e| BadArg(format!("{s:?} is not an id (a UUID): {e}")))
}

/// Parses a duration: a whole number with `s`, `m`, `h` or `d` (`90d`, `12h`, `30m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, BadArg> {
    crate::config::parse_duration(s).map_err(|e| BadArg(e.to_string()))
}

/// `--tenant SLUG`: the tenant a command acts for or lists (all or `default` without it).
#[derive(Debug, Clone, Args)]
pub struct TenantFlag {
    /// Only this tenant's rows (its slug; `copydesk tenants list` shows them).
    #[arg(long, value_name = "SLUG")]
    pub tenant: Option<String>,
}

impl TenantFlag {
    /// The tenant's id, or none without the flag; an unknown slug is an error naming it.
    pub async fn id(&self, env: &Env) -> anyhow::Result<Option<Uuid>> {
        Ok(crate::store::tenants::resolve(&env.db.pool, self.tenant.as_deref()).await?)
    }
}

/// Parses `--http` addresses.
pub fn parse_addr(s: &str) -> Result<SocketAddr, BadArg> {
    s.parse()
        .map_err(|e| BadArg(format!("{s:?} is not an address like 127.0.0.1:9464: {e}")))
}
