//! A closed stdout never panics: `runner --show-layers | head -c 10`.
//!
//! Listing commands whose reader goes away stop quietly and exit 141 (128 + SIGPIPE,
//! what a shell reports for `git log | head`); commands that act and then announce
//! exit with the action's code; a run keeps going to the end, writes its reports and
//! exits with the run's code. Each listing is given more than a pipe buffer (64 KiB)
//! of output, and its reader closes after 10 bytes.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use layered_runner::event::{Event, RunState};
use serde_json::{Value, json};

/// The exit code of a listing whose reader went away.
const CLOSED: i32 = 141;

/// Comfortably more than a pipe buffer.
const BIG: usize = 100 * 1024;

struct Closed {
    status: ExitStatus,
    stderr: String,
    read: Vec<u8>,
    cmdline: String,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "read: {:?}", String::from_utf8_lossy(&self.read))?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl Closed {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn assert_quiet(&self) -> &Self {
        assert!(!self.stderr.contains("panicked"), "panicked\n{self}");
        assert!(!self.stderr.contains("Broken pipe"), "{self}");
        self
    }
}

/// Runs `runner` with stdout read for `n` bytes and then closed (`n == 0`: a pipe whose
/// reader is closed before the runner starts, so its very first write fails).
fn with_stdout_closed_after(mut cmd: Command, n: usize) -> Closed {
    let cmdline = format!("{cmd:?}");
    if n == 0 {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        cmd.stdout(writer);
    } else {
        cmd.stdout(Stdio::piped());
    }
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn runner");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut read = vec![0; n];
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_exact(&mut read)
            .unwrap_or_else(|e| panic!("read {n} bytes of {cmdline}: {e}"));
    }
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmdline} did not exit within {RUN_DEADLINE:?} with its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Closed {
        status,
        stderr: stderr.join().unwrap(),
        read,
        cmdline,
    }
}

/// `runner --config PROJECT/layers.yaml ARGS`.
fn runner(project: &Project, args: &[&str]) -> Command {
    project.runner().args(args).into_command()
}

/// `runner SUBCOMMAND ...` in the project (subcommands take no top-level `--config`).
fn subcommand(project: &Project, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.current_dir(project.root())
        .args(args)
        .env_remove("RUNNER_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// A listing bigger than a pipe buffer stops quietly with 141 when its reader closes.
fn assert_listing_closes(command: impl Fn() -> Command) {
    let full = command().output().expect("run runner");
    assert_eq!(full.status.code(), Some(0), "{:?}: {full:?}", command());
    assert!(
        full.stdout.len() > BIG,
        "{:?} prints {} bytes: not enough to fill a pipe",
        command(),
        full.stdout.len()
    );
    let closed = with_stdout_closed_after(command(), 10);
    closed.assert_quiet();
    assert_eq!(closed.code(), Some(CLOSED), "{closed}");
}

/// Layers and categories enough for every listing of the configuration to pass 100 KiB.
fn big_project() -> Project {
    let project = Project::new();
    let mut yaml = String::from("version: 1\ncategories:\n");
    let name = |i: usize| format!("generated_category_with_a_long_name_{i:04}");
    for i in 0..1200 {
        yaml.push_str(&format!(
            "  {}: {{ command: \"echo unit {i} of a generated project\", min_memory_mb: 10, max_memory_mb: 20 }}\n",
            name(i)
        ));
    }
    yaml.push_str("layers:\n");
    for l in 0..30 {
        let cats: Vec<String> = (l * 40..(l + 1) * 40).map(name).collect();
        yaml.push_str(&format!(
            "  - name: layer_{l:02}\n    description: generated layer {l}\n    execution_order: {l}\n    resource_limits: {{ max_memory_mb: 4000, max_parallel_instances: 2 }}\n    categories: [{}]\n",
            cats.join(", ")
        ));
    }
    project.layers(&yaml);
    project
}

#[test]
fn show_layers_and_status_stop_quietly_when_the_reader_closes() {
    let project = big_project();
    assert_listing_closes(|| runner(&project, &["--show-layers"]));
    assert_listing_closes(|| runner(&project, &["--show-layers", "--json"]));
    assert_listing_closes(|| runner(&project, &["--orchestration-status"]));
    assert_listing_closes(|| runner(&project, &["--orchestration-status", "--json"]));
}

fn event(run_id: &str, seq: u64, kind: Value) -> Event {
    let mut v = json!({
        "v": 1, "seq": seq, "ts": "2026-01-01T00:00:00Z", "run_id": run_id, "agent": "test",
    });
    v.as_object_mut()
        .unwrap()
        .extend(kind.as_object().unwrap().clone());
    serde_json::from_value(v).expect("event")
}

/// Records a finished run of `units` units in the project's history.
fn record_history(project: &Project, units: usize) {
    let run_id = "20260101T000000-000001";
    let id = |i: usize| format!("main/generated/a_unit_with_a_rather_long_name_{i:05}");
    let mut state = RunState::default();
    let mut seq = 0;
    let mut apply = |state: &mut RunState, kind: Value| {
        seq += 1;
        state.apply(&event(run_id, seq, kind));
    };
    let planned: Vec<Value> = (0..units)
        .map(|i| json!({"id": id(i), "layer": "main", "category": "generated", "name": id(i)}))
        .collect();
    apply(
        &mut state,
        json!({"type": "run_started", "mode": "layers", "environment": "test",
               "config": "layers.yaml", "layers": ["main"], "slots": 2, "units": planned, "pid": 1}),
    );
    for i in 0..units {
        apply(
            &mut state,
            json!({"type": "test_started", "unit": id(i), "attempt": 1, "pid": 1}),
        );
        apply(
            &mut state,
            json!({"type": "test_finished", "unit": id(i), "attempt": 1, "outcome": "passed",
                   "will_retry": false, "duration_ms": 10 + i as u64}),
        );
    }
    apply(
        &mut state,
        json!({"type": "run_finished", "outcome": "passed", "exit_code": 0, "duration_ms": 1000}),
    );
    layered_runner::store::save(project.root(), &state).expect("record history");
}

#[test]
fn history_stops_quietly_when_the_reader_closes() {
    let project = Project::new();
    project.layers("version: 1\ncategories:\n  c: { command: \"true\" }\n");
    record_history(&project, 1500);
    for args in [
        &["history", "--slowest", "2000"][..],
        &["history", "--slowest", "2000", "--json"],
    ] {
        assert_listing_closes(|| subcommand(&project, args));
    }
}

#[test]
fn background_results_stop_quietly_when_the_reader_closes() {
    use layered_runner::background::{BackgroundRun, Status, Store};
    let project = Project::new();
    project.layers("version: 1\ncategories:\n  c: { command: \"true\" }\n");
    let store = Store::new(project.root());
    for i in 0..300 {
        let id = format!("20260101T0000{:02}-{i:06x}", i % 60);
        let mut run = BackgroundRun::queued(&id, &store.dir(&id), &project.path("layers.yaml"));
        run.status = Status::Passed;
        run.layers = (0..8).map(|l| format!("a_background_layer_{l}")).collect();
        run.finished_at = Some(format!("2026-01-01T00:{:02}:00Z", i % 60));
        run.exit_code = Some(0);
        store.create(&run).expect("create background run");
    }
    assert_listing_closes(|| runner(&project, &["--background-results", "500", "--json"]));
    assert_listing_closes(|| runner(&project, &["--background-results", "500"]));
    // Short listings whose reader is gone before the first line.
    for args in [
        &["--background-status"][..],
        &["--background-status", "--json"],
        &["--orchestration-status"],
    ] {
        let closed = with_stdout_closed_after(runner(&project, args), 0);
        closed.assert_quiet();
        assert_eq!(closed.code(), Some(CLOSED), "{closed}");
    }
}

#[test]
fn completions_and_merge_junit_never_panic_on_a_closed_stdout() {
    let project = Project::new();
    project.layers("version: 1\ncategories:\n  c: { command: \"true\" }\n");
    for shell in ["bash", "zsh", "fish"] {
        let closed = with_stdout_closed_after(subcommand(&project, &["completions", shell]), 0);
        closed.assert_quiet();
        assert_eq!(closed.code(), Some(CLOSED), "{closed}");
    }
    project.file(
        "a.xml",
        r#"<testsuites><testsuite name="s" tests="1"><testcase name="t"/></testsuite></testsuites>"#,
    );
    // merge-junit acts, then announces: the merged file is its product and the code is 0.
    let closed = with_stdout_closed_after(
        subcommand(&project, &["merge-junit", "merged.xml", "a.xml"]),
        0,
    );
    closed.assert_quiet();
    assert_eq!(closed.code(), Some(0), "{closed}");
    assert!(project.path("merged.xml").is_file(), "{closed}");
}

fn run_project() -> Project {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  first: { command: "echo first", priority_order: 1 }
  slow: { command: "sleep 1; echo slow", priority_order: 2 }
  bad: { command: "echo broken; exit 1", priority_order: 3 }
layers:
  - name: main
    execution_mode: hybrid
    fail_fast: disabled
    categories: [first, slow, bad]
"#,
    );
    project
}

#[test]
fn a_run_with_its_stdout_closed_goes_on_to_the_end() {
    for (mode, read) in [("simple", 10), ("json", 10), ("silent", 0), ("simple", 0)] {
        let project = run_project();
        let closed = with_stdout_closed_after(
            runner(&project, &["--use-layers", "main", "--progress-mode", mode]),
            read,
        );
        closed.assert_quiet();
        assert_eq!(
            closed.code(),
            Some(1),
            "a failed unit: the run's code\n{closed}"
        );
        let summary = project.summary();
        assert_eq!(summary["outcome"], "failed", "{closed}");
        assert_eq!(summary["counts"]["passed"], 2, "{closed}");
        assert_eq!(summary["counts"]["failed"], 1, "{closed}");
        assert_eq!(
            of_type(&project.events(), "run_finished").len(),
            1,
            "{closed}"
        );
    }
}
