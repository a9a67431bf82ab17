//! `noop`: does nothing after an optional sleep. For health checks, canaries and
//! benchmarks: it exercises claim, heartbeat and finish with no side effect.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::JobContext;
use crate::queue::{JobError, Outcome, ResultExt};

pub const KIND: &str = "noop";
pub const SCHEMA: &str = include_str!("../../jobs/noop/schema.json");

/// The input of a `noop` job (a wire format: fields are only ever added).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Milliseconds to wait before finishing (at most 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<u64>,
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let args: NoopArgs = serde_json::from_value(ctx.job.input).permanent()?;
    if let Some(ms) = args.sleep_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Outcome::done())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_the_stored_example() {
        let stored = r#"{"sleep_ms":250}"#;
        let args: NoopArgs = serde_json::from_str(stored).unwrap();
        assert_eq!(args.sleep_ms, Some(250));
        assert_eq!(serde_json::to_string(&args).unwrap(), stored);
        let empty: NoopArgs = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, NoopArgs::default());
    }
}
