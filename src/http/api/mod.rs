//! The operator API under `/api/v1`: what the CLI does, for other services and the
//! console. Every call authenticates a token (`auth`), runs in one transaction as the
//! token's tenant under row-level security, checks the token's role before it writes,
//! and leaves an audit row naming the token for every write. Errors are RFC 9457
//! problem documents (`problem`); listings are keyset-paginated (`page`). The OpenAPI
//! document is generated from the handlers and served at `/api/v1/openapi.json`.

mod admin;
pub mod auth;
pub mod document;
mod events;
pub(crate) mod jobs;
pub mod page;
pub mod problem;
mod projects;
mod reviews;

use std::sync::Arc;

use crate::db::Db;
use axum::{Json, Router, extract::DefaultBodyLimit, routing::get};
use copydesk_queue::Catalog;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

use crate::{config::Settings, keys::Keys};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

struct Inner {
    pool: Db,
    settings: Arc<Settings>,
    catalog: Catalog,
    keys: Result<Arc<Keys>, crate::keys::KeyError>,
    link_key: Result<crate::links::LinkKey, crate::links::LinkKeyError>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl ApiState {
    /// `keys` are the Fernet keys integrations are tested and set with (their error is
    /// answered by those calls only).
    pub fn new(
        pool: Db,
        settings: Arc<Settings>,
        catalog: Catalog,
        keys: Result<Arc<Keys>, crate::keys::KeyError>,
    ) -> Self {
        Self(Arc::new(Inner {
            pool,
            settings,
            catalog,
            keys,
            link_key: crate::links::LinkKey::from_env(),
        }))
    }

    /// The same state with `key` signing review links (instead of `COPYDESK_LINK_KEY`).
    pub fn with_link_key(mut self, key: crate::links::LinkKey) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("set before the state is shared")
            .link_key = Ok(key);
        self
    }

    /// The key review links are signed with (503 naming `COPYDESK_LINK_KEY` without one).
    pub fn link_key(&self) -> Result<&crate::links::LinkKey, problem::Problem> {
        self.0.link_key.as_ref().map_err(|e| {
            problem::Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "keys",
                e.to_string(),
            )
        })
    }

    pub fn pool(&self) -> &Db {
        &self.0.pool
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The absolute URL people reach this server at (`[http] public_url`, else `http://`
    /// and the address `serve` listens on), without a trailing slash.
    pub fn public_url(&self) -> String {
        public_url(&self.0.settings)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    pub fn keys(&self) -> Result<Arc<Keys>, problem::Problem> {
        self.0.keys.clone().map_err(|e| {
            problem::Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "keys",
                e.to_string(),
            )
        })
    }
}

/// `[http] public_url`, else `http://` and the address `serve` listens on.
pub fn public_url(settings: &Settings) -> String {
    let url = settings.http.public_url.trim();
    if url.is_empty() {
        format!("http://{}", settings.http.serve)
    } else {
        url.trim_end_matches('/').to_owned()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "copydesk API",
        description = "Jobs, approvals, drafts, pipelines, publications, integrations, costs \
                       and the audit log of one tenant. Send a token made with \
                       `copydesk tokens create` as `Authorization: Bearer <token>`.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(problem::Problem, document::TokenRole, document::Platform, document::Channel, document::JobStatus, document::ApprovalStatus, document::BulkAction, document::Order, document::CostGroup, document::Period, document::NonBlank, document::EventType)),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and the OpenAPI document describing them.
fn routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            jobs::routes()
                .merge(reviews::routes())
                .merge(projects::routes())
                .merge(admin::routes())
                .merge(events::routes()),
        )
        .split_for_parts();
    document::complete(&mut doc);
    (routes, doc)
}

/// The API router with its state: routes, the OpenAPI document, a body size limit.
pub fn router(state: ApiState) -> Router {
    let (routes, doc) = routes();
    let doc = Arc::new(doc);
    let limit = state.settings().http.max_body_bytes;
    routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            problem::Problem::not_found(
                "no such path; the API is described at /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(problem::errors_as_problems))
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// One span per request (method, path, and the token's name once it is known; never
/// the token), and a line with its status and duration. The request's `traceparent`
/// (and `tracestate`) header is the trace of the jobs it enqueues, and, when traces are
/// exported, the parent of its span (an HTTP server span: `{method} {route}`).
pub(crate) async fn trace(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use copydesk_queue::trace::{self, TraceContext};
    use tracing::{Instrument, field::Empty};
    let caller = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        header("traceparent").and_then(|tp| TraceContext::parse(tp, header("tracestate")))
    };
    let span = tracing::info_span!(
        target: copydesk_queue::trace::SPANS,
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        token = Empty,
        otel.name = Empty,
        otel.kind = Empty,
    );
    if trace::exporting() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let route = match req.extensions().get::<axum::extract::MatchedPath>() {
            Some(m) => m.as_str().to_string(),
            None => req.uri().path().to_string(),
        };
        span.record("otel.name", format!("{} {route}", req.method()));
        span.record("otel.kind", "server");
        span.set_attribute("http.request.method", req.method().to_string());
        span.set_attribute("http.route", route);
        trace::adopt(&span, caller.as_ref());
    }
    let started = std::time::Instant::now();
    let served = async move {
        let res = next.run(req).await;
        let ms = started.elapsed().as_millis() as u64;
        if trace::exporting() {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let span = tracing::Span::current();
            span.set_attribute(
                "http.response.status_code",
                i64::from(res.status().as_u16()),
            );
            if res.status().is_server_error() {
                span.set_status(opentelemetry::trace::Status::error(
                    res.status().to_string(),
                ));
            }
        }
        if res.status().is_server_error() {
            tracing::warn!(status = res.status().as_u16(), ms, "answered");
        } else {
            tracing::debug!(status = res.status().as_u16(), ms, "answered");
        }
        res
    }
    .instrument(span);
    trace::scope(caller, served).await
}
