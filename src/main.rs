//! The `copydesk` binary: parses arguments and calls the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = copydesk::cli::Cli::parse();
    let mut log = copydesk::config::Settings::load()
        .map(|s| s.log)
        .unwrap_or_else(|_| copydesk::config::Settings::defaults().log);
    // The demo shows its own progress; only errors are logged unless RUST_LOG says more.
    if matches!(cli.command, copydesk::cli::Command::Demo(_))
        && std::env::var_os("RUST_LOG").is_none()
    {
        log.filter = "error".into();
    }
    copydesk::telemetry::init(&log);
    let mut out = std::io::stdout();
    // A TRACEPARENT in the environment (as a traced script passes it on) is the trace
    // of the jobs this command enqueues.
    let trace = std::env::var("TRACEPARENT").ok().and_then(|tp| {
        copydesk_queue::trace::TraceContext::parse(
            tp.trim(),
            std::env::var("TRACESTATE").ok().as_deref(),
        )
    });
    let ran = copydesk_queue::trace::scope(trace, copydesk::cli::run(cli, &mut out)).await;
    tokio::task::spawn_blocking(copydesk::telemetry::shutdown)
        .await
        .ok();
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
