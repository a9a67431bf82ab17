//! The `copydesk` binary: parses arguments and calls the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = copydesk::cli::Cli::parse();
    let log = copydesk::config::Settings::load()
        .map(|s| s.log)
        .unwrap_or_else(|_| copydesk::config::Settings::defaults().log);
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
