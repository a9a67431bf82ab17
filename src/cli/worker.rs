//! `copydesk worker`.

use std::{io::Write, net::SocketAddr};

use clap::Args;

use super::Env;
use crate::app::worker::{WorkerOptions, run as run_worker};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Only these kinds (comma-separated); all kinds by default.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Option<Vec<String>>,
    /// Jobs of each kind run at once (overrides [worker] concurrency and [worker.kinds]).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Serve /healthz, /readyz and /metrics on this address.
    #[arg(long, value_parser = super::parse_addr)]
    pub http: Option<SocketAddr>,
    /// Serve the API on the --http address too (one process for both).
    #[arg(long)]
    pub serve: bool,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
    /// Do not run the cleanup scheduler in this process.
    #[arg(long)]
    pub no_scheduler: bool,
}

/// Runs workers until `shutdown` resolves (see [`shutdown_signal`]).
pub async fn run(
    args: WorkerArgs,
    env: &Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if env.settings.worker.migrate_on_start && !args.no_migrate {
        let n = env.db.migrate(&crate::app::catalog()).await?;
        if n > 0 {
            tracing::info!(applied = n, "migrations applied");
        }
    }
    let http = args.http.or_else(|| {
        let l = &env.settings.http.listen;
        (!l.is_empty()).then(|| l.parse().ok()).flatten()
    });
    if args.serve && http.is_none() {
        anyhow::bail!("--serve needs an address to serve on: give --http or set [http] listen");
    }
    let opts = WorkerOptions {
        kinds: args.kinds,
        concurrency: args.concurrency.map(usize::from),
        http,
        api: args.serve.then(|| crate::app::api_state(env, http)),
        scheduler: !args.no_scheduler,
        listen: env.settings.database.listen_options()?,
    };
    let summary = run_worker(env.runner()?, opts, shutdown).await?;
    writeln!(
        out,
        "worker stopped; {} unfinished job(s) returned to the queue",
        summary.released_on_shutdown
    )?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives while the
/// worker is still starting is kept and stops it cleanly once it runs.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
