//! Structured logs with `tracing`: text for people or JSON for collectors, to stderr
//! (stdout carries command output). Every line inside a job carries its span's
//! `job_id`, `kind` and `attempt`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogSettings;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(cfg: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if cfg.format == "json" {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
}
