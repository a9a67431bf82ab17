//! The composition root: the one place that knows every part of the application. It
//! builds the services handlers share (model client, guarded fetcher, keys, the
//! publishers' HTTP client), the registry of kinds (each kind's args type and handler,
//! the pipeline's steps among them), the runner the engine drives, and a worker process
//! (`worker.rs`: the engine's workers, the periodic enqueues, the approvals applier and
//! the HTTP endpoints).

pub mod alerts;
pub mod horizon;
pub mod stalls;
pub mod worker;

use std::sync::{Arc, LazyLock};

use crate::db::Db;
use anyhow::Context;
use copydesk_queue::{Catalog, Registry, Runner};

use crate::{
    config::Settings,
    db::Database,
    fetch::Fetcher,
    jobs::{
        App, Services, brand_voice_analysis::BrandVoiceArgs, cache_refresh::CacheRefreshArgs,
        cleanup::CleanupArgs, deliver_event::DeliverEventArgs, draft_generation::DraftArgs,
        evaluation::EvaluationArgs, noop::NoopArgs, notify::NotifyArgs, publishing::PublishingArgs,
        token_refresh::TokenRefreshArgs,
    },
    keys::Keys,
    llm, pipeline, publish,
};

static REGISTRY: LazyLock<Registry<App>> = LazyLock::new(|| {
    use crate::jobs::{
        cache_refresh, cleanup, deliver_event, noop, notify, publishing, token_refresh,
    };
    Registry::new()
        .register::<NoopArgs, _, _>(noop::run)
        .register::<CleanupArgs, _, _>(cleanup::run)
        .register::<CacheRefreshArgs, _, _>(cache_refresh::run)
        .register::<BrandVoiceArgs, _, _>(pipeline::steps::brand_voice_analysis)
        .register::<DraftArgs, _, _>(pipeline::steps::draft_generation)
        .register::<EvaluationArgs, _, _>(pipeline::steps::evaluation)
        .register::<PublishingArgs, _, _>(publishing::run)
        .register::<NotifyArgs, _, _>(notify::run)
        .register::<DeliverEventArgs, _, _>(deliver_event::run)
        .register::<TokenRefreshArgs, _, _>(token_refresh::run)
});

/// Every kind copydesk ships: the one list. Adding a kind means its module in `jobs/`,
/// a line here and `jobs/<kind>/` (the registry registers its name as workers start).
pub fn registry() -> Registry<App> {
    REGISTRY.clone()
}

/// The input contracts of every kind copydesk ships (what `enqueue` checks).
pub fn catalog() -> Catalog {
    REGISTRY.catalog()
}

/// The services handlers share, from the settings and the environment (the model
/// provider's key or base URL, the Fernet keys).
pub fn services(settings: Arc<Settings>) -> Result<Services, llm::Error> {
    let provider = llm::Provider::from_env(&settings.llm)?;
    Ok(Services {
        llm: llm::Llm::new(provider, &settings.llm).with_limits(settings.limits.clone()),
        fetcher: Fetcher::new(&settings.fetch),
        keys: Keys::from_env().map(Arc::new),
        publish_http: publish::client(&settings.publish),
        files: crate::files::Files::new(&settings).map_err(Arc::new),
        settings,
    })
}

/// A runner of `registry`'s kinds over `pool`, with `services` as every handler's
/// context.
pub fn runner(pool: Db, registry: Registry<App>, services: Services) -> Runner<App> {
    Runner::new(
        pool,
        services.settings.queue(),
        registry,
        Arc::new(services),
    )
}

/// An opened database with the settings: what commands work with.
pub struct Env {
    pub settings: Arc<Settings>,
    pub db: Database,
}

/// The HTTP API's shared state over `pool`.
/// `bound` is the address the server listens on: with no `[http] public_url`, review
/// links are printed on it.
pub fn api_state(env: &Env, bound: Option<std::net::SocketAddr>) -> crate::http::api::ApiState {
    let mut settings = env.settings.clone();
    if let Some(addr) = bound
        && settings.http.public_url.trim().is_empty()
    {
        Arc::make_mut(&mut settings).http.public_url = format!("http://{addr}");
    }
    crate::http::api::ApiState::new(
        env.db.pool.clone(),
        settings,
        catalog(),
        Keys::from_env().map(Arc::new),
    )
}

impl Env {
    /// Reads the settings and opens `DATABASE_URL` or the embedded cluster.
    pub async fn open() -> anyhow::Result<Self> {
        let settings = Arc::new(Settings::load()?);
        let db = Database::open(&settings)
            .await
            .context("opening the database")?;
        Ok(Self { settings, db })
    }

    /// A runner of every kind copydesk ships, with services from the environment.
    pub fn runner(&self) -> anyhow::Result<Runner<App>> {
        Ok(runner(
            self.db.pool.clone(),
            registry(),
            services(self.settings.clone())?,
        ))
    }
}
