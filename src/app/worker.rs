//! A `copydesk worker` process: the engine's workers for the kinds asked for, the
//! periodic enqueues (cleanup, cache refresh), the approvals applier, and the HTTP
//! endpoints, until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use copydesk_queue::{
    NewJob, Runner,
    backend::Wake,
    worker::{self as engine, Periodic, WorkerSummary},
};
use tokio::sync::Notify;

use crate::{
    config::Settings,
    jobs::{
        App, JobArgs,
        brand_voice_analysis::BrandVoiceArgs,
        cache_refresh::{CacheRefreshArgs, CacheSource},
        cleanup::CleanupArgs,
        evaluation::EvaluationArgs,
        token_refresh::TokenRefreshArgs,
    },
    pipeline::decisions,
};

/// What to run in this process.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Kinds to claim; all registered kinds when `None`.
    pub kinds: Option<Vec<String>>,
    /// Overrides every kind's concurrency.
    pub concurrency: Option<usize>,
    /// Serve /healthz, /readyz and /metrics here.
    pub http: Option<SocketAddr>,
    /// Serve the API on the `http` address too (`copydesk worker --serve`).
    pub api: Option<crate::http::api::ApiState>,
    /// Run the periodic enqueues (each also needs its `enabled` setting).
    pub scheduler: bool,
    /// LISTEN through its own connection here, not through the pool (`[database]
    /// listen_url`).
    pub listen: Option<sqlx::postgres::PgConnectOptions>,
}

/// Runs a worker process until `shutdown` resolves, then drains and releases (see
/// `copydesk_queue::worker`).
pub async fn run(
    runner: Runner<App>,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WorkerSummary, copydesk_queue::Error> {
    let settings = runner.app.settings.clone();
    let runs = |kind: &str| {
        opts.kinds
            .as_ref()
            .map_or(runner.registry.handler(kind).is_some(), |k| {
                k.iter().any(|k| k == kind)
            })
    };
    // Decisions are applied by every process that runs a step which asks for them.
    let decisions_wake: Wake = Arc::new(Notify::new());
    let applier = (runs(BrandVoiceArgs::KIND) || runs(EvaluationArgs::KIND))
        .then(|| tokio::spawn(apply_decisions(runner.clone(), decisions_wake.clone())));
    // Every process looks for stalled queues and a held horizon (repeats fold into one
    // warning each).
    let alerts = tokio::spawn(super::alerts::watch(
        runner.pool.clone(),
        settings.alerts.clone(),
    ));
    let http = opts.http.map(|addr| match opts.api.clone() {
        Some(api) => tokio::spawn(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            crate::http::serve_on(api, listener, std::future::pending()).await
        }),
        None => tokio::spawn(crate::http::serve(runner.pool.clone(), addr)),
    });
    let engine_opts = engine::WorkerOptions {
        kinds: opts.kinds.clone(),
        concurrency: opts.concurrency,
        periodic: if opts.scheduler {
            periodic(&settings)
        } else {
            Vec::new()
        },
        channels: vec![(decisions::CHANNEL.to_owned(), decisions_wake)],
        listen: opts.listen.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    };
    let result = engine::run(runner, engine_opts, shutdown).await;
    if let Some(a) = applier {
        a.abort();
    }
    alerts.abort();
    if let Some(h) = http {
        h.abort();
    }
    result
}

/// The enqueues every worker makes on a schedule: one `cleanup` per `[cleanup]
/// schedule` tick, and per `[catalog] schedule` tick one `cache_refresh` of brand
/// voices and (when a catalogue is configured) one of the catalogue. Each job's
/// idempotency key names its tick, so however many processes tick, each tick enqueues
/// once.
pub fn periodic(settings: &Settings) -> Vec<Periodic> {
    let mut all = Vec::new();
    if settings.cleanup.enabled {
        all.push(Periodic {
            name: CleanupArgs::KIND.into(),
            schedule: settings.cleanup.schedule.clone(),
            jobs: Arc::new(|at| {
                let at = at.to_rfc3339();
                vec![
                    NewJob::of(&CleanupArgs {
                        tick: Some(at.clone()),
                    })
                    .idempotency_key(format!("cleanup:{at}")),
                ]
            }),
        });
    }
    if settings.cleanup.enabled && !settings.publish.token_refresh_schedule.trim().is_empty() {
        all.push(Periodic {
            name: TokenRefreshArgs::KIND.into(),
            schedule: settings.publish.token_refresh_schedule.clone(),
            jobs: Arc::new(|at| {
                let at = at.to_rfc3339();
                vec![
                    NewJob::of(&TokenRefreshArgs {
                        tick: Some(at.clone()),
                    })
                    .idempotency_key(format!("token_refresh:{at}")),
                ]
            }),
        });
    }
    if settings.catalog.enabled {
        let sources: &'static [CacheSource] = if settings.catalog.url.trim().is_empty() {
            &[CacheSource::BrandVoice]
        } else {
            &[CacheSource::Catalog, CacheSource::BrandVoice]
        };
        all.push(Periodic {
            name: CacheRefreshArgs::KIND.into(),
            schedule: settings.catalog.schedule.clone(),
            jobs: Arc::new(move |at| {
                let at = at.to_rfc3339();
                sources
                    .iter()
                    .map(|s| {
                        NewJob::of(&CacheRefreshArgs {
                            source: *s,
                            within_hours: None,
                            // Each tenant's brand voices are refreshed in a job of its own.
                            every_tenant: *s == CacheSource::BrandVoice,
                        })
                        .idempotency_key(format!("cache_refresh:{s}:{at}"))
                    })
                    .collect()
            }),
        });
    }
    all
}

/// Applies decided approvals whenever a decision is announced, and on the poll
/// interval (a decision made while no worker listened is still applied).
async fn apply_decisions(runner: Runner<App>, wake: Wake) {
    const BATCH: i64 = 50;
    let poll = runner.config.worker.poll_interval();
    loop {
        match decisions::apply_decided(&runner.pool, runner.catalog(), &runner.app.settings, BATCH)
            .await
        {
            Ok(done) => {
                for a in &done {
                    match &a.error {
                        None => tracing::info!(approval_id = %a.approval_id, status = %a.status,
                            enqueued = a.enqueued.len(), job_status = ?a.job_status,
                            "applied an approval decision"),
                        Some(e) => tracing::warn!(approval_id = %a.approval_id, error = %e,
                            "an approval decision could not be applied; it is tried again later"),
                    }
                }
                if done.len() as i64 == BATCH {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "applying approval decisions failed; will try again")
            }
        }
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}
