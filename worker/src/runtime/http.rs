//! The worker's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the processing loop is alive),
//! `/readyz` (partitions assigned, no state restore in progress, no batch failing again and again); `/healthz` also
//! fails when a partition with lag makes no progress for the stall timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Health, metrics::Metrics};

#[derive(Clone, Debug)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The loop polls at least every 50 ms; silence for this long means it is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.up.set(if s.health.ready() { 1.0 } else { 0.0 });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.since_beat() {
        Some(d) if d > STUCK_AFTER => (StatusCode::SERVICE_UNAVAILABLE, format!("processing loop silent for {d:?}\n")),
        _ => match s.health.stalled() {
            Some(stalled) => (StatusCode::SERVICE_UNAVAILABLE, format!("{stalled}\n")),
            None => (StatusCode::OK, "ok\n".to_owned()),
        },
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else if !s.health.assigned.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for a partition assignment\n".to_owned())
    } else if let Some(blocked) = s.health.blocked() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{blocked}\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "restoring partition state\n".to_owned())
    }
}

/// Serves until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics_: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics: metrics_, health });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
