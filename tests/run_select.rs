//! Selecting units from the command line, on the real binary: `--list` (text and JSON)
//! shows what a run would execute with the same flags, and `-E/--filter` keeps the
//! units an expression selects in runs, listings and shards; a bad expression is a
//! usage error pointing at its column.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// Two layers: `fast` (5 files in `unit`, two failing, and `lint`) and `slow` (3 files).
fn suite() -> Project {
    let project = Project::new();
    for i in 0..5 {
        let body = if i == 1 || i == 3 {
            "exit 1\n"
        } else {
            "exit 0\n"
        };
        project.file(&format!("unit/test_{i}.sh"), body);
    }
    for name in ["db", "api", "cli"] {
        project.file(&format!("integ/{name}_test.sh"), "exit 0\n");
    }
    project.layers(
        r#"
version: 1
categories:
  unit: { command: "sh {file}", files: ["unit/*.sh"] }
  lint: { command: "true" }
  integ: { command: "sh {file}", files: ["integ/*.sh"] }
layers:
  - name: fast
    fail_fast: disabled
    categories: [unit, lint]
  - name: slow
    categories: [integ]
"#,
    );
    project
}

fn list(project: &Project, args: &[&str]) -> Vec<Value> {
    let out = project.runner().args(["--list", "--json"]).args(args).run();
    out.assert_code(0);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        doc["count"].as_u64().unwrap() as usize,
        doc["units"].as_array().unwrap().len()
    );
    doc["units"].as_array().unwrap().clone()
}

fn ids(units: &[Value]) -> BTreeSet<String> {
    units
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn list_shows_what_would_run_and_runs_nothing() {
    let project = suite();
    let units = list(&project, &["--use-layers", "fast,slow"]);
    assert_eq!(units.len(), 9);
    let first = units
        .iter()
        .find(|u| u["id"] == "fast/unit/unit/test_0.sh")
        .unwrap();
    assert_eq!(first["layer"], "fast");
    assert_eq!(first["category"], "unit");
    assert_eq!(first["kind"], "command");
    assert_eq!(first["name"], "unit/test_0.sh");
    assert!(first["expected_ms"].is_null(), "no history yet: {first}");
    assert!(project.run_dirs().is_empty(), "--list must not start a run");

    // Text: a header, one line per unit, a total.
    let out = project
        .runner()
        .args(["--list", "--use-layers", "fast"])
        .run();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("LAYER") && lines[0].ends_with("NAME"),
        "{out}"
    );
    assert_eq!(lines.len(), 1 + 6 + 1, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lint") && l.contains("command")),
        "{out}"
    );
    assert!(lines.last().unwrap().starts_with("6 units"), "{out}");

    // After a run, the expected duration comes from history.
    project
        .runner()
        .args(["--use-layers", "fast"])
        .run()
        .assert_code(1);
    let units = list(&project, &["--use-layers", "fast"]);
    assert!(units.iter().all(|u| u["expected_ms"].is_u64()), "{units:?}");
}

#[test]
fn filter_selects_in_listings_and_runs() {
    let project = suite();
    let all = ["--use-layers", "fast,slow"];
    let with = |expr: &str| {
        let mut args = all.to_vec();
        args.extend(["-E", expr]);
        ids(&list(&project, &args))
    };
    assert_eq!(
        with("category(integ)"),
        set(&[
            "slow/integ/integ/api_test.sh",
            "slow/integ/integ/cli_test.sh",
            "slow/integ/integ/db_test.sh"
        ])
    );
    assert_eq!(
        with("test(*db*) | test(=lint)"),
        set(&["slow/integ/integ/db_test.sh", "fast/lint/lint"])
    );
    assert_eq!(
        with("layer(fast) & !test(~test_)"),
        set(&["fast/lint/lint"])
    );
    assert_eq!(
        with("test(/test_[13]/)"),
        set(&["fast/unit/unit/test_1.sh", "fast/unit/unit/test_3.sh"])
    );
    assert_eq!(with("kind(nextest)"), set(&[]));
    assert_eq!(with("not (layer(fast) or kind(command))").len(), 0);

    // A run executes exactly the filtered units.
    let out = project
        .runner()
        .args(all)
        .args(["-E", "layer(slow) | test(=unit/test_1.sh)"])
        .run();
    out.assert_code(1).assert_counts_line(3, 1, 0);
    assert!(out.stdout.contains("running 4 of 9 planned units"), "{out}");

    // `failed()` reads history: the failures of the last run.
    assert_eq!(with("failed()"), set(&["fast/unit/unit/test_1.sh"]));
    let out = project.runner().args(all).args(["-E", "failed()"]).run();
    out.assert_code(1).assert_counts_line(0, 1, 0);

    // Nothing selected: nothing runs, exit 0, and the reason.
    let out = project.runner().args(all).args(["-E", "test(=nope)"]).run();
    out.assert_code(0).assert_counts_line(0, 0, 0);
    out.assert_stderr_contains("selects none of the 9 planned units");
}

#[test]
fn filter_applies_before_partition() {
    let project = suite();
    let expr = "layer(fast)";
    let mut union = BTreeSet::new();
    for k in 1..=3 {
        let shard = ids(&list(
            &project,
            &[
                "--use-layers",
                "fast,slow",
                "-E",
                expr,
                "--partition",
                &format!("{k}/3"),
            ],
        ));
        assert_eq!(shard.len(), 2, "6 filtered units in 3 shards: {shard:?}");
        assert!(union.is_disjoint(&shard));
        union.extend(shard);
    }
    assert_eq!(
        union,
        ids(&list(&project, &["--use-layers", "fast,slow", "-E", expr]))
    );
}

#[test]
fn legacy_mode_lists_and_filters_too() {
    let project = suite();
    assert_eq!(
        ids(&list(
            &project,
            &["--categories", "unit,lint", "-E", "category(lint)"]
        )),
        set(&["legacy/lint/lint"])
    );
}

#[test]
fn a_bad_expression_is_a_usage_error_with_a_caret() {
    let project = suite();
    for args in [
        vec!["--use-layers", "fast", "-E", "layer(fast) & tset(x)"],
        vec![
            "--list",
            "--use-layers",
            "fast",
            "-E",
            "layer(fast) & tset(x)",
        ],
    ] {
        let out = project.runner().args(&args).run();
        out.assert_code(2);
        out.assert_stderr_contains("unknown function `tset`");
        out.assert_stderr_contains("did you mean `test`?");
        let lines: Vec<&str> = out.stderr.lines().collect();
        let src = lines
            .iter()
            .position(|l| l.ends_with("layer(fast) & tset(x)"))
            .unwrap();
        let at = lines[src].find("layer(fast)").unwrap() + "layer(fast) & ".len();
        assert_eq!(lines[src + 1].find('^'), Some(at), "{out}");
        assert!(project.run_dirs().is_empty(), "nothing runs: {out}");
    }
    let out = project
        .runner()
        .args(["--use-layers", "fast", "-E", "kind(comand)"])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("did you mean `command`?");
}

#[test]
fn show_layers_says_time_limit_and_expected_from_history() {
    let project = suite();
    let yaml = project.read("layers.yaml").replace(
        "  - name: slow\n",
        "  - name: slow\n    max_duration_minutes: 5\n",
    );
    project.layers(&yaml);
    let out = project.runner().arg("--show-layers").run();
    out.assert_code(0);
    assert!(out.stdout.contains("6 units"), "{out}");
    assert!(out.stdout.contains("time limit 5.0 min"), "{out}");
    assert!(!out.stdout.contains("estimated"), "{out}");
    assert!(!out.stdout.contains("expected"), "no history yet\n{out}");

    project
        .runner()
        .args(["--use-layers", "fast,slow"])
        .run()
        .assert_code(1);
    let out = project.runner().arg("--show-layers").run();
    assert!(out.stdout.contains("of work (history)"), "{out}");
    let out = project.runner().args(["--show-layers", "--json"]).run();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(doc["layers"][0]["expected_seconds"].is_f64(), "{out}");
    assert_eq!(
        doc["layers"][0]["categories"][0]["units_last_run"], 5,
        "{out}"
    );
}

#[test]
fn stress_count_repeats_every_unit_and_tallies_it() {
    let project = Project::new();
    project.file("stable.sh", "exit 0\n");
    project.file("broken.sh", "exit 1\n");
    // Fails on every second call: a counter file beside it.
    project.file(
        "alternating.sh",
        "n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count; [ $((n % 2)) -eq 0 ]\n",
    );
    project.layers(
        r#"
version: 1
categories:
  c: { command: "sh {file}", files: ["*.sh"], max_parallel_instances: 1 }
layers:
  - { name: l, fail_fast: disabled, categories: [c] }
"#,
    );
    let junit = project.path("junit.xml");
    let out = project
        .runner()
        .args([
            "--use-layers",
            "l",
            "--stress-count",
            "4",
            "--jobs",
            "1",
            "--junit",
        ])
        .arg(&junit)
        .run();
    out.assert_code(1).assert_counts_line(6, 6, 0);
    out.assert_stderr_contains(
        "stress: 4 iterations of 3 units: 1 always passed, 1 flaky, 1 always failed",
    );
    out.assert_stderr_contains("FLAKY l/c/alternating.sh: 2 passed, 2 failed");
    out.assert_stderr_contains("FAILING l/c/broken.sh: 0 passed, 4 failed");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for k in 1..=4 {
        assert!(
            xml.contains(&format!("name=\"stable.sh [{k}/4]\"")),
            "{xml}"
        );
    }
    assert_eq!(
        xml.matches("<testcase").count(),
        12,
        "every iteration: {xml}"
    );
    // Listing shows the iterations too; history keeps no iteration.
    let units = list(&project, &["--use-layers", "l", "--stress-count", "2"]);
    assert_eq!(units.len(), 6);
    assert!(
        !project.path(".runner/history.sqlite").exists(),
        "a stress run is not recorded in history"
    );
}

#[test]
fn stress_duration_stops_starting_iterations_once_it_has_passed() {
    let project = Project::new();
    project.file("slow.sh", "sleep 0.3\n");
    project.layers(
        r#"
version: 1
categories:
  c: { command: "sh {file}", files: ["*.sh"] }
layers:
  - { name: l, categories: [c] }
"#,
    );
    let out = project
        .runner()
        .args(["--use-layers", "l", "--jobs", "1"])
        .args(["--stress-duration", "1s", "--stress-count", "50"])
        .run();
    out.assert_code(0);
    let dir = project.run_dirs().pop().expect("a run directory");
    let events = read_events(&dir.join("events.jsonl"));
    let finished = events
        .iter()
        .filter(|e| e["type"] == "test_finished" && e["outcome"] == "passed")
        .count();
    let skipped: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "test_skipped")
        .collect();
    // The first iteration always runs; 50 of 0.3 s cannot fit in one second; every
    // iteration ends with exactly one outcome.
    assert!(finished >= 1 && !skipped.is_empty(), "{out}");
    assert_eq!(finished + skipped.len(), 50, "{out}");
    assert!(
        skipped
            .iter()
            .all(|e| e["reason"] == "--stress-duration has passed"),
        "{skipped:?}"
    );
    out.assert_stderr_contains("stress: 50 iterations of 1 units");

    project
        .runner()
        .args(["--use-layers", "l", "--stress-duration", "0"])
        .run()
        .assert_code(2);
}
