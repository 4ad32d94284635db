//! The event bus: the one place events are sequenced, folded and fanned out.
//!
//! `emit` stamps the envelope (`seq` without gaps, timestamp, run id, thread id),
//! folds the event into the bus's [`RunState`] and hands an `Arc<Event>` to every
//! subscriber, all under one lock, so every subscriber sees the same order and a
//! snapshot taken with [`EventBus::subscribe_with_snapshot`] is exactly the state
//! before the first event that subscriber receives. Subscribers get unbounded
//! channels: they are the runner's own sinks (console, JSON lines, reports), which
//! keep up; the WebSocket hub bounds its own per-client queues.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::event::{Event, EventKind, PROTOCOL_VERSION, RunState};

/// A receiver of every event from the moment it subscribed.
pub type Subscription = mpsc::UnboundedReceiver<Arc<Event>>;

struct Inner {
    seq: u64,
    /// Shared only once the run is over ([`EventBus::final_state`]); until then this is
    /// the one reference, so folding an event never copies the state.
    state: Arc<RunState>,
    subscribers: Vec<mpsc::UnboundedSender<Arc<Event>>>,
    closed: bool,
}

impl Inner {
    /// No event is published from here on; dropping the senders ends every
    /// subscription once it is drained.
    fn close(&mut self) {
        self.closed = true;
        self.subscribers.clear();
    }
}

/// Sequencer, fold and fan-out of a run's events. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    run_id: Arc<str>,
    thread_id: Option<Arc<str>>,
    inner: Arc<Mutex<Inner>>,
}

impl EventBus {
    /// A bus for run `run_id`.
    pub fn new(run_id: &str, thread_id: Option<&str>) -> Self {
        Self {
            run_id: run_id.into(),
            thread_id: thread_id.map(Into::into),
            inner: Arc::new(Mutex::new(Inner {
                seq: 0,
                state: Arc::new(RunState::default()),
                subscribers: Vec::new(),
                closed: false,
            })),
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Receive every event emitted from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_snapshot().1
    }

    /// The current state and a receiver of every later event, atomically.
    pub fn subscribe_with_snapshot(&self) -> (RunState, Subscription) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.inner.lock().expect("bus lock");
        if !inner.closed {
            inner.subscribers.push(tx);
        }
        (RunState::clone(&inner.state), rx)
    }

    /// Stamp, fold and publish an event; returns its `seq`.
    pub fn emit(&self, agent: &str, kind: EventKind) -> u64 {
        self.emit_if(agent, kind, |_| true)
    }

    /// Emit `kind` only if `when` holds for the current state, atomically (a decision
    /// taken once, such as the run's stop cause). Returns the `seq` of the last event.
    pub fn emit_if(
        &self,
        agent: &str,
        kind: EventKind,
        when: impl FnOnce(&RunState) -> bool,
    ) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.closed || !when(&inner.state) {
            return inner.seq;
        }
        inner.seq += 1;
        let event = Arc::new(Event {
            v: PROTOCOL_VERSION,
            seq: inner.seq,
            ts: now_rfc3339(),
            run_id: self.run_id.to_string(),
            thread_id: self.thread_id.as_deref().map(str::to_string),
            agent: agent.to_string(),
            kind,
        });
        Arc::make_mut(&mut inner.state).apply(&event);
        inner
            .subscribers
            .retain(|tx| tx.send(Arc::clone(&event)).is_ok());
        // `run_finished` is the last event: the bus closes with it, under the same lock,
        // so no sample or late report can follow it.
        if matches!(event.kind, EventKind::RunFinished { .. }) {
            inner.close();
        }
        inner.seq
    }

    /// Read the current state without cloning it.
    pub fn with_state<R>(&self, f: impl FnOnce(&RunState) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()).state)
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> RunState {
        self.with_state(Clone::clone)
    }

    /// The state once the run is over, shared rather than copied (a run of 100,000 units
    /// would otherwise hold its fold twice while writing its reports). `finish` sets what
    /// only the end knows (the runner's own cost) before it is shared. Call after
    /// [`EventBus::close`] or `run_finished`: no event is folded after it.
    pub fn final_state(&self, finish: impl FnOnce(&mut RunState)) -> Arc<RunState> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.close();
        finish(Arc::make_mut(&mut inner.state));
        Arc::clone(&inner.state)
    }

    /// No more events: subscribers' channels end once drained.
    pub fn close(&self) {
        self.inner.lock().expect("bus lock").close();
    }
}

/// Now, as RFC 3339 with millisecond precision in UTC.
pub fn now_rfc3339() -> String {
    let ts = jiff::Timestamp::now();
    format!("{:.3}", ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_has_no_gaps_and_snapshot_precedes_stream() {
        let bus = EventBus::new("r", Some("t1"));
        bus.emit("a", EventKind::ResourceResumed);
        let (snap, mut rx) = bus.subscribe_with_snapshot();
        assert_eq!(snap.seq, 1);
        bus.emit("a", EventKind::ResourceResumed);
        bus.emit("a", EventKind::ResourceResumed);
        bus.close();
        let mut seqs = Vec::new();
        while let Ok(e) = rx.try_recv() {
            assert_eq!(e.thread_id.as_deref(), Some("t1"));
            seqs.push(e.seq);
        }
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(
            bus.emit("a", EventKind::ResourceResumed),
            3,
            "closed bus drops"
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = now_rfc3339();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn nothing_follows_run_finished() {
        let bus = EventBus::new("r", None);
        let mut rx = bus.subscribe();
        bus.emit(
            "c",
            EventKind::RunFinished {
                outcome: crate::event::RunOutcome::Passed,
                exit_code: 0,
                duration_ms: 1,
            },
        );
        bus.emit("a", EventKind::ResourceResumed);
        let mut types = Vec::new();
        while let Ok(e) = rx.try_recv() {
            types.push(e.seq);
        }
        assert_eq!(types, vec![1], "only run_finished");
    }
}
