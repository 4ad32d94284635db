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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::names;
use crate::config::{Category, LayerMode, LeakPolicy, UnitKind};
use crate::discover::{Unit, UnitSpec};
use crate::event::{EventKind, Outcome};
use crate::exec::{self, ExecLimits, ExecResult, StopHandle, StopReason, Termination, UnitCommand};
use crate::ingest::junit as junit_import;
use crate::plan::{PlannedCategory, PlannedLayer};

use super::layer_run::*;
pub use super::layer_run::{Decision, RunContext};
pub use crate::event::StopCause;

/// What the executor reports when a layer's units are all done; the dispatcher
/// judges the layer from the fold.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRunReport {
    /// The layer's `max_duration_minutes` passed while it ran.
    pub deadline_hit: bool,
    /// How long it ran.
    pub duration: std::time::Duration,
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
            let passed = run_category(&run, i, blocked, primed).await;
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

/// Run the units of the layer's category `ci`; returns whether none failed. `primed`:
/// the first unit's place in the start order, entered when the layer started.
///
/// A unit's task borrows its unit and category from the shared [`LayerRun`] by index
/// (nothing is copied per unit), and finished tasks are joined as new ones start, so a
/// category of 100,000 units holds only the tasks that are running.
async fn run_category(
    run: &Arc<LayerRun>,
    ci: usize,
    blocked: Option<String>,
    mut primed: Option<Ticket>,
) -> bool {
    let ctx = &run.ctx;
    let pc = &run.planned.categories[ci];
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
        let mut task_units: HashMap<tokio::task::Id, usize> = HashMap::new();
        let joined = |joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
                      task_units: &mut HashMap<tokio::task::Id, usize>| {
            let id = match &joined {
                Ok((id, ())) => *id,
                Err(e) => e.id(),
            };
            let unit = task_units.remove(&id).map(|ui| pc.units[ui].id.as_str());
            if let Err(e) = joined {
                ctx.fault(
                    names::EXECUTOR,
                    format!("the unit's task failed: {e}"),
                    unit,
                );
            }
        };
        for (ui, unit) in pc.units.iter().enumerate() {
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
            while let Some(done) = tasks.try_join_next_with_id() {
                joined(done, &mut task_units);
            }
            let task_run = Arc::clone(run);
            let token = token.clone();
            let task = tasks.spawn(async move {
                let _permits = permits;
                let pc = &task_run.planned.categories[ci];
                let outcome = run_unit(&task_run, &pc.units[ui], &pc.category).await;
                if outcome.is_some_and(Outcome::is_failure) {
                    ask_fail_fast(&task_run, &token).await;
                }
            });
            task_units.insert(task.id(), ui);
            ctx.health.heartbeat();
        }
        while let Some(done) = tasks.join_next_with_id().await {
            joined(done, &mut task_units);
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
        ("RUNNER_LAYER".to_string(), unit.layer.to_string()),
        ("RUNNER_CATEGORY".to_string(), unit.category.to_string()),
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
        cwd: unit.cwd.to_path_buf(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
