//! The hub: one subscription to the bus, fanned out to every WebSocket client.
//!
//! The hub is an actor. It owns the only bus subscription of the server, folds the
//! events into its own `RunState` (for snapshots), serializes each event once
//! (redacted) and keeps the last `ring_size` of them for `since_seq` resumption.
//! Clients are fed per tick, not per event: the frames published within one
//! [`tick`] (8 ms, up to 32 ms with 100 clients) go to every client as one shared [`Batch`] (one queue push and one
//! wake per client per tick; the first event after a quiet spell goes out at
//! once). Each client's queue is bounded in frames; the hub never waits on it, so
//! a client that does not keep up never delays the hub, the run or other clients:
//! when its queue is full the hub gives it what fits, flags it `lagged` and stops
//! feeding it, and the client's session resubscribes (a resync snapshot) or gives
//! up on it.
//!
//! Subscribing goes through the hub's command channel, so a new client's first
//! message (snapshot or resume acknowledgement) and its live events are cut at the
//! same point of the stream: nothing is lost or repeated in between.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::{SnapshotReason, resume_text, snapshot_text};
use super::redact::Redactor;
use crate::bus::{EventBus, Subscription};
use crate::event::{Event, RunState};

/// One message for a client, serialized once and shared by every client.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event's `seq` (for a snapshot or resume message: the state's `seq`).
    pub seq: u64,
    /// The event's `thread_id`.
    pub thread_id: Option<Arc<str>>,
    /// A protocol message (snapshot, resume): not subject to the thread filter.
    pub control: bool,
    /// The JSON text.
    pub text: Utf8Bytes,
}

impl Frame {
    /// True when a client filtering on `thread` gets this frame.
    pub fn passes(&self, thread: Option<&str>) -> bool {
        match thread {
            None => true,
            Some(t) => self.control || self.thread_id.as_deref() == Some(t),
        }
    }
}

/// While events keep coming, clients are fed at most once per tick: [`TICK`] with a
/// few clients, growing by [`TICK_PER_CLIENT`] for each up to [`TICK_MAX`] (100
/// clients). Each tick costs a write and a wake-up per client, on the runner's threads
/// and in the clients; with many clients, fewer and larger batches keep the fan-out
/// from slowing the run, at the price of a few more milliseconds of latency.
pub const TICK: Duration = Duration::from_millis(8);
/// What each connected client adds to the tick.
pub const TICK_PER_CLIENT: Duration = Duration::from_micros(240);
/// The longest tick.
pub const TICK_MAX: Duration = Duration::from_millis(32);

/// The tick for `clients` connected clients.
pub fn tick(clients: usize) -> Duration {
    let clients = u32::try_from(clients).unwrap_or(u32::MAX);
    TICK.saturating_add(TICK_PER_CLIENT.saturating_mul(clients))
        .min(TICK_MAX)
}

/// The frames of one tick, shared by every client (`end`: how many of them this
/// client gets; fewer than all only for the last batch of a client that lagged).
#[derive(Debug, Clone)]
pub struct Batch {
    frames: Arc<[Frame]>,
    end: usize,
    /// The whole tick as one message, built by the first client that asks for it.
    joined: Arc<OnceLock<Utf8Bytes>>,
}

impl Batch {
    /// The frames, in `seq` order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames[..self.end]
    }

    /// The frames as one message for clients that asked for batches (`batch=1`): a JSON
    /// array of the events in `seq` order. The whole tick is joined once and shared by
    /// every client; a partial batch (a lagging client's last) is joined for itself.
    pub fn joined(&self) -> Utf8Bytes {
        if self.end == self.frames.len() {
            self.joined.get_or_init(|| join(self.frames.iter())).clone()
        } else {
            join(self.frames())
        }
    }
}

/// `frames` as one JSON array.
pub fn join<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Utf8Bytes {
    let mut text = String::from("[");
    for (i, f) in frames.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(f.text.as_str());
    }
    text.push(']');
    text.into()
}

/// A client's live queue: batches, bounded in frames by the hub.
#[derive(Debug)]
pub struct Live {
    rx: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    /// A batch being read frame by frame ([`Live::recv`]) and the next index.
    current: Option<(Batch, usize)>,
}

impl Live {
    /// The next batch; `None` when the queue ended (run over, or lagged).
    pub async fn recv_batch(&mut self) -> Option<Batch> {
        let batch = self.rx.recv().await?;
        self.queued.fetch_sub(batch.end, Ordering::AcqRel);
        Some(batch)
    }

    /// The next frame; `None` when the queue ended.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some((batch, i)) = &mut self.current
                && let Some(frame) = batch.frames().get(*i)
            {
                *i += 1;
                return Some(frame.clone());
            }
            self.current = Some((self.recv_batch().await?, 0));
        }
    }
}

/// What a subscriber gets: its first messages, then a live queue.
#[derive(Debug)]
pub struct Feed {
    /// A snapshot, or a resume acknowledgement followed by the replayed events.
    pub first: Vec<Frame>,
    /// Live events, bounded; `None` when the run is over (nothing more will come).
    pub live: Option<Live>,
    /// Set by the hub when the queue overflowed and it stopped feeding it.
    pub lagged: Arc<AtomicBool>,
}

/// Counters the server publishes on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events published by the hub.
    pub events: AtomicU64,
    /// WebSocket connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (too many clients, bad token, bad origin).
    pub rejected: AtomicU64,
    /// Times a client's queue overflowed.
    pub lagged: AtomicU64,
    /// Resync snapshots sent to clients that fell behind.
    pub resyncs: AtomicU64,
    /// Clients closed for falling behind too often.
    pub dropped: AtomicU64,
}

/// Sizes of the hub's buffers.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Frames queued per client before it counts as lagging.
    pub client_queue: usize,
    /// Events kept for `since_seq`.
    pub ring_size: usize,
}

enum Command {
    Subscribe {
        since_seq: Option<u64>,
        reason: SnapshotReason,
        reply: oneshot::Sender<Feed>,
    },
}

/// A cheap handle to the hub.
#[derive(Clone)]
pub struct HubHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// The server's counters.
    pub stats: Arc<Stats>,
}

impl HubHandle {
    /// Subscribe: a snapshot (`since_seq` None) or the events after `since_seq`
    /// (a snapshot when the ring no longer holds them), then live events.
    /// `None` when the hub has stopped.
    pub async fn subscribe(&self, since_seq: Option<u64>, reason: SnapshotReason) -> Option<Feed> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                since_seq,
                reason,
                reply,
            })
            .ok()?;
        rx.await.ok()
    }
}

/// The running hub: its handle, its task, and a flag set once it has forwarded
/// the bus's last event and ended every live queue.
pub struct HubTask {
    /// Handle for sessions.
    pub handle: HubHandle,
    /// The hub's task.
    pub task: JoinHandle<()>,
    /// Becomes true when the bus closed and everything was forwarded.
    pub drained: watch::Receiver<bool>,
}

struct Client {
    tx: mpsc::UnboundedSender<Batch>,
    /// Frames sent and not yet received by the session.
    queued: Arc<AtomicUsize>,
    lagged: Arc<AtomicBool>,
}

struct Hub {
    run_id: String,
    thread_id: Option<Arc<str>>,
    state: RunState,
    ring: VecDeque<Frame>,
    limits: HubLimits,
    clients: Vec<Client>,
    /// Frames published since the last feed of the clients.
    pending: Vec<Frame>,
    /// When the pending frames go out (`None`: nothing pending).
    feed_at: Option<Instant>,
    last_feed: Option<Instant>,
    redactor: Arc<Redactor>,
    snapshots: HashMap<SnapshotReason, (u64, Utf8Bytes)>,
    live: bool,
    stats: Arc<Stats>,
}

/// Start the hub on `bus` (subscribes now, so it sees every later event).
pub fn spawn(
    bus: &EventBus,
    limits: HubLimits,
    redactor: Arc<Redactor>,
    shutdown: CancellationToken,
) -> HubTask {
    let (state, events) = bus.subscribe_with_snapshot();
    let (commands, rx) = mpsc::unbounded_channel();
    let (drained_tx, drained) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let hub = Hub {
        run_id: bus.run_id().to_string(),
        thread_id: None,
        state,
        ring: VecDeque::new(),
        limits: HubLimits {
            client_queue: limits.client_queue.max(1),
            ring_size: limits.ring_size.max(1),
        },
        clients: Vec::new(),
        pending: Vec::new(),
        feed_at: None,
        last_feed: None,
        redactor,
        snapshots: HashMap::new(),
        live: true,
        stats: Arc::clone(&stats),
    };
    let task = tokio::spawn(hub.run(events, rx, drained_tx, shutdown));
    HubTask {
        handle: HubHandle { commands, stats },
        task,
        drained,
    }
}

impl Hub {
    async fn run(
        mut self,
        mut events: Subscription,
        mut commands: mpsc::UnboundedReceiver<Command>,
        drained: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(self.feed_at.unwrap_or_else(Instant::now)), if self.feed_at.is_some() => {
                    self.feed_clients();
                }
                event = events.recv(), if self.live => match event {
                    Some(event) => self.publish(&event),
                    None => {
                        self.live = false;
                        self.feed_clients();
                        // Dropping the senders ends every live queue once drained.
                        self.clients.clear();
                        let _ = drained.send(true);
                    }
                },
                command = commands.recv() => match command {
                    Some(Command::Subscribe { since_seq, reason, reply }) => {
                        let _ = reply.send(self.subscribe(since_seq, reason));
                    }
                    None => break,
                },
            }
        }
    }

    fn publish(&mut self, event: &Event) {
        self.state.apply(event);
        if self.thread_id.as_deref() != event.thread_id.as_deref() {
            self.thread_id = event.thread_id.as_deref().map(Arc::from);
        }
        let json = serde_json::to_string(event).unwrap_or_default();
        let text = match self.redactor.redact_json(&json) {
            std::borrow::Cow::Borrowed(_) => Utf8Bytes::from(json),
            std::borrow::Cow::Owned(redacted) => Utf8Bytes::from(redacted),
        };
        let frame = Frame {
            seq: event.seq,
            thread_id: self.thread_id.clone(),
            control: false,
            text,
        };
        if self.ring.len() >= self.limits.ring_size {
            self.ring.pop_front();
        }
        self.ring.push_back(frame.clone());
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if self.clients.is_empty() {
            return;
        }
        self.pending.push(frame);
        if self.feed_at.is_none() {
            let now = Instant::now();
            let tick = tick(self.clients.len());
            let at = self.last_feed.map_or(now, |last| (last + tick).max(now));
            if at <= now {
                self.feed_clients();
            } else {
                self.feed_at = Some(at);
            }
        }
    }

    /// Send the pending frames to every client as one shared batch.
    fn feed_clients(&mut self) {
        self.feed_at = None;
        if self.pending.is_empty() {
            return;
        }
        self.last_feed = Some(Instant::now());
        let frames: Arc<[Frame]> = std::mem::take(&mut self.pending).into();
        let joined = Arc::new(OnceLock::new());
        let limit = self.limits.client_queue;
        let stats = &self.stats;
        self.clients.retain(|c| {
            let queued = c.queued.load(Ordering::Acquire);
            let room = limit.saturating_sub(queued);
            let end = frames.len().min(room);
            if end > 0 {
                c.queued.fetch_add(end, Ordering::AcqRel);
                let batch = Batch {
                    frames: Arc::clone(&frames),
                    end,
                    joined: Arc::clone(&joined),
                };
                if c.tx.send(batch).is_err() {
                    return false;
                }
            }
            if end < frames.len() {
                c.lagged.store(true, Ordering::Release);
                stats.lagged.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            true
        });
    }

    fn snapshot(&mut self, reason: SnapshotReason) -> Frame {
        let seq = self.state.seq;
        let text = match self.snapshots.get(&reason) {
            Some((at, text)) if *at == seq => text.clone(),
            _ => {
                let state = serde_json::to_string(&self.state).unwrap_or_default();
                let state = self.redactor.redact_json(&state);
                let text = Utf8Bytes::from(snapshot_text(
                    &state,
                    reason,
                    &self.run_id,
                    self.thread_id.as_deref(),
                ));
                self.snapshots.insert(reason, (seq, text.clone()));
                text
            }
        };
        Frame {
            seq,
            thread_id: None,
            control: true,
            text,
        }
    }

    fn subscribe(&mut self, since_seq: Option<u64>, reason: SnapshotReason) -> Feed {
        // Cut here: the clients so far get everything up to now, the new one starts after.
        self.feed_clients();
        let seq = self.state.seq;
        let first = match since_seq {
            None => vec![self.snapshot(reason)],
            Some(n) if n > seq => vec![self.snapshot(SnapshotReason::ResumeTooOld)],
            Some(n) => {
                // The ring holds a contiguous run of seqs ending at `seq`.
                let oldest = self.ring.front().map_or(seq + 1, |f| f.seq);
                if n + 1 < oldest {
                    vec![self.snapshot(SnapshotReason::ResumeTooOld)]
                } else {
                    let skip = (n + 1 - oldest) as usize;
                    let replay: Vec<Frame> = self.ring.iter().skip(skip).cloned().collect();
                    let mut first = Vec::with_capacity(replay.len() + 1);
                    first.push(Frame {
                        seq: n,
                        thread_id: None,
                        control: true,
                        text: Utf8Bytes::from(resume_text(&self.run_id, n, replay.len())),
                    });
                    first.extend(replay);
                    first
                }
            }
        };
        let lagged = Arc::new(AtomicBool::new(false));
        let live = self.live.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            self.clients.push(Client {
                tx,
                queued: Arc::clone(&queued),
                lagged: Arc::clone(&lagged),
            });
            Live {
                rx,
                queued,
                current: None,
            }
        });
        Feed {
            first,
            live,
            lagged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use serde_json::Value;

    fn warn(bus: &EventBus, m: &str) -> u64 {
        bus.emit(
            "t",
            EventKind::Warning {
                message: m.into(),
                unit: None,
            },
        )
    }

    fn start(bus: &EventBus, client_queue: usize, ring_size: usize) -> HubTask {
        spawn(
            bus,
            HubLimits {
                client_queue,
                ring_size,
            },
            Arc::new(Redactor::from_vars([("MY_TOKEN", "hunter22")])),
            CancellationToken::new(),
        )
    }

    #[test]
    fn the_tick_grows_with_the_clients_up_to_its_cap() {
        assert_eq!(tick(0), TICK);
        assert_eq!(tick(1), Duration::from_micros(8_240));
        assert_eq!(tick(50), Duration::from_millis(20));
        assert_eq!(tick(100), TICK_MAX);
        assert_eq!(tick(usize::MAX), TICK_MAX);
    }

    #[test]
    fn a_batch_is_one_json_array_of_its_events_joined_once() {
        let frame = |seq: u64| Frame {
            seq,
            thread_id: None,
            control: false,
            text: format!(r#"{{"seq":{seq}}}"#).into(),
        };
        let frames: Arc<[Frame]> = vec![frame(1), frame(2), frame(3)].into();
        let joined = Arc::new(OnceLock::new());
        let whole = Batch {
            frames: Arc::clone(&frames),
            end: 3,
            joined: Arc::clone(&joined),
        };
        let text = whole.joined();
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(v, serde_json::json!([{"seq": 1}, {"seq": 2}, {"seq": 3}]));
        assert!(joined.get().is_some(), "kept for the other clients");
        // A lagging client's partial batch gets only what it was given.
        let partial = Batch {
            frames,
            end: 2,
            joined,
        };
        assert_eq!(partial.joined().as_str(), r#"[{"seq":1},{"seq":2}]"#);
    }

    fn json(f: &Frame) -> Value {
        serde_json::from_str(&f.text).unwrap()
    }

    /// Wait until the hub has published up to `seq` (it is a separate task).
    async fn settle(hub: &HubHandle, seq: u64) {
        while hub.stats.events.load(Ordering::Relaxed) < seq {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn snapshot_then_live_without_gap_and_redacted() {
        let bus = EventBus::new("r1", Some("th"));
        let hub = start(&bus, 16, 100);
        warn(&bus, "one");
        warn(&bus, "two");
        settle(&hub.handle, 2).await;
        let mut feed = hub
            .handle
            .subscribe(None, SnapshotReason::Connect)
            .await
            .unwrap();
        warn(&bus, "token is hunter22");
        let snap = json(&feed.first[0]);
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["state"]["seq"], 2);
        assert_eq!(snap["thread_id"], "th");
        let next = feed.live.as_mut().unwrap().recv().await.unwrap();
        assert_eq!(next.seq, 3);
        assert_eq!(json(&next)["message"], "token is ***");
        assert!(next.passes(Some("th")) && !next.passes(Some("other")));
        bus.close();
        assert!(feed.live.as_mut().unwrap().recv().await.is_none());
        assert!(!feed.lagged.load(Ordering::Acquire));
        let mut drained = hub.drained.clone();
        drained.wait_for(|d| *d).await.unwrap();
        // After the run: the final state, and no live queue.
        let late = hub
            .handle
            .subscribe(None, SnapshotReason::Connect)
            .await
            .unwrap();
        assert!(late.live.is_none());
        assert_eq!(json(&late.first[0])["state"]["seq"], 3);
    }

    #[tokio::test]
    async fn resume_replays_from_the_ring_or_falls_back_to_a_snapshot() {
        let bus = EventBus::new("r1", None);
        let hub = start(&bus, 16, 3);
        for i in 0..5 {
            warn(&bus, &format!("w{i}"));
        }
        settle(&hub.handle, 5).await;
        // The ring holds 3, 4, 5.
        let feed = hub
            .handle
            .subscribe(Some(2), SnapshotReason::Connect)
            .await
            .unwrap();
        let seqs: Vec<u64> = feed.first.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        let ack = json(&feed.first[0]);
        assert_eq!(
            (ack["type"].as_str(), ack["replay"].as_u64()),
            (Some("resume"), Some(3))
        );
        let at_head = hub
            .handle
            .subscribe(Some(5), SnapshotReason::Connect)
            .await
            .unwrap();
        assert_eq!(at_head.first.len(), 1);
        assert_eq!(json(&at_head.first[0])["replay"], 0);
        for since in [1, 99] {
            let old = hub
                .handle
                .subscribe(Some(since), SnapshotReason::Connect)
                .await
                .unwrap();
            let snap = json(&old.first[0]);
            assert_eq!(snap["type"], "snapshot", "since {since}");
            assert_eq!(snap["reason"], "resume_too_old");
        }
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_client_lagged_and_never_blocks_the_hub() {
        let bus = EventBus::new("r1", None);
        let hub = start(&bus, 2, 100);
        let mut slow = hub
            .handle
            .subscribe(None, SnapshotReason::Connect)
            .await
            .unwrap();
        let mut fast = hub
            .handle
            .subscribe(None, SnapshotReason::Connect)
            .await
            .unwrap();
        for i in 0..3 {
            warn(&bus, &format!("w{i}"));
            // The fast client keeps up.
            let f = fast.live.as_mut().unwrap().recv().await.unwrap();
            assert_eq!(f.seq, i + 1);
        }
        settle(&hub.handle, 3).await;
        for i in 3..50 {
            warn(&bus, &format!("w{i}"));
            let f = fast.live.as_mut().unwrap().recv().await.unwrap();
            assert_eq!(f.seq, i + 1);
        }
        assert!(slow.lagged.load(Ordering::Acquire));
        assert_eq!(hub.handle.stats.lagged.load(Ordering::Relaxed), 1);
        // The slow client gets what fit, then the end of its queue.
        let rx = slow.live.as_mut().unwrap();
        assert_eq!(rx.recv().await.unwrap().seq, 1);
        assert_eq!(rx.recv().await.unwrap().seq, 2);
        assert!(rx.recv().await.is_none());
    }
}
