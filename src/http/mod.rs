//! The HTTP side. Every process with `--http` serves health and metrics (`health`);
//! `copydesk serve` adds the operator API under `/api/v1` (`api`).

pub mod api;
pub mod console;
mod health;

use axum::Router;

pub use health::{prometheus, router, serve};

/// Health, metrics, the API and the console on one router.
pub fn app(state: api::ApiState) -> Router {
    health::router(state.pool().clone())
        .merge(console::router(state.clone()))
        .merge(api::router(state))
}

/// Serves [`app`] on `listener` until `shutdown` resolves; requests under way finish.
pub async fn serve_on(
    state: api::ApiState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving the API and health");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
