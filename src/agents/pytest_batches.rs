//! Running a `pytest:` category: its units (test ids) in batches, one pytest process
//! per batch, with results streamed per test.
//!
//! The batches come from [`plan_batches`] (history longest-first, else file order). A
//! batch passes the same gates as any unit (category slot, start order, layer slot,
//! admission) and runs through the executor's [`exec::Launcher`], so timeouts, stops,
//! memory limits, leak detection and the one terminate sequence are those of every unit.
//!
//! The batch runs `<python> -m pytest -p _layered_runner_pytest -p no:cacheprovider -q
//! --rootdir <rootdir> <args> <files...>`: the files of its tests, with the runner's
//! plugin keeping only the batch's ids (`RUNNER_PYTEST_IDS`) and appending a JSON line
//! to `RUNNER_PYTEST_EVENTS` when each test starts and finishes. The runner follows that
//! file while the batch runs and turns each line into the unit's `test_started` and
//! `test_finished` (or `test_skipped` for pytest's skips and xfails) at once.
//!
//! **Every test ends with exactly one outcome.** When the batch ends (or is stopped)
//! with tests not reported:
//! - the test that was running gets the batch's fate: `timeout` when it passed the
//!   category's `timeout_seconds` (enforced per test: the runner stops the batch and
//!   names it), `crashed`, `memory_limit`, `cancelled`, or `failed` with pytest's exit;
//! - the tests not started are *rescheduled* in a new batch when the run goes on, so a
//!   hung or crashing test costs only itself; skipped when the run or layer stops; and
//!   failed (never lost) when pytest exited without reaching them and without a test to
//!   blame (a collection error in the batch, an id that no longer exists).
//!
//! **Retries** run only the failed ids, in a new batch after the retry backoff.
//! **Leaks**: the plugin reports the child processes each test left running; those still
//! alive when the batch ends (found and killed by the executor) are that test's
//! `test_leaked`; others become a warning naming the batch.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layer_run::{
    LayerRun, Ticket, ask_fail_fast, category_stop_text, file_safe, pass_gates, retry_backoff,
    tail_text,
};
use super::names;
use crate::config::{Category, PytestSpec};
use crate::discover::pytest::{BatchTest, PLUGIN_MODULE, plan_batches, python_path, write_plugin};
use crate::discover::{Unit, UnitSpec};
use crate::event::{EventKind, Outcome};
use crate::exec::{ExecLimits, ExecResult, StopHandle, StopReason, Termination, UnitCommand};
use crate::plan::PlannedCategory;

/// How often a running batch's event file is read.
const POLL: Duration = Duration::from_millis(10);

/// Bytes of a batch's output shown with a test it could not report.
const TAIL_BYTES: usize = 4096;

/// One test of a batch: its unit's index and this attempt's number.
#[derive(Debug, Clone, Copy)]
struct Slot {
    unit: usize,
    attempt: u32,
}

/// What is left to run: tests (unit indices) waiting for a batch, in order.
struct Pending {
    tests: Vec<usize>,
    /// Not before (a retry's backoff).
    after: Option<tokio::time::Instant>,
}

/// How a batch ended, for the category's loop.
#[derive(Default)]
struct BatchEnd {
    /// Failed tests that get another attempt.
    retry: Vec<usize>,
    /// Tests not started that go into a new batch.
    reschedule: Vec<usize>,
    /// A test ended with a final failure (fail-fast applies).
    failed: bool,
}

/// Runs the units of a pytest category; returns why it stopped early, if it did.
pub(super) async fn run_category(
    run: &Arc<LayerRun>,
    pc: &PlannedCategory,
    spec: &PytestSpec,
    token: &CancellationToken,
    cat_slots: &Arc<Semaphore>,
    mut primed: Option<Ticket>,
    mut stop_reason: Option<String>,
) -> Option<String> {
    let ctx = &run.ctx;
    let cat = &pc.category;
    let units: Arc<Vec<Unit>> = Arc::new(pc.units.clone());
    if let Some(reason) = &stop_reason {
        for u in units.iter() {
            ctx.emit(EventKind::TestSkipped {
                unit: u.id.clone(),
                reason: reason.clone(),
            });
        }
        return stop_reason;
    }
    let plugin_dir = match write_plugin(&ctx.run_dir.join("pytest")) {
        Ok(dir) => dir,
        Err(e) => {
            let message = format!("cannot write the pytest plugin: {e}");
            for u in units.iter() {
                finish(ctx, u, 1, Outcome::Error, Some(message.clone()), None, 0);
            }
            ctx.fault(names::EXECUTOR, message, None);
            return stop_reason;
        }
    };
    let slots = category_slots(run, cat);
    let tests: Vec<BatchTest> = units
        .iter()
        .map(|u| BatchTest {
            module: match &u.spec {
                UnitSpec::Pytest { module, .. } => module.clone(),
                _ => PathBuf::new(),
            },
            expected: ctx.hints.expected(&u.id),
        })
        .collect();
    let mut queue: VecDeque<Pending> = plan_batches(&tests, slots)
        .into_iter()
        .map(|b| Pending {
            tests: b.tests,
            after: None,
        })
        .collect();
    let mut attempts = vec![0u32; units.len()];
    let mut running: JoinSet<BatchEnd> = JoinSet::new();
    let mut serial = 0usize;
    let mut retries: Vec<usize> = Vec::new();
    loop {
        if !queue.is_empty() && token.is_cancelled() {
            let reason = stop_reason
                .get_or_insert_with(|| category_stop_text(run, token))
                .clone();
            for p in queue.drain(..) {
                for i in p.tests {
                    ctx.emit(EventKind::TestSkipped {
                        unit: units[i].id.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let joined = if let Some(next) = queue.front() {
            let first = &units[next.tests[0]].id;
            let entered = primed.take();
            tokio::select! {
                biased;
                // The gates' place in the start order is taken again next time.
                Some(j) = running.join_next(), if !running.is_empty() => Some(j),
                _ = token.cancelled() => None,
                permits = pass_gates(run, cat, cat_slots, entered, first) => {
                    let Some(permits) = permits else {
                        // A fault (recorded) stopped the run; the loop skips the rest.
                        token.cancel();
                        continue;
                    };
                    let pending = queue.pop_front().expect("a pending batch");
                    let batch: Vec<Slot> = pending
                        .tests
                        .iter()
                        .map(|&i| {
                            attempts[i] += 1;
                            Slot { unit: i, attempt: attempts[i] }
                        })
                        .collect();
                    serial += 1;
                    let (run, units, cat, spec, dir) = (
                        Arc::clone(run),
                        Arc::clone(&units),
                        cat.clone(),
                        spec.clone(),
                        plugin_dir.clone(),
                    );
                    running.spawn(async move {
                        let _permits = permits;
                        if let Some(at) = pending.after {
                            tokio::select! {
                                _ = run.token.cancelled() => {}
                                _ = tokio::time::sleep_until(at) => {}
                            }
                        }
                        let job = Job { run: &run, units: &units, cat: &cat, spec: &spec, plugin_dir: &dir, serial };
                        job.run(&batch).await
                    });
                    ctx.health.heartbeat();
                    None
                }
            }
        } else if running.is_empty() {
            break;
        } else {
            running.join_next().await
        };
        let Some(joined) = joined else { continue };
        let end = match joined {
            Ok(end) => end,
            Err(e) => {
                ctx.fault(
                    names::EXECUTOR,
                    format!("a pytest batch's task failed: {e}"),
                    None,
                );
                continue;
            }
        };
        if !end.reschedule.is_empty() {
            queue.push_front(Pending {
                tests: end.reschedule,
                after: None,
            });
        }
        retries.extend(end.retry);
        // Retries wait until every planned batch has started, then go together.
        if queue.is_empty() && !retries.is_empty() {
            let mut tests = std::mem::take(&mut retries);
            tests.sort_unstable();
            let attempt = tests.iter().map(|&i| attempts[i]).max().unwrap_or(1);
            let backoff = retry_backoff(ctx.config.execution.retry_backoff, attempt);
            queue.push_back(Pending {
                tests,
                after: Some(tokio::time::Instant::now() + backoff),
            });
        }
        if end.failed {
            ask_fail_fast(run, token).await;
        }
    }
    stop_reason
}

/// The slots a category's batches can use at once: its own limit, its layer's and the
/// run's.
fn category_slots(run: &LayerRun, cat: &Category) -> usize {
    let global = run.ctx.bus.with_state(|s| s.slots).max(1);
    let layer = &run.planned.layer;
    let layer_slots = match layer.execution_mode {
        crate::config::LayerMode::Sequential => 1,
        _ => layer
            .resource_limits
            .max_parallel_instances
            .unwrap_or(usize::MAX),
    };
    global
        .min(layer_slots)
        .min(cat.max_parallel_instances.unwrap_or(usize::MAX))
        .max(1)
}

/// One line the plugin writes.
#[derive(Debug, Deserialize)]
struct PluginEvent {
    e: String,
    id: String,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    ms: Option<f64>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    spawned: Vec<u32>,
}

/// Where a test of a running batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Waiting,
    Running,
    Done,
}

/// One batch: what it needs to run.
struct Job<'a> {
    run: &'a LayerRun,
    units: &'a [Unit],
    cat: &'a Category,
    spec: &'a PytestSpec,
    plugin_dir: &'a Path,
    serial: usize,
}

/// The state of a running batch, fed by the plugin's lines.
struct Follow<'b> {
    batch: &'b [Slot],
    by_id: HashMap<&'b str, usize>,
    progress: Vec<Progress>,
    /// The test running now (index into the batch) and since when.
    current: Option<(usize, Instant)>,
    slow_warned: bool,
    /// Child processes each test left running (by batch index).
    spawned: Vec<(usize, Vec<u32>)>,
    collect_errors: Vec<String>,
    end: BatchEnd,
    pid: u32,
    partial: Vec<u8>,
}

impl Job<'_> {
    async fn run(&self, batch: &[Slot]) -> BatchEnd {
        let run = self.run;
        let ctx = &run.ctx;
        let first = &self.units[batch[0].unit];
        let name = format!("{}-batch-{}", file_safe(&self.cat.name), self.serial);
        let dir = ctx.run_dir.join("pytest").join(&name);
        let ids_file = dir.join("ids.txt");
        let events_file = dir.join("events.jsonl");
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let ids: String = batch
                .iter()
                .map(|s| format!("{}\n", self.units[s.unit].name))
                .collect();
            std::fs::write(&ids_file, ids)?;
            std::fs::write(&events_file, "")
        });
        let mut follow = Follow {
            batch,
            by_id: batch
                .iter()
                .enumerate()
                .map(|(k, s)| (self.units[s.unit].name.as_str(), k))
                .collect(),
            progress: vec![Progress::Waiting; batch.len()],
            current: None,
            slow_warned: false,
            spawned: Vec::new(),
            collect_errors: Vec::new(),
            end: BatchEnd::default(),
            pid: 0,
            partial: Vec::new(),
        };
        if let Err(e) = written {
            let message = format!("cannot prepare pytest batch in {}: {e}", dir.display());
            for s in batch {
                finish(
                    ctx,
                    &self.units[s.unit],
                    s.attempt,
                    Outcome::Error,
                    Some(message.clone()),
                    None,
                    0,
                );
            }
            ctx.fault(names::EXECUTOR, message, Some(&first.id));
            return follow.end;
        }
        let cmd = self.command(batch, &ids_file, &events_file, &dir, &name);
        let exec_cfg = &ctx.config.execution;
        let limits = ExecLimits {
            timeout: None,
            kill_grace: exec_cfg.kill_grace,
            head_bytes: exec_cfg.output_head_bytes,
            tail_bytes: exec_cfg.output_tail_bytes,
            log_max_bytes: exec_cfg.log_file_max_bytes,
        };
        let stop = StopHandle::new();
        let tracker = ctx
            .resources
            .tracker(&first.id, self.cat.max_memory_mb, &stop);
        let notice = tracker.notice();
        let (pid_tx, mut pid_rx) = tokio::sync::oneshot::channel();
        let token = cmd.unit_token.clone();
        let fut = ctx.launcher.launch(
            &cmd,
            &limits,
            &stop,
            Box::new(move |pid| {
                notice.spawned(pid, &token);
                let _ = pid_tx.send(pid);
            }),
        );
        tokio::pin!(fut);
        let mut reader: Option<std::fs::File> = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut stopping, mut killing) = (false, false);
        let mut timed_out: Option<usize> = None;
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
                _ = tick.tick() => {
                    if let Ok(pid) = pid_rx.try_recv() {
                        follow.pid = pid;
                    }
                    self.read_events(&events_file, &mut reader, &mut follow);
                    if let Some((k, since)) = follow.current
                        && !stopping
                    {
                        let elapsed = since.elapsed();
                        if self.cat.timeout.is_some_and(|t| elapsed >= t) {
                            timed_out = Some(k);
                            stopping = true;
                            stop.stop(StopReason::Cancelled);
                        } else if !follow.slow_warned
                            && self.cat.slow_after.is_some_and(|t| elapsed >= t)
                        {
                            follow.slow_warned = true;
                            ctx.emit(EventKind::TestSlow {
                                unit: self.units[batch[k].unit].id.clone(),
                                elapsed_ms: elapsed.as_millis() as u64,
                            });
                        }
                    }
                }
            }
        };
        let peak = tracker.finish().await;
        if let Ok(pid) = pid_rx.try_recv() {
            follow.pid = pid;
        }
        self.read_events(&events_file, &mut reader, &mut follow);
        self.close(follow, result, timed_out, peak, &cmd.log_path)
    }

    fn command(
        &self,
        batch: &[Slot],
        ids_file: &Path,
        events_file: &Path,
        dir: &Path,
        name: &str,
    ) -> UnitCommand {
        let ctx = &self.run.ctx;
        let first = &self.units[batch[0].unit];
        let rootdir = match &first.spec {
            UnitSpec::Pytest { rootdir, .. } => rootdir.to_string_lossy().into_owned(),
            _ => first.cwd.to_string_lossy().into_owned(),
        };
        let mut args: Vec<String> = [
            "-m",
            "pytest",
            "-p",
            PLUGIN_MODULE,
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
        ]
        .map(String::from)
        .to_vec();
        args.push(rootdir);
        args.extend(self.spec.args.iter().cloned());
        let mut files: Vec<&Path> = Vec::new();
        for s in batch {
            if let UnitSpec::Pytest { module, .. } = &self.units[s.unit].spec
                && !files.contains(&module.as_path())
            {
                files.push(module);
            }
        }
        args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
        let mut env: Vec<(String, String)> = self
            .cat
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let attempt = batch.iter().map(|s| s.attempt).max().unwrap_or(1);
        env.extend([
            (
                "PYTHONPATH".to_string(),
                python_path(self.plugin_dir, self.cat),
            ),
            (
                "RUNNER_PYTEST_IDS".to_string(),
                ids_file.to_string_lossy().into_owned(),
            ),
            (
                "RUNNER_PYTEST_EVENTS".to_string(),
                events_file.to_string_lossy().into_owned(),
            ),
            ("RUNNER_RUN_ID".to_string(), ctx.bus.run_id().to_string()),
            (
                "RUNNER_UNIT_ID".to_string(),
                format!("{}/{}/{name}", first.layer, first.category),
            ),
            ("RUNNER_LAYER".to_string(), first.layer.to_string()),
            ("RUNNER_CATEGORY".to_string(), first.category.to_string()),
            ("RUNNER_ATTEMPT".to_string(), attempt.to_string()),
        ]);
        UnitCommand {
            shell_command: None,
            program: Some((PathBuf::from(&self.spec.python), args)),
            cwd: first.cwd.to_path_buf(),
            env,
            log_path: dir.join("output.log"),
            // A batch's output is a file of its own, beside its events.
            run_log: None,
            unit_token: format!("{}:{}:{name}", ctx.bus.run_id(), first.category),
            nice: self.run.nice,
            rlimit_as_mb: self.cat.rlimit_as_mb,
        }
    }

    /// Reads the lines the plugin appended since the last call.
    fn read_events(&self, path: &Path, reader: &mut Option<std::fs::File>, f: &mut Follow<'_>) {
        if reader.is_none() {
            *reader = std::fs::File::open(path).ok();
        }
        let Some(file) = reader.as_mut() else { return };
        let mut buf = std::mem::take(&mut f.partial);
        if file.read_to_end(&mut buf).is_err() {
            f.partial = buf;
            return;
        }
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None => {
                f.partial = buf;
                return;
            }
        };
        f.partial = buf.split_off(complete);
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<PluginEvent>(line) {
                Ok(ev) => self.apply(ev, f),
                Err(e) => tracing::warn!("unreadable pytest plugin line: {e}"),
            }
        }
    }

    /// One plugin line: a test started or finished.
    fn apply(&self, ev: PluginEvent, f: &mut Follow<'_>) {
        let ctx = &self.run.ctx;
        if ev.e == "collect_error" {
            f.collect_errors.push(
                ev.text
                    .unwrap_or_else(|| format!("cannot collect {}", ev.id)),
            );
            return;
        }
        let Some(&k) = f.by_id.get(ev.id.as_str()) else {
            return;
        };
        let slot = f.batch[k];
        let unit = &self.units[slot.unit];
        match ev.e.as_str() {
            "start" if f.progress[k] == Progress::Waiting => {
                f.progress[k] = Progress::Running;
                f.current = Some((k, Instant::now()));
                f.slow_warned = false;
                ctx.emit(EventKind::TestStarted {
                    unit: unit.id.clone(),
                    attempt: slot.attempt,
                    pid: f.pid,
                });
            }
            "done" if f.progress[k] != Progress::Done => {
                f.progress[k] = Progress::Done;
                if f.current.is_some_and(|(c, _)| c == k) {
                    f.current = None;
                }
                if !ev.spawned.is_empty() {
                    f.spawned.push((k, ev.spawned));
                }
                let ms = ev.ms.unwrap_or_default().round() as u64;
                let outcome = ev.outcome.as_deref().unwrap_or("failed");
                match outcome {
                    "passed" | "xpassed" => {
                        finish(ctx, unit, slot.attempt, Outcome::Passed, None, None, ms);
                    }
                    "skipped" | "xfailed" => {
                        let reason = match ev.msg {
                            Some(m) if !m.is_empty() => format!("{outcome}: {m}"),
                            _ => outcome.to_string(),
                        };
                        ctx.emit(EventKind::TestSkipped {
                            unit: unit.id.clone(),
                            reason,
                        });
                    }
                    _ => {
                        let retry = self.will_retry(slot.attempt);
                        ctx.emit(EventKind::TestFinished {
                            unit: unit.id.clone(),
                            attempt: slot.attempt,
                            outcome: Outcome::Failed,
                            will_retry: retry,
                            duration_ms: ms,
                            exit_code: None,
                            signal: None,
                            peak_memory_mb: None,
                            message: ev.msg.or(Some(outcome.to_string())),
                            output_tail: ev.text,
                            log: None,
                        });
                        if retry {
                            f.end.retry.push(slot.unit);
                        } else {
                            f.end.failed = true;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn will_retry(&self, attempt: u32) -> bool {
        attempt <= self.cat.retries && !self.run.token.is_cancelled()
    }

    /// The batch is over: every test it did not report gets its one outcome (or a new batch).
    fn close(
        &self,
        mut f: Follow<'_>,
        result: std::io::Result<ExecResult>,
        timed_out: Option<usize>,
        peak: Option<u64>,
        log: &Path,
    ) -> BatchEnd {
        let run = self.run;
        let ctx = &run.ctx;
        let log_text = log.to_string_lossy().into_owned();
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let message = format!("could not start `{}`: {e}", self.spec.python);
                for (k, s) in f.batch.iter().enumerate() {
                    if f.progress[k] != Progress::Done {
                        finish(
                            ctx,
                            &self.units[s.unit],
                            s.attempt,
                            Outcome::Error,
                            Some(message.clone()),
                            None,
                            0,
                        );
                    }
                }
                ctx.fault(
                    names::EXECUTOR,
                    message,
                    Some(&self.units[f.batch[0].unit].id),
                );
                return f.end;
            }
        };
        let tail = tail_text(&result, TAIL_BYTES);
        let running = f.progress.iter().position(|p| *p == Progress::Running);
        // The test that was running when the batch ended takes the batch's fate.
        if let Some(k) = running {
            let s = f.batch[k];
            let elapsed = f
                .current
                .map(|(_, t)| t.elapsed())
                .unwrap_or(result.duration);
            let (outcome, message) = match (&result.termination, timed_out) {
                (_, Some(_)) => (
                    Outcome::Timeout,
                    format!(
                        "timed out after {}s (the rest of its pytest batch is rescheduled)",
                        self.cat
                            .timeout
                            .map(|t| t.as_secs_f64())
                            .unwrap_or_default()
                    ),
                ),
                (Termination::Signaled { name, .. }, _) => (
                    Outcome::Crashed,
                    format!("pytest was killed by {name} during this test"),
                ),
                (
                    Termination::Stopped(StopReason::MemoryLimit {
                        limit_mb,
                        observed_mb,
                    }),
                    _,
                ) => (
                    Outcome::MemoryLimit,
                    format!("memory limit exceeded: {observed_mb} MiB > {limit_mb} MiB"),
                ),
                (Termination::Stopped(StopReason::Deadline), _) | (Termination::TimedOut, _) => {
                    (Outcome::Timeout, run.stop_reason_text())
                }
                (Termination::Stopped(StopReason::Cancelled), _) => {
                    (Outcome::Cancelled, run.stop_reason_text())
                }
                (Termination::Exited(code), _) => (
                    Outcome::Crashed,
                    format!("pytest exited with code {code} during this test"),
                ),
            };
            let retry = outcome != Outcome::Cancelled && self.will_retry(s.attempt);
            ctx.emit(EventKind::TestFinished {
                unit: self.units[s.unit].id.clone(),
                attempt: s.attempt,
                outcome,
                will_retry: retry,
                duration_ms: elapsed.as_millis() as u64,
                exit_code: None,
                signal: match &result.termination {
                    Termination::Signaled { name, .. } => Some(name.clone()),
                    _ => None,
                },
                peak_memory_mb: peak,
                message: Some(message),
                output_tail: Some(tail.clone()),
                log: Some(log_text.clone()),
            });
            f.progress[k] = Progress::Done;
            if retry {
                f.end.retry.push(s.unit);
            } else if outcome.is_failure() {
                f.end.failed = true;
            }
        }
        // The tests not started.
        let waiting: Vec<usize> = (0..f.batch.len())
            .filter(|&k| f.progress[k] == Progress::Waiting)
            .collect();
        if !waiting.is_empty() {
            if run.token.is_cancelled() {
                let reason = run.stop_reason_text();
                for &k in &waiting {
                    ctx.emit(EventKind::TestSkipped {
                        unit: self.units[f.batch[k].unit].id.clone(),
                        reason: reason.clone(),
                    });
                }
            } else if running.is_some() {
                f.end.reschedule = waiting.iter().map(|&k| f.batch[k].unit).collect();
            } else {
                let why = match (&result.termination, f.collect_errors.first()) {
                    (_, Some(err)) => format!("not run: pytest could not collect its file:\n{err}"),
                    (Termination::Exited(code), None) => {
                        format!("not run: pytest exited with code {code} without running it")
                    }
                    (t, None) => format!("not run: pytest ended ({t:?}) without running it"),
                };
                let message = why.lines().next().unwrap_or_default().to_string();
                let detail = format!("{why}\n{tail}");
                for &k in &waiting {
                    let s = f.batch[k];
                    ctx.emit(EventKind::TestFinished {
                        unit: self.units[s.unit].id.clone(),
                        attempt: s.attempt,
                        outcome: Outcome::Failed,
                        will_retry: false,
                        duration_ms: 0,
                        exit_code: match result.termination {
                            Termination::Exited(c) => Some(c),
                            _ => None,
                        },
                        signal: None,
                        peak_memory_mb: None,
                        message: Some(message.clone()),
                        output_tail: Some(detail.clone()),
                        log: Some(log_text.clone()),
                    });
                }
                f.end.failed = true;
            }
        }
        self.report_leaks(&f, &result);
        f.end
    }

    /// Processes still alive when the batch ended: the test that started them, if the
    /// plugin saw one, else the batch as a whole.
    fn report_leaks(&self, f: &Follow<'_>, result: &ExecResult) {
        if result.leaked.is_empty() {
            return;
        }
        let ctx = &self.run.ctx;
        let mut unclaimed: Vec<String> = Vec::new();
        let mut by_test: HashMap<usize, Vec<String>> = HashMap::new();
        for p in &result.leaked {
            let line = format!("{} {}", p.pid, p.cmdline);
            match f.spawned.iter().find(|(_, pids)| pids.contains(&p.pid)) {
                Some((k, _)) => by_test.entry(*k).or_default().push(line),
                None => unclaimed.push(line),
            }
        }
        let mut tests: Vec<_> = by_test.into_iter().collect();
        tests.sort_by_key(|(k, _)| *k);
        for (k, processes) in tests {
            ctx.emit(EventKind::TestLeaked {
                unit: self.units[f.batch[k].unit].id.clone(),
                processes,
            });
        }
        if !unclaimed.is_empty() {
            let first = &self.units[f.batch[0].unit];
            ctx.emit(EventKind::Warning {
                message: format!(
                    "pytest batch {} of category `{}` ({} tests from `{}`) left {} process(es) behind (killed): {}",
                    self.serial,
                    self.cat.name,
                    f.batch.len(),
                    first.name,
                    unclaimed.len(),
                    unclaimed.join("; ")
                ),
                unit: None,
            });
        }
    }
}

/// A test's one `test_finished`, without a retry.
fn finish(
    ctx: &super::layer_run::RunContext,
    unit: &Unit,
    attempt: u32,
    outcome: Outcome,
    message: Option<String>,
    output_tail: Option<String>,
    duration_ms: u64,
) {
    ctx.emit(EventKind::TestFinished {
        unit: unit.id.clone(),
        attempt,
        outcome,
        will_retry: false,
        duration_ms,
        exit_code: None,
        signal: None,
        peak_memory_mb: None,
        message,
        output_tail,
        log: None,
    });
}
