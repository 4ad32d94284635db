//! One WebSocket client: its first messages, its live queue, its requests.
//!
//! A session subscribes to the hub, sends the snapshot (or the resume
//! acknowledgement and the replayed events), then forwards its live queue one hub
//! batch at a time (fed, then flushed once: one write per hub tick). A client that
//! asked for `batch=1` gets each batch as one message, a JSON array of its events,
//! joined once per tick for every such client. It reads the client's messages at the
//! same time: `{"since_seq":N}` restarts the stream after `N`, `{"thread_id":"..."}`
//! sets the filter, anything else is ignored. When the hub flags the queue as lagged
//! the session resubscribes with a resync snapshot, at most [`MAX_RESYNCS`] times in a
//! row (a minute apart resets the count), then closes with a reason. When the run is
//! over (the queue ends without lag) it closes with `1000 run finished`. Every write is
//! abandoned at server shutdown, so a client that never reads cannot hold the runner.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;

use super::hub::{Frame, HubHandle};
use super::protocol::{ClientRequest, SnapshotReason};

/// Resync snapshots a client may need within [`RESYNC_WINDOW`] before it is dropped.
pub const MAX_RESYNCS: u32 = 3;

/// A client that kept up this long since its last resync starts with a clean slate.
const RESYNC_WINDOW: Duration = Duration::from_secs(60);

/// Close codes (RFC 6455).
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
}

/// What the client asked for in its URL.
#[derive(Debug, Clone, Default)]
pub struct SessionParams {
    /// `?since_seq=N`.
    pub since_seq: Option<u64>,
    /// `?thread_id=...`.
    pub thread_id: Option<String>,
    /// `?batch=1`: live events come as JSON arrays, one message per hub tick.
    pub batch: bool,
}

/// Why a send loop stopped.
enum Stop {
    /// Server shutdown.
    Shutdown,
    /// The client went away (or the socket failed).
    Gone,
}

async fn guarded<F: std::future::Future<Output = Result<(), axum::Error>>>(
    shutdown: &CancellationToken,
    f: F,
) -> Result<(), Stop> {
    // `f` first: it is almost always ready at once, and then the shutdown future is
    // never polled (no waiter registered and removed for every frame).
    tokio::select! {
        biased;
        r = f => r.map_err(|_| Stop::Gone),
        _ = shutdown.cancelled() => Err(Stop::Shutdown),
    }
}

async fn feed(
    ws: &mut WebSocket,
    frame: &Frame,
    filter: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<(), Stop> {
    if !frame.passes(filter) {
        return Ok(());
    }
    guarded(shutdown, ws.feed(Message::Text(frame.text.clone()))).await
}

async fn close(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(frame)).await;
}

/// Serve one client until the run is over, it leaves, or the server stops.
pub async fn run(
    mut ws: WebSocket,
    hub: HubHandle,
    params: SessionParams,
    shutdown: CancellationToken,
) {
    let batched = params.batch;
    let mut filter = params.thread_id;
    let mut request = (params.since_seq, SnapshotReason::Connect);
    let mut resyncs = 0;
    let mut last_resync: Option<Instant> = None;
    'subscribe: loop {
        let Some(sub) = hub.subscribe(request.0, request.1).await else {
            close(&mut ws, close::GOING_AWAY, "server shutting down").await;
            return;
        };
        for frame in &sub.first {
            if let Err(stop) = feed(&mut ws, frame, filter.as_deref(), &shutdown).await {
                return finish(&mut ws, stop).await;
            }
        }
        if let Err(stop) = guarded(&shutdown, ws.flush()).await {
            return finish(&mut ws, stop).await;
        }
        let Some(mut live) = sub.live else {
            close(&mut ws, close::NORMAL, "run finished").await;
            return;
        };
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        loop {
            tokio::select! {
                _ = &mut cancelled => return finish(&mut ws, Stop::Shutdown).await,
                incoming = ws.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let Some(req) = ClientRequest::parse(&text) else { continue };
                        if let Some(thread) = req.thread_id {
                            filter = Some(thread).filter(|t| !t.is_empty());
                        }
                        if let Some(n) = req.since_seq {
                            request = (Some(n), SnapshotReason::Connect);
                            continue 'subscribe;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                batch = live.recv_batch() => match batch {
                    Some(batch) if batched => {
                        // One message for the tick.
                        let text = match filter.as_deref() {
                            None => Some(batch.joined()),
                            Some(t) => {
                                let passing: Vec<&Frame> =
                                    batch.frames().iter().filter(|f| f.passes(Some(t))).collect();
                                (!passing.is_empty()).then(|| super::hub::join(passing))
                            }
                        };
                        if let Some(text) = text
                            && let Err(stop) = guarded(&shutdown, ws.send(Message::Text(text))).await
                        {
                            return finish(&mut ws, stop).await;
                        }
                    }
                    Some(batch) => {
                        // The hub sends one batch per tick: one write and one wake for
                        // all the events of the tick.
                        for frame in batch.frames() {
                            if let Err(stop) = feed(&mut ws, frame, filter.as_deref(), &shutdown).await {
                                return finish(&mut ws, stop).await;
                            }
                        }
                        if let Err(stop) = guarded(&shutdown, ws.flush()).await {
                            return finish(&mut ws, stop).await;
                        }
                    }
                    None if sub.lagged.load(Ordering::Acquire) => {
                        if last_resync.is_some_and(|at| at.elapsed() > RESYNC_WINDOW) {
                            resyncs = 0;
                        }
                        last_resync = Some(Instant::now());
                        resyncs += 1;
                        if resyncs > MAX_RESYNCS {
                            hub.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            close(&mut ws, close::POLICY, "client too slow: fell behind the run repeatedly").await;
                            return;
                        }
                        hub.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        request = (None, SnapshotReason::Lagged);
                        continue 'subscribe;
                    }
                    None => {
                        close(&mut ws, close::NORMAL, "run finished").await;
                        return;
                    }
                },
            }
        }
    }
}

async fn finish(ws: &mut WebSocket, stop: Stop) {
    if let Stop::Shutdown = stop {
        close(ws, close::GOING_AWAY, "server shutting down").await;
    }
}
