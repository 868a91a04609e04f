//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process runs), `/readyz` (it has
//! reached the Kubernetes API once; a standby replica waiting for the lease is ready too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct Health {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(h): State<Health>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], h.metrics.render())
}

async fn ready(State(h): State<Health>) -> StatusCode {
    if h.ready.load(Ordering::Relaxed) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
