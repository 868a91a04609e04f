//! The live page of one-machine mode on 127.0.0.1: `/` is one self-contained HTML file (no CDN, no build step)
//! with the current state inlined, `/api/state` the current state as JSON, and `/events` a Server-Sent Events
//! stream of every change, so the page updates without reloading.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use futures::Stream;
use tokio::sync::broadcast;

use super::live::{Live, Update};

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
struct Shared {
    live: Arc<Mutex<Live>>,
    updates: broadcast::Sender<Update>,
}

/// Binds `addr` (so the caller can print the address before serving) and returns the server future.
pub async fn bind(
    addr: SocketAddr,
    live: Arc<Mutex<Live>>,
    updates: broadcast::Sender<Update>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/events", get(events))
        .with_state(Shared { live, updates });
    Ok((bound, async move { axum::serve(listener, app).await }))
}

/// The page with the current state inlined, so it renders complete on load (then follows `/events`).
async fn page(State(s): State<Shared>) -> Html<String> {
    let snapshot = s.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot().to_string();
    // Inside <script>, `</` could end the element early; `<\/` is the same string to JavaScript.
    Html(PAGE.replacen("/*INITIAL_STATE*/null", &snapshot.replace("</", "<\\/"), 1))
}

async fn state(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot())
}

/// The current state first (event `snapshot`), then each change (event `update`). A page that falls behind by
/// more than the channel holds gets a fresh snapshot instead of the updates it missed.
async fn events(State(s): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.updates.subscribe();
    let first = snapshot_event(&s.live);
    let stream = futures::stream::unfold((Some(first), rx, s.live), |(first, mut rx, live)| async move {
        if let Some(event) = first {
            return Some((Ok(event), (None, rx, live)));
        }
        let event = match rx.recv().await {
            Ok(update) => Event::default().event("update").json_data(&update).unwrap_or_default(),
            Err(broadcast::error::RecvError::Lagged(_)) => snapshot_event(&live),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (None, rx, live)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn snapshot_event(live: &Arc<Mutex<Live>>) -> Event {
    let snapshot = live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot();
    Event::default().event("snapshot").json_data(&snapshot).unwrap_or_default()
}
