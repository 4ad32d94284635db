//! Console and event outputs: `--progress-mode json|silent`, `--events PATH`.

mod common;

use common::*;
use serde_json::Value;

fn small_project() -> Project {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  good: { command: "echo fine" }
  bad: { command: "echo broken; exit 1" }
layers:
  - name: main
    fail_fast: disabled
    categories: [good, bad]
"#,
    );
    project
}

#[test]
fn json_progress_mode_streams_the_events_on_stdout() {
    let project = small_project();
    let out = project
        .runner()
        .args(["--use-layers", "main", "--progress-mode", "json"])
        .run();
    out.assert_code(1);
    let streamed: Vec<Value> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}\n{out}"))
        })
        .collect();
    let events = project.events();
    check_stream(&events, &project.run_dir());
    assert_eq!(
        streamed, events,
        "stdout carries exactly the events of events.jsonl"
    );
    // The closing line moves to stderr.
    assert_counts_line(last_line(&out.stderr), 1, 1, 0, &out);
}

#[test]
fn silent_progress_mode_prints_only_the_closing_line() {
    let project = small_project();
    let out = project
        .runner()
        .args(["--use-layers", "main", "--progress-mode", "silent"])
        .run();
    out.assert_code(1).assert_counts_line(1, 1, 0);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "silent prints one line\n{out}");
    check_run(&project, &out);
}

#[test]
fn events_flag_writes_the_same_events_elsewhere() {
    let project = small_project();
    let extra = project.path("elsewhere/events.jsonl");
    std::fs::create_dir_all(extra.parent().unwrap()).unwrap();
    let out = project
        .runner()
        .args(["--use-layers", "main", "--events"])
        .arg(&extra)
        .run();
    out.assert_code(1);
    let (events, _) = check_run(&project, &out);
    assert_eq!(read_events(&extra), events);
}

#[test]
fn simple_progress_mode_names_the_failure() {
    let project = small_project();
    let out = project
        .runner()
        .args(["--use-layers", "main", "--progress-mode", "simple"])
        .run();
    out.assert_code(1).assert_counts_line(1, 1, 0);
    assert!(
        out.stdout.contains("main/bad/bad"),
        "the failed unit is named\n{out}"
    );
    check_run(&project, &out);
}

/// A unit's log file name was built from its layer, category and path: past 255 bytes
/// the unit could not start ("File name too long"), with a deep test path or a long
/// category name alike. Any length runs now; the full id stays in the events.
#[test]
fn deep_paths_and_long_names_run() {
    let project = Project::new();
    let deep = (0..6)
        .map(|i| format!("{i}{}", "d".repeat(60)))
        .collect::<Vec<_>>()
        .join("/");
    let test_file = format!("tests/{deep}/test_{}.sh", "n".repeat(100));
    project.file(&test_file, "echo deep output\n");
    let category = "c".repeat(124);
    project.layers(&format!(
        r#"
version: 1
categories:
  {category}:
    command: "sh {{file}}"
    files: "tests/**/test_*.sh"
layers:
  - name: main
    categories: [{category}]
"#
    ));
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let events = project.events();
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "test_finished")
        .collect();
    assert_eq!(finished.len(), 1);
    let unit = finished[0]["unit"].as_str().unwrap();
    assert!(unit.contains(&test_file), "{unit}");
    let log = finished[0]["log"].as_str().unwrap();
    let name = std::path::Path::new(log).file_name().unwrap();
    assert!(name.len() < 255, "{log}");
    assert_eq!(std::fs::read_to_string(log).unwrap(), "deep output\n");
}
