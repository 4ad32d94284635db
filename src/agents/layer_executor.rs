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
//! Cancellation is a token tree: the run's token (Ctrl-C, immediate fail-fast,
//! global timeout) is the parent of each layer's token (its deadline), which is
//! the parent of each category's token (category fail-fast). Running units watch
//! the layer token; the category token only stops admission of pending units.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::resource_manager::{AdmissionRequest, ResourceHandle};
use super::test_orchestrator::evaluate;
use super::{Health, names};
use crate::bus::EventBus;
use crate::config::{Category, Config, FailFast, LayerMode};
use crate::discover::{Unit, UnitSpec};
use crate::event::{EventKind, LayerOutcome, Outcome};
use crate::exec::{self, ExecLimits, ExecResult, StopHandle, StopReason, Termination, UnitCommand};
use crate::plan::{PlannedCategory, PlannedLayer};

/// Why the whole run is stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `fail_fast: immediate` in this layer.
    FailFast {
        /// The layer that failed.
        layer: String,
    },
    /// `execution.global_timeout_minutes` passed.
    GlobalTimeout,
}

impl StopCause {
    /// Why units were skipped or stopped, in words.
    pub fn describe(&self) -> String {
        match self {
            StopCause::Interrupted => "interrupted".into(),
            StopCause::FailFast { layer } => format!("fail-fast: layer `{layer}` failed"),
            StopCause::GlobalTimeout => "global timeout exceeded".into(),
        }
    }
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
    /// Why the run is stopping (first cause wins).
    pub stop_cause: Mutex<Option<StopCause>>,
    /// The executor's health record.
    pub health: Arc<Health>,
}

impl RunContext {
    /// Stop the whole run for `cause` (the first cause is kept).
    pub fn stop(&self, cause: StopCause) {
        let mut c = self.stop_cause.lock().expect("stop cause lock");
        if c.is_none() {
            *c = Some(cause);
        }
        drop(c);
        self.run_token.cancel();
    }

    /// Why the run is stopping, if it is.
    pub fn cause(&self) -> Option<StopCause> {
        self.stop_cause.lock().expect("stop cause lock").clone()
    }

    fn emit(&self, kind: EventKind) {
        self.bus.emit(names::EXECUTOR, kind);
    }
}

/// How a layer ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerResult {
    /// Outcome.
    pub outcome: LayerOutcome,
    /// Why it failed.
    pub reason: Option<String>,
}

/// State shared by the categories of one running layer.
struct LayerRun {
    ctx: Arc<RunContext>,
    planned: Arc<PlannedLayer>,
    token: CancellationToken,
    deadline_hit: AtomicBool,
    slots: Arc<Semaphore>,
    nice: Option<i32>,
}

impl LayerRun {
    fn name(&self) -> &str {
        &self.planned.layer.name
    }

    /// Why this layer's pending units will not start, once its token is cancelled.
    fn stop_reason_text(&self) -> String {
        if let Some(cause) = self.ctx.cause() {
            cause.describe()
        } else if self.deadline_hit.load(Ordering::SeqCst) {
            format!("layer `{}` deadline exceeded", self.name())
        } else {
            "stopped".into()
        }
    }

    /// How a running unit is stopped once this layer's token is cancelled.
    fn stop_reason(&self) -> StopReason {
        match self.ctx.cause() {
            Some(StopCause::GlobalTimeout) => StopReason::Deadline,
            Some(_) => StopReason::Cancelled,
            None if self.deadline_hit.load(Ordering::SeqCst) => StopReason::Deadline,
            None => StopReason::Cancelled,
        }
    }
}

/// Run one planned layer to completion; `nice` lowers the units' priority (background).
pub async fn run_layer(
    ctx: Arc<RunContext>,
    planned: PlannedLayer,
    nice: Option<i32>,
) -> LayerResult {
    let started = Instant::now();
    let layer = planned.layer.clone();
    ctx.emit(EventKind::LayerStarted {
        layer: layer.name.clone(),
        background: planned.background,
        units: planned.units().count(),
    });
    let slots = match (
        layer.execution_mode,
        layer.resource_limits.max_parallel_instances,
    ) {
        (LayerMode::Sequential, _) => 1,
        (_, Some(n)) => n,
        (_, None) => Semaphore::MAX_PERMITS,
    };
    let run = Arc::new(LayerRun {
        token: ctx.run_token.child_token(),
        ctx: Arc::clone(&ctx),
        planned: Arc::new(planned),
        deadline_hit: AtomicBool::new(false),
        slots: Arc::new(Semaphore::new(slots)),
        nice,
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
    let mut tasks = JoinSet::new();
    for (i, tx) in senders.into_iter().enumerate() {
        let run = Arc::clone(&run);
        let name = run.planned.categories[i].category.name.clone();
        // Wait for every category of an earlier group and every in-layer dependency.
        let waits: Vec<(String, watch::Receiver<Option<bool>>)> = run
            .planned
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
            .collect();
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
            let passed = run_category(&run, pc, blocked).await;
            let _ = tx.send(Some(passed));
            name
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Some(d) = deadline {
        d.abort();
    }

    let verdict = ctx
        .bus
        .with_state(|s| evaluate(&layer, &ctx.config.categories, s));
    let (outcome, reason) = if matches!(ctx.cause(), Some(StopCause::Interrupted)) {
        (LayerOutcome::Cancelled, Some("interrupted".to_string()))
    } else if verdict.failed {
        (LayerOutcome::Failed, verdict.reason)
    } else if run.deadline_hit.load(Ordering::SeqCst) {
        (LayerOutcome::Failed, Some(run.stop_reason_text()))
    } else {
        (LayerOutcome::Passed, None)
    };
    ctx.emit(EventKind::LayerFinished {
        layer: layer.name.clone(),
        outcome,
        reason: reason.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    LayerResult { outcome, reason }
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

/// Run a category's units; returns whether none failed.
async fn run_category(run: &Arc<LayerRun>, pc: &PlannedCategory, blocked: Option<String>) -> bool {
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
        cat.max_parallel_instances.unwrap_or(Semaphore::MAX_PERMITS),
    ));
    let mut tasks = JoinSet::new();
    let mut stop_reason: Option<String> = skip_all.clone();
    for unit in &pc.units {
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
        let gates = async {
            let c = Arc::clone(&cat_slots).acquire_owned().await.ok()?;
            let l = Arc::clone(&run.slots).acquire_owned().await.ok()?;
            let memory_mb = memory_estimate(ctx, cat, &unit.id);
            let a = ctx
                .resources
                .admit(AdmissionRequest {
                    unit: unit.id.clone(),
                    layer: run.name().to_string(),
                    memory_mb,
                })
                .await
                .ok()?;
            Some((c, l, a))
        };
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
        let run = Arc::clone(run);
        let unit = unit.clone();
        let cat = cat.clone();
        let token = token.clone();
        tasks.spawn(async move {
            let _permits = permits;
            let outcome = run_unit(&run, &unit, &cat).await;
            if outcome.is_some_and(Outcome::is_failure) {
                apply_fail_fast(&run, &token);
            }
        });
        ctx.health.heartbeat();
    }
    while tasks.join_next().await.is_some() {}
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

fn category_stop_text(run: &LayerRun, token: &CancellationToken) -> String {
    if run.token.is_cancelled() || !token.is_cancelled() {
        run.stop_reason_text()
    } else {
        "fail-fast: category failed".into()
    }
}

/// After a unit's final failure: stop what the layer's `fail_fast` says, once the
/// layer can no longer meet its success criteria.
fn apply_fail_fast(run: &LayerRun, category_token: &CancellationToken) {
    let layer = &run.planned.layer;
    let verdict = run
        .ctx
        .bus
        .with_state(|s| evaluate(layer, &run.ctx.config.categories, s));
    if !verdict.failed {
        return;
    }
    match layer.fail_fast {
        FailFast::Immediate => run.ctx.stop(StopCause::FailFast {
            layer: layer.name.clone(),
        }),
        FailFast::Category => category_token.cancel(),
        FailFast::Layer | FailFast::Disabled => {}
    }
}

/// Admission estimate: the declared minimum, or the peak seen for this unit in this run.
fn memory_estimate(ctx: &RunContext, cat: &Category, unit: &str) -> u64 {
    let seen = ctx
        .bus
        .with_state(|s| s.units.get(unit).and_then(|u| u.peak_memory_mb))
        .unwrap_or(0);
    cat.min_memory_mb.unwrap_or(0).max(seen)
}

/// Run all attempts of a unit. Returns the final outcome (None when skipped).
async fn run_unit(run: &LayerRun, unit: &Unit, cat: &Category) -> Option<Outcome> {
    let ctx = &run.ctx;
    let exec_cfg = &ctx.config.execution;
    let max_attempts = cat.retries + 1;
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
        let result = run_attempt(run, unit, cat, attempt, &cmd, &limits).await;
        let (outcome, report) = match result {
            Ok(r) => judge(r, cat, run),
            Err(e) => (
                Outcome::Error,
                Report {
                    message: Some(format!("could not start: {e}")),
                    ..Report::default()
                },
            ),
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
            peak_memory_mb: None,
            message: report.message,
            output_tail: (!outcome.is_pass()).then_some(report.output_tail),
            log: Some(cmd.log_path.to_string_lossy().into_owned()),
        });
        if !report.leaked.is_empty() {
            ctx.emit(EventKind::TestLeaked {
                unit: unit.id.clone(),
                processes: report.leaked,
            });
        }
        if !will_retry {
            return Some(outcome);
        }
        let backoff = exec_cfg.retry_backoff * 2u32.saturating_pow(attempt - 1);
        tokio::select! {
            _ = run.token.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
    }
    None
}

fn unit_command(run: &LayerRun, unit: &Unit, cat: &Category, attempt: u32) -> UnitCommand {
    let ctx = &run.ctx;
    let safe: String = unit
        .id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
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
    let (shell_command, program) = match &unit.spec {
        UnitSpec::Shell(cmd) => (Some(cmd.clone()), None),
        UnitSpec::Program { path, args } => (None, Some((path.clone(), args.clone()))),
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
        rlimit_as_mb: None,
    }
}

/// Run one attempt, watching the layer token, a second Ctrl-C and the slow threshold.
async fn run_attempt(
    run: &LayerRun,
    unit: &Unit,
    cat: &Category,
    attempt: u32,
    cmd: &UnitCommand,
    limits: &ExecLimits,
) -> std::io::Result<ExecResult> {
    let ctx = &run.ctx;
    let stop = StopHandle::new();
    let bus = ctx.bus.clone();
    let id = unit.id.clone();
    let started = Instant::now();
    let fut = exec::run_unit(cmd, limits, &stop, move |pid| {
        bus.emit(
            names::EXECUTOR,
            EventKind::TestStarted {
                unit: id,
                attempt,
                pid,
            },
        );
    });
    tokio::pin!(fut);
    let slow = async {
        match cat.slow_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(slow);
    let (mut stopping, mut killing, mut warned) = (false, false, false);
    loop {
        tokio::select! {
            r = &mut fut => return r,
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
    }
}

#[derive(Default)]
struct Report {
    duration_ms: u64,
    exit_code: Option<i32>,
    signal: Option<String>,
    message: Option<String>,
    output_tail: String,
    leaked: Vec<String>,
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

    #[test]
    fn groups_follow_execution_mode() {
        let cat = |name: &str, order: i64| PlannedCategory {
            category: Category {
                name: name.into(),
                description: String::new(),
                kind: crate::config::UnitKind::Command(crate::config::CommandSpec {
                    command: "true".into(),
                    files: vec![],
                }),
                timeout: None,
                slow_after: None,
                max_parallel_instances: None,
                priority_order: order,
                retries: 0,
                min_memory_mb: None,
                max_memory_mb: None,
                critical: false,
                env: Default::default(),
                depends_on: vec![],
                requires_real_services: false,
                cwd: None,
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
