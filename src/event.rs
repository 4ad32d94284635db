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
    /// Expected duration from history (median of recent passing runs), ms; absent for a
    /// unit without history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
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

/// A new attempt starts: the cases of the previous one leave, their failures are kept
/// (bounded) to recognise flaky and rerun cases.
fn carry_case_failures(u: &mut UnitState) {
    if u.cases.is_empty() {
        return;
    }
    for case in std::mem::take(&mut u.cases) {
        if !case.outcome.is_failure() || u.prior_case_failures.len() >= MAX_PRIOR_CASE_FAILURES {
            continue;
        }
        u.prior_case_failures.push(CaseRerun {
            classname: case.classname,
            name: case.name,
            attempt: u.attempts,
            outcome: case.outcome,
            duration_ms: case.duration_ms,
            message: case.message,
            details: case.details,
        });
    }
    u.case_counts = TestCounts::default();
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
    /// Expected duration from history, ms (from `run_started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<u64>,
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
    /// The retried attempts with their message and output tail (the last
    /// [`MAX_ATTEMPT_DETAILS`]), for `flakyFailure` / `rerunFailure` in JUnit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_failures: Vec<AttemptFailure>,
    /// Test cases imported from the unit's JUnit file (`{junit}`), latest attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseState>,
    /// Counts of `cases`.
    #[serde(default, skip_serializing_if = "TestCounts::is_zero")]
    pub case_counts: TestCounts,
    /// Failed cases of earlier attempts (bounded), matched by name to the next attempt's
    /// cases to report flaky and rerun cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_case_failures: Vec<CaseRerun>,
}

/// How many retried attempts a unit keeps details of.
pub const MAX_ATTEMPT_DETAILS: usize = 10;

/// How many failed cases of earlier attempts a unit keeps.
pub const MAX_PRIOR_CASE_FAILURES: usize = 1000;

/// A failed attempt that was retried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptFailure {
    /// Attempt number.
    pub attempt: u32,
    /// Its outcome.
    pub outcome: Outcome,
    /// Its duration, ms.
    pub duration_ms: u64,
    /// Its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its output tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

/// An imported test case, as folded from `test_case`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseState {
    /// `<testsuite>` name in the imported file.
    pub suite: String,
    /// Test name.
    pub name: String,
    /// Class name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classname: Option<String>,
    /// Source file relative to the project root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Outcome.
    pub outcome: CaseOutcome,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failure text and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Failures of this case in earlier attempts of the unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<CaseRerun>,
}

/// A failure of a test case in an earlier attempt of its unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseRerun {
    /// Class name of the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classname: Option<String>,
    /// Name of the case.
    pub name: String,
    /// The attempt.
    pub attempt: u32,
    /// `failed` or `error`.
    pub outcome: CaseOutcome,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Counts of reported tests: a unit's imported cases when it has some, else the unit
/// itself. This is what the JUnit report contains (one `<testcase>` each).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TestCounts {
    /// Reported tests (`passed + failed + skipped`).
    pub total: usize,
    /// Passed (flaky included).
    pub passed: usize,
    /// Failed or errored.
    pub failed: usize,
    /// Skipped (cancelled units included).
    pub skipped: usize,
    /// Passed after failing in an earlier attempt.
    pub flaky: usize,
}

impl TestCounts {
    /// True when nothing is counted.
    pub fn is_zero(&self) -> bool {
        *self == TestCounts::default()
    }

    fn add(&mut self, o: &TestCounts) {
        self.total += o.total;
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.flaky += o.flaky;
    }

    fn sub(&mut self, o: &TestCounts) {
        self.total = self.total.saturating_sub(o.total);
        self.passed = self.passed.saturating_sub(o.passed);
        self.failed = self.failed.saturating_sub(o.failed);
        self.skipped = self.skipped.saturating_sub(o.skipped);
        self.flaky = self.flaky.saturating_sub(o.flaky);
    }

    fn count_case(&mut self, outcome: CaseOutcome, flaky: bool) {
        self.total += 1;
        match outcome {
            CaseOutcome::Passed => {
                self.passed += 1;
                if flaky {
                    self.flaky += 1;
                }
            }
            CaseOutcome::Skipped => self.skipped += 1,
            CaseOutcome::Failed | CaseOutcome::Error => self.failed += 1,
        }
    }
}

impl UnitState {
    /// True when the unit's final outcome is a failure but none of its imported cases
    /// failed: reports then add one failing test for the unit itself, so a failure is
    /// never hidden behind passing cases.
    pub fn failed_outside_cases(&self) -> bool {
        !self.cases.is_empty()
            && self.status == UnitStatus::Finished
            && self.outcome.is_some_and(Outcome::is_failure)
            && self.case_counts.failed == 0
    }

    /// What this unit contributes to [`RunState::tests`].
    pub fn test_counts(&self) -> TestCounts {
        let mut c = TestCounts::default();
        if !self.cases.is_empty() {
            c = self.case_counts;
            if self.failed_outside_cases() {
                c.total += 1;
                c.failed += 1;
            }
            return c;
        }
        match (self.status, self.outcome) {
            (UnitStatus::Finished, Some(Outcome::Passed)) => {
                c.count_case(CaseOutcome::Passed, self.flaky)
            }
            (UnitStatus::Finished, Some(Outcome::Cancelled)) | (UnitStatus::Skipped, _) => {
                c.count_case(CaseOutcome::Skipped, false)
            }
            (UnitStatus::Finished, Some(_)) => c.count_case(CaseOutcome::Failed, false),
            _ => {}
        }
        c
    }
}

/// The folded state of one layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LayerState {
    /// Started.
    pub started: bool,
    /// Runs in the background.
    pub background: bool,
    /// Start time (RFC 3339), once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
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
    /// Expected remaining time from history, ms ([`RunState::eta_ms`]), as of the last
    /// layer event or `resource_sample`; absent without history and once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
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
    /// Counts of reported tests (imported cases, or units without any): what the JUnit
    /// report contains. Equal to the unit counts when nothing was imported.
    #[serde(default)]
    pub tests: TestCounts,
    /// Agents' health.
    pub agents: BTreeMap<String, AgentState>,
    /// Last resource sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<EventKind>,
    /// Admission paused by memory pressure.
    pub throttled: bool,
    /// Warnings so far (bounded to the last 100).
    pub warnings: Vec<String>,
    /// Expected remaining time of the run from history, ms (see [`RunState::eta_ms`]),
    /// as of the last layer event or `resource_sample`; absent without history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<u64>,
}

impl RunState {
    /// Folds one event into the state.
    pub fn apply(&mut self, event: &Event) {
        // A unit's contribution to `tests` before and after the event.
        let unit = event.kind.unit_id();
        let before = unit
            .and_then(|u| self.units.get(u))
            .map(UnitState::test_counts);
        self.apply_kind(event);
        let after = unit
            .and_then(|u| self.units.get(u))
            .map(UnitState::test_counts);
        if let (Some(b), Some(a)) = (before, after)
            && b != a
        {
            self.tests.sub(&b);
            self.tests.add(&a);
        }
    }

    fn apply_kind(&mut self, event: &Event) {
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
                            expected_ms: u.expected_ms,
                            peak_memory_mb: None,
                            message: None,
                            output_tail: None,
                            failed_attempts: Vec::new(),
                            log: None,
                            attempt_failures: Vec::new(),
                            cases: Vec::new(),
                            case_counts: TestCounts::default(),
                            prior_case_failures: Vec::new(),
                        },
                    );
                }
                self.refresh_eta(&event.ts);
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
                self.eta_ms = None;
                for l in self.layers.values_mut() {
                    l.eta_ms = None;
                }
            }
            EventKind::LayerStarted {
                layer, background, ..
            } => {
                let l = self.layers.entry(layer.clone()).or_default();
                l.started = true;
                l.background = *background;
                l.started_at = Some(event.ts.clone());
                self.refresh_eta(&event.ts);
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
                self.refresh_eta(&event.ts);
            }
            EventKind::TestStarted { unit, attempt, .. } => {
                let ts = event.ts.clone();
                let mut started = false;
                if let Some(u) = self.units.get_mut(unit) {
                    started = u.status != UnitStatus::Running;
                    carry_case_failures(u);
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
                attempt,
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
                    if u.attempt_failures.len() >= MAX_ATTEMPT_DETAILS {
                        u.attempt_failures.remove(0);
                    }
                    u.attempt_failures.push(AttemptFailure {
                        attempt: *attempt,
                        outcome: *outcome,
                        duration_ms: *duration_ms,
                        message: message.clone(),
                        output_tail: output_tail.clone(),
                    });
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
            EventKind::ResourceSample { .. } => {
                self.resources = Some(event.kind.clone());
                self.refresh_eta(&event.ts);
            }
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
                        // `leak: fail` already says so in the test's own message.
                        Some(m) if m.contains(&note) => m.clone(),
                        Some(m) => format!("{m}; {note}"),
                        None => note,
                    });
                }
            }
            EventKind::TestCase {
                unit,
                suite,
                name,
                classname,
                file,
                line,
                outcome,
                duration_ms,
                message,
                details,
                ..
            } => {
                let Some(u) = self.units.get_mut(unit) else {
                    return;
                };
                let reruns: Vec<CaseRerun> = u
                    .prior_case_failures
                    .iter()
                    .filter(|r| &r.name == name && &r.classname == classname)
                    .cloned()
                    .collect();
                let flaky = *outcome == CaseOutcome::Passed && !reruns.is_empty();
                u.case_counts.count_case(*outcome, flaky);
                u.cases.push(CaseState {
                    suite: suite.clone(),
                    name: name.clone(),
                    classname: classname.clone(),
                    file: file.clone(),
                    line: *line,
                    outcome: *outcome,
                    duration_ms: *duration_ms,
                    message: message.clone(),
                    details: details.clone(),
                    reruns,
                });
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

    /// Expected remaining time from history, in ms, of `layer` (None: the whole run)
    /// with `slots` units at once, at `now` (RFC 3339; elapsed time of running units
    /// is deducted when given).
    ///
    /// For one layer: the remaining expected work (pending and retrying units in full,
    /// running ones less their elapsed time, units without history at the mean of those
    /// with) divided by `slots`, and never less than the longest remaining unit. For the
    /// run: foreground layers one after another (their sum), background layers
    /// alongside (at least the longest of them). None when no remaining unit has an
    /// expected duration; 0 when nothing remains.
    pub fn eta_ms(&self, layer: Option<&str>, slots: usize, now: Option<&str>) -> Option<u64> {
        let now: Option<jiff::Timestamp> = now.and_then(|t| t.parse().ok());
        match layer {
            Some(layer) => self.layer_eta(layer, slots, now),
            None => Self::combine_etas(
                self.layers
                    .iter()
                    .filter(|(_, l)| l.outcome.is_none())
                    .map(|(name, l)| (l.background, self.layer_eta(name, slots, now))),
            ),
        }
    }

    /// The run's ETA from its unfinished layers' (background?, ETA).
    fn combine_etas(layers: impl Iterator<Item = (bool, Option<u64>)>) -> Option<u64> {
        let (mut foreground, mut background, mut any) = (0u64, 0u64, false);
        for (is_background, eta) in layers {
            let Some(eta) = eta else { continue };
            any = true;
            if is_background {
                background = background.max(eta);
            } else {
                foreground += eta;
            }
        }
        any.then_some(foreground.max(background))
    }

    fn layer_eta(&self, layer: &str, slots: usize, now: Option<jiff::Timestamp>) -> Option<u64> {
        let (mut known_sum, mut known_n) = (0u64, 0u64);
        let mut remaining: Vec<(Option<u64>, Option<u64>)> = Vec::new(); // (expected, elapsed)
        for (_, u) in self.layer_units(layer) {
            if let Some(e) = u.expected_ms {
                known_sum += e;
                known_n += 1;
            }
            let elapsed = match u.status {
                UnitStatus::Pending | UnitStatus::Retrying => None,
                UnitStatus::Running => u
                    .started_at
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .zip(now)
                    .map(|(start, now)| now.duration_since(start).as_millis().max(0) as u64),
                UnitStatus::Finished | UnitStatus::Skipped => continue,
            };
            remaining.push((u.expected_ms, elapsed));
        }
        if remaining.is_empty() {
            return Some(0);
        }
        if known_n == 0 {
            return None;
        }
        let mean = known_sum / known_n;
        let (mut work, mut longest) = (0u64, 0u64);
        for (expected, elapsed) in remaining {
            let left = expected
                .unwrap_or(mean)
                .saturating_sub(elapsed.unwrap_or(0));
            work += left;
            longest = longest.max(left);
        }
        Some(work.div_ceil(slots.max(1) as u64).max(longest))
    }

    /// Recomputes the ETAs of the layers and the run at `ts`.
    fn refresh_eta(&mut self, ts: &str) {
        let slots = self.slots;
        let names: Vec<String> = self.layers.keys().cloned().collect();
        for name in names {
            let finished = self.layers[&name].outcome.is_some();
            let eta = if finished {
                None
            } else {
                self.layer_eta(&name, slots, ts.parse().ok())
            };
            if let Some(l) = self.layers.get_mut(&name) {
                l.eta_ms = eta;
            }
        }
        self.eta_ms = Self::combine_etas(
            self.layers
                .values()
                .filter(|l| l.outcome.is_none())
                .map(|l| (l.background, l.eta_ms)),
        );
    }

    /// Units of `layer`, in plan order.
    pub fn layer_units<'a>(
        &'a self,
        layer: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a UnitState)> {
        self.units.iter().filter(move |(_, u)| u.layer == layer)
    }

    /// `tests: N passed, N failed[, N skipped]` when some unit imported test cases (the
    /// counts of the JUnit report), printed above the closing line; None otherwise.
    pub fn tests_line(&self) -> Option<String> {
        if !self.units.values().any(|u| !u.cases.is_empty()) {
            return None;
        }
        let t = &self.tests;
        let mut line = format!("tests: {} passed, {} failed", t.passed, t.failed);
        if t.skipped > 0 {
            line.push_str(&format!(", {} skipped", t.skipped));
        }
        Some(line)
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
            expected_ms: None,
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
    fn eta_is_remaining_expected_work_over_slots_at_least_the_longest_unit() {
        let mut s = RunState::default();
        let unit = |id: &str, expected_ms| PlannedUnit {
            expected_ms,
            ..planned(id)
        };
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into(), "slow".into(), "new".into()],
                slots: 2,
                units: vec![
                    unit("fast/u/a", Some(10_000)),
                    unit("fast/u/b", Some(4_000)),
                    unit("fast/u/c", Some(4_000)),
                    unit("fast/u/d", None),
                    unit("slow/u/e", Some(1_000)),
                    unit("new/u/f", None),
                ],
                pid: 1,
            },
        ));
        assert_eq!(s.units["fast/u/a"].expected_ms, Some(10_000));
        // fast: d counts as the mean of the known (6 s): 24 s over 2 slots = 12 s.
        assert_eq!(s.layers["fast"].eta_ms, Some(12_000));
        assert_eq!(s.layers["slow"].eta_ms, Some(1_000));
        assert_eq!(s.layers["new"].eta_ms, None, "nothing known");
        assert_eq!(
            s.eta_ms,
            Some(13_000),
            "foreground layers one after another"
        );
        // One slot: at least the sum; many slots: at least the longest unit.
        assert_eq!(s.eta_ms(Some("fast"), 1, None), Some(24_000));
        assert_eq!(s.eta_ms(Some("fast"), 64, None), Some(10_000));
        s.apply(&ev(
            2,
            EventKind::TestStarted {
                unit: "fast/u/a".into(),
                attempt: 1,
                pid: 9,
            },
        ));
        s.apply(&ev(
            6,
            EventKind::ResourceSample {
                running: 1,
                admitted_memory_mb: 0,
                used_memory_mb: 0,
                available_memory_mb: 1000,
                cpu_percent: 1.0,
            },
        ));
        // a ran 4 s of its 10: 6 + 4 + 4 + 6 = 20 s over 2 slots.
        assert_eq!(s.layers["fast"].eta_ms, Some(10_000));
        assert_eq!(
            s.eta_ms(Some("fast"), 2, Some("2026-01-01T00:00:20Z")),
            Some(7_000),
            "a overran: 0 left for it, 14 s for the rest over 2 slots"
        );
        for (seq, u) in [
            (7, "fast/u/a"),
            (8, "fast/u/b"),
            (9, "fast/u/c"),
            (10, "fast/u/d"),
        ] {
            s.apply(&ev(seq, finished(u, 1, Outcome::Passed, false)));
        }
        assert_eq!(s.eta_ms(Some("fast"), 2, None), Some(0));
        s.apply(&ev(
            11,
            EventKind::LayerStarted {
                layer: "bg".into(),
                background: true,
                units: 0,
            },
        ));
        s.apply(&ev(
            12,
            EventKind::LayerFinished {
                layer: "fast".into(),
                outcome: LayerOutcome::Passed,
                reason: None,
                duration_ms: 1,
            },
        ));
        assert_eq!(s.layers["fast"].eta_ms, None, "finished");
        assert_eq!(s.eta_ms, Some(1_000));
        s.apply(&ev(
            13,
            EventKind::RunFinished {
                outcome: RunOutcome::Passed,
                exit_code: 0,
                duration_ms: 1,
            },
        ));
        assert_eq!(s.eta_ms, None);
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

    fn case(unit: &str, attempt: u32, name: &str, outcome: CaseOutcome) -> EventKind {
        EventKind::TestCase {
            unit: unit.into(),
            attempt,
            suite: "pytest".into(),
            name: name.into(),
            classname: Some("tests.test_a".into()),
            file: None,
            line: None,
            outcome,
            duration_ms: 3,
            message: outcome.is_failure().then(|| "assert 1 == 2".into()),
            details: None,
        }
    }

    #[test]
    fn imported_cases_replace_the_unit_in_test_counts() {
        let mut s = started_run(&["fast/py/a", "fast/py/b", "fast/unit/c"]);
        let start = |u: &str, a| EventKind::TestStarted {
            unit: u.into(),
            attempt: a,
            pid: 9,
        };
        s.apply(&ev(2, start("fast/py/a", 1)));
        s.apply(&ev(3, finished("fast/py/a", 1, Outcome::Failed, false)));
        assert_eq!(
            (s.tests.total, s.tests.failed),
            (1, 1),
            "the unit counts until cases come"
        );
        s.apply(&ev(4, case("fast/py/a", 1, "t1", CaseOutcome::Passed)));
        s.apply(&ev(5, case("fast/py/a", 1, "t2", CaseOutcome::Failed)));
        s.apply(&ev(6, case("fast/py/a", 1, "t3", CaseOutcome::Skipped)));
        assert_eq!(
            (
                s.tests.total,
                s.tests.passed,
                s.tests.failed,
                s.tests.skipped
            ),
            (3, 1, 1, 1)
        );
        // A failing unit whose cases all pass still reports one failure.
        s.apply(&ev(7, start("fast/py/b", 1)));
        s.apply(&ev(8, finished("fast/py/b", 1, Outcome::Failed, false)));
        s.apply(&ev(9, case("fast/py/b", 1, "t1", CaseOutcome::Passed)));
        assert!(s.units["fast/py/b"].failed_outside_cases());
        assert_eq!((s.tests.total, s.tests.passed, s.tests.failed), (5, 2, 2));
        s.apply(&ev(
            10,
            EventKind::TestSkipped {
                unit: "fast/unit/c".into(),
                reason: "r".into(),
            },
        ));
        assert_eq!((s.tests.total, s.tests.skipped), (6, 2));
        // Unit counts are untouched by cases.
        assert_eq!(
            (s.counts.passed, s.counts.failed, s.counts.skipped),
            (0, 2, 1)
        );
        assert_eq!(
            s.tests_line().unwrap(),
            "tests: 2 passed, 2 failed, 2 skipped"
        );
        assert_eq!(s.units["fast/py/a"].case_counts.total, 3);
    }

    #[test]
    fn cases_failing_then_passing_on_retry_are_flaky() {
        let mut s = started_run(&["fast/py/a"]);
        let start = |a| EventKind::TestStarted {
            unit: "fast/py/a".into(),
            attempt: a,
            pid: 9,
        };
        s.apply(&ev(2, start(1)));
        s.apply(&ev(3, finished("fast/py/a", 1, Outcome::Failed, true)));
        s.apply(&ev(4, case("fast/py/a", 1, "t1", CaseOutcome::Passed)));
        s.apply(&ev(5, case("fast/py/a", 1, "t2", CaseOutcome::Failed)));
        assert_eq!(
            s.tests.failed, 1,
            "cases of a retried attempt count until the next starts"
        );
        s.apply(&ev(6, start(2)));
        assert_eq!(
            s.tests,
            TestCounts::default(),
            "nothing counts while it runs again"
        );
        assert_eq!(s.units["fast/py/a"].prior_case_failures.len(), 1);
        s.apply(&ev(7, finished("fast/py/a", 2, Outcome::Passed, false)));
        s.apply(&ev(8, case("fast/py/a", 2, "t1", CaseOutcome::Passed)));
        s.apply(&ev(9, case("fast/py/a", 2, "t2", CaseOutcome::Passed)));
        let u = &s.units["fast/py/a"];
        assert_eq!(u.cases.len(), 2);
        assert!(u.cases[0].reruns.is_empty());
        assert_eq!(u.cases[1].reruns.len(), 1);
        assert_eq!(u.cases[1].reruns[0].attempt, 1);
        assert_eq!(u.attempt_failures.len(), 1);
        assert_eq!(
            (s.tests.total, s.tests.passed, s.tests.flaky, s.tests.failed),
            (2, 2, 1, 0)
        );
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
