//! Stalled queues: a kind whose oldest ready job has waited past `[alerts]
//! stall_after_secs` is told to people as a `queue_stalled` warning (the operators',
//! in the `default` tenant), naming the kind, the wait, the live workers serving it
//! and what to look at; repeats of one episode fold into its row with a count, and the
//! row is resolved (marked read) at the first look that finds the kind moving again.
//! Every worker process looks every `[alerts] check_every_secs` (`alerts::watch`).

use std::time::Duration;

use serde_json::json;

use super::alerts::{Condition, tell};
use crate::{db::Db, store};

/// The notification's kind.
pub const KIND: &str = "queue_stalled";

/// A stalled kind, as one look found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub kind: String,
    pub waited_secs: f64,
    /// Live worker processes that claim the kind.
    pub workers: i64,
}

/// One look: raises (or counts again) `queue_stalled` for each kind whose oldest ready
/// job has waited past `stall_after`, and resolves it for each kind that does not.
pub async fn check(pool: &Db, stall_after: Duration) -> Result<Vec<Stall>, store::Error> {
    // Every worker process looks: the ready jobs alone, not the whole queue's counts.
    let oldest = copydesk_queue::ops::oldest_ready(pool).await?;
    let live: std::collections::BTreeMap<String, i64> = copydesk_queue::ops::live_workers(pool)
        .await?
        .into_iter()
        .collect();
    let stalls: Vec<Stall> = oldest
        .into_iter()
        .filter(|(_, waited)| *waited > stall_after.as_secs_f64())
        .map(|(kind, waited_secs)| Stall {
            workers: live.get(&kind).copied().unwrap_or(0),
            kind,
            waited_secs,
        })
        .collect();
    let conditions: Vec<Condition> = stalls
        .iter()
        .map(|s| {
            let (title, body) = words(s);
            Condition {
                cause: s.kind.clone(),
                title,
                body,
                data: json!({"kind": s.kind, "waited_secs": s.waited_secs.round(),
                             "workers": s.workers}),
            }
        })
        .collect();
    tell(pool, KIND, &conditions, "copydesk (the queue moved again)").await?;
    Ok(stalls)
}

/// The title and body of a stall: what waits, who serves it, where to look.
fn words(s: &Stall) -> (String, String) {
    let waited = s.waited_secs.round() as u64;
    let wait = format!("{}m {:02}s", waited / 60, waited % 60);
    let title = format!("The {} queue has not moved for {wait}", s.kind);
    let body = if s.workers == 0 {
        format!(
            "Its oldest ready job has waited {wait} and no live worker serves {kind}: start \
             `copydesk worker` (or one with `--kinds {kind}`); `copydesk queue workers` lists \
             the processes and when each was last seen.",
            kind = s.kind
        )
    } else {
        format!(
            "Its oldest ready job has waited {wait} although {n} live worker process(es) \
             serve {kind} and are not claiming it. Look at `copydesk queue workers` (are they \
             the version you expect?), their logs, `copydesk limits list` (a limit that holds \
             every job), and a transaction held open (`SELECT pid, usename, application_name, \
             state, now() - xact_start FROM pg_stat_activity WHERE backend_xmin IS NOT NULL \
             ORDER BY xact_start`).",
            n = s.workers,
            kind = s.kind
        )
    };
    (title, body)
}
