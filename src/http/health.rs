//! `/healthz`, `/readyz` and `/metrics`: served by every process with `--http`
//! (`copydesk worker --http ADDR`) and by `copydesk serve` beside the API.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::OnceLock,
};

use crate::db::Db;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process (the `metrics` macros record
/// into it from then on) and returns its handle.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                &[0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0],
            )
            .and_then(|b| {
                // The wait from ready to started, up to the hour a stall is long past.
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("copydesk_job_wait_seconds".into()),
                    &[
                        0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    ],
                )
            })
            .and_then(|b| b.install_recorder())
            .expect("the Prometheus recorder installs once")
    })
}

/// The router, for tests and for [`serve`].
pub fn router(pool: Db) -> Router {
    prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(pool)
}

/// Serves the router on `addr` until the task is aborted.
pub async fn serve(pool: Db, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, router(pool)).await
}

async fn readyz(State(pool): State<Db>) -> impl IntoResponse {
    match crate::db::pending(&pool).await {
        Ok(p) if p.is_empty() => (StatusCode::OK, "ready\n".to_owned()),
        Ok(p) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("migrations pending: {}\n", p.join(", ")),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e}\n"),
        ),
    }
}

async fn metrics_text(State(pool): State<Db>) -> impl IntoResponse {
    // Read at scrape time, so every process reports the same truth. A kind (and status)
    // reported once is reported from then on: as 0 when it emptied, not dropped.
    static SEEN: std::sync::Mutex<BTreeSet<(String, String)>> =
        std::sync::Mutex::new(BTreeSet::new());
    static KINDS: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let live = crate::queue::ops::live_workers(&pool).await.ok();
    let rows = crate::queue::ops::stats(&pool).await.map(|s| s.rows).ok();
    let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
    kinds.extend(rows.iter().flatten().map(|r| r.kind.clone()));
    kinds.extend(live.iter().flatten().map(|(k, _)| k.clone()));
    // Live worker processes claiming each kind (`copydesk_workers`).
    if let Some(live) = live {
        let live: BTreeMap<String, i64> = live.into_iter().collect();
        for kind in kinds.iter() {
            let n = live.get(kind).copied().unwrap_or(0);
            metrics::gauge!("copydesk_workers", "kind" => kind.clone()).set(n as f64);
        }
    }
    if let Some(rows) = rows {
        // The age of each kind's oldest ready job (0: none waits): what a stall alert
        // watches, since a queue that stopped moving can keep a normal depth.
        let oldest: BTreeMap<&str, f64> = rows
            .iter()
            .filter(|r| r.status == crate::queue::JobStatus::Queued)
            .filter_map(|r| Some((r.kind.as_str(), r.oldest_ready_secs?)))
            .collect();
        for kind in kinds.iter() {
            let age = oldest.get(kind.as_str()).copied().unwrap_or(0.0);
            metrics::gauge!("copydesk_queue_oldest_ready_seconds", "kind" => kind.clone()).set(age);
        }
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let now: BTreeSet<(String, String)> = rows
            .iter()
            .map(|r| (r.kind.clone(), r.status.to_string()))
            .collect();
        for (kind, status) in seen.difference(&now) {
            metrics::gauge!("copydesk_queue_jobs", "kind" => kind.clone(), "status" => status.clone())
                .set(0.0);
        }
        for r in rows {
            metrics::gauge!("copydesk_queue_jobs", "kind" => r.kind, "status" => r.status.to_string())
                .set(r.jobs as f64);
        }
        seen.extend(now);
    }
    drop(kinds);
    prometheus().render()
}
