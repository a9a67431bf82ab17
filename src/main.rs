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
    match copydesk::cli::run(cli, &mut out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
