//! ResourceManagerAgent: owns the run's CPU and memory budgets, admits every unit,
//! measures what running units really use, and stops those that exceed their limit.
//!
//! One task owns the state; callers talk to it through a [`ResourceHandle`].
//!
//! - **Admission** ([`ResourceHandle::admit`]): a unit starts once a global slot, a slot
//!   of its layer and its memory estimate fit every budget it belongs to (global and
//!   layer); first come, first served with a bounded bypass so a large unit is not
//!   starved by a stream of small ones (the rules are in `budgets`). Dropping the
//!   [`AdmissionPermit`] returns what it held. The estimate is
//!   [`memory_estimate`]: the declared `min_memory_mb`, what this unit was measured
//!   using earlier in the run, and (later) history, whichever is largest.
//! - **Tracking** ([`ResourceHandle::tracker`]): the executor registers each spawned
//!   attempt (process group, token, hard limit, [`StopHandle`]) and unregisters it when
//!   it ends, getting the peak memory measured in between.
//! - **Sampling**: every `sample_interval_ms`, on a blocking thread, the system's
//!   available memory and CPU and each tracked unit's tree RSS ([`sampler`]). A unit
//!   whose tree exceeds its `max_memory_mb` is stopped with
//!   [`StopReason::MemoryLimit`] (the executor reports `memory_limit`); a unit using
//!   more than its estimate is charged what it uses; under `memory_pressure_percent`
//!   admission pauses (`resource_throttled`) until memory comes back
//!   (`resource_resumed`). Each sample is published as `resource_sample` (at most four
//!   a second: with a shorter interval, every Nth sample is published).
//! - **Degradation**: when sampling is unavailable the agent reports `degraded` and
//!   keeps admitting on slots and declared estimates only: no measurement, no memory
//!   kill, no pressure pause. The run goes on.

mod budgets;
pub mod sampler;
mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::budgets::{Budgets, Waiting};
use self::sampler::{Probe, Sample, SystemProbe};
pub use self::settings::{
    EstimateInputs, budgets_view, cores, cpu_slots, last_sample, layer_slots, memory_estimate,
};
use super::{AgentHandle, Health, names};
use crate::bus::EventBus;
use crate::event::EventKind;
use crate::exec::{StopHandle, StopReason};

/// What a unit asks for.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// Unit id.
    pub unit: String,
    /// Its layer (for the layer's budgets).
    pub layer: String,
    /// Memory estimate in MiB ([`memory_estimate`]).
    pub memory_mb: u64,
    /// A background layer's unit: admitted after every foreground request, only into
    /// slots the foreground leaves idle, and at most `background_slots` at once.
    pub background: bool,
    /// Its category.
    pub category: String,
    /// What it must never run alongside.
    pub exclusion: Exclusion,
}

/// What a unit must never run alongside (`conflicts`, `parallel_safe: false`,
/// `dedicated_resources`, the `*_intensive` flags of categories; `conflicts` of layers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusion {
    /// Runs with nothing else running.
    pub alone: bool,
    /// Categories whose units never run at the same time as this one.
    pub categories: Vec<String>,
    /// Layers whose units never run at the same time as this one.
    pub layers: Vec<String>,
    /// Heavy in these ways: never overlaps a unit of another category heavy in the same way.
    pub heavy: Vec<String>,
}

impl AdmissionRequest {
    /// True when `self` and `other` must not run at the same time (either side's
    /// conflicts name the other's category or layer, or both are heavy in the same way).
    /// Units of one category never conflict with each other here (their category's
    /// `max_parallel_instances` governs them).
    pub fn conflicts_with(&self, other: &AdmissionRequest) -> bool {
        if self.category == other.category {
            return false;
        }
        let names = |a: &AdmissionRequest, b: &AdmissionRequest| {
            a.exclusion.categories.contains(&b.category)
                || (a.layer != b.layer && a.exclusion.layers.contains(&b.layer))
        };
        names(self, other)
            || names(other, self)
            || self
                .exclusion
                .heavy
                .iter()
                .any(|h| other.exclusion.heavy.contains(h))
    }
}

/// A layer's own budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerBudget {
    /// At most this many of the layer's units at once ([`layer_slots`]).
    pub slots: Option<usize>,
    /// Memory budget of the layer's running units, MiB.
    pub memory_mb: Option<u64>,
}

/// Budgets and sampling settings.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    /// Global slots.
    pub slots: usize,
    /// Global memory budget, MiB.
    pub memory_budget_mb: Option<u64>,
    /// Budgets per layer (layers without any are absent).
    pub layers: HashMap<String, LayerBudget>,
    /// How long a request that does not fit may be overtaken by smaller ones.
    pub bypass_window: Duration,
    /// How often running units and the system are sampled.
    pub sample_interval: Duration,
    /// Admission pauses while available memory is under this share, percent (0: never).
    pub memory_pressure_percent: f64,
    /// At most this many background units at once (None: no separate limit).
    pub background_slots: Option<usize>,
}

impl ResourceSettings {
    /// `slots` slots and nothing else (default sampling settings).
    pub fn slots_only(slots: usize) -> Self {
        Self {
            slots,
            memory_budget_mb: None,
            layers: HashMap::new(),
            bypass_window: Duration::from_secs(2),
            sample_interval: Duration::from_millis(250),
            memory_pressure_percent: 10.0,
            background_slots: None,
        }
    }
}

/// A granted admission. Dropping it returns the resources.
#[derive(Debug)]
pub struct AdmissionPermit {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Release(self.id));
    }
}

/// Budgets in use, for status displays.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Slots in use.
    pub slots_used: usize,
    /// Slots in all.
    pub slots: usize,
    /// Memory charged against the global budget, MiB.
    pub memory_admitted_mb: u64,
    /// Global memory budget, MiB.
    pub memory_budget_mb: Option<u64>,
    /// Requests waiting.
    pub waiting: usize,
    /// Admission paused by memory pressure.
    pub throttled: bool,
}

/// A spawned attempt to measure and, past its limit, stop.
#[derive(Debug)]
struct Track {
    id: u64,
    unit: String,
    pgid: u32,
    token: String,
    limit_mb: Option<u64>,
    stop: StopHandle,
}

#[derive(Debug)]
enum Msg {
    Admit(AdmissionRequest, oneshot::Sender<AdmissionPermit>),
    Release(u64),
    Usage(oneshot::Sender<Usage>),
    Track(Track),
    Untrack(u64, Option<oneshot::Sender<Option<u64>>>),
}

/// The agent was shut down.
#[derive(Debug, thiserror::Error)]
#[error("the resource manager has stopped")]
pub struct Closed;

/// A cheap, clonable handle to the resource manager.
#[derive(Clone)]
pub struct ResourceHandle {
    tx: mpsc::UnboundedSender<Msg>,
    next_track: Arc<AtomicU64>,
}

impl ResourceHandle {
    /// Wait until the unit fits. Cancel-safe: dropping the future gives up the place.
    pub async fn admit(&self, req: AdmissionRequest) -> Result<AdmissionPermit, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Admit(req, reply)).map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Current use of the budgets.
    pub async fn usage(&self) -> Result<Usage, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Usage(reply)).map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// A tracker for one attempt of `unit`, whose tree may use at most `limit_mb`
    /// (stopped through `stop` past it). Nothing is measured until
    /// [`Tracker::spawned`].
    pub fn tracker(&self, unit: &str, limit_mb: Option<u64>, stop: &StopHandle) -> Tracker {
        Tracker {
            id: self.next_track.fetch_add(1, Ordering::Relaxed),
            unit: unit.to_string(),
            limit_mb,
            stop: stop.clone(),
            tx: self.tx.clone(),
            finished: false,
        }
    }
}

/// One attempt's registration with the sampler. Dropping it unregisters the attempt.
#[derive(Debug)]
pub struct Tracker {
    id: u64,
    unit: String,
    limit_mb: Option<u64>,
    stop: StopHandle,
    tx: mpsc::UnboundedSender<Msg>,
    finished: bool,
}

impl Tracker {
    /// The attempt runs as process group `pgid` marked with `token`: measure it.
    pub fn spawned(&self, pgid: u32, token: &str) {
        self.notice().spawned(pgid, token);
    }

    /// What tells the agent that the attempt was spawned, for a callback that must not
    /// borrow the tracker (exec's `on_spawn`).
    pub fn notice(&self) -> SpawnNotice {
        SpawnNotice {
            track: Track {
                id: self.id,
                unit: self.unit.clone(),
                pgid: 0,
                token: String::new(),
                limit_mb: self.limit_mb,
                stop: self.stop.clone(),
            },
            tx: self.tx.clone(),
        }
    }

    /// The attempt ended: stop measuring it; returns the peak RSS of its tree in MiB
    /// (`None` when it ended before its first sample, or sampling is unavailable).
    pub async fn finish(mut self) -> Option<u64> {
        self.finished = true;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Untrack(self.id, Some(reply))).ok()?;
        rx.await.ok().flatten()
    }
}

/// Sent once the attempt runs: see [`Tracker::notice`].
#[derive(Debug)]
pub struct SpawnNotice {
    track: Track,
    tx: mpsc::UnboundedSender<Msg>,
}

impl SpawnNotice {
    /// The attempt runs as process group `pgid` marked with `token`: measure it.
    pub fn spawned(mut self, pgid: u32, token: &str) {
        self.track.pgid = pgid;
        self.track.token = token.to_string();
        let _ = self.tx.send(Msg::Track(self.track));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Msg::Untrack(self.id, None));
        }
    }
}

/// A tracked attempt, as the agent sees it.
struct Tracked {
    unit: String,
    pgid: u32,
    token: String,
    limit_mb: Option<u64>,
    stop: StopHandle,
    peak_mb: Option<u64>,
    stopped: bool,
}

/// Publish at most this often, whatever the sample interval.
const MIN_PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Publish every Nth sample so that samples are published at most every
/// [`MIN_PUBLISH_INTERVAL`].
fn publish_every(interval: Duration) -> u64 {
    MIN_PUBLISH_INTERVAL
        .as_millis()
        .div_ceil(interval.as_millis().max(1))
        .max(1) as u64
}

/// How often the agent heartbeats and re-checks the bypass window.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// The agent's state, owned by its task.
struct Agent {
    budgets: Budgets<oneshot::Sender<AdmissionPermit>>,
    /// For the permits it hands out (they send their release here).
    tx: mpsc::UnboundedSender<Msg>,
    tracked: HashMap<u64, Tracked>,
    bus: EventBus,
    health: Arc<Health>,
    memory_pressure_percent: f64,
    /// Publish every Nth sample.
    publish_every: u64,
    samples: u64,
}

impl Agent {
    fn grant(&mut self) {
        let tx = &self.tx;
        self.budgets.grant(Instant::now(), |reply, id| {
            reply.send(AdmissionPermit { id, tx: tx.clone() }).is_ok()
        });
    }

    fn emit(&self, kind: EventKind) {
        self.bus.emit(names::RESOURCES, kind);
    }

    fn targets(&self) -> Vec<sampler::Target> {
        self.tracked
            .iter()
            .map(|(id, t)| (*id, t.pgid, t.token.clone()))
            .collect()
    }

    /// Fold a sample in: peaks, charges, memory limits, pressure, the event.
    fn apply(&mut self, sample: Sample) {
        let mut used_mb = 0;
        for (id, rss) in sample.trees {
            let (Some(t), Some(mb)) = (self.tracked.get_mut(&id), rss) else {
                continue;
            };
            used_mb += mb;
            t.peak_mb = t.peak_mb.max(Some(mb));
            self.budgets.measured(&t.unit, mb);
            if let Some(limit_mb) = t.limit_mb
                && mb > limit_mb
                && !t.stopped
            {
                t.stopped = true;
                tracing::info!(unit = %t.unit, mb, limit_mb, "memory limit exceeded; stopping");
                t.stop.stop(StopReason::MemoryLimit {
                    limit_mb,
                    observed_mb: mb,
                });
            }
        }
        let sys = sample.system;
        let pct = sys.available_percent();
        match sampler::pressure_change(self.budgets.throttled, pct, self.memory_pressure_percent) {
            Some(true) => {
                self.budgets.throttled = true;
                self.emit(EventKind::ResourceThrottled {
                    reason: format!(
                        "available memory {pct:.1}% ({} of {} MiB) < memory_pressure_percent {}%",
                        sys.available_mb, sys.total_mb, self.memory_pressure_percent
                    ),
                });
            }
            Some(false) => {
                self.budgets.throttled = false;
                self.emit(EventKind::ResourceResumed);
            }
            None => {}
        }
        if self.samples.is_multiple_of(self.publish_every) {
            self.emit(EventKind::ResourceSample {
                running: self.tracked.len(),
                admitted_memory_mb: self.budgets.memory_used(),
                used_memory_mb: used_mb,
                available_memory_mb: sys.available_mb,
                cpu_percent: sys.cpu_percent,
            });
        }
        self.samples += 1;
        self.grant();
    }

    /// Sampling is gone: slot and estimate limits only from now on.
    fn degrade(&mut self, why: String) {
        tracing::warn!("resource manager degraded: {why}");
        self.health.degrade(why);
        if self.budgets.throttled {
            self.budgets.throttled = false;
            self.emit(EventKind::ResourceResumed);
            self.grant();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Admit(req, reply) => {
                self.budgets.queue.push_back(Waiting {
                    req,
                    reply,
                    since: Instant::now(),
                });
                self.grant();
            }
            Msg::Release(id) => {
                self.budgets.release(id);
                self.grant();
            }
            Msg::Usage(reply) => {
                let _ = reply.send(self.budgets.usage());
            }
            Msg::Track(t) => {
                self.tracked.insert(
                    t.id,
                    Tracked {
                        unit: t.unit,
                        pgid: t.pgid,
                        token: t.token,
                        limit_mb: t.limit_mb,
                        stop: t.stop,
                        peak_mb: None,
                        stopped: false,
                    },
                );
            }
            Msg::Untrack(id, reply) => {
                let peak = self.tracked.remove(&id).and_then(|t| t.peak_mb);
                if let Some(reply) = reply {
                    let _ = reply.send(peak);
                }
            }
        }
    }
}

/// A sample being taken on a blocking thread; the probe comes back with it.
type InFlight = JoinHandle<(Box<dyn Probe>, Result<Sample, String>, Duration)>;

/// What sampling cost, logged when the agent stops (the benchmark reads it).
#[derive(Default)]
struct Cost {
    samples: u64,
    total: Duration,
    max: Duration,
}

impl Cost {
    fn add(&mut self, took: Duration) {
        self.samples += 1;
        self.total += took;
        self.max = self.max.max(took);
    }

    fn log(&self) {
        if self.samples > 0 {
            tracing::info!(
                samples = self.samples,
                total_ms = self.total.as_millis() as u64,
                mean_us = (self.total.as_micros() / u128::from(self.samples)) as u64,
                max_us = self.max.as_micros() as u64,
                "resource sampler cost"
            );
        }
    }
}

/// Start the agent with the real probe (degraded when sampling is unavailable).
pub fn start(settings: ResourceSettings, bus: &EventBus) -> (ResourceHandle, AgentHandle) {
    let probe = SystemProbe::new().map(|p| Box::new(p) as Box<dyn Probe>);
    start_with_probe(settings, bus, probe)
}

/// Start the agent sampling through `probe` (`Err`: sampling unavailable, and why).
pub fn start_with_probe(
    settings: ResourceSettings,
    bus: &EventBus,
    probe: Result<Box<dyn Probe>, String>,
) -> (ResourceHandle, AgentHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let health = Health::new(names::RESOURCES);
    let shutdown = CancellationToken::new();
    let handle = ResourceHandle {
        tx: tx.clone(),
        next_track: Arc::new(AtomicU64::new(1)),
    };
    let interval = settings.sample_interval.max(Duration::from_millis(10));
    let mut agent = Agent {
        budgets: Budgets::new(
            settings.slots,
            settings.memory_budget_mb,
            settings.layers,
            settings.bypass_window,
        )
        .with_background_slots(settings.background_slots),
        tx,
        tracked: HashMap::new(),
        bus: bus.clone(),
        health: Arc::clone(&health),
        memory_pressure_percent: settings.memory_pressure_percent,
        publish_every: publish_every(interval),
        samples: 0,
    };
    let task_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut probe = match probe {
            Ok(p) => Some(p),
            Err(why) => {
                agent.degrade(why);
                None
            }
        };
        let mut in_flight: Option<InFlight> = None;
        let mut cost = Cost::default();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut sample_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        agent.health.heartbeat();
        loop {
            tokio::select! {
                _ = task_shutdown.cancelled() => break,
                _ = heartbeat.tick() => {
                    agent.health.heartbeat();
                    agent.grant(); // the bypass window may have closed
                }
                _ = sample_tick.tick(), if probe.is_some() && in_flight.is_none() => {
                    let mut p = probe.take().expect("probe present");
                    let targets = agent.targets();
                    in_flight = Some(tokio::task::spawn_blocking(move || {
                        let t = Instant::now();
                        let r = sampler::take(p.as_mut(), &targets);
                        (p, r, t.elapsed())
                    }));
                }
                done = async { in_flight.as_mut().expect("sample in flight").await },
                    if in_flight.is_some() =>
                {
                    in_flight = None;
                    match done {
                        Ok((p, Ok(sample), took)) => {
                            probe = Some(p);
                            cost.add(took);
                            agent.apply(sample);
                        }
                        Ok((_, Err(why), _)) => agent.degrade(why),
                        Err(e) => agent.degrade(format!("system sampling failed: {e}")),
                    }
                }
                msg = rx.recv() => match msg {
                    Some(msg) => agent.handle(msg),
                    None => break,
                },
            }
        }
        cost.log();
    });
    (
        handle,
        AgentHandle {
            health,
            shutdown,
            task,
        },
    )
}

#[cfg(test)]
mod tests;
