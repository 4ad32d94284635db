//! LayerExecutorAgent: runs one layer's units.
//!
//! Categories are grouped by the layer's `execution_mode` (sequential: one group per
//! category and one unit at a time; parallel: one group; hybrid: one group per
//! `priority_order`), groups run in order, and a category also waits for the
//! categories it `depends_on`. Each unit passes three gates before it starts: its
//! category's `max_parallel_instances`, the layer's, and the resource manager's
//! admission. Attempts, timeouts, retries with backoff, the layer deadline and
//! fail-fast are handled here; every change is an event on the bus.
//!
//! Start order: each category takes its units in plan order (longest-first from
//! history, see [`crate::plan::order_units`]), and across the categories running at
//! once a [`StartOrder`] lets only the highest-ranked waiting units ask for their layer
//! slot and admission, so the layer as a whole starts longest-first rather than in the
//! order the categories' requests happen to reach the resource manager's queue.
//!
//! Cancellation is a token tree: the run's token (Ctrl-C, immediate fail-fast,
//! global timeout) is the parent of each layer's token (its deadline), which is
//! the parent of each category's token (category fail-fast). Running units watch
//! the layer token; the category token only stops admission of pending units.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::resource_manager::{self, AdmissionRequest, EstimateInputs, Exclusion, ResourceHandle};
use super::{Health, names};
use crate::bus::EventBus;
use crate::config::{Category, Config, FailFast, LayerMode, LeakPolicy, UnitKind};
use crate::discover::{Unit, UnitSpec};
use crate::event::{EventKind, Outcome};
use crate::exec::{self, ExecLimits, ExecResult, StopHandle, StopReason, Termination, UnitCommand};
use crate::ingest::junit as junit_import;
use crate::plan::{Hints, PlannedCategory, PlannedLayer, StartRank};

pub use crate::event::StopCause;

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

/// What the executor reports when a layer's units are all done; the dispatcher
/// judges the layer from the fold.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRunReport {
    /// The layer's `max_duration_minutes` passed while it ran.
    pub deadline_hit: bool,
    /// How long it ran.
    pub duration: std::time::Duration,
}

/// State shared by the categories of one running layer.
pub(super) struct LayerRun {
    pub(super) ctx: Arc<RunContext>,
    pub(super) planned: Arc<PlannedLayer>,
    pub(super) token: CancellationToken,
    deadline_hit: AtomicBool,
    slots: Arc<Semaphore>,
    pub(super) nice: Option<i32>,
    order: Arc<StartOrder>,
    /// The run's shared output log (`None` if it cannot be created: a file per unit).
    run_log: Option<Arc<exec::RunLog>>,
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
    fn new() -> Self {
        Self {
            waiting: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }

    fn enter(this: &Arc<Self>, rank: StartRank) -> Ticket {
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
    order: Arc<StartOrder>,
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

/// Run one planned layer's units to completion (the dispatcher announced the layer
/// and judges it afterwards); `nice` lowers the units' priority (background).
pub async fn run_layer(
    ctx: Arc<RunContext>,
    planned: PlannedLayer,
    nice: Option<i32>,
) -> LayerRunReport {
    let started = Instant::now();
    let layer = planned.layer.clone();
    let slots = match (
        layer.execution_mode,
        layer.resource_limits.max_parallel_instances,
    ) {
        (LayerMode::Sequential, _) => 1,
        (_, Some(n)) => n.min(Semaphore::MAX_PERMITS),
        (_, None) => Semaphore::MAX_PERMITS,
    };
    let run = Arc::new(LayerRun {
        token: ctx.run_token.child_token(),
        ctx: Arc::clone(&ctx),
        planned: Arc::new(planned),
        deadline_hit: AtomicBool::new(false),
        slots: Arc::new(Semaphore::new(slots)),
        nice,
        order: Arc::new(StartOrder::new()),
        run_log: exec::RunLog::open(&ctx.run_dir.join(RUN_LOG))
            .inspect_err(|e| tracing::warn!("{e}; unit output goes to a file per unit"))
            .ok(),
    });
    let deadline = layer.max_duration.map(|d| {
        let run = Arc::clone(&run);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            run.deadline_hit.store(true, Ordering::SeqCst);
            run.token.cancel();
        })
    });

    // One "done" signal per category: None while running, Some(passed) after.
    let mut done: HashMap<String, watch::Receiver<Option<bool>>> = HashMap::new();
    let mut senders = Vec::new();
    for pc in &run.planned.categories {
        let (tx, rx) = watch::channel(None);
        done.insert(pc.category.name.clone(), rx);
        senders.push(tx);
    }
    let groups = group_indices(&run.planned.categories, layer.execution_mode);
    // Wait for every category of an earlier group and every in-layer dependency.
    let waits_of: Vec<Vec<(String, watch::Receiver<Option<bool>>)>> = (0..senders.len())
        .map(|i| {
            run.planned
                .categories
                .iter()
                .enumerate()
                .filter(|(j, other)| {
                    let dep = run.planned.categories[i]
                        .category
                        .depends_on
                        .contains(&other.category.name);
                    // A dependency placed in a later group cannot be waited for
                    // without a deadlock; group order wins there.
                    groups[*j] < groups[i] || (dep && *j != i && groups[*j] == groups[i])
                })
                .map(|(_, other)| {
                    (
                        other.category.name.clone(),
                        done[&other.category.name].clone(),
                    )
                })
                .collect()
        })
        .collect();
    // The first unit of every category that starts at once enters the start order before
    // any category asks for admission, so the very first admissions follow it too.
    let primed: Vec<Option<Ticket>> = run
        .planned
        .categories
        .iter()
        .zip(&waits_of)
        .map(|(pc, waits)| {
            if !waits.is_empty() || pc.skip_reason.is_some() {
                return None;
            }
            let first = pc.units.iter().find(|u| u.skip.is_none())?;
            Some(StartOrder::enter(&run.order, ctx.hints.rank(&first.id)))
        })
        .collect();
    let mut tasks = JoinSet::new();
    let per_category = senders.into_iter().zip(waits_of).zip(primed);
    for (i, ((tx, waits), primed)) in per_category.enumerate() {
        let run = Arc::clone(&run);
        let name = run.planned.categories[i].category.name.clone();
        let deps = run.planned.categories[i].category.depends_on.clone();
        tasks.spawn(async move {
            let mut blocked: Option<String> = None;
            for (other, mut rx) in waits {
                let passed = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.unwrap_or(false),
                    Err(_) => false,
                };
                if !passed && deps.contains(&other) && blocked.is_none() {
                    blocked = Some(format!("depends on category `{other}`, which failed"));
                }
            }
            let pc = &run.planned.categories[i];
            let passed = run_category(&run, pc, blocked, primed).await;
            let _ = tx.send(Some(passed));
            name
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            ctx.fault(
                names::EXECUTOR,
                format!("a category task of layer `{}` failed: {e}", layer.name),
                None,
            );
        }
    }
    if let Some(d) = deadline {
        d.abort();
    }
    LayerRunReport {
        deadline_hit: run.deadline_hit.load(Ordering::SeqCst),
        duration: started.elapsed(),
    }
}

/// The group of each category: categories of a lower group finish before a higher one starts.
fn group_indices(categories: &[PlannedCategory], mode: LayerMode) -> Vec<usize> {
    match mode {
        LayerMode::Sequential => (0..categories.len()).collect(),
        LayerMode::Parallel => vec![0; categories.len()],
        LayerMode::Hybrid => {
            let mut orders: Vec<i64> = categories
                .iter()
                .map(|c| c.category.priority_order)
                .collect();
            orders.sort_unstable();
            orders.dedup();
            categories
                .iter()
                .map(|c| {
                    orders
                        .binary_search(&c.category.priority_order)
                        .unwrap_or(0)
                })
                .collect()
        }
    }
}

/// Run a category's units; returns whether none failed. `primed`: the first unit's
/// place in the start order, entered when the layer started.
async fn run_category(
    run: &Arc<LayerRun>,
    pc: &PlannedCategory,
    blocked: Option<String>,
    mut primed: Option<Ticket>,
) -> bool {
    let ctx = &run.ctx;
    let cat = &pc.category;
    ctx.emit(EventKind::CategoryStarted {
        layer: run.name().to_string(),
        category: cat.name.clone(),
        units: pc.units.len(),
    });
    let token = run.token.child_token();
    let skip_all = blocked.or_else(|| pc.skip_reason.clone());
    let cat_slots = Arc::new(Semaphore::new(
        cat.max_parallel_instances
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS),
    ));
    let mut stop_reason: Option<String> = skip_all.clone();
    if let UnitKind::Pytest(spec) = &cat.kind {
        stop_reason = super::pytest_batches::run_category(
            run,
            pc,
            spec,
            &token,
            &cat_slots,
            primed,
            stop_reason,
        )
        .await;
    } else {
        let mut tasks = JoinSet::new();
        let mut task_units: HashMap<tokio::task::Id, String> = HashMap::new();
        for unit in &pc.units {
            if let Some(reason) = &unit.skip {
                // Known at planning (an ignored Rust test): never started.
                ctx.emit(EventKind::TestSkipped {
                    unit: unit.id.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
            let entered = primed.take();
            if stop_reason.is_none() && token.is_cancelled() {
                stop_reason = Some(category_stop_text(run, &token));
            }
            if let Some(reason) = &stop_reason {
                ctx.emit(EventKind::TestSkipped {
                    unit: unit.id.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
            let gates = pass_gates(run, cat, &cat_slots, entered, &unit.id);
            let permits = tokio::select! {
                biased;
                _ = token.cancelled() => None,
                p = gates => p,
            };
            let Some(permits) = permits else {
                stop_reason = Some(category_stop_text(run, &token));
                ctx.emit(EventKind::TestSkipped {
                    unit: unit.id.clone(),
                    reason: stop_reason.clone().unwrap_or_default(),
                });
                continue;
            };
            if ctx
                .stress_deadline
                .is_some_and(|d| tokio::time::Instant::now() >= d)
                && crate::discover::stress_iteration(&unit.id).is_some_and(|(_, k)| k > 1)
            {
                drop(permits);
                ctx.emit(EventKind::TestSkipped {
                    unit: unit.id.clone(),
                    reason: "--stress-duration has passed".into(),
                });
                continue;
            }
            let run = Arc::clone(run);
            let id = unit.id.clone();
            let unit = unit.clone();
            let cat = cat.clone();
            let token = token.clone();
            let task = tasks.spawn(async move {
                let _permits = permits;
                let outcome = run_unit(&run, &unit, &cat).await;
                if outcome.is_some_and(Outcome::is_failure) {
                    ask_fail_fast(&run, &token).await;
                }
            });
            task_units.insert(task.id(), id);
            ctx.health.heartbeat();
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            if let Err(e) = joined {
                let unit = task_units.get(&e.id()).map(String::as_str);
                ctx.fault(
                    names::EXECUTOR,
                    format!("the unit's task failed: {e}"),
                    unit,
                );
            }
        }
    }
    let passed = ctx.bus.with_state(|s| {
        s.layer_units(run.name())
            .filter(|(_, u)| u.category == cat.name)
            .all(|(_, u)| !u.outcome.is_some_and(Outcome::is_failure))
    });
    let reason = stop_reason.or_else(|| {
        token
            .is_cancelled()
            .then(|| category_stop_text(run, &token))
    });
    ctx.emit(EventKind::CategoryFinished {
        layer: run.name().to_string(),
        category: cat.name.clone(),
        passed,
        reason,
    });
    passed
}

/// What a unit of `cat` in `layer` must never run alongside.
fn exclusion(layer: &crate::config::Layer, cat: &Category) -> Exclusion {
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
fn memory_estimate(ctx: &RunContext, cat: &Category, unit: &str) -> u64 {
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

/// Run all attempts of a unit. Returns the final outcome (None when skipped).
async fn run_unit(run: &LayerRun, unit: &Unit, cat: &Category) -> Option<Outcome> {
    let ctx = &run.ctx;
    let exec_cfg = &ctx.config.execution;
    let max_attempts = cat.retries.saturating_add(1);
    for attempt in 1..=max_attempts {
        if run.token.is_cancelled() {
            ctx.emit(EventKind::TestSkipped {
                unit: unit.id.clone(),
                reason: run.stop_reason_text(),
            });
            return None;
        }
        let cmd = unit_command(run, unit, cat, attempt);
        let limits = ExecLimits {
            timeout: cat.timeout,
            kill_grace: exec_cfg.kill_grace,
            head_bytes: exec_cfg.output_head_bytes,
            tail_bytes: exec_cfg.output_tail_bytes,
            log_max_bytes: exec_cfg.log_file_max_bytes,
        };
        let (result, peak_memory_mb) = run_attempt(run, unit, cat, attempt, &cmd, &limits).await;
        let mut start_error = None;
        let (outcome, report) = match result {
            Ok(r) => judge(r, cat, run),
            Err(e) => {
                let message = format!("could not start: {e}");
                start_error = Some(message.clone());
                (
                    Outcome::Error,
                    Report {
                        message: Some(message),
                        ..Report::default()
                    },
                )
            }
        };
        let retryable = matches!(
            outcome,
            Outcome::Failed | Outcome::Timeout | Outcome::Crashed
        );
        let will_retry = retryable && attempt < max_attempts && !run.token.is_cancelled();
        ctx.emit(EventKind::TestFinished {
            unit: unit.id.clone(),
            attempt,
            outcome,
            will_retry,
            duration_ms: report.duration_ms,
            exit_code: report.exit_code,
            signal: report.signal,
            peak_memory_mb,
            message: report.message,
            output_tail: (!outcome.is_pass()).then_some(report.output_tail),
            log: report.log,
        });
        if !report.leaked.is_empty() {
            ctx.emit(EventKind::TestLeaked {
                unit: unit.id.clone(),
                processes: report.leaked,
            });
        }
        if let Some(message) = start_error {
            // The runner could not start a process: not the test's failure, the run's.
            ctx.fault(names::EXECUTOR, message, Some(&unit.id));
            return Some(outcome);
        }
        import_junit(ctx, unit, attempt, outcome).await;
        if !will_retry {
            return Some(outcome);
        }
        let backoff = retry_backoff(exec_cfg.retry_backoff, attempt);
        tokio::select! {
            _ = run.token.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
    }
    None
}

/// The longest wait before a retry, however many attempts came before.
const MAX_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

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
const MAX_FILE_STEM: usize = 120;

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

/// The `test_case` events (or a warning) from the attempt's `{junit}` file, if it has one.
async fn import_junit(ctx: &RunContext, unit: &Unit, attempt: u32, outcome: Outcome) {
    if !matches!(&unit.spec, UnitSpec::Shell(c) if junit_import::uses_junit(c)) {
        return;
    }
    let path = junit_import::junit_path(&ctx.run_dir, &file_safe(&unit.id), attempt);
    let (id, cwd, root) = (unit.id.clone(), unit.cwd.clone(), ctx.config.root.clone());
    let events = tokio::task::spawn_blocking(move || {
        junit_import::import_events(&id, attempt, &path, &cwd, &root, outcome)
    })
    .await
    .unwrap_or_default();
    for e in events {
        ctx.emit(e);
    }
}

fn unit_command(run: &LayerRun, unit: &Unit, cat: &Category, attempt: u32) -> UnitCommand {
    let ctx = &run.ctx;
    let safe = file_safe(&unit.id);
    let mut env: Vec<(String, String)> = cat
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(unit.env.iter().cloned());
    env.extend([
        ("RUNNER_RUN_ID".to_string(), ctx.bus.run_id().to_string()),
        ("RUNNER_UNIT_ID".to_string(), unit.id.clone()),
        ("RUNNER_LAYER".to_string(), unit.layer.clone()),
        ("RUNNER_CATEGORY".to_string(), unit.category.clone()),
        ("RUNNER_ATTEMPT".to_string(), attempt.to_string()),
    ]);
    if matches!(unit.spec, UnitSpec::Program { .. }) {
        // Rust tests (nextest kind) read nextest's name for the attempt number.
        env.push(("NEXTEST_ATTEMPT".to_string(), attempt.to_string()));
    }
    let (shell_command, program) = match &unit.spec {
        UnitSpec::Shell(cmd) if junit_import::uses_junit(cmd) => {
            let junit = junit_import::junit_path(&ctx.run_dir, &safe, attempt);
            if let Err(e) = junit_import::prepare(&junit) {
                tracing::warn!("cannot prepare {}: {e}", junit.display());
            }
            (Some(junit_import::substitute(cmd, &junit)), None)
        }
        UnitSpec::Shell(cmd) => (Some(cmd.clone()), None),
        UnitSpec::Program { path, args } => (None, Some((path.clone(), args.clone()))),
        // Pytest categories run their units in batches (`pytest_batches`); on its own,
        // a unit is pytest running its one id.
        UnitSpec::Pytest { .. } => {
            let python = match &cat.kind {
                UnitKind::Pytest(spec) => spec.python.clone(),
                _ => "python3".to_string(),
            };
            let args = ["-m", "pytest", "-q", unit.name.as_str()].map(String::from);
            (None, Some((python.into(), args.to_vec())))
        }
    };
    UnitCommand {
        shell_command,
        program,
        cwd: unit.cwd.clone(),
        env,
        log_path: ctx
            .run_dir
            .join("logs")
            .join(format!("{safe}.{attempt}.log")),
        unit_token: format!("{}:{}:{attempt}", ctx.bus.run_id(), unit.id),
        nice: run.nice,
        rlimit_as_mb: cat.rlimit_as_mb,
        run_log: run.run_log.clone(),
    }
}

/// Run one attempt, watching the layer token, a second Ctrl-C and the slow threshold;
/// the resource manager measures it (and stops it past `max_memory_mb`) and returns its
/// peak memory.
async fn run_attempt(
    run: &LayerRun,
    unit: &Unit,
    cat: &Category,
    attempt: u32,
    cmd: &UnitCommand,
    limits: &ExecLimits,
) -> (std::io::Result<ExecResult>, Option<u64>) {
    let ctx = &run.ctx;
    let stop = StopHandle::new();
    let bus = ctx.bus.clone();
    let id = unit.id.clone();
    let started = Instant::now();
    let tracker = ctx.resources.tracker(&unit.id, cat.max_memory_mb, &stop);
    let notice = tracker.notice();
    let fut = ctx.launcher.launch(
        cmd,
        limits,
        &stop,
        Box::new(move |pid| {
            notice.spawned(pid, &cmd.unit_token);
            bus.emit(
                names::EXECUTOR,
                EventKind::TestStarted {
                    unit: id,
                    attempt,
                    pid,
                },
            );
        }),
    );
    tokio::pin!(fut);
    let slow = async {
        match cat.slow_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(slow);
    let (mut stopping, mut killing, mut warned) = (false, false, false);
    let result = loop {
        tokio::select! {
            r = &mut fut => break r,
            _ = run.token.cancelled(), if !stopping => {
                stopping = true;
                stop.stop(run.stop_reason());
            }
            _ = ctx.kill_now.cancelled(), if !killing => {
                killing = true;
                stop.stop(StopReason::Cancelled);
                stop.kill_now();
            }
            _ = &mut slow, if !warned => {
                warned = true;
                ctx.emit(EventKind::TestSlow {
                    unit: unit.id.clone(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    };
    (result, tracker.finish().await)
}

#[derive(Default)]
struct Report {
    duration_ms: u64,
    exit_code: Option<i32>,
    signal: Option<String>,
    message: Option<String>,
    output_tail: String,
    leaked: Vec<String>,
    log: Option<String>,
}

/// Map an exec result to an outcome and what the event reports.
fn judge(r: ExecResult, cat: &Category, run: &LayerRun) -> (Outcome, Report) {
    let mut report = Report {
        duration_ms: r.duration.as_millis() as u64,
        output_tail: tail_text(&r, 4096),
        leaked: r
            .leaked
            .iter()
            .map(|p| format!("{} {}", p.pid, p.cmdline))
            .collect(),
        log: r.log.as_ref().map(ToString::to_string),
        ..Report::default()
    };
    let outcome = match r.termination {
        Termination::Exited(0) => Outcome::Passed,
        Termination::Exited(code) => {
            report.exit_code = Some(code);
            report.message = Some(format!("exit code {code}"));
            Outcome::Failed
        }
        Termination::Signaled { name, .. } => {
            report.message = Some(format!("killed by {name}"));
            report.signal = Some(name);
            Outcome::Crashed
        }
        Termination::TimedOut => {
            let secs = cat.timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
            report.message = Some(format!("timed out after {secs}s"));
            Outcome::Timeout
        }
        Termination::Stopped(StopReason::Deadline) => {
            report.message = Some(run.stop_reason_text());
            Outcome::Timeout
        }
        Termination::Stopped(StopReason::MemoryLimit {
            limit_mb,
            observed_mb,
        }) => {
            report.message = Some(format!(
                "memory limit exceeded: {observed_mb} MiB > {limit_mb} MiB"
            ));
            Outcome::MemoryLimit
        }
        Termination::Stopped(StopReason::Cancelled) => {
            report.message = Some(run.stop_reason_text());
            Outcome::Cancelled
        }
    };
    // `leak: fail` (nextest categories): a test that passed but left processes behind fails.
    let leak_fails = matches!(&cat.kind, UnitKind::Nextest(spec) if spec.leak == LeakPolicy::Fail);
    if outcome == Outcome::Passed && leak_fails && !report.leaked.is_empty() {
        report.message = Some(format!("leaked {} process(es)", report.leaked.len()));
        return (Outcome::Failed, report);
    }
    (outcome, report)
}

/// The last `max` bytes of output as text, cut at a line start when possible.
fn tail_text(r: &ExecResult, max: usize) -> String {
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

    #[test]
    fn file_names_of_long_ids_are_short_and_distinct() {
        assert_eq!(file_safe("l/c/tests/a b.sh"), "l_c_tests_a_b.sh");
        let long = |last: char| format!("layer/{}/{}{last}", "c".repeat(124), "d/".repeat(200));
        let (a, b) = (file_safe(&long('x')), file_safe(&long('y')));
        assert!(a.len() <= MAX_FILE_STEM, "{}", a.len());
        assert_ne!(a, b, "ids differing only at the end get different names");
        assert_eq!(a, file_safe(&long('x')), "the same id, the same name");
    }

    #[test]
    fn retry_backoff_doubles_up_to_a_minute() {
        let base = std::time::Duration::from_millis(200);
        assert_eq!(retry_backoff(base, 1), base);
        assert_eq!(retry_backoff(base, 3), base * 4);
        assert_eq!(retry_backoff(base, 100), MAX_RETRY_BACKOFF);
        assert_eq!(
            retry_backoff(std::time::Duration::MAX, 2),
            MAX_RETRY_BACKOFF
        );
    }

    #[test]
    fn groups_follow_execution_mode() {
        let cat = |name: &str, order: i64| PlannedCategory {
            category: Category {
                name: name.into(),
                description: String::new(),
                kind: crate::config::UnitKind::Command(crate::config::CommandSpec {
                    command: "true".into(),
                    files: vec![],
                    exclude: Vec::new(),
                }),
                timeout: None,
                slow_after: None,
                max_parallel_instances: None,
                priority_order: order,
                retries: 0,
                min_memory_mb: None,
                max_memory_mb: None,
                rlimit_as_mb: None,
                critical: false,
                env: Default::default(),
                depends_on: vec![],
                requires_real_services: false,
                cwd: None,
                ..Default::default()
            },
            units: vec![],
            skip_reason: None,
        };
        let cats = vec![cat("a", 5), cat("b", 1), cat("c", 5), cat("d", 9)];
        assert_eq!(group_indices(&cats, LayerMode::Hybrid), vec![1, 0, 1, 2]);
        assert_eq!(group_indices(&cats, LayerMode::Parallel), vec![0, 0, 0, 0]);
        assert_eq!(
            group_indices(&cats, LayerMode::Sequential),
            vec![0, 1, 2, 3]
        );
    }
}
