//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (fails, with the reasons, while a
//! reconcile is stuck or the leader Lease is not renewed; see `health.rs`), `/readyz` (it has reached the
//! Kubernetes API; a standby replica waiting for the lease is ready too, and says so).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::health::{Role, Watchdog};
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct Health {
    pub metrics: Metrics,
    pub watchdog: Watchdog,
}

async fn metrics(State(h): State<Health>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], h.metrics.render())
}

async fn ready(State(h): State<Health>) -> (StatusCode, &'static str) {
    match h.watchdog.role() {
        Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting: the Kubernetes API was not reached yet\n"),
        Role::Standby => (StatusCode::OK, "standby: waiting for the leader lease\n"),
        Role::Leading => (StatusCode::OK, "leading: reconciling\n"),
    }
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    match h.watchdog.problems() {
        p if p.is_empty() => (StatusCode::OK, "ok\n".to_owned()),
        p => (StatusCode::SERVICE_UNAVAILABLE, p.join("\n") + "\n"),
    }
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, buf)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let watchdog = Watchdog::new(std::time::Duration::from_millis(50));
        let health = Health { metrics: Metrics::new().unwrap(), watchdog: watchdog.clone() };
        health.metrics.leader.set(1);
        tokio::spawn(serve(addr, health));
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        watchdog.set_role(Role::Standby);
        let (code, body) = get(addr, "/readyz").await;
        assert!(code == 200 && body.contains("standby: waiting for the leader lease"), "{body}");
        watchdog.set_role(Role::Leading);
        let (code, body) = get(addr, "/readyz").await;
        assert!(code == 200 && body.contains("leading"), "{body}");
        let stuck = watchdog.reconciling("ns/p");
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        let (code, body) = get(addr, "/healthz").await;
        assert!(code == 503 && body.contains("the reconcile of ns/p has run for"), "{body}");
        drop(stuck);
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("sensorpipe_operator_leader 1"), "{body}");
    }
}
