//! The progress server: live runs over HTTP and WebSocket, for any number of viewers.
//!
//! - [`hub`]: the one bus subscription, the ring for `since_seq`, fan-out into
//!   bounded per-client queues (a slow client never slows the run).
//! - [`session`]: one WebSocket client (snapshot or resume, live events, resyncs).
//! - [`http`]: the routes `/`, `/ws`, `/status`, `/metrics`.
//! - [`listener`]: accepting connections: the descriptor budget, header and idle
//!   timeouts.
//! - [`protocol`]: the stream's own messages (snapshot, resume, client requests).
//! - [`auth`]: the bind policy (loopback, or a token) and request checks.
//! - [`redact`]: secret values masked in everything sent out.
//! - [`metrics`]: Prometheus text from the `RunState`.
//! - [`watch`]: `runner watch URL`, the terminal client.
//! - `viewer.html`: the single-page viewer, embedded with `include_str!`.
//!
//! The ProgressStreamerAgent starts the server ([`start`]) after the bus exists
//! and before `run_started`. Once the bus is closed, [`ProgressServer::flush`]
//! lets every client get the run's last event (bounded wait) and
//! [`ProgressServer::finish`] lingers if asked, then stops the server.

pub mod auth;
mod http;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod redact;
mod session;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::cli::Cli;
use crate::config::Config;
use redact::Redactor;

pub use http::VIEWER_HTML;

/// How long `finish` waits for clients to receive the run's last event.
const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Everything the server needs, decided before the run starts.
#[derive(Clone)]
pub struct ServerSettings {
    /// The address as given (for messages).
    pub addr: String,
    /// The address resolved.
    pub addrs: Vec<SocketAddr>,
    /// Token required on `/ws`, `/status`, `/metrics`.
    pub token: Option<String>,
    /// At most this many WebSocket clients at once.
    pub max_clients: usize,
    /// Frames queued per client.
    pub client_queue: usize,
    /// Events kept for `since_seq`.
    pub ring_size: usize,
    /// Largest frame accepted from a client, bytes.
    pub max_frame_bytes: usize,
    /// Keep serving this long after the run ends.
    pub linger: Duration,
    /// Secret values to mask.
    pub redactor: Arc<Redactor>,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_clients", &self.max_clients)
            .field("client_queue", &self.client_queue)
            .field("ring_size", &self.ring_size)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

impl ServerSettings {
    /// Decide whether and where to serve: `--websocket-addr` (`off` disables), else
    /// `agents/progress_streamer.yaml`'s `websocket_addr`, else `127.0.0.1:0` in
    /// streamed orchestration, else no server. A non-loopback address without a
    /// token is an error (the caller exits with status 2).
    pub fn resolve(cli: &Cli, config: &Config, streamed: bool) -> Result<Option<Self>, String> {
        let manifest = &config.agents.progress_streamer;
        let addr = match (
            cli.websocket_addr.as_deref(),
            manifest.websocket_addr.as_deref(),
        ) {
            (Some(a), _) if a.eq_ignore_ascii_case("off") => return Ok(None),
            (Some(a), _) => a.to_string(),
            (None, Some(a)) if a.eq_ignore_ascii_case("off") => return Ok(None),
            (None, Some(a)) => a.to_string(),
            (None, None) if streamed => "127.0.0.1:0".to_string(),
            (None, None) => return Ok(None),
        };
        let token = cli.websocket_token.clone().filter(|t| !t.is_empty());
        let addrs = auth::resolve(&addr)?;
        auth::check_bind(&addr, &addrs, token.as_deref())?;
        Ok(Some(Self {
            addr,
            addrs,
            token,
            max_clients: manifest.max_clients.max(1),
            client_queue: manifest.client_queue.max(1),
            ring_size: manifest.ring_size.max(1),
            max_frame_bytes: manifest.max_frame_bytes.max(1024),
            linger: Duration::from_secs(cli.websocket_linger.unwrap_or(0)),
            redactor: Arc::new(Redactor::for_run(config)),
        }))
    }
}

/// Connected sessions: the client limit, and a way to wait until all are gone.
pub struct Sessions {
    count: tokio_watch::Sender<usize>,
    max: usize,
}

/// One connected session; dropping it frees its place.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions
            .count
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Sessions {
    /// At most `max` sessions at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            count: tokio_watch::channel(0).0,
            max,
        })
    }

    /// A place for one more session, unless `max` are connected.
    pub fn try_enter(self: &Arc<Self>) -> Option<SessionGuard> {
        let mut entered = false;
        self.count.send_if_modified(|n| {
            entered = *n < self.max;
            if entered {
                *n += 1;
            }
            entered
        });
        entered.then(|| SessionGuard {
            sessions: Arc::clone(self),
        })
    }

    /// Sessions connected now.
    pub fn active(&self) -> usize {
        *self.count.borrow()
    }

    /// Wait until no session is connected.
    pub async fn idle(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// A running progress server.
pub struct ProgressServer {
    addr: SocketAddr,
    token_required: bool,
    linger: Duration,
    /// SIGINT and SIGTERM, listened to from the start so that one arriving before
    /// the linger begins still ends it.
    stop_signals: Option<(Signal, Signal)>,
    shutdown: CancellationToken,
    sessions: Arc<Sessions>,
    drained: tokio_watch::Receiver<bool>,
    hub: JoinHandle<()>,
    serve: JoinHandle<()>,
}

/// Bind and start serving `bus`. Must be called before the run's first event so
/// that every client can see the whole run. Errors are bind errors (port in use,
/// address not available): the caller degrades to console-only.
pub fn start(bus: &EventBus, settings: &ServerSettings) -> std::io::Result<ProgressServer> {
    let listener = std::net::TcpListener::bind(settings.addrs.as_slice())?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let shutdown = CancellationToken::new();
    let hub = hub::spawn(
        bus,
        hub::HubLimits {
            client_queue: settings.client_queue,
            ring_size: settings.ring_size,
        },
        Arc::clone(&settings.redactor),
        shutdown.clone(),
    );
    let sessions = Sessions::new(settings.max_clients);
    let app = http::AppState {
        hub: hub.handle.clone(),
        bus: bus.clone(),
        token: settings.token.as_deref().map(Arc::from),
        max_frame_bytes: settings.max_frame_bytes,
        sessions: Arc::clone(&sessions),
        redactor: Arc::clone(&settings.redactor),
        shutdown: shutdown.clone(),
    };
    let router = http::router(app);
    let budget = listener::connection_budget(listener::current_descriptor_limit());
    let serve = tokio::spawn(listener::serve(
        listener,
        router,
        budget,
        Arc::clone(&hub.handle.stats),
        shutdown.clone(),
    ));
    let stop_signals = if settings.linger.is_zero() {
        None
    } else {
        signal(SignalKind::interrupt())
            .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
            .ok()
    };
    Ok(ProgressServer {
        addr,
        token_required: settings.token.is_some(),
        linger: settings.linger,
        stop_signals,
        shutdown,
        sessions,
        drained: hub.drained,
        hub: hub.task,
        serve,
    })
}

impl ProgressServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`: the viewer page.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `ws://ADDR/ws`: the event stream.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// True when clients must present the token.
    pub fn token_required(&self) -> bool {
        self.token_required
    }

    /// Call after the bus is closed: let every client receive the rest of the run
    /// (at most [`FLUSH_DEADLINE`]). Clients that are up to date are closed with
    /// `1000 run finished`; the server keeps answering with the final state.
    pub async fn flush(&self) {
        let mut drained = self.drained.clone();
        let _ = tokio::time::timeout(FLUSH_DEADLINE, drained.wait_for(|d| *d)).await;
        let _ = tokio::time::timeout(FLUSH_DEADLINE, self.sessions.idle()).await;
    }

    /// Linger if asked (Ctrl-C or SIGTERM, even one received during the run, ends
    /// it), then stop serving.
    pub async fn finish(mut self) {
        let url = self.url();
        if let Some((int, term)) = self.stop_signals.as_mut() {
            eprintln!(
                "runner: progress server stays up for {}s at {url} (Ctrl-C to stop)",
                self.linger.as_secs(),
            );
            tokio::select! {
                _ = tokio::time::sleep(self.linger) => {}
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sessions.idle()).await;
        let abort = self.serve.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), self.serve)
            .await
            .is_err()
        {
            abort.abort();
        }
        let _ = self.hub.await;
    }
}
