//! Test harness for the integration tests: a temporary project, a `runner` command
//! builder, readers for the run directory (`events.jsonl`, `summary.json`) and a
//! process scanner that proves no unit process outlived a run.
//!
//! Every test gets its own project directory, so tests run in parallel. Files written
//! through [`Project::file`] have `@MARK@` replaced by a token unique to the project;
//! put it in a category's `env:` and [`assert_no_process_with`] finds every process
//! the category started, wherever it went (new session, reparented, ...), by scanning
//! `/proc/*/environ` and `/proc/*/cmdline`.
//!
//! Waiting is done on what the runner writes (events, files), never on fixed sleeps:
//! [`Project::wait_for_events`] and [`wait_for_file`] poll with a deadline.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use layered_runner::event::{Event, RunState};
use serde_json::Value;

/// The longest any single runner invocation may take before the harness kills it and
/// fails the test. Generous: every fixture finishes in a few seconds.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// How long to wait for an event or a file the runner (or a unit) is expected to write.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// Placeholder replaced in every written file by the project's marker.
pub const MARK: &str = "@MARK@";

/// Poll interval while waiting for a file, an event or a process.
const POLL: Duration = Duration::from_millis(20);

/// A temporary project directory holding a `layers.yaml` and its fixture files.
pub struct Project {
    dir: tempfile::TempDir,
    marker: String,
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    /// An empty project in a fresh temporary directory.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("runner-it-")
            .tempdir()
            .expect("create temp project dir");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let marker = format!(
            "lrmark{}x{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        Project { dir, marker }
    }

    /// A copy of `tests/fixtures/projects/<name>` in a fresh temporary directory
    /// (the runner writes `.runner/` into the project, so fixtures are never run in place).
    pub fn from_fixture(name: &str) -> Self {
        let project = Project::new();
        let src = fixtures_dir().join(name);
        assert!(src.is_dir(), "no fixture project {}", src.display());
        project.copy_tree(&src, Path::new(""));
        project
    }

    fn copy_tree(&self, src: &Path, rel: &Path) {
        for entry in std::fs::read_dir(src).expect("read fixture dir") {
            let entry = entry.expect("fixture dir entry");
            let path = entry.path();
            let rel = rel.join(entry.file_name());
            if path.is_dir() {
                self.copy_tree(&path, &rel);
            } else {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
                self.file(rel.to_str().expect("utf-8 path"), &text);
            }
        }
    }

    /// The project root (the directory of `layers.yaml`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The token unique to this project that replaces `@MARK@` in written files.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Writes `root/rel` (creating parent directories), with `@MARK@` replaced by the marker.
    pub fn file(&self, rel: &str, contents: &str) -> &Self {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create fixture parent dir");
        }
        std::fs::write(&path, contents.replace(MARK, &self.marker))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self
    }

    /// Writes `layers.yaml`.
    pub fn layers(&self, yaml: &str) -> &Self {
        self.file("layers.yaml", yaml)
    }

    /// Writes `config/environments/<name>.yaml`.
    pub fn environment(&self, name: &str, yaml: &str) -> &Self {
        self.file(&format!("config/environments/{name}.yaml"), yaml)
    }

    /// Reads `root/rel`, panicking with the path when missing.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("read {}: {e}", self.path(rel).display()))
    }

    /// A `runner` command for this project: cwd = root, `--config root/layers.yaml`.
    pub fn runner(&self) -> Runner {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
        cmd.current_dir(self.root())
            .arg("--config")
            .arg(self.path("layers.yaml"))
            // The runner reads these through clap; the developer's shell must not leak in.
            .env_remove("RUNNER_CONFIG")
            .env_remove("RUNNER_ENV")
            // Under GitHub Actions every run would annotate and append to the job summary.
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null());
        Runner { cmd }
    }

    /// Every run directory under `.runner/runs/`, sorted by name (= run id).
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path(".runner/runs")) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    }

    /// The single run directory of the project (panics unless there is exactly one).
    pub fn run_dir(&self) -> PathBuf {
        let dirs = self.run_dirs();
        assert_eq!(
            dirs.len(),
            1,
            "expected exactly one run directory under {}, found {dirs:?}",
            self.path(".runner/runs").display()
        );
        dirs.into_iter().next().unwrap()
    }

    /// The events of the single run, one JSON value per line of `events.jsonl`.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.run_dir().join("events.jsonl"))
    }

    /// `summary.json` of the single run.
    pub fn summary(&self) -> Value {
        let path = self.run_dir().join("summary.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
    }

    /// Waits until the single run's `events.jsonl` satisfies `done` (complete lines only),
    /// and returns the events seen. Panics after [`WAIT_DEADLINE`], or if `child` exits first.
    pub fn wait_for_events(
        &self,
        child: &mut Spawned,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            if let Some(dir) = self.run_dirs().first() {
                let events = read_complete_events(&dir.join("events.jsonl"));
                if done(&events) {
                    return events;
                }
            }
            if let Some(status) = child.try_wait() {
                let out = child.collect(status);
                panic!("runner exited before {what}\n{out}");
            }
            if Instant::now() > deadline {
                child.kill();
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(POLL);
        }
    }
}

/// `tests/fixtures/projects`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/projects")
}

/// Builder around the `runner` command.
pub struct Runner {
    cmd: Command,
}

impl Runner {
    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable for the runner.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Starts the runner with stdout and stderr piped.
    pub fn spawn(mut self) -> Spawned {
        let cmdline = format!("{:?}", self.cmd);
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        let stdout = reader(child.stdout.take().expect("piped stdout"));
        let stderr = reader(child.stderr.take().expect("piped stderr"));
        Spawned {
            child,
            cmdline,
            stdout: Some(stdout),
            stderr: Some(stderr),
            started: Instant::now(),
        }
    }

    /// Runs the runner to completion (killing it after [`RUN_DEADLINE`]).
    pub fn run(self) -> Output {
        self.spawn().wait()
    }

    /// The command itself, for a test that wires its stdio differently.
    pub fn into_command(self) -> Command {
        self.cmd
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A running `runner`.
pub struct Spawned {
    child: Child,
    cmdline: String,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
}

impl Spawned {
    /// The runner's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"INT"`, `"TERM"`) to the runner with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// The exit status, if the runner has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on runner")
    }

    /// Kills the runner (used when a test gives up on it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the runner to exit, at most `limit`; kills it and panics after that.
    pub fn wait_within(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return self.collect(status);
            }
            if Instant::now() > deadline {
                self.kill();
                let status = self.child.wait().expect("wait killed runner");
                let out = self.collect(status);
                panic!("runner did not exit within {limit:?}; killed it\n{out}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the runner to exit (at most [`RUN_DEADLINE`]).
    pub fn wait(self) -> Output {
        self.wait_within(RUN_DEADLINE)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        let elapsed = self.started.elapsed();
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        Output {
            status,
            stdout,
            stderr,
            cmdline: self.cmdline.clone(),
            elapsed,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished runner printed, and how it exited.
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
    /// The command, for messages.
    pub cmdline: String,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "status: {} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl Output {
    /// The exit code (panics when the runner died of a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("runner was killed by a signal\n{self}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "unexpected exit code\n{self}"
        );
        self
    }

    /// The last line of stdout.
    pub fn last_line(&self) -> &str {
        last_line(&self.stdout)
    }

    /// Asserts that the last line of stdout is the closing counts line.
    #[track_caller]
    pub fn assert_counts_line(&self, passed: usize, failed: usize, skipped: usize) -> &Self {
        assert_counts_line(self.last_line(), passed, failed, skipped, self);
        self
    }

    /// Asserts that stdout, stderr or both contain `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}\n{self}"
        );
        self
    }
}

/// The last non-empty line of `text`.
pub fn last_line(text: &str) -> &str {
    text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Parses `N passed, N failed[, N skipped]` exactly; `None` for anything else.
pub fn parse_counts_line(line: &str) -> Option<(usize, usize, usize)> {
    let parts: Vec<&str> = line.split(", ").collect();
    let num = |part: &str, word: &str| -> Option<usize> {
        let (n, w) = part.split_once(' ')?;
        (w == word).then_some(())?;
        n.parse().ok()
    };
    match parts.as_slice() {
        [p, f] => Some((num(p, "passed")?, num(f, "failed")?, 0)),
        [p, f, s] => Some((num(p, "passed")?, num(f, "failed")?, num(s, "skipped")?)),
        _ => None,
    }
}

/// Asserts a closing counts line; `context` is shown on failure.
#[track_caller]
pub fn assert_counts_line(
    line: &str,
    passed: usize,
    failed: usize,
    skipped: usize,
    context: &dyn std::fmt::Display,
) {
    let parsed = parse_counts_line(line);
    assert!(
        parsed.is_some(),
        "last line {line:?} is not `N passed, N failed[, N skipped]`\n{context}"
    );
    assert_eq!(
        parsed,
        Some((passed, failed, skipped)),
        "last line {line:?} has the wrong counts (want {passed} passed, {failed} failed, {skipped} skipped)\n{context}"
    );
    if skipped > 0 {
        assert!(
            line.ends_with(" skipped"),
            "skipped units must be shown: {line:?}"
        );
    }
}

/// Parses a JSON-lines file; every line must be JSON.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{} is not JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

/// The complete (newline-terminated) lines of a JSON-lines file being written; empty if
/// the file does not exist yet.
fn read_complete_events(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The events of type `ty`.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// The events of type `ty` about `unit`.
pub fn unit_events<'a>(events: &'a [Value], ty: &str, unit: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == ty && e["unit"] == unit)
        .collect()
}

/// Index of the first event matching `pred` (panics with `what` when none does).
#[track_caller]
pub fn position(events: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("no event {what} in:\n{}", dump(events)))
}

/// The `layer_finished` event of `layer`.
#[track_caller]
pub fn layer_finished<'a>(events: &'a [Value], layer: &str) -> &'a Value {
    let found: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "layer_finished" && e["layer"] == layer)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one layer_finished for `{layer}`:\n{}",
        dump(events)
    );
    found[0]
}

/// The planned unit ids of `run_started` whose layer and category match.
#[track_caller]
pub fn planned_units(events: &[Value], layer: &str, category: &str) -> Vec<String> {
    let started = &of_type(events, "run_started")[0];
    started["units"]
        .as_array()
        .expect("run_started.units is an array")
        .iter()
        .filter(|u| u["layer"] == layer && u["category"] == category)
        .map(|u| u["id"].as_str().expect("unit id").to_string())
        .collect()
}

/// One event per line, for assertion messages.
pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the invariants of a finished run's stream and returns its fold:
/// every line parses as the crate's `Event`; `v` is 1; `seq` runs 1..=n without gaps;
/// one `run_id` (the run directory's name); `ts` is RFC 3339; `run_started` is first
/// and `run_finished` last; each unit's attempts start before they finish.
#[track_caller]
pub fn check_stream(events: &[Value], run_dir: &Path) -> RunState {
    assert!(!events.is_empty(), "events.jsonl is empty");
    let run_id = run_dir.file_name().unwrap().to_str().unwrap();
    let mut state = RunState::default();
    for (i, raw) in events.iter().enumerate() {
        let ev: Event = serde_json::from_value(raw.clone())
            .unwrap_or_else(|e| panic!("event {i} does not match the protocol ({e}): {raw}"));
        assert_eq!(ev.v, 1, "protocol version: {raw}");
        assert_eq!(
            ev.seq,
            i as u64 + 1,
            "seq must start at 1 without gaps:\n{}",
            dump(events)
        );
        assert_eq!(
            ev.run_id, run_id,
            "run_id must be the run dir's name: {raw}"
        );
        assert!(
            ev.ts.parse::<jiff::Timestamp>().is_ok(),
            "ts is not RFC 3339: {raw}"
        );
        assert!(!ev.agent.is_empty(), "agent is empty: {raw}");
        state.apply(&ev);
    }
    assert_eq!(
        events[0]["type"],
        "run_started",
        "first event:\n{}",
        dump(events)
    );
    assert_eq!(
        events.last().unwrap()["type"],
        "run_finished",
        "last event:\n{}",
        dump(events)
    );
    assert_eq!(of_type(events, "run_finished").len(), 1, "one run_finished");
    // Attempts: started before finished, numbered from 1.
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        let unit = e["unit"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("test_started") => {
                let attempt = e["attempt"].as_u64().unwrap();
                let prev = open.insert(unit.clone(), attempt);
                assert!(
                    prev.is_none(),
                    "{unit}: attempt {attempt} started while one runs"
                );
            }
            Some("test_finished") => {
                let attempt = e["attempt"].as_u64().unwrap();
                // A unit cancelled before it started may finish without starting.
                if let Some(started) = open.remove(&unit) {
                    assert_eq!(started, attempt, "{unit}: finished another attempt");
                }
            }
            // A test that skips itself while running (pytest's skip or xfail) ends so.
            Some("test_skipped") => {
                open.remove(&unit);
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "attempts never finished: {open:?}");
    state
}

/// Checks that `summary.json` is the fold of `events.jsonl` (counts, outcome, exit code,
/// layers and units) and that a finished run has nothing running.
#[track_caller]
pub fn check_summary(summary: &Value, fold: &RunState) {
    let expected = serde_json::to_value(fold).unwrap();
    for key in [
        "run_id",
        "counts",
        "outcome",
        "exit_code",
        "mode",
        "environment",
    ] {
        assert_eq!(
            summary[key], expected[key],
            "summary.json `{key}` differs from the fold of events.jsonl"
        );
    }
    for (name, layer) in fold.layers.iter() {
        let s = &summary["layers"][name];
        let e = &expected["layers"][name];
        for key in ["outcome", "reason", "counts"] {
            assert_eq!(
                s[key], e[key],
                "summary layer `{name}` `{key}` differs from the fold"
            );
        }
        assert_eq!(
            layer.counts.running, 0,
            "layer `{name}` still has running units"
        );
    }
    let summary_units: BTreeSet<&String> = summary["units"]
        .as_object()
        .expect("summary.units is an object")
        .keys()
        .collect();
    let fold_units: BTreeSet<&String> = fold.units.keys().collect();
    assert_eq!(
        summary_units, fold_units,
        "summary units differ from planned units"
    );
    for id in fold.units.keys() {
        let s = &summary["units"][id];
        let e = &expected["units"][id];
        for key in ["status", "outcome", "attempts", "flaky"] {
            assert_eq!(
                s[key], e[key],
                "summary unit `{id}` `{key}` differs from the fold"
            );
        }
        assert!(
            s["status"] != "running" && s["status"] != "pending" && s["status"] != "retrying",
            "unit `{id}` is not settled in a finished run: {s}"
        );
    }
    assert_eq!(
        summary["counts"]["running"], 0,
        "nothing may run after the run"
    );
    let c = &summary["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(
        n("passed") + n("failed") + n("skipped"),
        n("total"),
        "every unit is passed, failed or skipped: {c}"
    );
}

/// Runs [`check_stream`] and [`check_summary`] on the project's single run, checks the
/// closing stdout line against the counts and `run_finished.exit_code` against the
/// process's, and returns the events and the summary.
#[track_caller]
pub fn check_run(project: &Project, out: &Output) -> (Vec<Value>, Value) {
    let events = project.events();
    let fold = check_stream(&events, &project.run_dir());
    let summary = project.summary();
    check_summary(&summary, &fold);
    let c = fold.counts;
    assert_counts_line(out.last_line(), c.passed, c.failed, c.skipped, out);
    let finished = events.last().unwrap();
    assert_eq!(
        finished["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "run_finished.exit_code differs from the process exit code\n{out}"
    );
    (events, summary)
}

/// Unit ids and statuses, for messages.
pub fn unit_table(summary: &Value) -> String {
    summary["units"]
        .as_object()
        .map(|units| {
            units
                .iter()
                .map(|(id, u)| format!("{id}: {} {}", u["status"], u["outcome"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Waits until `path` exists (a unit signalling that it got somewhere).
#[track_caller]
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(POLL);
    }
}

/// Live processes (not zombies, not this test process) whose command line or
/// environment contains `needle`: `(pid, cmdline)`.
///
/// Prefer the project's marker as `needle`: a command line such as `sleep 3141` is not
/// unique when two copies of the suite run at once on the same machine.
pub fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let environ = String::from_utf8_lossy(&environ);
        if !cmdline.contains(needle) && !environ.contains(needle) {
            continue;
        }
        if is_zombie(&dir) {
            continue;
        }
        found.push((pid, cmdline.trim().to_string()));
    }
    found
}

fn is_zombie(proc_dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return true; // gone
    };
    // The state follows the parenthesised command name, which may contain spaces.
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        .unwrap_or(false)
}

/// Asserts that no process carrying `needle` survives. A process killed an instant
/// before the runner exited may still be on its way out, so this waits up to 2 s
/// for them to disappear; whatever is left is killed (so the machine stays clean)
/// and reported.
#[track_caller]
pub fn assert_no_process_with(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = processes_with(needle);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
        left = processes_with(needle);
    }
    if !left.is_empty() {
        for (pid, _) in &left {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        panic!("processes with {needle:?} survived the run: {left:#?}");
    }
}

/// A shell snippet that waits (up to 20 s) until `path` exists, then continues;
/// exits 97 when it never appears, so a broken ordering fails loudly instead of hanging.
pub fn sh_wait_for(path: &str) -> String {
    format!(
        "i=0; while [ ! -e {path} ]; do i=$((i+1)); if [ $i -gt 400 ]; then echo 'gave up waiting for {path}'; exit 97; fi; sleep 0.05; done"
    )
}

/// A test that needs an optional tool that is missing: says so on stderr (visible with
/// `--nocapture` and in the test's output) and returns; under `CI=true` (where `.ci/run`
/// installs every such tool) it fails instead, so nothing passes silently in CI.
#[track_caller]
pub fn skip_without(tool: &str, install: &str) {
    let message = format!("SKIPPED: {tool} is not installed ({install})");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{message}, and CI=true: CI must install it");
    }
    eprintln!("{message}");
}

/// A unit's output from its `log` location: `PATH`, or `PATH#OFFSET+LEN,…` (the run log).
pub fn read_unit_log(location: &str) -> String {
    let Some((path, segments)) = location.split_once('#') else {
        return std::fs::read_to_string(location).unwrap();
    };
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    for segment in segments.split(',') {
        let (offset, len) = segment.split_once('+').unwrap();
        let (offset, len): (usize, usize) = (offset.parse().unwrap(), len.parse().unwrap());
        out.extend_from_slice(&bytes[offset..offset + len]);
    }
    String::from_utf8(out).unwrap()
}
