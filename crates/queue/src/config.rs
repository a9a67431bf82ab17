//! The engine's settings: `[worker]` and `[retry]` of `config/default.toml`. The
//! application reads the file; these are the sections the engine owns.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

/// `[worker]`: how a process claims, runs, leases and finishes jobs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub batch_size: usize,
    pub max_batch_size: usize,
    pub prefetch: usize,
    pub finish_batch: usize,
    pub finishers: usize,
    pub lease_secs: u64,
    pub heartbeat_secs: u64,
    pub poll_interval_ms: u64,
    pub shutdown_grace_secs: u64,
    pub migrate_on_start: bool,
    /// How long a job whose input only a newer release's schema takes is given back
    /// for a worker that reads it before it fails (see `runner`).
    #[serde(default = "default_unreadable_after_secs")]
    pub unreadable_after_secs: u64,
    #[serde(default)]
    pub kinds: BTreeMap<String, usize>,
}

fn default_unreadable_after_secs() -> u64 {
    3600
}

impl WorkerSettings {
    /// How many jobs of `kind` one process runs at once.
    pub fn concurrency_for(&self, kind: &str) -> usize {
        self.kinds
            .get(kind)
            .copied()
            .unwrap_or(self.concurrency)
            .max(1)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(10))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    pub fn unreadable_after(&self) -> Duration {
        Duration::from_secs(self.unreadable_after_secs)
    }
}

/// `[retry]`: the backoff between attempts of a failed job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub base_delay_ms: u64,
    pub max_delay_secs: u64,
}

/// Everything the engine is configured by.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub worker: WorkerSettings,
    pub retry: RetrySettings,
}
