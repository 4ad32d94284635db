//! Accepting connections: a cap that leaves the run its file descriptors, and
//! timeouts that close connections which send nothing.
//!
//! A local process that opens many idle sockets to the progress port must never
//! make a unit fail ("Too many open files"). So:
//!
//! - at the start of a run the soft `RLIMIT_NOFILE` is raised to the hard limit
//!   ([`raise_descriptor_limit`]);
//! - the server holds at most [`connection_budget`] connections (plain HTTP and
//!   WebSocket alike): a quarter of the descriptor limit, at most
//!   [`MAX_CONNECTIONS`]; the other three quarters stay the run's. A connection
//!   over the budget is accepted and closed at once (so clients are not left
//!   hanging in the kernel's backlog) and counted as rejected;
//! - a connection whose request headers do not arrive within [`HEADER_TIMEOUT`], or
//!   that exchanges no byte for [`IDLE_TIMEOUT`] before it becomes a WebSocket, is
//!   closed. A WebSocket viewer may stay quiet as long as it likes: it holds one of
//!   the budget's places (and one of `max_clients`);
//! - an `accept` that fails for want of descriptors pauses the accept loop briefly
//!   instead of spinning.
//!
//! The place in the budget is a semaphore permit held by the connection's socket
//! itself ([`Guarded`]), so it is given back exactly when the socket is closed,
//! whether hyper still serves it or it was upgraded to a WebSocket.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::hub::Stats;

/// Most connections the server ever holds at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Fewest connections the budget allows, however low the descriptor limit.
pub const MIN_CONNECTIONS: usize = 4;

/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a connection may exchange nothing before it is closed (not a WebSocket).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the accept loop pauses after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a connection checks its idle time.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in
/// force (`None` when it cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The soft `RLIMIT_NOFILE` in force (`None` when it cannot be read).
pub fn current_descriptor_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// The server's share of a descriptor limit of `limit`: a quarter, between
/// [`MIN_CONNECTIONS`] and [`MAX_CONNECTIONS`].
pub fn connection_budget(limit: Option<u64>) -> usize {
    let quarter = limit.map_or(MAX_CONNECTIONS as u64, |l| l / 4);
    usize::try_from(quarter)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// Serves `router` on `listener` until `shutdown`, then closes idle connections,
/// lets requests in flight finish, and returns once every connection task is done.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    budget: usize,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(budget));
    let mut connections = JoinSet::new();
    loop {
        // Finished connections leave the set (its size stays within the budget).
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS: the connection stays in the backlog.
                tracing::debug!("progress server: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            // Small frames must leave at once: without TCP_NODELAY, Nagle's algorithm
            // holds a frame until the previous one is acknowledged (up to 40 ms).
            tracing::debug!("progress server: TCP_NODELAY: {e}");
        }
        let activity = Arc::new(Activity::new());
        let io = Guarded {
            tcp,
            activity: Arc::clone(&activity),
            _place: place,
        };
        connections.spawn(connection(io, router.clone(), activity, shutdown.clone()));
    }
    while connections.join_next().await.is_some() {}
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// One connection: HTTP/1.1 with upgrades, closed when idle or at shutdown.
async fn connection(
    io: Guarded,
    router: Router,
    activity: Arc<Activity>,
    shutdown: CancellationToken,
) {
    let service = TowerToHyperService::new(router);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("progress server: connection: {e}");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(IDLE_CHECK) => {
                if activity.idle() >= IDLE_TIMEOUT {
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// A connection's socket, holding its place in the budget and noting activity.
struct Guarded {
    tcp: TcpStream,
    activity: Arc<Activity>,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_bounded_quarter_of_the_limit() {
        assert_eq!(connection_budget(Some(1024)), 256);
        assert_eq!(connection_budget(Some(8)), MIN_CONNECTIONS);
        assert_eq!(connection_budget(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connection_budget(None), MAX_CONNECTIONS);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_descriptor_limit(), Some(hard));
    }

    #[tokio::test]
    async fn connections_over_the_budget_are_closed_at_once() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let server = tokio::spawn(serve(
            listener,
            router,
            2,
            Arc::clone(&stats),
            shutdown.clone(),
        ));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.read(&mut buf).await.unwrap(), 0, "closed at once");
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
        shutdown.cancel();
        server.await.unwrap();
    }
}
