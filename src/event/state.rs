//! `RunState`: the one fold of a run's events, and what it derives: counts, ETAs,
//! the closing line and the run's verdict.
//!
//! Every report (console, JUnit, summary, status views, the WebSocket snapshot) reads
//! this fold; nothing keeps a second bookkeeping of results.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::*;
/// A new attempt starts: the cases of the previous one leave, their failures are kept
/// (bounded) to recognise flaky and rerun cases.
fn carry_case_failures(u: &mut UnitState) {
    if u.details().cases.is_empty() {
        return;
    }
    let attempt = u.attempts;
    let d = u.details_mut();
    for case in std::mem::take(&mut d.cases) {
        if !case.outcome.is_failure() || d.prior_case_failures.len() >= MAX_PRIOR_CASE_FAILURES {
            continue;
        }
        d.prior_case_failures.push(CaseRerun {
            classname: case.classname,
            name: case.name,
            attempt,
            outcome: case.outcome,
            duration_ms: case.duration_ms,
            message: case.message,
            details: case.details,
        });
    }
    d.case_counts = TestCounts::default();
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

/// The runner process's own cost (`getrusage(RUSAGE_SELF)`: the processes it started
/// are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerCost {
    /// CPU time in user mode, ms.
    pub user_ms: u64,
    /// CPU time in the kernel, ms.
    pub system_ms: u64,
    /// Peak resident set size, KiB.
    pub peak_rss_kb: u64,
}

impl RunnerCost {
    /// The runner's cost so far (`None` if the OS does not say).
    pub fn measure() -> Option<Self> {
        use nix::sys::resource::{UsageWho, getrusage};
        let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let ms = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_usec()).unwrap_or(0) / 1000
        };
        Some(RunnerCost {
            user_ms: ms(u.user_time()),
            system_ms: ms(u.system_time()),
            // ru_maxrss is in KiB on Linux.
            peak_rss_kb: u64::try_from(u.max_rss()).unwrap_or(0),
        })
    }
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
    /// Log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What only some units have (see [`UnitState::details`]); its fields are inline in
    /// the JSON.
    #[serde(flatten, deserialize_with = "details_or_none")]
    pub details: Option<Box<UnitDetails>>,
}

/// The part of a unit's state that only retried, failing or case-reporting units have:
/// boxed apart from [`UnitState`], so that a fold of 100,000 passing units carries none
/// of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UnitDetails {
    /// Output tail of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Outcomes of failed attempts before the last one (for flaky reporting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<Outcome>,
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

/// A unit without details.
static NO_DETAILS: UnitDetails = UnitDetails {
    output_tail: None,
    failed_attempts: Vec::new(),
    attempt_failures: Vec::new(),
    cases: Vec::new(),
    case_counts: TestCounts {
        total: 0,
        passed: 0,
        failed: 0,
        skipped: 0,
        flaky: 0,
    },
    prior_case_failures: Vec::new(),
};

/// Read the flattened details back as `None` when the JSON has none of them, so a state
/// read from `summary.json` equals the fold it was written from.
fn details_or_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<UnitDetails>>, D::Error> {
    let details = UnitDetails::deserialize(d)?;
    Ok((details != NO_DETAILS).then(|| Box::new(details)))
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
    /// What only retried, failing or case-reporting units have (empty for the others).
    pub fn details(&self) -> &UnitDetails {
        self.details.as_deref().unwrap_or(&NO_DETAILS)
    }

    /// The details, created on first write.
    pub fn details_mut(&mut self) -> &mut UnitDetails {
        self.details.get_or_insert_with(Box::default)
    }

    /// True when the unit's final outcome is a failure but none of its imported cases
    /// failed: reports then add one failing test for the unit itself, so a failure is
    /// never hidden behind passing cases.
    pub fn failed_outside_cases(&self) -> bool {
        !self.details().cases.is_empty()
            && self.status == UnitStatus::Finished
            && self.outcome.is_some_and(Outcome::is_failure)
            && self.details().case_counts.failed == 0
    }

    /// What this unit contributes to [`RunState::tests`].
    pub fn test_counts(&self) -> TestCounts {
        let mut c = TestCounts::default();
        if !self.details().cases.is_empty() {
            c = self.details().case_counts;
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
    /// The shard this run is, with `--partition K/N` (from the `partition` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Shard>,
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
    /// What the runner itself cost (its own CPU, children excluded, and peak RSS): set in
    /// `summary.json` when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_cost: Option<RunnerCost>,
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
    /// Why the run stopped early, once `run_stopping` said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_cause: Option<StopCause>,
    /// Internal errors (`internal_error`), the first [`MAX_INTERNAL_ERRORS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub internal_errors: Vec<InternalErrorRecord>,
    /// How many internal errors there were in all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub internal_error_count: usize,
    /// Positions in `units` of each layer's units (rebuilt from `units` when absent).
    #[serde(skip)]
    pub(crate) layer_index: std::collections::HashMap<String, Vec<usize>>,
    /// The unfinished layers' ETAs, kept so one layer's change costs no pass over all.
    #[serde(skip)]
    pub(crate) eta_parts: EtaParts,
}

/// The run's ETA in parts: each unfinished layer's contribution, the foreground sum and
/// the background maximum (a multiset of background ETAs).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct EtaParts {
    by_layer: std::collections::HashMap<String, (bool, u64)>,
    foreground_sum: u64,
    foreground_known: usize,
    background: BTreeMap<u64, usize>,
}

impl EtaParts {
    /// Sets `layer`'s contribution (None: finished or unknown).
    fn set(&mut self, layer: &str, contribution: Option<(bool, u64)>) {
        if let Some((bg, eta)) = self.by_layer.remove(layer) {
            if bg {
                if let Some(n) = self.background.get_mut(&eta) {
                    *n -= 1;
                    if *n == 0 {
                        self.background.remove(&eta);
                    }
                }
            } else {
                self.foreground_sum -= eta;
                self.foreground_known -= 1;
            }
        }
        if let Some((bg, eta)) = contribution {
            if bg {
                *self.background.entry(eta).or_default() += 1;
            } else {
                self.foreground_sum += eta;
                self.foreground_known += 1;
            }
            self.by_layer.insert(layer.to_string(), (bg, eta));
        }
    }

    /// Foreground layers one after another, background ones alongside.
    fn run_eta(&self) -> Option<u64> {
        let bg = self.background.keys().next_back().copied();
        (self.foreground_known > 0 || bg.is_some())
            .then(|| self.foreground_sum.max(bg.unwrap_or(0)))
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How many internal errors the fold keeps in detail.
pub const MAX_INTERNAL_ERRORS: usize = 100;

/// An `internal_error`, as folded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InternalErrorRecord {
    /// The task or check that failed.
    pub task: String,
    /// What happened.
    pub message: String,
    /// The unit concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The run's verdict, derived from the fold alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Outcome.
    pub outcome: RunOutcome,
    /// The process exit code.
    pub exit_code: i32,
    /// Why it is not a pass, in words.
    pub reason: Option<String>,
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
                // Exactly the planned units: no doubling slack in the largest map.
                self.units.reserve_exact(units.len());
                for u in units {
                    self.layers.entry(u.layer.clone()).or_default().counts.total += 1;
                    self.counts.total += 1;
                    if self.units.contains_key(&u.id) {
                        self.record_internal_error(
                            "plan",
                            "the unit is planned twice",
                            Some(&u.id),
                        );
                        continue;
                    }
                    self.layer_index
                        .entry(u.layer.clone())
                        .or_default()
                        .push(self.units.len());
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
                            log: None,
                            details: None,
                        },
                    );
                }
                self.refresh_eta(&event.ts);
            }
            EventKind::Partition(shard) => self.partition = Some(shard.clone()),
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
                self.refresh_layer_eta(layer, &event.ts);
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
                self.refresh_layer_eta(layer, &event.ts);
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
                    self.record_internal_error(
                        "invariant",
                        "an outcome for an unplanned unit",
                        Some(unit),
                    );
                    return;
                };
                if matches!(u.status, UnitStatus::Finished | UnitStatus::Skipped) {
                    self.record_internal_error(
                        "invariant",
                        "a second outcome for a unit that had one",
                        Some(unit),
                    );
                    return;
                }
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
                    if output_tail.is_some() || u.details.is_some() {
                        u.details_mut().output_tail = output_tail.clone();
                    }
                }
                let (flaky, final_outcome) = if *will_retry {
                    u.status = UnitStatus::Retrying;
                    let d = u.details_mut();
                    d.failed_attempts.push(*outcome);
                    if d.attempt_failures.len() >= MAX_ATTEMPT_DETAILS {
                        d.attempt_failures.remove(0);
                    }
                    d.attempt_failures.push(AttemptFailure {
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
                    u.flaky = outcome.is_pass() && !u.details().failed_attempts.is_empty();
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
                    self.record_internal_error(
                        "invariant",
                        "a skip for an unplanned unit",
                        Some(unit),
                    );
                    return;
                };
                if matches!(u.status, UnitStatus::Finished | UnitStatus::Skipped) {
                    self.record_internal_error(
                        "invariant",
                        "a second outcome for a unit that had one",
                        Some(unit),
                    );
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
            EventKind::RunStopping { cause } => {
                if self.stop_cause.is_none() {
                    self.stop_cause = Some(cause.clone());
                }
            }
            EventKind::InternalError {
                task,
                message,
                unit,
            } => self.record_internal_error(task, message, unit.as_deref()),
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
                let d = u.details_mut();
                let reruns: Vec<CaseRerun> = d
                    .prior_case_failures
                    .iter()
                    .filter(|r| &r.name == name && &r.classname == classname)
                    .cloned()
                    .collect();
                let flaky = *outcome == CaseOutcome::Passed && !reruns.is_empty();
                d.case_counts.count_case(*outcome, flaky);
                d.cases.push(CaseState {
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

    /// Recomputes the ETA of one layer (its units changed) and of the run at `ts`.
    fn refresh_layer_eta(&mut self, layer: &str, ts: &str) {
        let eta = match self.layers.get(layer) {
            Some(l) if l.outcome.is_none() => self.layer_eta(layer, self.slots, ts.parse().ok()),
            _ => None,
        };
        let Some(l) = self.layers.get_mut(layer) else {
            return;
        };
        l.eta_ms = eta;
        let contribution = eta.map(|e| (l.background, e));
        self.eta_parts.set(layer, contribution);
        self.eta_ms = self.eta_parts.run_eta();
    }

    /// Recomputes the ETAs of the layers and the run at `ts`.
    fn refresh_eta(&mut self, ts: &str) {
        let slots = self.slots;
        let now = ts.parse().ok();
        let names: Vec<String> = self.layers.keys().cloned().collect();
        let mut parts = EtaParts::default();
        for name in names {
            let finished = self.layers[&name].outcome.is_some();
            let eta = if finished {
                None
            } else {
                self.layer_eta(&name, slots, now)
            };
            if let Some(l) = self.layers.get_mut(&name) {
                l.eta_ms = eta;
                parts.set(&name, eta.map(|e| (l.background, e)));
            }
        }
        self.eta_ms = parts.run_eta();
        self.eta_parts = parts;
    }

    /// Units of `layer`, in plan order.
    pub fn layer_units<'a>(
        &'a self,
        layer: &'a str,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a UnitState)> + 'a> {
        match self.layer_index.get(layer) {
            Some(at) => Box::new(at.iter().filter_map(|i| self.units.get_index(*i))),
            // A state read back from JSON has no index.
            None if self.layer_index.is_empty() => {
                Box::new(self.units.iter().filter(move |(_, u)| u.layer == layer))
            }
            None => Box::new(std::iter::empty()),
        }
    }

    /// Record an internal error as an `internal_error` event would (for a fault found
    /// after `run_finished`, when the bus is closed).
    pub(crate) fn record_internal_error(&mut self, task: &str, message: &str, unit: Option<&str>) {
        self.internal_error_count += 1;
        if self.internal_errors.len() < MAX_INTERNAL_ERRORS {
            self.internal_errors.push(InternalErrorRecord {
                task: task.to_string(),
                message: message.to_string(),
                unit: unit.map(str::to_string),
            });
        }
    }

    /// Planned units that have no terminal outcome (neither finished nor skipped).
    pub fn units_without_outcome(&self) -> impl Iterator<Item = &String> {
        self.units
            .iter()
            .filter(|(_, u)| !matches!(u.status, UnitStatus::Finished | UnitStatus::Skipped))
            .map(|(id, _)| id)
    }

    /// The run's verdict from the fold alone, in this order: an internal error or a
    /// planned unit without an outcome is an infrastructure error (3); an interruption
    /// is 130; a service that did not come up is 3; a failed layer (in legacy mode, a
    /// failed unit) is 1; anything else passed (0).
    pub fn verdict(&self) -> Verdict {
        use crate::exit_code;
        let verdict = |outcome, exit_code, reason: Option<String>| Verdict {
            outcome,
            exit_code,
            reason,
        };
        if let Some(e) = self.internal_errors.first() {
            let what = match &e.unit {
                Some(u) => format!("{}: {} ({u})", e.task, e.message),
                None => format!("{}: {}", e.task, e.message),
            };
            return verdict(
                RunOutcome::Error,
                exit_code::INFRASTRUCTURE,
                Some(format!("internal error in {what}")),
            );
        }
        let missing: Vec<&String> = self.units_without_outcome().take(5).collect();
        if !missing.is_empty() {
            let n = self.units_without_outcome().count();
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return verdict(
                RunOutcome::Error,
                exit_code::INFRASTRUCTURE,
                Some(format!(
                    "{n} planned unit(s) ended without an outcome: {}{}",
                    names.join(", "),
                    if n > names.len() { ", ..." } else { "" }
                )),
            );
        }
        if let Some((name, _)) = self.layers.iter().find(|(_, l)| l.outcome.is_none()) {
            return verdict(
                RunOutcome::Error,
                exit_code::INFRASTRUCTURE,
                Some(format!("layer `{name}` never finished")),
            );
        }
        match &self.stop_cause {
            Some(StopCause::Interrupted) => {
                return verdict(
                    RunOutcome::Interrupted,
                    exit_code::INTERRUPTED,
                    Some("interrupted".into()),
                );
            }
            Some(c @ (StopCause::ServiceFailed { .. } | StopCause::InternalError { .. })) => {
                return verdict(
                    RunOutcome::Error,
                    exit_code::INFRASTRUCTURE,
                    Some(c.describe()),
                );
            }
            _ => {}
        }
        if let Some((name, l)) = self.layers.iter().find(|(_, l)| {
            matches!(
                l.outcome,
                Some(LayerOutcome::Failed | LayerOutcome::Partial)
            )
        }) {
            let why = match (l.outcome, l.reason.as_deref()) {
                (Some(LayerOutcome::Partial), Some(r)) => format!("partial: {r}"),
                (Some(LayerOutcome::Partial), None) => "partial".to_string(),
                (_, r) => r.unwrap_or("failed").to_string(),
            };
            return verdict(
                RunOutcome::Failed,
                exit_code::FAILED,
                Some(format!("layer `{name}`: {why}")),
            );
        }
        verdict(RunOutcome::Passed, exit_code::PASSED, None)
    }

    /// `tests: N passed, N failed[, N skipped]` when some unit imported test cases (the
    /// counts of the JUnit report), printed above the closing line; None otherwise.
    pub fn tests_line(&self) -> Option<String> {
        if !self.units.values().any(|u| !u.details().cases.is_empty()) {
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
    fn only_retried_or_failing_units_carry_details_and_json_keeps_their_shape() {
        let start = |u: &str, a| EventKind::TestStarted {
            unit: u.into(),
            attempt: a,
            pid: 9,
        };
        let mut s = started_run(&["fast/unit/a", "fast/unit/b"]);
        s.apply(&ev(2, start("fast/unit/a", 1)));
        s.apply(&ev(3, finished("fast/unit/a", 1, Outcome::Passed, false)));
        s.apply(&ev(4, start("fast/unit/b", 1)));
        let mut failed = finished("fast/unit/b", 1, Outcome::Failed, true);
        if let EventKind::TestFinished { output_tail, .. } = &mut failed {
            *output_tail = Some("boom".into());
        }
        s.apply(&ev(5, failed));
        assert!(
            s.units["fast/unit/a"].details.is_none(),
            "a passing unit has none"
        );
        let b = &s.units["fast/unit/b"];
        assert_eq!(b.details().output_tail.as_deref(), Some("boom"));
        assert_eq!(b.details().failed_attempts, vec![Outcome::Failed]);
        // The details are inline in the JSON, and read back to the same fold.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["units"]["fast/unit/b"]["output_tail"], "boom");
        assert!(json["units"]["fast/unit/a"].get("output_tail").is_none());
        let back: RunState = serde_json::from_value(json).unwrap();
        assert_eq!(back.units, s.units);
        assert!(back.units["fast/unit/a"].details.is_none());
    }

    #[test]
    fn a_units_fold_stays_small() {
        // 100,000 units are held at once: what each costs inline is a budget.
        assert!(
            std::mem::size_of::<UnitState>() <= 224,
            "{}",
            std::mem::size_of::<UnitState>()
        );
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
            s.units["fast/unit/b"].details().failed_attempts,
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
        assert_eq!(s.units["fast/py/a"].details().case_counts.total, 3);
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
        assert_eq!(s.units["fast/py/a"].details().prior_case_failures.len(), 1);
        s.apply(&ev(7, finished("fast/py/a", 2, Outcome::Passed, false)));
        s.apply(&ev(8, case("fast/py/a", 2, "t1", CaseOutcome::Passed)));
        s.apply(&ev(9, case("fast/py/a", 2, "t2", CaseOutcome::Passed)));
        let u = &s.units["fast/py/a"];
        assert_eq!(u.details().cases.len(), 2);
        assert!(u.details().cases[0].reruns.is_empty());
        assert_eq!(u.details().cases[1].reruns.len(), 1);
        assert_eq!(u.details().cases[1].reruns[0].attempt, 1);
        assert_eq!(u.details().attempt_failures.len(), 1);
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
            EventKind::Partition(Shard {
                k: 2,
                n: 3,
                planned: 40,
                known_durations: 38,
                digest: "0123456789abcdef".into(),
            }),
        ];
        for k in kinds {
            let json = serde_json::to_value(&k).unwrap();
            assert_eq!(json["type"], k.type_name());
            assert!(EventKind::ALL_TYPES.contains(&k.type_name()));
        }
    }

    #[test]
    fn partition_is_flat_on_the_wire_and_folds_into_the_state() {
        let shard = Shard {
            k: 2,
            n: 3,
            planned: 40,
            known_durations: 38,
            digest: "0123456789abcdef".into(),
        };
        let e = ev(2, EventKind::Partition(shard.clone()));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "partition");
        assert_eq!((json["k"].as_u64(), json["n"].as_u64()), (Some(2), Some(3)));
        assert_eq!(json["planned"], 40);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        let mut s = RunState::default();
        s.apply(&e);
        assert_eq!(s.partition.as_ref(), Some(&shard));
        assert_eq!(shard.label(), "2/3");
    }
}
