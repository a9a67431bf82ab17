//! `noop`: does nothing after an optional sleep. For health checks, canaries and
//! benchmarks: it exercises claim, heartbeat and finish with no side effect.

use std::time::Duration;

use copydesk_queue::{JobArgs, JobError, Outcome};
use serde::{Deserialize, Serialize};

use super::Ctx;

/// The input of a `noop` job (a wire format: fields are only ever added).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Milliseconds to wait before finishing (at most 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<u64>,
}

impl JobArgs for NoopArgs {
    const KIND: &'static str = "noop";
    const SCHEMA: &'static str = include_str!("../../jobs/noop/schema.json");
}

pub async fn run(_ctx: Ctx, args: NoopArgs) -> Result<Outcome, JobError> {
    if let Some(ms) = args.sleep_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Outcome::done())
}
