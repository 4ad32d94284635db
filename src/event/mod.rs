//! Events: the wire protocol of a run, and `RunState`, the one fold of events.
//!
//! Every state change of a run is an [`Event`]: an envelope (`v`, `seq`, `ts`, `run_id`,
//! `thread_id`, `agent`) around a typed [`EventKind`]. Console, JSON lines, summary,
//! `--orchestration-status` and the WebSocket snapshot are all derived from the same
//! stream by [`RunState::apply`]; nothing keeps a second bookkeeping of results.
//! `docs/protocol.md` documents every kind; a test checks that it lists them all.

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

/// How an imported test case (a `<testcase>` of a unit's JUnit file) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CaseOutcome {
    /// No `<failure>`, `<error>` or `<skipped>`.
    Passed,
    /// `<failure>`: an assertion failed.
    Failed,
    /// `<error>`: the test could not run as written (exception, setup error).
    Error,
    /// `<skipped>`.
    Skipped,
}

impl CaseOutcome {
    /// True for `failed` and `error`.
    pub fn is_failure(self) -> bool {
        matches!(self, CaseOutcome::Failed | CaseOutcome::Error)
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
    /// Success criteria not met, in a layer with `allow_partial_success`: the layers
    /// that depend on it still run, and the run still fails.
    Partial,
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
    /// The runner was killed (SIGKILL, a crash) before it finished: recorded afterwards
    /// by its watchdog or by a later `runner` invocation, from the events written so far.
    Dead,
}

/// Why a run stops before its plan is done. Decided by the dispatcher, announced once
/// as `run_stopping`; every later skip or cancellation gives it as the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopCause {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `fail_fast: immediate` in this layer.
    FailFast {
        /// The layer that failed.
        layer: String,
    },
    /// `execution.global_timeout_minutes` (or `--background-timeout`) passed.
    GlobalTimeout,
    /// A required service did not become ready (exit code 3).
    ServiceFailed {
        /// The service.
        service: String,
    },
    /// An internal task failed (exit code 3).
    InternalError {
        /// The task.
        task: String,
    },
}

impl StopCause {
    /// Why units were skipped or stopped, in words.
    pub fn describe(&self) -> String {
        match self {
            StopCause::Interrupted => "interrupted".into(),
            StopCause::FailFast { layer } => format!("fail-fast: layer `{layer}` failed"),
            StopCause::GlobalTimeout => "global timeout exceeded".into(),
            StopCause::ServiceFailed { service } => {
                format!("service `{service}` did not become ready")
            }
            StopCause::InternalError { task } => format!("internal error in {task}"),
        }
    }
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
    /// Expected duration from history (median of recent passing runs), ms; absent for a
    /// unit without history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
}

/// A run that is one shard of a partitioned plan (`--partition K/N`): the `partition`
/// event, and [`RunState::partition`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 1.
    pub k: usize,
    /// Number of shards.
    pub n: usize,
    /// Units of the whole plan before partitioning (every shard's together).
    pub planned: usize,
    /// Units of the whole plan with a known duration (`--durations-from`); the others
    /// count as the median of the known ones.
    pub known_durations: usize,
    /// Digest of what the assignment was computed from (the plan's unit ids and the
    /// durations that balanced them): the same in every shard of one partition.
    pub digest: String,
}

impl Shard {
    /// `K/N`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.k, self.n)
    }
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
    /// The run is one shard of a partitioned plan (`--partition K/N`); right after
    /// `run_started`, whose units are this shard's.
    Partition(Shard),
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
    /// One test case of a unit's imported JUnit file (`{junit}` in the command),
    /// emitted after the attempt's `test_finished`.
    TestCase {
        /// Unit id.
        unit: String,
        /// Attempt that produced the file.
        attempt: u32,
        /// The `<testsuite>` name in the file.
        suite: String,
        /// The `<testcase>` name.
        name: String,
        /// Its `classname`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        classname: Option<String>,
        /// Source file relative to the project root, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// Line in `file`, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<u32>,
        /// Outcome.
        outcome: CaseOutcome,
        /// Duration in milliseconds (0 when the file has none).
        duration_ms: u64,
        /// Failure, error or skip message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Failure text (traceback) and captured output, bounded (non-pass only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<String>,
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
    /// The run stops early for `cause`: no new unit starts, running units are stopped.
    /// Emitted once, before the skips and cancellations it causes.
    RunStopping {
        /// Why.
        cause: StopCause,
    },
    /// Something inside the runner failed: a task panicked or returned an error, a
    /// channel closed, or a planned unit ended without exactly one outcome. The run's
    /// exit code is then 3, whatever the units did.
    InternalError {
        /// The task or check that failed (`layer_executor`, `invariant`, ...).
        task: String,
        /// What happened.
        message: String,
        /// The unit concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
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
            EventKind::Partition(_) => "partition",
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
            EventKind::TestCase { .. } => "test_case",
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
            EventKind::RunStopping { .. } => "run_stopping",
            EventKind::InternalError { .. } => "internal_error",
            EventKind::Warning { .. } => "warning",
        }
    }

    /// Every `type` string the protocol defines (for the docs-coverage test).
    pub const ALL_TYPES: &'static [&'static str] = &[
        "run_started",
        "partition",
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
        "test_case",
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
        "run_stopping",
        "internal_error",
        "warning",
    ];
}

impl EventKind {
    /// The unit an event is about, if any.
    pub fn unit_id(&self) -> Option<&str> {
        match self {
            EventKind::TestStarted { unit, .. }
            | EventKind::TestFinished { unit, .. }
            | EventKind::TestSkipped { unit, .. }
            | EventKind::TestSlow { unit, .. }
            | EventKind::TestLeaked { unit, .. }
            | EventKind::TestCase { unit, .. } => Some(unit),
            _ => None,
        }
    }
}

mod state;
pub use state::*;
