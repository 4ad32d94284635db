//! The dispatcher: the master controller's loop, the one owner of a run once it is planned.
//!
//! It holds the run's layers and decides, alone: which layer starts when (foreground
//! stages in order, `execution.inter_layer_delay_seconds` apart; background layers as
//! soon as the layers they depend on are done, at most `execution.max_background_layers`
//! at once),
//! which layers are skipped and why (a failed dependency, fail-fast, the stop cause),
//! what a unit's failure stops (`fail_fast`, asked by the executor as a [`Decision`]),
//! how a layer is judged against its success criteria (`partial` when it misses them
//! with `allow_partial_success`: its dependents still run), why the run stops (interrupts,
//! the global timeout, a service, an internal fault) and finally the run's verdict.
//! Every decision is an event on the bus; the verdict is read back from the fold.
//!
//! It commands workers and never runs units itself: the executor and the background
//! agent run layers ([`LayerWorker`]), [`Services`] brings required services up, the
//! resource manager admits units. One `select!` loop waits on the layers it started, the
//! executor's decisions, interrupts ([`SignalSource`], injectable), the global timeout
//! and the supervision tick that turns agents' health into events.
//!
//! The loop is linear in layers: a stage is entered once, a waiting background layer is
//! looked at only when something finished, and skipping a stopped run's remaining
//! layers is one pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::signals::SignalSource;
use crate::agents::layer_executor::{Decision, LayerRunReport, RunContext};
use crate::agents::layer_worker::{LayerReply, LayerWorker};
use crate::agents::test_orchestrator::evaluate;
use crate::agents::{Health, HealthReport, names};
use crate::config::{FailFast, Layer};
use crate::event::{EventKind, HealthStatus, LayerOutcome, RunOutcome, StopCause, Verdict};
use crate::plan::PlannedLayer;
use crate::services::{ServiceError, Services};

/// How often agents' health is checked (and persisted).
const SUPERVISION_TICK: Duration = Duration::from_millis(500);

/// How many units without an outcome are named one by one in `internal_error` events.
const MAX_NAMED_MISSING: usize = 20;

/// Called on every supervision tick with every agent's health (persisting it for
/// `--orchestration-status`).
pub type HealthSink = Box<dyn FnMut(&[HealthReport]) + Send>;

/// Everything a run needs once it is planned.
pub struct Dispatch {
    /// What every layer shares (bus, configuration, tokens, resources).
    pub ctx: Arc<RunContext>,
    /// Foreground stages in order.
    pub stages: Vec<Vec<PlannedLayer>>,
    /// Background layers.
    pub background: Vec<PlannedLayer>,
    /// Required services.
    pub services: Arc<Services>,
    /// Runs foreground layers.
    pub executor: LayerWorker,
    /// Runs background layers (lower priority).
    pub background_worker: LayerWorker,
    /// The executor's questions.
    pub decisions: mpsc::UnboundedReceiver<Decision>,
    /// `execution.global_timeout_minutes`.
    pub global_timeout: Option<Duration>,
    /// Agents whose health is supervised.
    pub agents: Vec<Arc<Health>>,
    /// Receives the agents' health on every tick.
    pub health_sink: Option<HealthSink>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done(LayerOutcome),
}

struct Slot {
    layer: Layer,
    background: bool,
    planned: Option<PlannedLayer>,
    state: State,
}

/// How a started layer came back.
enum LayerEnd {
    Ran(LayerReply),
    ServiceFailed(ServiceError),
}

struct Dispatcher {
    ctx: Arc<RunContext>,
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    stages: Vec<Vec<usize>>,
    /// The first stage not yet entered.
    next_stage: usize,
    /// Foreground layers of entered stages still running.
    stage_running: usize,
    /// `execution.inter_layer_delay_seconds`: the next stage is entered at this instant
    /// (set when a stage that ran something is done).
    stage_gate: Option<tokio::time::Instant>,
    /// The last stage entered started at least one layer.
    last_stage_ran: bool,
    /// Background layers waiting for their dependencies.
    waiting_background: Vec<usize>,
    /// A foreground layer failed with a fail-fast that stops later layers.
    stopped_by: Option<String>,
    running: JoinSet<LayerEnd>,
    /// Which layer each running task runs.
    running_ids: HashMap<tokio::task::Id, usize>,
    services: Arc<Services>,
    executor: LayerWorker,
    background_worker: LayerWorker,
    done: usize,
}

/// Run the planned layers to the end and return the run's verdict (from the fold).
/// Every planned unit ends with exactly one outcome, or the verdict says which did not.
pub async fn dispatch(d: Dispatch, signals: &mut SignalSource) -> Verdict {
    let Dispatch {
        ctx,
        stages,
        background,
        services,
        executor,
        background_worker,
        mut decisions,
        global_timeout,
        agents,
        mut health_sink,
    } = d;
    let mut me = Dispatcher::new(
        Arc::clone(&ctx),
        stages,
        background,
        services,
        executor,
        background_worker,
    );
    // Taken when it passes: the stop is decided once, not on every turn of the loop.
    let mut deadline = global_timeout.map(|t| tokio::time::Instant::now() + t);
    let mut supervisor = Supervisor::new(agents);
    let mut tick = tokio::time::interval(SUPERVISION_TICK);
    let mut interrupts = 0;
    me.advance();
    while !me.finished() {
        tokio::select! {
            Some(joined) = me.running.join_next_with_id() => {
                let (id, end) = match joined {
                    Ok((id, end)) => (id, end),
                    Err(e) => (e.id(), LayerEnd::Ran(Err(format!("the dispatcher's layer task failed: {e}")))),
                };
                if let Some(at) = me.running_ids.remove(&id) {
                    me.layer_done(at, end);
                }
                me.advance();
            }
            Some(decision) = decisions.recv() => me.decide(decision),
            _ = signals.next() => {
                interrupts += 1;
                me.interrupt(interrupts);
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                ctx.stop(StopCause::GlobalTimeout);
                me.advance();
            }
            _ = sleep_until(me.stage_gate), if me.stage_gate.is_some() => me.advance(),
            _ = tick.tick() => {
                let reports = supervisor.check(&ctx);
                if let Some(sink) = health_sink.as_mut() {
                    sink(&reports);
                }
            }
        }
    }
    // Decisions asked after the last layer's end (none should be) are still answered.
    while let Ok(decision) = decisions.try_recv() {
        me.decide(decision);
    }
    // Services this run started are stopped; a second interrupt here kills at once.
    {
        let services = Arc::clone(&me.services);
        let stop = services.stop_all();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = signals.next() => {
                    interrupts += 1;
                    me.interrupt(interrupts);
                }
            }
        }
    }
    let reports = supervisor.check(&ctx);
    if let Some(sink) = health_sink.as_mut() {
        sink(&reports);
    }
    check_every_unit_ended(&ctx);
    ctx.bus.with_state(|s| s.verdict())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The invariant: every planned unit has exactly one terminal outcome. A unit without
/// one is an `internal_error` (the fold already flags a second outcome).
fn check_every_unit_ended(ctx: &RunContext) {
    let missing: Vec<String> = ctx
        .bus
        .with_state(|s| s.units_without_outcome().cloned().collect());
    for unit in missing.iter().take(MAX_NAMED_MISSING) {
        ctx.bus.emit(
            names::CONTROLLER,
            EventKind::InternalError {
                task: "invariant".into(),
                message: "the unit ended without an outcome".into(),
                unit: Some(unit.clone()),
            },
        );
    }
    if missing.len() > MAX_NAMED_MISSING {
        ctx.bus.emit(
            names::CONTROLLER,
            EventKind::InternalError {
                task: "invariant".into(),
                message: format!(
                    "{} more units ended without an outcome",
                    missing.len() - MAX_NAMED_MISSING
                ),
                unit: None,
            },
        );
    }
}

impl Dispatcher {
    fn new(
        ctx: Arc<RunContext>,
        stages: Vec<Vec<PlannedLayer>>,
        background: Vec<PlannedLayer>,
        services: Arc<Services>,
        executor: LayerWorker,
        background_worker: LayerWorker,
    ) -> Self {
        let mut slots = Vec::new();
        let mut stage_index = Vec::new();
        for stage in stages {
            let mut members = Vec::new();
            for planned in stage {
                members.push(slots.len());
                slots.push(Slot {
                    layer: planned.layer.clone(),
                    background: planned.background,
                    planned: Some(planned),
                    state: State::Waiting,
                });
            }
            stage_index.push(members);
        }
        let mut waiting_background = Vec::new();
        for planned in background {
            waiting_background.push(slots.len());
            slots.push(Slot {
                layer: planned.layer.clone(),
                background: true,
                planned: Some(planned),
                state: State::Waiting,
            });
        }
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.layer.name.clone(), i))
            .collect();
        Self {
            ctx,
            slots,
            by_name,
            stages: stage_index,
            next_stage: 0,
            stage_running: 0,
            stage_gate: None,
            last_stage_ran: false,
            waiting_background,
            stopped_by: None,
            running: JoinSet::new(),
            running_ids: HashMap::new(),
            services,
            executor,
            background_worker,
            done: 0,
        }
    }

    fn finished(&self) -> bool {
        self.done == self.slots.len() && self.running.is_empty()
    }

    /// Start or skip whatever may go now: the next foreground stage once the current
    /// one is done, and background layers whose dependencies are done.
    fn advance(&mut self) {
        while self.stage_running == 0 && self.next_stage < self.stages.len() {
            if let Some(delay) = self.ctx.config.execution.inter_layer_delay
                && self.last_stage_ran
                && self.ctx.cause().is_none()
            {
                let now = tokio::time::Instant::now();
                match self.stage_gate {
                    None => {
                        self.stage_gate = Some(now + delay);
                        break;
                    }
                    Some(at) if at > now => break,
                    Some(_) => {}
                }
            }
            self.stage_gate = None;
            let members = std::mem::take(&mut self.stages[self.next_stage]);
            self.next_stage += 1;
            self.last_stage_ran = false;
            for at in members {
                if self.start_or_skip(at) {
                    self.stage_running += 1;
                    self.last_stage_ran = true;
                }
            }
        }
        let waiting = std::mem::take(&mut self.waiting_background);
        let max_background = self.ctx.config.execution.max_background_layers;
        for at in waiting {
            let running_background = self
                .running_ids
                .values()
                .filter(|&&r| self.slots[r].background)
                .count();
            let at_limit = max_background.is_some_and(|m| running_background >= m);
            if (self.dependencies_pending(at) || at_limit) && self.ctx.cause().is_none() {
                self.waiting_background.push(at);
            } else {
                self.start_or_skip(at);
            }
        }
    }

    /// A dependency of `at` in this run has not finished yet.
    fn dependencies_pending(&self, at: usize) -> bool {
        self.slots[at].layer.depends_on.iter().any(|dep| {
            self.by_name
                .get(dep)
                .is_some_and(|&d| !matches!(self.slots[d].state, State::Done(_)))
        })
    }

    /// Why layer `at` will not run, if it will not.
    fn skip_reason(&self, at: usize) -> Option<String> {
        if let Some(cause) = self.ctx.cause() {
            return Some(cause.describe());
        }
        let slot = &self.slots[at];
        for dep in &slot.layer.depends_on {
            let Some(&d) = self.by_name.get(dep) else {
                continue; // not part of this run (not selected, resumed past)
            };
            let what = match self.slots[d].state {
                State::Done(LayerOutcome::Passed | LayerOutcome::Partial) => continue,
                State::Done(LayerOutcome::Failed) => "failed",
                State::Done(LayerOutcome::Cancelled) => "was cancelled",
                State::Done(LayerOutcome::Skipped) => "was skipped",
                // A foreground layer never waits for a background one still running.
                State::Waiting | State::Running => continue,
            };
            return Some(format!("depends on layer `{dep}`, which {what}"));
        }
        match &self.stopped_by {
            Some(l) if !slot.background => Some(format!("fail-fast: layer `{l}` failed")),
            _ => None,
        }
    }

    /// Start layer `at`, or skip it; true when it started.
    fn start_or_skip(&mut self, at: usize) -> bool {
        let Some(planned) = self.slots[at].planned.take() else {
            return false;
        };
        if let Some(reason) = self.skip_reason(at) {
            self.skip_layer(at, &planned, &reason);
            return false;
        }
        self.slots[at].state = State::Running;
        let ctx = Arc::clone(&self.ctx);
        let services = Arc::clone(&self.services);
        let background = self.slots[at].background;
        let worker = if background {
            self.background_worker.clone()
        } else {
            self.executor.clone()
        };
        let handle = self.running.spawn(async move {
            let needed = &planned.layer.required_services;
            // Nothing to start for a layer whose categories are all skipped or empty.
            let runs_something = planned
                .categories
                .iter()
                .any(|c| c.skip_reason.is_none() && !c.units.is_empty());
            if !needed.is_empty()
                && runs_something
                && let Err(e) = services.ensure(needed).await
            {
                return LayerEnd::ServiceFailed(e);
            }
            let name = planned.layer.name.clone();
            ctx.bus.emit(
                worker.name(),
                EventKind::LayerStarted {
                    layer: name.clone(),
                    background: planned.background,
                    units: planned.units().count(),
                },
            );
            if background {
                ctx.bus.emit(
                    names::BACKGROUND,
                    EventKind::BackgroundTaskStarted {
                        task: format!("{}:{name}", ctx.bus.run_id()),
                        layers: vec![name],
                    },
                );
            }
            LayerEnd::Ran(worker.run(planned).await)
        });
        self.running_ids.insert(handle.id(), at);
        true
    }

    /// Report a layer that will not run: each unit skipped, then the layer.
    fn skip_layer(&mut self, at: usize, planned: &PlannedLayer, reason: &str) {
        let agent = if planned.background {
            names::BACKGROUND
        } else {
            names::ORCHESTRATOR
        };
        for unit in planned.units() {
            self.ctx.bus.emit(
                agent,
                EventKind::TestSkipped {
                    unit: unit.id.clone(),
                    reason: reason.to_string(),
                },
            );
        }
        self.finish_layer(at, LayerOutcome::Skipped, Some(reason.to_string()), 0);
    }

    fn finish_layer(&mut self, at: usize, outcome: LayerOutcome, reason: Option<String>, ms: u64) {
        let slot = &mut self.slots[at];
        let was_running = slot.state == State::Running;
        slot.state = State::Done(outcome);
        self.done += 1;
        let (name, background, fail_fast) = (
            slot.layer.name.clone(),
            slot.background,
            slot.layer.fail_fast,
        );
        self.ctx.bus.emit(
            names::CONTROLLER,
            EventKind::LayerFinished {
                layer: name.clone(),
                outcome,
                reason,
                duration_ms: ms,
            },
        );
        if background && was_running {
            self.ctx.bus.emit(
                names::BACKGROUND,
                EventKind::BackgroundTaskFinished {
                    task: format!("{}:{name}", self.ctx.bus.run_id()),
                    outcome: background_outcome(outcome),
                },
            );
        }
        if !background {
            if was_running {
                self.stage_running -= 1;
            }
            if outcome == LayerOutcome::Failed
                && fail_fast != FailFast::Disabled
                && self.stopped_by.is_none()
            {
                self.stopped_by = Some(name);
            }
        }
    }

    /// A started layer came back: judge it.
    fn layer_done(&mut self, at: usize, end: LayerEnd) {
        let (outcome, reason, ms) = match end {
            LayerEnd::ServiceFailed(e) => {
                let reason = if e.cancelled {
                    self.ctx
                        .cause()
                        .map(|c| c.describe())
                        .unwrap_or_else(|| "interrupted".into())
                } else {
                    self.ctx.stop(StopCause::ServiceFailed {
                        service: e.service.clone(),
                    });
                    format!("service `{}` did not become ready: {}", e.service, e.reason)
                };
                // Its units never started: each is skipped with the reason.
                let units: Vec<String> = self.ctx.bus.with_state(|s| {
                    s.layer_units(&self.slots[at].layer.name)
                        .map(|(id, _)| id.clone())
                        .collect()
                });
                for unit in units {
                    self.ctx.bus.emit(
                        names::ORCHESTRATOR,
                        EventKind::TestSkipped {
                            unit,
                            reason: reason.clone(),
                        },
                    );
                }
                (LayerOutcome::Skipped, Some(reason), 0)
            }
            LayerEnd::Ran(Ok(report)) => self.judge(at, &report),
            LayerEnd::Ran(Err(message)) => {
                let task = if self.slots[at].background {
                    names::BACKGROUND
                } else {
                    names::EXECUTOR
                };
                self.ctx.fault(task, message.clone(), None);
                (LayerOutcome::Failed, Some(message), 0)
            }
        };
        self.finish_layer(at, outcome, reason, ms);
    }

    /// A layer's verdict from the fold: cancelled when interrupted, failed when its
    /// success criteria are not met or its deadline passed, passed otherwise.
    fn judge(&self, at: usize, report: &LayerRunReport) -> (LayerOutcome, Option<String>, u64) {
        let layer = &self.slots[at].layer;
        let ms = report.duration.as_millis() as u64;
        if matches!(self.ctx.cause(), Some(StopCause::Interrupted)) {
            return (LayerOutcome::Cancelled, Some("interrupted".into()), ms);
        }
        let verdict = self
            .ctx
            .bus
            .with_state(|s| evaluate(layer, &self.ctx.config.categories, s));
        if verdict.failed && layer.success_criteria.allow_partial_success {
            (LayerOutcome::Partial, verdict.reason, ms)
        } else if verdict.failed {
            (LayerOutcome::Failed, verdict.reason, ms)
        } else if report.deadline_hit {
            let why = match self.ctx.cause() {
                Some(c) => c.describe(),
                None => format!("layer `{}` deadline exceeded", layer.name),
            };
            (LayerOutcome::Failed, Some(why), ms)
        } else {
            (LayerOutcome::Passed, None, ms)
        }
    }

    /// The executor asks what a unit's failure stops.
    fn decide(&mut self, decision: Decision) {
        match decision {
            Decision::UnitFailed {
                layer,
                category,
                done,
            } => {
                if let Some(&at) = self.by_name.get(&layer) {
                    let layer = &self.slots[at].layer;
                    let verdict = self
                        .ctx
                        .bus
                        .with_state(|s| evaluate(layer, &self.ctx.config.categories, s));
                    if verdict.failed {
                        match layer.fail_fast {
                            FailFast::Immediate => self.ctx.stop(StopCause::FailFast {
                                layer: layer.name.clone(),
                            }),
                            FailFast::Category => category.cancel(),
                            FailFast::Layer | FailFast::Disabled => {}
                        }
                    }
                }
                let _ = done.send(());
            }
        }
    }

    /// First interrupt: stop the run gracefully. Second: kill everything at once.
    fn interrupt(&mut self, count: u32) {
        if count == 1 {
            eprintln!("runner: interrupted; stopping units (press Ctrl-C again to kill at once)");
            self.ctx.stop(StopCause::Interrupted);
            self.advance();
        } else {
            self.ctx.kill_now.cancel();
        }
    }
}

/// How a background task ended, from its layer's verdict.
fn background_outcome(layer: LayerOutcome) -> RunOutcome {
    match layer {
        LayerOutcome::Passed => RunOutcome::Passed,
        LayerOutcome::Cancelled => RunOutcome::Interrupted,
        LayerOutcome::Failed | LayerOutcome::Partial | LayerOutcome::Skipped => RunOutcome::Failed,
    }
}

/// Watches agents' heartbeats; emits `agent_health` whenever a status changes.
struct Supervisor {
    agents: Vec<Arc<Health>>,
    last: HashMap<&'static str, HealthStatus>,
}

impl Supervisor {
    fn new(agents: Vec<Arc<Health>>) -> Self {
        Self {
            agents,
            last: HashMap::new(),
        }
    }

    fn check(&mut self, ctx: &RunContext) -> Vec<HealthReport> {
        let mut reports = Vec::with_capacity(self.agents.len());
        for h in &self.agents {
            let report = h.check(h.stale_after());
            if self.last.get(h.name()) != Some(&report.status) {
                self.last.insert(h.name(), report.status);
                ctx.bus.emit(
                    names::CONTROLLER,
                    EventKind::AgentHealth {
                        name: report.name.clone(),
                        status: report.status,
                        error_count: report.error_count,
                        last_error: report.last_error.clone(),
                    },
                );
            }
            reports.push(report);
        }
        reports
    }
}
