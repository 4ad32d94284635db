//! The routes: `/` (viewer), `/ws` (event stream), `/status` (RunState JSON),
//! `/metrics` (Prometheus text). Access checks are in [`super::auth`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Sessions;
use super::auth;
use super::hub::HubHandle;
use super::metrics::{self, ProcessStats, ServerCounters};
use super::redact::Redactor;
use super::session::{self, SessionParams};
use crate::bus::EventBus;

/// Read buffer of a WebSocket connection, bytes.
const READ_BUFFER: usize = 4096;

/// The viewer page, embedded in the binary.
pub const VIEWER_HTML: &str = include_str!("viewer.html");

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The hub (for sessions).
    pub hub: HubHandle,
    /// The bus (for `/status` and `/metrics`).
    pub bus: EventBus,
    /// Required token, if any.
    pub token: Option<Arc<str>>,
    /// Largest incoming frame.
    pub max_frame_bytes: usize,
    /// Session accounting and the client limit.
    pub sessions: Arc<Sessions>,
    /// Secret values.
    pub redactor: Arc<Redactor>,
    /// Server shutdown.
    pub shutdown: CancellationToken,
}

/// Query parameters any route may carry.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    token: Option<String>,
    since_seq: Option<u64>,
    thread_id: Option<String>,
    /// `batch=1`: live events as JSON arrays (see the protocol).
    batch: Option<String>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(viewer))
        .route("/ws", get(ws))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /, /ws, /status or /metrics\n",
            )
        })
        .with_state(state)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse(app: &AppState, status: StatusCode, why: &'static str) -> Response {
    app.hub.stats.rejected.fetch_add(1, Ordering::Relaxed);
    let mut response = (status, format!("{why}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The checks every route makes: the token when one is set; otherwise a loopback
/// `Host` (a page on another site, resolving its name to 127.0.0.1, is refused).
#[allow(clippy::result_large_err)]
fn check_access(
    app: &AppState,
    headers: &HeaderMap,
    params: &Params,
    needs_token: bool,
) -> Result<(), Response> {
    match &app.token {
        Some(token) if needs_token => {
            if !auth::token_ok(
                token,
                header_str(headers, header::AUTHORIZATION),
                params.token.as_deref(),
            ) {
                return Err(refuse(
                    app,
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token",
                ));
            }
        }
        Some(_) => {}
        None => {
            if !header_str(headers, header::HOST).is_some_and(auth::loopback_host) {
                return Err(refuse(
                    app,
                    StatusCode::FORBIDDEN,
                    "this server only answers requests addressed to a loopback host",
                ));
            }
        }
    }
    Ok(())
}

async fn viewer(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Err(r) = check_access(&app, &headers, &params, false) {
        return r;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        VIEWER_HTML,
    )
        .into_response()
}

async fn ws(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(r) = check_access(&app, &headers, &params, true) {
        return r;
    }
    if !auth::origin_ok(
        header_str(&headers, header::ORIGIN),
        header_str(&headers, header::HOST),
    ) {
        return refuse(
            &app,
            StatusCode::FORBIDDEN,
            "cross-origin WebSocket connections are refused",
        );
    }
    let Some(guard) = app.sessions.try_enter() else {
        return refuse(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            "too many clients (progress_streamer max_clients)",
        );
    };
    app.hub.stats.connections.fetch_add(1, Ordering::Relaxed);
    let session_params = SessionParams {
        since_seq: params.since_seq,
        thread_id: params.thread_id.filter(|t| !t.is_empty()),
        batch: matches!(params.batch.as_deref(), Some("1" | "true")),
    };
    upgrade
        // Clients send little; a small read buffer keeps each read attempt cheap
        // (the buffer is zeroed on every poll, which at the default 128 KiB cost
        // more than everything else the server does).
        .read_buffer_size(READ_BUFFER)
        .max_frame_size(app.max_frame_bytes)
        .max_message_size(app.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            session::run(
                socket,
                app.hub.clone(),
                session_params,
                app.shutdown.clone(),
            )
            .await;
            drop(guard);
        })
}

async fn status(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Err(r) = check_access(&app, &headers, &params, true) {
        return r;
    }
    // Clone under the bus lock (cheap), serialize outside it: the run never waits.
    let json = serde_json::to_string(&app.bus.snapshot()).unwrap_or_default();
    let body = app.redactor.redact_json(&json).into_owned();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn metrics_text(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    if let Err(r) = check_access(&app, &headers, &params, true) {
        return r;
    }
    let s = &app.hub.stats;
    let counters = ServerCounters {
        clients: app.sessions.active() as u64,
        connections: s.connections.load(Ordering::Relaxed),
        rejected: s.rejected.load(Ordering::Relaxed),
        events: s.events.load(Ordering::Relaxed),
        lagged: s.lagged.load(Ordering::Relaxed),
        resyncs: s.resyncs.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
    };
    let now = jiff::Timestamp::now();
    let state = app.bus.snapshot();
    let body = metrics::render(
        &state,
        Some(counters),
        ProcessStats::current(),
        now,
        &app.redactor,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
