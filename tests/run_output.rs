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
    assert_eq!(read_unit_log(log), "deep output\n");
}

/// Passing units write no file of their own: their output is in the run's `output.log`,
/// located by the `log` field of `test_finished` (and the summary); a failing unit's
/// output gets a file of its own.
#[test]
fn passing_output_lives_in_the_run_log_and_failures_get_a_file() {
    let project = small_project();
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(1);
    let summary = project.summary();
    // The runner's own cost is in the summary.
    let cost = &summary["runner_cost"];
    assert!(
        cost["user_ms"].is_u64() && cost["system_ms"].is_u64(),
        "{cost}"
    );
    assert!(cost["peak_rss_kb"].as_u64().unwrap() > 0, "{cost}");
    let good = summary["units"]["main/good/good"]["log"].as_str().unwrap();
    assert!(good.contains("output.log#"), "{good}");
    assert_eq!(read_unit_log(good), "fine\n");
    let bad = summary["units"]["main/bad/bad"]["log"].as_str().unwrap();
    assert!(!bad.contains('#'), "{bad}");
    assert_eq!(read_unit_log(bad), "broken\n");
    let logs = project.run_dir().join("logs");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert_eq!(
        files,
        vec![1],
        "one file, the failing unit's, in {}",
        logs.display()
    );
}

/// What a running unit printed is on disk while it runs (so `tail -f` shows a hanging
/// test) and stays there when the runner is killed with SIGKILL.
#[test]
fn output_is_readable_while_running_and_survives_a_killed_runner() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  hangs: { command: "echo $$ > unit.pid; echo still-working; exec sleep 3148" }
layers:
  - name: main
    categories: [hangs]
"#,
    );
    let mut runner = project.runner().args(["--use-layers", "main"]).spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let log = loop {
        let log = project.run_dirs().first().map(|d| d.join("output.log"));
        if let Some(log) =
            log.filter(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains("still-working")))
        {
            break log;
        }
        if std::time::Instant::now() > deadline || runner.try_wait().is_some() {
            runner.kill();
            panic!("the unit's output never reached output.log while it ran");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // SIGKILL: nothing of the runner's shutdown runs.
    runner.kill();
    let unit: u32 = project.read("unit.pid").trim().parse().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &unit.to_string()])
        .status();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("still-working"), "{text}");
}
