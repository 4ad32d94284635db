//! Detached background runs: `--queue-e2e` and `--background-e2e` return at once
//! while a worker runs the background layers; `--background-status` and
//! `--background-results` follow it; `--kill-background` leaves no process behind; a
//! worker killed with SIGKILL shows up as `dead`; `max_concurrent` queues runs; and
//! `--execution-mode hybrid` runs foreground and background layers in one run.
//!
//! Units wait for files the test creates (`go`), so "running" is observed without
//! sleeps; every unit carries the project's marker so /proc scans find leftovers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// "Returns at once": generous, the point is that it does not wait for the layers.
const RETURNS_WITHIN: Duration = Duration::from_secs(5);

/// A foreground layer `fast` and a background layer `e2e` of two units that wait for
/// `go` (so the test decides when they finish), then run `tail` (shell).
fn project(tail: &str) -> Project {
    let project = Project::new();
    for i in 1..=2 {
        project.file(
            &format!("e2e/test_{i}.sh"),
            &format!("{}\n{tail}\n", sh_wait_for("go")),
        );
    }
    project.layers(
        r#"
version: 1
execution: { kill_grace_seconds: 1 }
categories:
  unit:
    command: "true"
  slow:
    command: "sh {file}"
    files: "e2e/test_*.sh"
    env: { LR_MARK: "@MARK@" }
layers:
  - name: fast
    categories: [unit]
  - name: e2e
    background: true
    categories: [slow]
"#,
    );
    project
}

/// Runs a background command (`--background-status --json`, ...) and parses its stdout.
fn json_of(project: &Project, args: &[&str]) -> Value {
    let out = project.runner().args(args).arg("--json").run();
    out.assert_code(0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{out}"))
}

/// The run `id` in `--background-status --json`, wherever it is listed.
fn status_of(project: &Project, id: &str) -> Option<Value> {
    let view = json_of(project, &["--background-status"]);
    ["running", "queued", "finished"]
        .iter()
        .flat_map(|k| view[*k].as_array().cloned().unwrap_or_default())
        .find(|r| r["id"] == id)
}

/// Polls `probe` until it returns Some (at most [`WAIT_DEADLINE`]).
#[track_caller]
fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until run `id` is running with `n` units started.
#[track_caller]
fn wait_running(project: &Project, id: &str, n: u64) -> Value {
    wait_until(&format!("{id} running with {n} units"), || {
        status_of(project, id)
            .filter(|r| r["status"] == "running" && r["progress"]["running"].as_u64() == Some(n))
    })
}

/// Waits until run `id` is among `--background-results` and returns its entry.
#[track_caller]
fn wait_finished(project: &Project, id: &str) -> Value {
    wait_until(&format!("{id} finished"), || {
        json_of(project, &["--background-results", "50"])
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["id"] == id).cloned())
    })
}

/// Queues a background run and returns its id (the last line of stdout).
#[track_caller]
fn queue(project: &Project, extra: &[&str]) -> String {
    let out = project
        .runner()
        .arg("--queue-e2e")
        .args(extra)
        .spawn()
        .wait_within(Duration::from_secs(30));
    out.assert_code(0);
    assert!(
        out.elapsed < RETURNS_WITHIN,
        "--queue-e2e took {:?}: it must not wait for the layers\n{out}",
        out.elapsed
    );
    let id = last_line(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "no id printed\n{out}");
    out.assert_stderr_contains(&format!("background run {id} queued"));
    id
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn queued_run_returns_at_once_runs_detached_and_reports_its_results() {
    let project = project("echo done");
    let id = queue(&project, &[]);

    let running = wait_running(&project, &id, 2);
    assert_eq!(running["layers"], serde_json::json!(["e2e"]), "{running}");
    let pid = running["pid"].as_u64().expect("worker pid") as u32;
    assert_ne!(pid, std::process::id());
    // The human view shows it too.
    let text = project.runner().arg("--background-status").run();
    text.assert_code(0);
    assert!(
        text.stdout.contains(&id) && text.stdout.contains("running"),
        "{text}"
    );

    std::fs::write(project.path("go"), "").unwrap();
    let done = wait_finished(&project, &id);
    assert_eq!(done["status"], "passed", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["counts"]["passed"], 2, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    assert!(done["duration_ms"].as_u64().is_some(), "{done}");
    // Its events are a complete run of the background layer, at lower priority.
    let events_path = Path::new(done["events"].as_str().unwrap()).to_path_buf();
    let events = read_events(&events_path);
    let fold = check_stream(&events, events_path.parent().unwrap());
    check_summary(
        &read_json(Path::new(done["summary"].as_str().unwrap())),
        &fold,
    );
    assert_eq!(of_type(&events, "background_task_started").len(), 1);
    let started = of_type(&events, "layer_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["layer"], "e2e");
    assert_eq!(started[0]["background"], true);
    assert!(
        Path::new(done["junit"].as_str().unwrap()).is_file(),
        "junit report: {done}"
    );

    let text = project.runner().arg("--background-results").run();
    text.assert_code(0);
    assert!(
        text.stdout.contains(&id) && text.stdout.contains("passed"),
        "{text}"
    );
    assert!(text.stdout.contains("events.jsonl"), "{text}");

    let status = json_of(&project, &["--orchestration-status"]);
    let finished = status["background"]["finished"].as_array().unwrap();
    assert!(finished.iter().any(|r| r["id"] == id), "{status}");
    assert_no_process_with(project.marker());
}

#[test]
fn background_e2e_runs_the_foreground_here_and_the_background_detached() {
    let project = project("echo done");
    std::fs::write(project.path("go"), "").unwrap();
    let out = project
        .runner()
        .args(["--use-layers", "fast", "--background-e2e"])
        .spawn()
        .wait_within(Duration::from_secs(30));
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let id = out
        .stderr
        .split("background run ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no background run id on stderr\n{out}"))
        .to_string();
    // The foreground run did not run the background layer.
    let (events, _) = check_run(&project, &out);
    assert!(
        of_type(&events, "layer_started")
            .iter()
            .all(|e| e["layer"] == "fast"),
        "{}",
        dump(&events)
    );
    let done = wait_finished(&project, &id);
    assert_eq!(done["status"], "passed", "{done}");
    assert_eq!(done["counts"]["passed"], 2, "{done}");
    assert_no_process_with(project.marker());
}

#[test]
fn kill_background_stops_the_whole_tree_and_marks_it_cancelled() {
    let project = project("");
    // Units that would outlive everything: a plain sleep and a setsid escapee.
    project.file("e2e/test_1.sh", "setsid sleep 4711 &\nsleep 4712\n");
    project.file("e2e/test_2.sh", "sleep 4713\n");
    let id = queue(&project, &[]);
    let running = wait_running(&project, &id, 2);
    let pid = running["pid"].as_u64().unwrap() as u32;
    wait_until("the escapee to start", || {
        (!processes_with("sleep 4711").is_empty()).then_some(())
    });

    // A unique suffix of the id is enough.
    let suffix = &id[id.len() - 6..];
    let out = project.runner().args(["--kill-background", suffix]).run();
    out.assert_code(0);
    assert!(out.stdout.contains("cancelled"), "{out}");

    let run = status_of(&project, &id).expect("still listed");
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || processes_with(&id).is_empty(),
        "the worker survived"
    );
    for sleep in ["sleep 4711", "sleep 4712", "sleep 4713"] {
        assert!(
            processes_with(sleep).is_empty(),
            "`{sleep}` survived: {:?}",
            processes_with(sleep)
        );
    }
    assert_no_process_with(project.marker());
    // Killing it again is harmless.
    let again = project.runner().args(["--kill-background", &id]).run();
    again.assert_code(0);
    assert!(again.stdout.contains("already finished"), "{again}");
}

#[test]
fn a_worker_killed_with_sigkill_is_dead_not_running_forever() {
    let project = project("");
    project.file("e2e/test_1.sh", "sleep 4721\n");
    project.file("e2e/test_2.sh", "sleep 4722\n");
    let id = queue(&project, &[]);
    let running = wait_running(&project, &id, 2);
    let pid = running["pid"].as_u64().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let dead = wait_until("the run to show as dead", || {
        status_of(&project, &id).filter(|r| r["status"] == "dead")
    });
    assert!(
        dead["message"].as_str().unwrap_or("").contains("gone"),
        "{dead}"
    );
    let results = json_of(&project, &["--background-results"]);
    assert!(
        results
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id && r["status"] == "dead"),
        "{results}"
    );
    // The worker's watchdog ended its units; --kill-background sweeps anything left.
    let out = project.runner().args(["--kill-background", &id]).run();
    out.assert_code(0);
    assert_no_process_with(project.marker());
    assert_eq!(status_of(&project, &id).unwrap()["status"], "dead");
}

#[test]
fn max_concurrent_queues_runs_first_come_first_served() {
    let project = project("echo done");
    project.file("agents/background_e2e.yaml", "max_concurrent: 1\n");
    let first = queue(&project, &[]);
    wait_running(&project, &first, 2);
    let second = queue(&project, &[]);
    // While the first runs, the second waits in the queue (its worker is alive).
    let queued = wait_until("the second run's worker", || {
        status_of(&project, &second).filter(|r| r["pid"].is_u64())
    });
    assert_eq!(queued["status"], "queued", "{queued}");
    let view = json_of(&project, &["--background-status"]);
    assert_eq!(view["max_concurrent"], 1, "{view}");
    assert_eq!(view["running"].as_array().unwrap().len(), 1, "{view}");

    // A third one, cancelled while it waits: the others are not disturbed.
    let third = queue(&project, &[]);
    wait_until("the third run's worker", || {
        status_of(&project, &third).filter(|r| r["pid"].is_u64())
    });
    let out = project.runner().args(["--kill-background", &third]).run();
    out.assert_code(0);
    let cancelled = status_of(&project, &third).unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(
        cancelled["started_at"].is_null(),
        "it never ran: {cancelled}"
    );
    assert_eq!(status_of(&project, &first).unwrap()["status"], "running");
    assert_eq!(status_of(&project, &second).unwrap()["status"], "queued");

    std::fs::write(project.path("go"), "").unwrap();
    let a = wait_finished(&project, &first);
    let b = wait_finished(&project, &second);
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("passed"), Some("passed"))
    );
    let ts = |v: &Value, k: &str| v[k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert!(
        ts(&b, "started_at") >= ts(&a, "finished_at"),
        "the second started before the first finished:\n{a}\n{b}"
    );
    assert_no_process_with(project.marker());
}

#[test]
fn background_timeout_is_the_workers_deadline() {
    let project = project("");
    project.file("e2e/test_1.sh", "sleep 4731\n");
    project.file("e2e/test_2.sh", "sleep 4732\n");
    let id = queue(&project, &["--background-timeout", "0.02"]);
    let done = wait_finished(&project, &id);
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["timeout_minutes"], 0.02, "{done}");
    assert!(
        done["message"].as_str().unwrap_or("").contains("timeout"),
        "{done}"
    );
    assert_no_process_with(project.marker());
}

#[test]
fn queue_by_category_and_errors() {
    let project = project("echo done");
    std::fs::write(project.path("go"), "").unwrap();
    let id = queue(&project, &["--background-category", "unit"]);
    let done = wait_finished(&project, &id);
    assert_eq!(done["status"], "passed", "{done}");
    assert_eq!(done["categories"], serde_json::json!(["unit"]), "{done}");
    assert_eq!(done["counts"]["passed"], 1, "{done}");

    let out = project
        .runner()
        .args(["--queue-e2e", "--background-category", "unti"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("did you mean `unit`?");
    let out = project.runner().args(["--kill-background", "nope"]).run();
    out.assert_code(2)
        .assert_stderr_contains("no background run `nope`");
}

#[test]
fn hybrid_runs_foreground_and_background_together_and_reports_both() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  unit:
    command: "echo fg > fg.txt"
  slow:
    command: "awk '{print $19}' /proc/self/stat > nice.txt; exit 1"
layers:
  - name: fast
    categories: [unit]
  - name: e2e
    background: true
    categories: [slow]
"#,
    );
    let out = project.runner().args(["--execution-mode", "hybrid"]).run();
    out.assert_code(1).assert_counts_line(1, 1, 0);
    let (events, summary) = check_run(&project, &out);
    assert_eq!(layer_finished(&events, "fast")["outcome"], "passed");
    assert_eq!(layer_finished(&events, "e2e")["outcome"], "failed");
    let started: Vec<_> = of_type(&events, "layer_started");
    let bg = started.iter().find(|e| e["layer"] == "e2e").unwrap();
    assert_eq!(bg["background"], true);
    assert_eq!(of_type(&events, "background_task_started").len(), 1);
    let finished = of_type(&events, "background_task_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"], "failed");
    assert_eq!(summary["layers"]["e2e"]["background"], true);
    assert!(project.path("fg.txt").is_file());
    // Background units run at lower priority: the runner's niceness + 10 (max 19).
    let own: i64 = std::fs::read_to_string("/proc/self/stat")
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    let nice: i64 = project.read("nice.txt").trim().parse().unwrap();
    assert_eq!(nice, (own + 10).min(19), "background niceness");
}

#[test]
fn hybrid_background_layer_waits_for_its_dependency() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  unit:
    command: "exit 1"
  slow:
    command: "touch ran.txt"
layers:
  - name: fast
    categories: [unit]
  - name: e2e
    background: true
    depends_on: [fast]
    categories: [slow]
"#,
    );
    let out = project.runner().args(["--execution-mode", "hybrid"]).run();
    out.assert_code(1).assert_counts_line(0, 1, 1);
    let (events, _) = check_run(&project, &out);
    let e2e = layer_finished(&events, "e2e");
    assert_eq!(e2e["outcome"], "skipped");
    assert!(
        e2e["reason"]
            .as_str()
            .unwrap()
            .contains("depends on layer `fast`"),
        "{e2e}"
    );
    assert!(!project.path("ran.txt").exists());
}

/// Foreground first (the measured defect: with 2 slots, four background units took both
/// slots at once and the fast layer's 2 ms unit waited 2 s). The fast unit now starts
/// before any background unit has finished, background units never hold more than
/// `background_max_slots` (all slots but one) at once, and every unit still runs.
#[test]
fn in_hybrid_mode_the_fast_layer_never_waits_for_background_units() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  quick: { command: "true" }
  e2e_a: { command: "sleep 1" }
  e2e_b: { command: "sleep 1" }
  e2e_c: { command: "sleep 1" }
  e2e_d: { command: "sleep 1" }
layers:
  - name: fast
    categories: [quick]
  - name: e2e
    background: true
    execution_mode: parallel
    categories: [e2e_a, e2e_b, e2e_c, e2e_d]
"#,
    );
    let out = project
        .runner()
        .args(["--execution-mode", "hybrid", "--jobs", "2"])
        .run();
    out.assert_code(0).assert_counts_line(5, 0, 0);
    let (events, _) = check_run(&project, &out);
    let quick_started = position(&events, "the fast unit's start", |e| {
        e["type"] == "test_started" && e["unit"] == "fast/quick/quick"
    });
    let first_background_end = position(&events, "a background unit's end", |e| {
        e["type"] == "test_finished" && e["unit"].as_str().unwrap().starts_with("e2e/")
    });
    assert!(
        quick_started < first_background_end,
        "the fast unit waited for a background unit\n{}",
        dump(&events)
    );
    // Never more than one background unit at once with 2 slots.
    let mut running = 0i32;
    for e in &events {
        let background = e["unit"].as_str().is_some_and(|u| u.starts_with("e2e/"));
        match e["type"].as_str() {
            Some("test_started") if background => running += 1,
            Some("test_finished") if background => running -= 1,
            _ => {}
        }
        assert!(
            running <= 1,
            "two background units at once\n{}",
            dump(&events)
        );
    }
}
