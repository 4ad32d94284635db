//! What the executor's category runners share while a layer runs: the run's context
//! ([`RunContext`], [`Decision`]), a running layer ([`LayerRun`]), the start order
//! across its categories, the gates a unit passes before it starts, fail-fast
//! questions, and unit file names. Used by [`super::layer_executor`] (command and
//! nextest units) and [`super::pytest_batches`] (pytest batches).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::resource_manager::{self, AdmissionRequest, EstimateInputs, Exclusion, ResourceHandle};
use super::{Health, names};
use crate::bus::EventBus;
use crate::config::{Category, Config, FailFast};
use crate::event::EventKind;
use crate::exec::{self, StopReason};
use crate::plan::{Hints, PlannedLayer, StartRank};

use crate::event::StopCause;

/// What the executor asks the dispatcher to decide while a layer runs.
#[derive(Debug)]
pub enum Decision {
    /// A unit of `layer` ended with a failure (after its last attempt): the dispatcher
    /// applies the layer's `fail_fast` (stop the run, or cancel `category`), then
    /// answers on `done`.
    UnitFailed {
        /// The layer.
        layer: String,
        /// The failed unit's category's token (cancelled by `fail_fast: category`).
        category: CancellationToken,
        /// Answered once the decision is applied.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// What every layer of a run shares.
pub struct RunContext {
    /// The event bus.
    pub bus: EventBus,
    /// The configuration.
    pub config: Arc<Config>,
    /// Admission.
    pub resources: ResourceHandle,
    /// `.runner/runs/<run_id>/`.
    pub run_dir: PathBuf,
    /// Cancelled to stop the whole run.
    pub run_token: CancellationToken,
    /// Cancelled on a second Ctrl-C: kill without grace.
    pub kill_now: CancellationToken,
    /// Decisions the dispatcher takes for the executor (fail-fast).
    pub decisions: tokio::sync::mpsc::UnboundedSender<Decision>,
    /// How unit attempts are started ([`exec::Processes`] in a run).
    pub launcher: Arc<dyn exec::Launcher>,
    /// The executor's health record.
    pub health: Arc<Health>,
    /// What history says about each unit: start order and memory estimates.
    pub hints: Arc<Hints>,
    /// `--stress-duration`: past this instant, no further iteration (after each unit's
    /// first) starts; they are skipped.
    pub stress_deadline: Option<tokio::time::Instant>,
}

impl RunContext {
    /// Stop the whole run for `cause`: the first cause is announced (`run_stopping`)
    /// and kept by the fold; later ones only find the run already stopping.
    pub fn stop(&self, cause: StopCause) {
        self.bus
            .emit_if(names::CONTROLLER, EventKind::RunStopping { cause }, |s| {
                s.stop_cause.is_none()
            });
        self.run_token.cancel();
    }

    /// Why the run is stopping, if it is (from the fold).
    pub fn cause(&self) -> Option<StopCause> {
        self.bus.with_state(|s| s.stop_cause.clone())
    }

    /// Something inside the runner failed (a task panicked, a channel closed): record it
    /// as an `internal_error` and stop the run. The run then exits 3.
    pub fn fault(&self, task: &str, message: String, unit: Option<&str>) {
        tracing::error!(task, unit, "internal error: {message}");
        self.bus.emit(
            names::CONTROLLER,
            EventKind::InternalError {
                task: task.to_string(),
                message,
                unit: unit.map(str::to_string),
            },
        );
        self.stop(StopCause::InternalError {
            task: task.to_string(),
        });
    }

    pub(super) fn emit(&self, kind: EventKind) {
        self.bus.emit(names::EXECUTOR, kind);
    }
}

/// State shared by the categories of one running layer.
pub(super) struct LayerRun {
    pub(super) ctx: Arc<RunContext>,
    pub(super) planned: Arc<PlannedLayer>,
    pub(super) token: CancellationToken,
    pub(super) deadline_hit: AtomicBool,
    pub(super) slots: Arc<Semaphore>,
    pub(super) nice: Option<i32>,
    pub(super) order: Arc<StartOrder>,
    /// The run's shared output log (`None` if it cannot be created: a file per unit).
    pub(super) run_log: Option<Arc<exec::RunLog>>,
}

/// The start order across the categories of a running layer.
///
/// A unit that passed its category's gate enters with its [`StartRank`] and asks for
/// its layer slot and admission only while no waiting unit of the layer ranks higher
/// (equal ranks ask together, and the resource manager serves them first come, first
/// served). When a higher-ranked unit arrives, a unit already asking gives up its place
/// (admission is cancel-safe) and waits again. Each category has at most one unit
/// waiting here, so this is a merge of the categories' longest-first lists. The price:
/// within a layer, a unit waiting for memory holds back lower-ranked ones (the resource
/// manager's bypass still works between layers); without history every rank is equal
/// and nothing changes.
pub(super) struct StartOrder {
    /// Ranks of the waiting units, with how many wait at each.
    waiting: Mutex<BTreeMap<StartRank, usize>>,
    /// Bumped on every change of `waiting`.
    changed: watch::Sender<u64>,
}

impl StartOrder {
    pub(super) fn new() -> Self {
        Self {
            waiting: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }

    pub(super) fn enter(this: &Arc<Self>, rank: StartRank) -> Ticket {
        *this
            .waiting
            .lock()
            .expect("start order lock")
            .entry(rank)
            .or_default() += 1;
        this.changed.send_modify(|n| *n += 1);
        Ticket {
            order: Arc::clone(this),
            rank,
        }
    }

    /// No waiting unit ranks higher than `rank`.
    fn is_first(&self, rank: StartRank) -> bool {
        let waiting = self.waiting.lock().expect("start order lock");
        waiting.keys().next_back().is_none_or(|top| *top <= rank)
    }
}

/// A unit's place in its layer's [`StartOrder`]; dropping it leaves.
pub(super) struct Ticket {
    pub(super) order: Arc<StartOrder>,
    rank: StartRank,
}

impl Ticket {
    /// Runs `attempt` while no waiting unit ranks higher; drops it and waits again
    /// whenever one arrives.
    async fn when_first<T, F>(&self, mut attempt: impl FnMut() -> F) -> Option<T>
    where
        F: std::future::Future<Output = Option<T>>,
    {
        let mut rx = self.order.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if !self.order.is_first(self.rank) {
                // The sender lives as long as the order: `changed` cannot fail here.
                let _ = rx.changed().await;
                continue;
            }
            let outranked = async {
                loop {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if !self.order.is_first(self.rank) {
                        return;
                    }
                }
            };
            // Outranked wins even over a grant in the same instant: the grant is then
            // dropped, which hands it back (to the unit that outranked this one).
            tokio::select! {
                biased;
                _ = outranked => {}
                r = attempt() => return r,
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut waiting = self.order.waiting.lock().expect("start order lock");
        if let Some(n) = waiting.get_mut(&self.rank) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.rank);
            }
        }
        drop(waiting);
        self.order.changed.send_modify(|n| *n += 1);
    }
}

impl LayerRun {
    pub(super) fn name(&self) -> &str {
        &self.planned.layer.name
    }

    /// Why this layer's pending units will not start, once its token is cancelled.
    pub(super) fn stop_reason_text(&self) -> String {
        if let Some(cause) = self.ctx.cause() {
            cause.describe()
        } else if self.deadline_hit.load(Ordering::SeqCst) {
            format!("layer `{}` deadline exceeded", self.name())
        } else {
            "stopped".into()
        }
    }

    /// How a running unit is stopped once this layer's token is cancelled.
    pub(super) fn stop_reason(&self) -> StopReason {
        match self.ctx.cause() {
            Some(StopCause::GlobalTimeout) => StopReason::Deadline,
            Some(_) => StopReason::Cancelled,
            None if self.deadline_hit.load(Ordering::SeqCst) => StopReason::Deadline,
            None => StopReason::Cancelled,
        }
    }
}

/// What a unit of `cat` in `layer` must never run alongside.
pub(super) fn exclusion(layer: &crate::config::Layer, cat: &Category) -> Exclusion {
    let mut categories = cat.conflicts.clone();
    for c in &layer.conflicting_categories {
        if !categories.contains(c) {
            categories.push(c.clone());
        }
    }
    Exclusion {
        alone: cat.exclusive,
        categories,
        layers: layer.conflicts.clone(),
        heavy: cat.heavy.clone(),
    }
}

pub(super) fn category_stop_text(run: &LayerRun, token: &CancellationToken) -> String {
    if run.token.is_cancelled() || !token.is_cancelled() {
        run.stop_reason_text()
    } else {
        "fail-fast: category failed".into()
    }
}

/// What a started unit (or pytest batch) holds until it ends: its category's slot,
/// its layer's slot and its admission.
pub(super) struct Permits {
    _category: tokio::sync::OwnedSemaphorePermit,
    _layer: tokio::sync::OwnedSemaphorePermit,
    _admission: resource_manager::AdmissionPermit,
}

/// Waits for the gates of `unit`: its category's slot, then (in its turn of the start
/// order, `entered` if it already has a place) its layer's slot and admission. None when
/// a gate closed (the resource manager stopped answering: recorded as a fault).
pub(super) async fn pass_gates(
    run: &LayerRun,
    cat: &Category,
    cat_slots: &Arc<Semaphore>,
    entered: Option<Ticket>,
    unit: &str,
) -> Option<Permits> {
    let ctx = &run.ctx;
    let c = Arc::clone(cat_slots).acquire_owned().await.ok()?;
    let ticket = entered.unwrap_or_else(|| StartOrder::enter(&run.order, ctx.hints.rank(unit)));
    let (l, a) = ticket
        .when_first(|| async {
            let l = Arc::clone(&run.slots).acquire_owned().await.ok()?;
            let memory_mb = memory_estimate(ctx, cat, unit);
            let a = ctx
                .resources
                .admit(AdmissionRequest {
                    background: run.planned.background,
                    unit: unit.to_string(),
                    layer: run.name().to_string(),
                    memory_mb,
                    category: cat.name.clone(),
                    exclusion: exclusion(&run.planned.layer, cat),
                })
                .await
                .map_err(|_| {
                    ctx.fault(
                        names::RESOURCES,
                        "the resource manager stopped answering admissions".into(),
                        Some(unit),
                    )
                })
                .ok()?;
            Some((l, a))
        })
        .await?;
    drop(ticket);
    Some(Permits {
        _category: c,
        _layer: l,
        _admission: a,
    })
}

/// After a unit's final failure: the dispatcher decides what the layer's `fail_fast`
/// stops; the unit holds its permits until it has.
pub(super) async fn ask_fail_fast(run: &LayerRun, category_token: &CancellationToken) {
    if matches!(
        run.planned.layer.fail_fast,
        FailFast::Layer | FailFast::Disabled
    ) {
        return;
    }
    let (done, answered) = tokio::sync::oneshot::channel();
    let asked = run.ctx.decisions.send(Decision::UnitFailed {
        layer: run.name().to_string(),
        category: category_token.clone(),
        done,
    });
    if asked.is_err() || answered.await.is_err() {
        run.ctx.fault(
            names::EXECUTOR,
            "the dispatcher stopped answering fail-fast decisions".into(),
            None,
        );
    }
}

/// Admission estimate: the declared minimum, the peak seen for this unit in this run,
/// or its peak in recent runs (history), whichever is largest.
pub(super) fn memory_estimate(ctx: &RunContext, cat: &Category, unit: &str) -> u64 {
    let seen = ctx
        .bus
        .with_state(|s| s.units.get(unit).and_then(|u| u.peak_memory_mb));
    resource_manager::memory_estimate(&EstimateInputs {
        declared_mb: cat.min_memory_mb,
        peak_this_run_mb: seen,
        history_mb: ctx.hints.peak_memory_mb(unit),
        limit_mb: cat.max_memory_mb,
    })
}

/// The longest wait before a retry, however many attempts came before.
pub(super) const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// The wait before the attempt after `attempt`: `base` doubled per earlier retry,
/// at most [`MAX_RETRY_BACKOFF`] (never an overflow, whatever `retries` is).
pub(super) fn retry_backoff(base: std::time::Duration, attempt: u32) -> std::time::Duration {
    base.checked_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .unwrap_or(MAX_RETRY_BACKOFF)
        .min(MAX_RETRY_BACKOFF)
}

/// The run's shared output log, in the run directory.
pub const RUN_LOG: &str = "output.log";

/// Longest file-name stem made from a unit id: with `.<attempt>.log` or `.xml` after it
/// the name stays far below the 255-byte limit of common file systems.
pub(super) const MAX_FILE_STEM: usize = 120;

/// A unit id as a file name (logs, JUnit files): unsafe characters become `_`, and an id
/// too long for a file name keeps its beginning plus a hash of the whole id (the full id
/// stays in the events and reports).
pub(super) fn file_safe(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.len() <= MAX_FILE_STEM {
        return safe;
    }
    // FNV-1a: stable across builds and platforms, so a name is the same in every run.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{}-{hash:016x}", &safe[..MAX_FILE_STEM - 17])
}

/// The last `max` bytes of output as text, cut at a line start when possible.
pub(super) fn tail_text(r: &crate::exec::ExecResult, max: usize) -> String {
    let text = r.output.text_lossy();
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) if nl + 1 < cut.len() => cut[nl + 1..].to_string(),
        _ => cut.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_order_lets_the_highest_ranked_waiting_unit_ask_first() {
        use crate::plan::UnitHint;
        let mut hints = Hints::default();
        for (id, ms) in [("short", 10), ("long", 1000)] {
            hints.units.insert(
                id.into(),
                UnitHint {
                    expected: Some(std::time::Duration::from_millis(ms)),
                    ..Default::default()
                },
            );
        }
        let order = Arc::new(StartOrder::new());
        let slots = Arc::new(Semaphore::new(0));
        let got: Mutex<Vec<&str>> = Mutex::default();
        let waiting = || order.waiting.lock().unwrap().values().sum::<usize>();
        let ask = |name: &'static str, after: usize| {
            let (order, slots, hints, got) = (&order, &slots, &hints, &got);
            async move {
                // Enter once `after` units wait (the short unit asks first).
                while waiting() < after {
                    tokio::task::yield_now().await;
                }
                let ticket = StartOrder::enter(order, hints.rank(name));
                let permit = ticket
                    .when_first(|| async { Arc::clone(slots).acquire_owned().await.ok() })
                    .await;
                drop(ticket);
                got.lock().unwrap().push(name);
                permit
            }
        };
        let release = async {
            while waiting() < 2 {
                tokio::task::yield_now().await;
            }
            slots.add_permits(1);
            while got.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
            slots.add_permits(1);
        };
        let (short, long, ()) = tokio::join!(ask("short", 0), ask("long", 1), release);
        assert!(short.is_some() && long.is_some());
        assert_eq!(*got.lock().unwrap(), vec!["long", "short"]);
        assert_eq!(waiting(), 0, "tickets leave when dropped");
    }
}
