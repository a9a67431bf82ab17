//! `copydesk serve`: the console, the API, health and metrics on one address.

use std::{io::Write, net::SocketAddr};

use anyhow::Context;
use clap::Args;

use super::Env;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on this address (default: [http] serve, 127.0.0.1:8080).
    #[arg(long, value_parser = super::parse_addr)]
    pub http: Option<SocketAddr>,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    pub no_migrate: bool,
}

/// Serves until `shutdown` resolves; requests under way finish first.
pub async fn run(
    args: ServeArgs,
    env: &Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if env.settings.worker.migrate_on_start && !args.no_migrate {
        env.db.migrate(&crate::app::catalog()).await?;
    }
    let addr = match args.http {
        Some(a) => a,
        None => {
            let s = &env.settings.http.serve;
            s.parse().with_context(|| {
                format!("[http] serve = {s:?} is not an address like 127.0.0.1:8080")
            })?
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    writeln!(
        out,
        "serving the console on http://{bound}/console/ (log in with a token: copydesk tokens \
         create), the API on http://{bound}/api/v1 (described at /api/v1/openapi.json) and \
         /healthz, /readyz, /metrics; Ctrl-C stops"
    )?;
    out.flush()?;
    crate::http::serve_on(crate::app::api_state(env, Some(bound)), listener, shutdown).await?;
    writeln!(out, "stopped")?;
    Ok(())
}
