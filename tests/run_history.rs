//! History (`.runner/history.sqlite`) and what it drives: longest-first start order
//! (within a category and across the categories of a parallel layer), units without
//! history first, `--failed-first`, `--rerun-failed`, ETAs in the console, the
//! `runner history` subcommand, two runs recording at once, and a corrupt database that
//! never fails a run.
//!
//! Start orders are read from `test_started` timestamps (then `seq`) of runs with
//! `--jobs 1`, where one unit runs at a time and the order is the scheduler's choice.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const RUN: Duration = Duration::from_secs(60);

/// A unit script: sleeps `secs`, then fails when `fail_<name>` exists in the project.
fn script(name: &str, secs: f64) -> String {
    format!("sleep {secs}\nif [ -e fail_{name} ]; then echo failing; exit 1; fi\n")
}

/// A project with one layer `fast` of one category `unit`, one unit per `(name, secs)`.
fn project(units: &[(&str, f64)]) -> Project {
    let p = Project::new();
    p.layers(
        r#"
categories:
  unit: { command: "sh {file}", files: "t/*.sh" }
layers:
  - { name: fast, categories: [unit] }
"#,
    );
    for (name, secs) in units {
        p.file(&format!("t/{name}.sh"), &script(name, *secs));
    }
    p
}

/// The events of the newest run (by its first event's timestamp: run ids sort by the
/// second they started in, then at random).
fn last_events(p: &Project) -> Vec<Value> {
    p.run_dirs()
        .iter()
        .map(|d| read_events(&d.join("events.jsonl")))
        .max_by_key(|events| events[0]["ts"].as_str().unwrap().to_string())
        .expect("a run directory")
}

/// Unit names (file stems) in the order their first attempt started, by timestamp.
fn start_order(events: &[Value]) -> Vec<String> {
    let mut started: Vec<(String, u64, String)> = of_type(events, "test_started")
        .iter()
        .filter(|e| e["attempt"] == 1)
        .map(|e| {
            let unit = e["unit"].as_str().unwrap();
            let stem = unit.rsplit('/').next().unwrap().trim_end_matches(".sh");
            (
                e["ts"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
                stem.to_string(),
            )
        })
        .collect();
    // RFC 3339 UTC with milliseconds: text order is time order.
    started.sort();
    started.into_iter().map(|(_, _, name)| name).collect()
}

/// Unit names planned in `run_started`.
fn planned(events: &[Value]) -> Vec<String> {
    of_type(events, "run_started")[0]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let id = u["id"].as_str().unwrap();
            id.rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".sh")
                .to_string()
        })
        .collect()
}

/// `runner history ARGS` in the project (a subcommand: no top-level `--config`).
fn history(p: &Project, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(p.root())
        .arg("history")
        .args(args)
        .env_remove("RUNNER_CONFIG")
        .output()
        .expect("run runner history")
}

fn run(p: &Project, args: &[&str]) -> Output {
    p.runner()
        .args([
            "--use-layers",
            "fast",
            "--jobs",
            "1",
            "--progress-mode",
            "simple",
        ])
        .args(args)
        .spawn()
        .wait_within(RUN)
}

#[test]
fn the_longest_unit_starts_first_once_history_knows_it() {
    let p = project(&[("a", 0.05), ("b", 0.05), ("c", 0.05), ("z", 0.5)]);
    run(&p, &[]).assert_code(0).assert_counts_line(4, 0, 0);
    assert_eq!(
        start_order(&last_events(&p)),
        ["a", "b", "c", "z"],
        "without history nothing moves"
    );
    assert!(p.path(".runner/history.sqlite").exists());

    let out = run(&p, &[]);
    out.assert_code(0).assert_counts_line(4, 0, 0);
    let events = last_events(&p);
    let order = start_order(&events);
    assert_eq!(order[0], "z", "the 0.5 s unit starts first: {order:?}");
    let z = of_type(&events, "run_started")[0]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "t/z.sh")
        .unwrap()["expected_ms"]
        .as_u64()
        .expect("expected_ms from history");
    assert!((400..5000).contains(&z), "expected_ms {z}");
    // The console shows the ETA of the run and of the layer.
    assert!(
        out.stdout.contains("units, ~") && out.stdout.contains(" expected)"),
        "no ETA on the layer line\n{out}"
    );
}

#[test]
fn units_without_history_start_before_known_short_ones() {
    let p = project(&[("a", 0.05), ("b", 0.05), ("z", 0.3)]);
    run(&p, &[]).assert_code(0);
    p.file("t/m.sh", &script("m", 0.05));
    run(&p, &[]).assert_code(0).assert_counts_line(4, 0, 0);
    let order = start_order(&last_events(&p));
    assert_eq!(
        &order[..2],
        ["m", "z"],
        "unknown first, then longest: {order:?}"
    );
}

#[test]
fn across_the_categories_of_a_parallel_layer_the_longest_starts_first() {
    let p = Project::new();
    p.layers(
        r#"
categories:
  quick: { command: "sh {file}", files: "q/*.sh" }
  slow: { command: "sh {file}", files: "s/*.sh" }
layers:
  - { name: fast, execution_mode: parallel, categories: [slow, quick] }
"#,
    );
    for name in ["q1", "q2", "q3"] {
        p.file(&format!("q/{name}.sh"), &script(name, 0.05));
    }
    p.file("s/s1.sh", &script("s1", 0.4));
    p.file("s/s2.sh", &script("s2", 0.3));
    run(&p, &[]).assert_code(0).assert_counts_line(5, 0, 0);
    for _ in 0..2 {
        run(&p, &[]).assert_code(0).assert_counts_line(5, 0, 0);
        let order = start_order(&last_events(&p));
        assert_eq!(
            &order[..2],
            ["s1", "s2"],
            "the slow category's long units start before the quick category's: {order:?}"
        );
    }
}

#[test]
fn failed_first_starts_last_runs_failures_first() {
    let p = project(&[("a", 0.05), ("b", 0.05), ("z", 0.3)]);
    p.file("fail_b", "");
    run(&p, &[]).assert_code(1);
    run(&p, &["--failed-first"]).assert_code(1);
    let order = start_order(&last_events(&p));
    assert_eq!(order, ["b", "z", "a"], "failure first, then longest-first");
    run(&p, &[]).assert_code(1);
    let order = start_order(&last_events(&p));
    assert_eq!(order[0], "z", "without the flag, longest first: {order:?}");
}

#[test]
fn rerun_failed_runs_only_what_failed_or_did_not_finish() {
    let p = project(&[("a", 0.02), ("b", 0.02), ("c", 0.02), ("d", 0.02)]);
    // No history yet: everything runs (running nothing could hide failures).
    p.file("fail_b", "");
    let out = run(&p, &["--rerun-failed", "--fast-fail"]);
    out.assert_code(1);
    let events = last_events(&p);
    assert_eq!(planned(&events), ["a", "b", "c", "d"]);
    assert!(
        of_type(&events, "warning")
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("running them all")),
        "{}",
        dump(&events)
    );
    // b failed; c and d were skipped by fail-fast: they did not finish.
    assert_eq!(start_order(&events), ["a", "b"]);

    run(&p, &["--rerun-failed"]).assert_code(1);
    let events = last_events(&p);
    let mut rerun = planned(&events);
    rerun.sort();
    assert_eq!(rerun, ["b", "c", "d"], "a passed last time");

    std::fs::remove_file(p.path("fail_b")).unwrap();
    run(&p, &["--rerun-failed"])
        .assert_code(0)
        .assert_counts_line(1, 0, 0);
    assert_eq!(planned(&last_events(&p)), ["b"]);

    let runs = p.run_dirs().len();
    let out = run(&p, &["--rerun-failed"]);
    out.assert_code(0)
        .assert_counts_line(0, 0, 0)
        .assert_stderr_contains("nothing to run");
    assert_eq!(p.run_dirs().len(), runs, "nothing ran: no run directory");

    // `runner history` shows b as flaky (it failed, then passed) with its figures.
    let out = history(&p, &["--flaky", "--slowest", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(v["runs"], 3, "{v}");
    assert_eq!(v["slowest"].as_array().unwrap().len(), 2, "{v}");
    let flaky = v["flaky"].as_array().unwrap();
    assert_eq!(flaky.len(), 1, "{v}");
    assert_eq!(flaky[0]["unit"], "fast/unit/t/b.sh");
    assert_eq!(flaky[0]["failed"], 2);
    assert_eq!(flaky[0]["passed"], 1);
    let text = history(&p, &["--config", p.path("layers.yaml").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    assert!(stdout.contains("slowest 4 unit(s)"), "{stdout}");
    assert!(stdout.contains("fast/unit/t/b.sh"), "{stdout}");
}

/// Waits until `done()` holds, polling; panics with `what` after the harness deadline.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_runs_recording_at_once_lose_nothing() {
    // Each run waits in its `gate` unit for the file `go` (at most 30 s, so nothing
    // outlives a failed test), which the test creates once it holds the write lock.
    let p = Project::new();
    p.layers(
        r#"
categories:
  unit: { command: "sh {file}", files: "t/*.sh" }
  gate: { command: "for i in $(seq 1500); do [ -e go ] && exit 0; sleep 0.02; done; exit 1" }
layers:
  - { name: fast, categories: [unit, gate] }
"#,
    );
    for i in 0..30 {
        p.file(&format!("t/u{i:02}.sh"), "true\n");
    }
    // A first run creates the database.
    p.file("go", "");
    run(&p, &[]).assert_code(0);
    std::fs::remove_file(p.path("go")).unwrap();
    let first: Vec<PathBuf> = p.run_dirs();
    let spawn = || {
        p.runner()
            .args(["--use-layers", "fast", "--progress-mode", "simple"])
            .spawn()
    };
    let mut one = spawn();
    let mut two = spawn();
    let new_dirs = || -> Vec<PathBuf> {
        p.run_dirs()
            .into_iter()
            .filter(|d| !first.contains(d))
            .collect()
    };
    let has = |dir: &PathBuf, what: &str| {
        dir.join("events.jsonl").exists()
            && std::fs::read_to_string(dir.join("events.jsonl"))
                .unwrap_or_default()
                .contains(what)
    };
    wait_until("both runs started", || {
        let d = new_dirs();
        d.len() == 2 && d.iter().all(|d| has(d, "\"run_started\""))
    });
    // Hold the write lock while both finish: each must wait for it, then record.
    let db = rusqlite::Connection::open(p.path(".runner/history.sqlite")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    p.file("go", "");
    let dirs = new_dirs();
    wait_until("both summaries", || {
        dirs.iter().all(|d| d.join("summary.json").exists())
    });
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(300) {
        assert!(
            one.try_wait().is_none() && two.try_wait().is_none(),
            "a run ended while the history was locked: it did not wait to record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    one.wait_within(RUN)
        .assert_code(0)
        .assert_counts_line(31, 0, 0);
    two.wait_within(RUN)
        .assert_code(0)
        .assert_counts_line(31, 0, 0);

    let history = layered_runner::store::History::open_existing(&p.path(".runner/history.sqlite"))
        .unwrap()
        .expect("history");
    let runs: Vec<String> = history
        .runs(10)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let units = history.all_units().unwrap();
    assert_eq!(units.len(), 31);
    for dir in &dirs {
        let id = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            runs.iter().any(|r| r == id),
            "run {id} not recorded: {runs:?}"
        );
        let results = units
            .values()
            .filter(|u| u.results.iter().any(|r| r.run_id == id))
            .count();
        assert_eq!(results, 31, "every unit of run {id} recorded");
    }
}

#[test]
fn a_corrupt_history_is_reported_and_the_run_still_passes() {
    let p = project(&[("a", 0.01), ("b", 0.01)]);
    let garbage = "not an sqlite database\n".repeat(200);
    p.file(".runner/history.sqlite", &garbage);
    let out = run(&p, &[]);
    out.assert_code(0)
        .assert_counts_line(2, 0, 0)
        .assert_stderr_contains("runner: history: cannot record this run");
    let events = last_events(&p);
    let warnings: Vec<&str> = of_type(&events, "warning")
        .iter()
        .map(|w| w["message"].as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("history") && w.contains("unreadable")),
        "{warnings:?}"
    );
    assert!(out.stdout.contains("WARN"), "the console says so\n{out}");
    assert_eq!(p.read(".runner/history.sqlite"), garbage, "left as it was");
    // `runner history` reports it too, as an infrastructure error.
    let h = history(&p, &[]);
    assert_eq!(h.status.code(), Some(3), "{h:?}");
    assert!(
        String::from_utf8_lossy(&h.stderr).contains("unreadable"),
        "{h:?}"
    );
}

/// A history that was readable when the run started and cannot be written at its end
/// (here a unit replaces the database by a directory) loses the run's results: the run
/// exits 3 and its summary records the fault; nothing reports green.
#[test]
fn a_history_that_fails_to_record_fails_the_run() {
    let p = Project::new();
    p.layers(
        r#"
categories:
  sabotage: { command: "rm -rf .runner/history.sqlite* && mkdir -p .runner/history.sqlite" }
layers:
  - { name: fast, categories: [sabotage] }
"#,
    );
    let out = p.runner().args(["--use-layers", "fast"]).run();
    out.assert_code(3)
        .assert_stderr_contains("runner: history: cannot record this run");
    let summary = p.summary();
    assert_eq!(summary["exit_code"], 3, "{summary}");
    assert_eq!(
        summary["internal_errors"][0]["task"], "history",
        "{summary}"
    );
    assert_eq!(summary["counts"]["passed"], 1, "the unit itself passed");
}
