//! Events: the wire protocol of a run, and `RunState`, the one fold of events.
//!
//! Every state change of a run is an [`Event`]: an envelope (`v`, `seq`, `ts`, `run_id`,
//! `thread_id`, `agent`) around a typed [`EventKind`]. Console, JSON lines, summary,
//! `--orchestration-status` and the WebSocket snapshot are all derived from the same
//! stream by [`RunState::apply`]; nothing keeps a second bookkeeping of results.
//! `docs/protocol.md` documents every kind; a test checks that it lists them all.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Protocol version carried in every envelope.
pub const PROTOCOL_VERSION: u32 = 1;

/// One sequenced record of something that happened in a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Protocol version.
    pub v: u32,
    /// Position in the run's stream, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 timestamp.
    pub ts: String,
    /// The run this event belongs to.
    pub run_id: String,
    /// `--websocket-thread-id`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The agent that emitted the event.
    pub agent: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// How a unit attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0.
    Passed,
    /// Non-zero exit code.
    Failed,
    /// Killed after its timeout.
    Timeout,
    /// Killed by a signal it did not ask for (SIGSEGV, SIGABRT...).
    Crashed,
    /// Killed because its process tree exceeded its memory limit.
    MemoryLimit,
    /// Stopped by the runner (Ctrl-C, fail-fast, layer deadline).
    Cancelled,
    /// The runner could not start it.
    Error,
}

impl Outcome {
    /// True for a passing outcome.
    pub fn is_pass(self) -> bool {
        self == Outcome::Passed
    }

    /// True for outcomes counted as failures (everything but passed and cancelled).
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Passed | Outcome::Cancelled)
    }
}

/// How a layer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOutcome {
    /// Success criteria met.
    Passed,
    /// Success criteria not met.
    Failed,
    /// Did not run (failed dependency, fail-fast, interrupted before it started).
    Skipped,
    /// Interrupted while running.
    Cancelled,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every layer passed.
    Passed,
    /// A layer (or, in legacy mode, a unit) failed.
    Failed,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Infrastructure error (a service did not start, discovery failed).
    Error,
}

/// Health of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Created, not yet running.
    Initialized,
    /// Running and heartbeating.
    Healthy,
    /// Running with reduced function (e.g. console-only, slot-only limits).
    Degraded,
    /// No heartbeat for too long.
    Stale,
    /// Stopped by an error.
    Failed,
    /// Shut down cleanly.
    Stopped,
}

/// A unit as planned, listed in `run_started`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedUnit {
    /// Stable id: `layer/category/name`.
    pub id: String,
    /// Layer name.
    pub layer: String,
    /// Category name.
    pub category: String,
    /// Unit name within the category (a file, a test name, or the category name).
    pub name: String,
}

/// Everything that can happen in a run. Serialized with `"type": "<snake_case name>"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The run begins: mode, environment and the whole plan.
    RunStarted {
        /// `layers`, `legacy`, `streamed` or `master`.
        mode: String,
        /// Environment overlay in use.
        environment: String,
        /// Layers file.
        config: String,
        /// Layers in run order (empty in legacy mode).
        layers: Vec<String>,
        /// Global slots.
        slots: usize,
        /// Every planned unit.
        units: Vec<PlannedUnit>,
        /// Runner process id.
        pid: u32,
    },
    /// The run ended. Always the last event.
    RunFinished {
        /// Outcome.
        outcome: RunOutcome,
        /// Process exit code.
        exit_code: i32,
        /// Wall-clock duration in milliseconds.
        duration_ms: u64,
    },
    /// A layer started.
    LayerStarted {
        /// Layer name.
        layer: String,
        /// Runs in the background.
        background: bool,
        /// Number of units.
        units: usize,
    },
    /// A layer finished or was skipped.
    LayerFinished {
        /// Layer name.
        layer: String,
        /// Outcome.
        outcome: LayerOutcome,
        /// Why it failed or was skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Wall-clock duration in milliseconds (0 when skipped).
        duration_ms: u64,
    },
    /// A category of a layer started.
    CategoryStarted {
        /// Layer name.
        layer: String,
        /// Category name.
        category: String,
        /// Number of units.
        units: usize,
    },
    /// A category of a layer finished.
    CategoryFinished {
        /// Layer name.
        layer: String,
        /// Category name.
        category: String,
        /// Passed if no unit of the category failed.
        passed: bool,
        /// Why it stopped early, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An attempt of a unit started.
    TestStarted {
        /// Unit id.
        unit: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// Process id (= process group id).
        pid: u32,
    },
    /// An attempt of a unit finished.
    TestFinished {
        /// Unit id.
        unit: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// Outcome of this attempt.
        outcome: Outcome,
        /// Another attempt follows.
        will_retry: bool,
        /// Duration of this attempt in milliseconds.
        duration_ms: u64,
        /// Exit code, when it exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Signal name, when killed by one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        /// Peak RSS of the unit's process tree in MiB, when sampled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peak_memory_mb: Option<u64>,
        /// A short human-readable reason for a non-pass.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The last lines of output (non-pass only), bounded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_tail: Option<String>,
        /// Per-unit log file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
    /// A unit will not run.
    TestSkipped {
        /// Unit id.
        unit: String,
        /// Why.
        reason: String,
    },
    /// A unit is running longer than its category's `slow_seconds`.
    TestSlow {
        /// Unit id.
        unit: String,
        /// Elapsed milliseconds.
        elapsed_ms: u64,
    },
    /// A unit left processes behind; they were killed.
    TestLeaked {
        /// Unit id.
        unit: String,
        /// The leaked processes (`pid cmdline`).
        processes: Vec<String>,
    },
    /// A background task (a background layer or a detached background run) started.
    BackgroundTaskStarted {
        /// Task id.
        task: String,
        /// Layers it runs.
        layers: Vec<String>,
    },
    /// A background task finished.
    BackgroundTaskFinished {
        /// Task id.
        task: String,
        /// Outcome.
        outcome: RunOutcome,
    },
    /// A service is being started.
    ServiceStarting {
        /// Service name.
        service: String,
    },
    /// A service answered its readiness probe.
    ServiceReady {
        /// Service name.
        service: String,
        /// Started by this run (false: it was already up).
        started: bool,
    },
    /// A service did not become ready.
    ServiceFailed {
        /// Service name.
        service: String,
        /// Why.
        reason: String,
    },
    /// A service the run started was stopped.
    ServiceStopped {
        /// Service name.
        service: String,
    },
    /// Resource use, published periodically by the resource manager.
    ResourceSample {
        /// Units running.
        running: usize,
        /// Memory admitted (sum of estimates of running units), MiB.
        admitted_memory_mb: u64,
        /// RSS of all running unit trees, MiB.
        used_memory_mb: u64,
        /// System available memory, MiB.
        available_memory_mb: u64,
        /// System CPU use, percent.
        cpu_percent: f32,
    },
    /// Admission paused (memory pressure).
    ResourceThrottled {
        /// Why.
        reason: String,
    },
    /// Admission resumed.
    ResourceResumed,
    /// An agent's health changed.
    AgentHealth {
        /// Agent name.
        name: String,
        /// New status.
        status: HealthStatus,
        /// Errors seen so far.
        error_count: u64,
        /// Last error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// Something the user should know that is not a result.
    Warning {
        /// Message.
        message: String,
        /// Unit concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
}

impl EventKind {
    /// The `type` string of this kind, as on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::RunFinished { .. } => "run_finished",
            EventKind::LayerStarted { .. } => "layer_started",
            EventKind::LayerFinished { .. } => "layer_finished",
            EventKind::CategoryStarted { .. } => "category_started",
            EventKind::CategoryFinished { .. } => "category_finished",
            EventKind::TestStarted { .. } => "test_started",
            EventKind::TestFinished { .. } => "test_finished",
            EventKind::TestSkipped { .. } => "test_skipped",
            EventKind::TestSlow { .. } => "test_slow",
            EventKind::TestLeaked { .. } => "test_leaked",
            EventKind::BackgroundTaskStarted { .. } => "background_task_started",
            EventKind::BackgroundTaskFinished { .. } => "background_task_finished",
            EventKind::ServiceStarting { .. } => "service_starting",
            EventKind::ServiceReady { .. } => "service_ready",
            EventKind::ServiceFailed { .. } => "service_failed",
            EventKind::ServiceStopped { .. } => "service_stopped",
            EventKind::ResourceSample { .. } => "resource_sample",
            EventKind::ResourceThrottled { .. } => "resource_throttled",
            EventKind::ResourceResumed => "resource_resumed",
            EventKind::AgentHealth { .. } => "agent_health",
            EventKind::Warning { .. } => "warning",
        }
    }

    /// Every `type` string the protocol defines (for the docs-coverage test).
    pub const ALL_TYPES: &'static [&'static str] = &[
        "run_started",
        "run_finished",
        "layer_started",
        "layer_finished",
        "category_started",
        "category_finished",
        "test_started",
        "test_finished",
        "test_skipped",
        "test_slow",
        "test_leaked",
        "background_task_started",
        "background_task_finished",
        "service_starting",
        "service_ready",
        "service_failed",
        "service_stopped",
        "resource_sample",
        "resource_throttled",
        "resource_resumed",
        "agent_health",
        "warning",
    ];
}

/// Where a unit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    /// Planned, not started.
    Pending,
    /// An attempt is running.
    Running,
    /// Waiting for a retry.
    Retrying,
    /// Finished; see `outcome`.
    Finished,
    /// Will not run.
    Skipped,
}

/// The folded state of one unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitState {
    /// Layer name.
    pub layer: String,
    /// Category name.
    pub category: String,
    /// Unit name.
    pub name: String,
    /// Where it stands.
    pub status: UnitStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Final outcome, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Passed after at least one failed attempt.
    pub flaky: bool,
    /// Duration of the last attempt, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Start of the running attempt (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Peak RSS seen, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_mb: Option<u64>,
    /// Reason for a skip or non-pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Output tail of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Outcomes of failed attempts before the last one (for flaky reporting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<Outcome>,
    /// Log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// The folded state of one layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LayerState {
    /// Started.
    pub started: bool,
    /// Runs in the background.
    pub background: bool,
    /// Outcome once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<LayerOutcome>,
    /// Reason for a failure or skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Duration, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Counts of this layer's units.
    pub counts: Counts,
}

/// Unit counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Counts {
    /// Planned units.
    pub total: usize,
    /// Finished passed (flaky included).
    pub passed: usize,
    /// Finished with a failure outcome.
    pub failed: usize,
    /// Skipped or cancelled before finishing.
    pub skipped: usize,
    /// Passed after a retry.
    pub flaky: usize,
    /// Running now.
    pub running: usize,
}

/// Health of an agent, as folded from `agent_health` events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    /// Status.
    pub status: HealthStatus,
    /// Errors so far.
    pub error_count: u64,
    /// Last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The fold of a run's events: what every report shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunState {
    /// Run id.
    pub run_id: String,
    /// Last applied `seq`.
    pub seq: u64,
    /// Mode (`layers`, `legacy`...).
    pub mode: String,
    /// Environment.
    pub environment: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Finish time, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Outcome, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// Exit code, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Duration, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Global slots.
    pub slots: usize,
    /// Layers in run order.
    pub layers: IndexMap<String, LayerState>,
    /// Units by id, in plan order.
    pub units: IndexMap<String, UnitState>,
    /// Counts over all units.
    pub counts: Counts,
    /// Agents' health.
    pub agents: BTreeMap<String, AgentState>,
    /// Last resource sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<EventKind>,
    /// Admission paused by memory pressure.
    pub throttled: bool,
    /// Warnings so far (bounded to the last 100).
    pub warnings: Vec<String>,
}

impl RunState {
    /// Folds one event into the state.
    pub fn apply(&mut self, event: &Event) {
        self.seq = event.seq;
        match &event.kind {
            EventKind::RunStarted {
                mode,
                environment,
                layers,
                slots,
                units,
                ..
            } => {
                self.run_id = event.run_id.clone();
                self.mode = mode.clone();
                self.environment = environment.clone();
                self.started_at = event.ts.clone();
                self.slots = *slots;
                for layer in layers {
                    self.layers.insert(layer.clone(), LayerState::default());
                }
                for u in units {
                    self.layers.entry(u.layer.clone()).or_default().counts.total += 1;
                    self.counts.total += 1;
                    self.units.insert(
                        u.id.clone(),
                        UnitState {
                            layer: u.layer.clone(),
                            category: u.category.clone(),
                            name: u.name.clone(),
                            status: UnitStatus::Pending,
                            attempts: 0,
                            outcome: None,
                            flaky: false,
                            duration_ms: None,
                            started_at: None,
                            peak_memory_mb: None,
                            message: None,
                            output_tail: None,
                            failed_attempts: Vec::new(),
                            log: None,
                        },
                    );
                }
            }
            EventKind::RunFinished {
                outcome,
                exit_code,
                duration_ms,
            } => {
                self.outcome = Some(*outcome);
                self.exit_code = Some(*exit_code);
                self.duration_ms = Some(*duration_ms);
                self.finished_at = Some(event.ts.clone());
            }
            EventKind::LayerStarted {
                layer, background, ..
            } => {
                let l = self.layers.entry(layer.clone()).or_default();
                l.started = true;
                l.background = *background;
            }
            EventKind::LayerFinished {
                layer,
                outcome,
                reason,
                duration_ms,
            } => {
                let l = self.layers.entry(layer.clone()).or_default();
                l.outcome = Some(*outcome);
                l.reason = reason.clone();
                l.duration_ms = Some(*duration_ms);
            }
            EventKind::TestStarted { unit, attempt, .. } => {
                let ts = event.ts.clone();
                let mut started = false;
                if let Some(u) = self.units.get_mut(unit) {
                    started = u.status != UnitStatus::Running;
                    u.status = UnitStatus::Running;
                    u.attempts = *attempt;
                    u.started_at = Some(ts);
                }
                if started {
                    self.bump(unit, |c| c.running += 1);
                }
            }
            EventKind::TestFinished {
                unit,
                outcome,
                will_retry,
                duration_ms,
                peak_memory_mb,
                message,
                output_tail,
                log,
                ..
            } => {
                let Some(u) = self.units.get_mut(unit) else {
                    return;
                };
                let was_running = u.status == UnitStatus::Running;
                u.duration_ms = Some(*duration_ms);
                u.started_at = None;
                if peak_memory_mb.is_some() {
                    u.peak_memory_mb = u.peak_memory_mb.max(*peak_memory_mb);
                }
                if log.is_some() {
                    u.log = log.clone();
                }
                if !outcome.is_pass() {
                    u.message = message.clone();
                    u.output_tail = output_tail.clone();
                }
                let (flaky, final_outcome) = if *will_retry {
                    u.status = UnitStatus::Retrying;
                    u.failed_attempts.push(*outcome);
                    (false, None)
                } else {
                    u.status = UnitStatus::Finished;
                    u.outcome = Some(*outcome);
                    u.flaky = outcome.is_pass() && !u.failed_attempts.is_empty();
                    (u.flaky, Some(*outcome))
                };
                self.bump(unit, |c| {
                    if was_running {
                        c.running = c.running.saturating_sub(1);
                    }
                    match final_outcome {
                        Some(Outcome::Passed) => {
                            c.passed += 1;
                            if flaky {
                                c.flaky += 1;
                            }
                        }
                        Some(Outcome::Cancelled) => c.skipped += 1,
                        Some(_) => c.failed += 1,
                        None => {}
                    }
                });
            }
            EventKind::TestSkipped { unit, reason } => {
                let Some(u) = self.units.get_mut(unit) else {
                    return;
                };
                if matches!(u.status, UnitStatus::Finished | UnitStatus::Skipped) {
                    return;
                }
                let was_running = u.status == UnitStatus::Running;
                u.status = UnitStatus::Skipped;
                u.message = Some(reason.clone());
                self.bump(unit, |c| {
                    if was_running {
                        c.running = c.running.saturating_sub(1);
                    }
                    c.skipped += 1;
                });
            }
            EventKind::AgentHealth {
                name,
                status,
                error_count,
                last_error,
            } => {
                self.agents.insert(
                    name.clone(),
                    AgentState {
                        status: *status,
                        error_count: *error_count,
                        last_error: last_error.clone(),
                    },
                );
            }
            EventKind::ResourceSample { .. } => self.resources = Some(event.kind.clone()),
            EventKind::ResourceThrottled { .. } => self.throttled = true,
            EventKind::ResourceResumed => self.throttled = false,
            EventKind::Warning { message, unit } => {
                if self.warnings.len() >= 100 {
                    self.warnings.remove(0);
                }
                self.warnings.push(match unit {
                    Some(u) => format!("{u}: {message}"),
                    None => message.clone(),
                });
            }
            EventKind::TestLeaked { unit, processes } => {
                if let Some(u) = self.units.get_mut(unit) {
                    let note = format!("leaked {} process(es)", processes.len());
                    u.message = Some(match &u.message {
                        Some(m) => format!("{m}; {note}"),
                        None => note,
                    });
                }
            }
            EventKind::CategoryStarted { .. }
            | EventKind::CategoryFinished { .. }
            | EventKind::TestSlow { .. }
            | EventKind::BackgroundTaskStarted { .. }
            | EventKind::BackgroundTaskFinished { .. }
            | EventKind::ServiceStarting { .. }
            | EventKind::ServiceReady { .. }
            | EventKind::ServiceFailed { .. }
            | EventKind::ServiceStopped { .. } => {}
        }
    }

    /// Applies `f` to the run's counts and to the unit's layer counts.
    fn bump(&mut self, unit: &str, f: impl Fn(&mut Counts)) {
        f(&mut self.counts);
        if let Some(layer) = self.units.get(unit).map(|u| u.layer.clone())
            && let Some(l) = self.layers.get_mut(&layer)
        {
            f(&mut l.counts);
        }
    }

    /// Units of `layer`, in plan order.
    pub fn layer_units<'a>(
        &'a self,
        layer: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a UnitState)> {
        self.units.iter().filter(move |(_, u)| u.layer == layer)
    }

    /// The closing line every run prints: `N passed, N failed[, N skipped]`.
    pub fn summary_line(&self) -> String {
        let c = &self.counts;
        let mut line = format!("{} passed, {} failed", c.passed, c.failed);
        if c.skipped > 0 {
            line.push_str(&format!(", {} skipped", c.skipped));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            v: PROTOCOL_VERSION,
            seq,
            ts: format!("2026-01-01T00:00:{seq:02}Z"),
            run_id: "r1".into(),
            thread_id: None,
            agent: "test".into(),
            kind,
        }
    }

    fn planned(id: &str) -> PlannedUnit {
        let parts: Vec<&str> = id.split('/').collect();
        PlannedUnit {
            id: id.into(),
            layer: parts[0].into(),
            category: parts[1].into(),
            name: parts[2].into(),
        }
    }

    fn finished(unit: &str, attempt: u32, outcome: Outcome, will_retry: bool) -> EventKind {
        EventKind::TestFinished {
            unit: unit.into(),
            attempt,
            outcome,
            will_retry,
            duration_ms: 5,
            exit_code: None,
            signal: None,
            peak_memory_mb: None,
            message: None,
            output_tail: None,
            log: None,
        }
    }

    fn started_run(units: &[&str]) -> RunState {
        let mut s = RunState::default();
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into()],
                slots: 2,
                units: units.iter().map(|u| planned(u)).collect(),
                pid: 1,
            },
        ));
        s
    }

    #[test]
    fn fold_counts_pass_fail_skip_and_flaky() {
        let mut s = started_run(&["fast/unit/a", "fast/unit/b", "fast/unit/c", "fast/unit/d"]);
        let start = |u: &str, a| EventKind::TestStarted {
            unit: u.into(),
            attempt: a,
            pid: 9,
        };
        s.apply(&ev(2, start("fast/unit/a", 1)));
        s.apply(&ev(3, start("fast/unit/b", 1)));
        assert_eq!(s.counts.running, 2);
        s.apply(&ev(4, finished("fast/unit/a", 1, Outcome::Passed, false)));
        s.apply(&ev(5, finished("fast/unit/b", 1, Outcome::Failed, true)));
        assert_eq!(s.counts.running, 0, "a retrying unit is not running");
        s.apply(&ev(6, start("fast/unit/b", 2)));
        s.apply(&ev(7, finished("fast/unit/b", 2, Outcome::Passed, false)));
        s.apply(&ev(8, start("fast/unit/c", 1)));
        s.apply(&ev(9, finished("fast/unit/c", 1, Outcome::Timeout, false)));
        s.apply(&ev(
            10,
            EventKind::TestSkipped {
                unit: "fast/unit/d".into(),
                reason: "fail-fast".into(),
            },
        ));
        let c = s.counts;
        assert_eq!(
            (c.passed, c.failed, c.skipped, c.flaky, c.running),
            (2, 1, 1, 1, 0)
        );
        assert_eq!(s.layers["fast"].counts, c);
        assert!(s.units["fast/unit/b"].flaky);
        assert_eq!(
            s.units["fast/unit/b"].failed_attempts,
            vec![Outcome::Failed]
        );
        assert_eq!(s.summary_line(), "2 passed, 1 failed, 1 skipped");
        assert_eq!(s.seq, 10);
    }

    #[test]
    fn cancelled_counts_as_skipped_and_skip_after_finish_is_ignored() {
        let mut s = started_run(&["fast/unit/a"]);
        s.apply(&ev(
            2,
            EventKind::TestStarted {
                unit: "fast/unit/a".into(),
                attempt: 1,
                pid: 3,
            },
        ));
        s.apply(&ev(
            3,
            finished("fast/unit/a", 1, Outcome::Cancelled, false),
        ));
        s.apply(&ev(
            4,
            EventKind::TestSkipped {
                unit: "fast/unit/a".into(),
                reason: "late".into(),
            },
        ));
        assert_eq!(
            (s.counts.skipped, s.counts.failed, s.counts.running),
            (1, 0, 0)
        );
        assert_eq!(s.summary_line(), "0 passed, 0 failed, 1 skipped");
    }

    #[test]
    fn wire_format_is_flat_with_type_tag() {
        let e = ev(
            7,
            EventKind::TestSkipped {
                unit: "l/c/u".into(),
                reason: "r".into(),
            },
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "test_skipped");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["unit"], "l/c/u");
        assert!(json.get("thread_id").is_none());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn type_names_match_serde_and_all_types() {
        let kinds = [
            EventKind::ResourceResumed,
            EventKind::Warning {
                message: "m".into(),
                unit: None,
            },
        ];
        for k in kinds {
            let json = serde_json::to_value(&k).unwrap();
            assert_eq!(json["type"], k.type_name());
            assert!(EventKind::ALL_TYPES.contains(&k.type_name()));
        }
    }
}
