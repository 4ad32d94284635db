//! Layered runs end to end: per-file units, layer order and dependencies, the run
//! directory, `--show-layers` and `--orchestration-status`.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// Parses a unit's `out/<id>.env` record (`key=value` lines).
fn record(project: &Project, unit_id: &str) -> BTreeMap<String, String> {
    let rel = format!("out/{}.env", unit_id.replace('/', "_"));
    project
        .read(&rel)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn passing_two_layer_run_with_per_file_units() {
    let project = Project::from_fixture("two_layers");
    let out = project
        .runner()
        .args(["--use-layers", "fast,integration", "--jobs", "4"])
        .run();
    out.assert_code(0).assert_counts_line(5, 0, 0);
    let (events, summary) = check_run(&project, &out);

    // The plan: one unit per matching file (helper.sh is not test_*), in two layers.
    let started = &events[0];
    assert_eq!(started["mode"], "layers");
    assert_eq!(
        started["layers"],
        serde_json::json!(["fast", "integration"])
    );
    let unit_ids = planned_units(&events, "fast", "unit");
    assert_eq!(
        unit_ids.len(),
        3,
        "one unit per tests/unit/test_*.sh: {unit_ids:?}"
    );
    for file in ["test_alpha.sh", "test_beta.sh", "test_gamma.sh"] {
        assert!(
            unit_ids.iter().any(|id| id.ends_with(file)),
            "no unit for {file}: {unit_ids:?}"
        );
    }
    assert!(!unit_ids.iter().any(|id| id.contains("helper")));
    assert_eq!(planned_units(&events, "fast", "lint").len(), 1);
    assert_eq!(
        planned_units(&events, "integration", "integration").len(),
        1
    );

    // Layer order: `integration` starts only after `fast` has finished.
    let fast_done = position(&events, "layer_finished fast", |e| {
        e["type"] == "layer_finished" && e["layer"] == "fast"
    });
    let integ_start = position(&events, "layer_started integration", |e| {
        e["type"] == "layer_started" && e["layer"] == "integration"
    });
    assert!(
        fast_done < integ_start,
        "integration started before fast finished:\n{}",
        dump(&events)
    );
    assert_eq!(layer_finished(&events, "fast")["outcome"], "passed");
    assert_eq!(layer_finished(&events, "integration")["outcome"], "passed");

    // Every unit ran once and passed.
    let all: Vec<String> = started["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 5);
    for id in &all {
        let finished = unit_events(&events, "test_finished", id);
        assert_eq!(finished.len(), 1, "{id} finished once");
        assert_eq!(finished[0]["outcome"], "passed", "{id}");
        assert_eq!(finished[0]["attempt"], 1);
        assert_eq!(unit_events(&events, "test_started", id).len(), 1);
    }

    // summary.json agrees.
    assert_eq!(summary["outcome"], "passed");
    assert_eq!(summary["exit_code"], 0);
    let counts = &summary["counts"];
    assert_eq!(
        (counts["total"].as_u64(), counts["passed"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(counts["failed"], 0);
    assert_eq!(counts["skipped"], 0);
    assert_eq!(summary["layers"]["fast"]["counts"]["passed"], 4);
    assert_eq!(summary["layers"]["integration"]["counts"]["passed"], 1);
    assert!(
        project.run_dir().join("run.json").is_file(),
        "run.json is written"
    );
    assert!(
        project.run_dir().join("output.log").is_file(),
        "output.log is created (logs/ only holds failing units' output)"
    );

    // What each unit saw: cwd = project root, the RUNNER_* variables, the category env.
    let run_id = events[0]["run_id"].as_str().unwrap();
    let root = project.root().canonicalize().unwrap();
    for id in &all {
        let rec = record(&project, id);
        let unit = started["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id.as_str())
            .unwrap();
        assert_eq!(rec["cwd"], root.to_str().unwrap(), "{id}: cwd");
        assert_eq!(rec["RUNNER_RUN_ID"], run_id, "{id}");
        assert_eq!(rec["RUNNER_UNIT_ID"], *id);
        assert_eq!(rec["RUNNER_LAYER"], unit["layer"].as_str().unwrap(), "{id}");
        assert_eq!(
            rec["RUNNER_CATEGORY"],
            unit["category"].as_str().unwrap(),
            "{id}"
        );
        assert_eq!(rec["RUNNER_ATTEMPT"], "1", "{id}");
        assert!(
            !rec["RUNNER_UNIT_TOKEN"].is_empty(),
            "{id}: RUNNER_UNIT_TOKEN"
        );
        let want = format!("hello-{}", unit["category"].as_str().unwrap());
        assert_eq!(rec["FIXTURE_GREETING"], want, "{id}: category env");
    }
    let tokens: std::collections::BTreeSet<String> = all
        .iter()
        .map(|id| record(&project, id)["RUNNER_UNIT_TOKEN"].clone())
        .collect();
    assert_eq!(
        tokens.len(),
        all.len(),
        "RUNNER_UNIT_TOKEN is unique per unit"
    );
}

/// A two-layer project whose first layer fails; `later` depends on it or not.
fn failing_first_layer(later_depends_on_fast: bool) -> Project {
    let project = Project::new();
    let depends = if later_depends_on_fast {
        "depends_on: [fast]"
    } else {
        ""
    };
    project.layers(&format!(
        r#"
version: 1
execution: {{ max_parallel_tests: 2, kill_grace_seconds: 1 }}
categories:
  good: {{ command: "true" }}
  bad: {{ command: "echo broken; exit 3" }}
  later_cat: {{ command: "touch later-ran" }}
layers:
  - name: fast
    categories: [good, bad]
  - name: later
    {depends}
    categories: [later_cat]
"#
    ));
    project
}

#[test]
fn failing_layer_skips_the_layer_that_depends_on_it() {
    let project = failing_first_layer(true);
    let out = project.runner().args(["--use-layers", "fast,later"]).run();
    out.assert_code(1).assert_counts_line(1, 1, 1);
    let (events, summary) = check_run(&project, &out);

    let fast = layer_finished(&events, "fast");
    assert_eq!(fast["outcome"], "failed");
    let later = layer_finished(&events, "later");
    assert_eq!(later["outcome"], "skipped");
    let reason = later["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("fast"),
        "skip reason should name the failed layer: {later}"
    );
    assert!(
        !project.path("later-ran").exists(),
        "a skipped layer ran a unit"
    );

    let later_unit = &planned_units(&events, "later", "later_cat")[0];
    assert!(unit_events(&events, "test_started", later_unit).is_empty());
    assert_eq!(unit_events(&events, "test_skipped", later_unit).len(), 1);
    assert_eq!(summary["units"][later_unit]["status"], "skipped");
    assert_eq!(summary["layers"]["later"]["outcome"], "skipped");
    assert_eq!(summary["outcome"], "failed");

    // The failure carries its exit code, message and output.
    let bad = &planned_units(&events, "fast", "bad")[0];
    let finished = unit_events(&events, "test_finished", bad);
    assert_eq!(finished[0]["outcome"], "failed");
    assert_eq!(finished[0]["exit_code"], 3);
    assert!(
        finished[0]["output_tail"]
            .as_str()
            .unwrap_or_default()
            .contains("broken"),
        "output_tail of a failure holds its output: {}",
        finished[0]
    );
}

#[test]
fn failing_layer_skips_later_layers_by_default() {
    // No depends_on: the default fail_fast (layer) still stops the run after `fast`.
    let project = failing_first_layer(false);
    let out = project.runner().args(["--use-layers", "fast,later"]).run();
    out.assert_code(1).assert_counts_line(1, 1, 1);
    let (events, _) = check_run(&project, &out);
    let later = layer_finished(&events, "later");
    assert_eq!(later["outcome"], "skipped", "{later}");
    assert!(
        later["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fast"),
        "skip reason should name the failed layer: {later}"
    );
    assert!(!project.path("later-ran").exists());
}

#[test]
fn requesting_a_layer_pulls_in_its_dependencies() {
    let project = Project::from_fixture("two_layers");
    let out = project.runner().args(["--use-layers", "integration"]).run();
    out.assert_code(0).assert_counts_line(5, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(
        events[0]["layers"],
        serde_json::json!(["fast", "integration"])
    );

    let project = Project::from_fixture("two_layers");
    let out = project
        .runner()
        .args(["--use-layers", "integration", "--no-dependencies"])
        .run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["layers"], serde_json::json!(["integration"]));
}

#[test]
fn unknown_layer_is_a_usage_error_with_a_suggestion() {
    let project = Project::from_fixture("two_layers");
    let out = project.runner().args(["--use-layers", "fsat"]).run();
    out.assert_code(2).assert_stderr_contains("fsat");
    out.assert_stderr_contains("fast");
    assert!(
        !project.path("out").exists(),
        "nothing may run on a usage error"
    );
}

#[test]
fn show_layers_lists_layers_and_categories() {
    let project = Project::from_fixture("two_layers");
    let out = project.runner().arg("--show-layers").run();
    out.assert_code(0);
    for needle in ["fast", "integration", "unit", "lint"] {
        assert!(
            out.stdout.contains(needle),
            "--show-layers lacks {needle}\n{out}"
        );
    }
    let fast = out.stdout.find("fast").unwrap();
    let integ = out.stdout.find("integration").unwrap();
    assert!(fast < integ, "layers are listed in run order\n{out}");
    assert!(!project.path("out").exists(), "--show-layers runs nothing");

    let out = project.runner().args(["--show-layers", "--json"]).run();
    out.assert_code(0);
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--show-layers --json is not JSON ({e})\n{out}"));
    let names: Vec<&str> = json["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no `layers` array\n{out}"))
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fast", "integration"]);
    let units: Vec<u64> = json["layers"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["units"].as_u64().unwrap())
        .collect();
    assert_eq!(
        units.iter().sum::<u64>(),
        4,
        "fast has 3 file units and lint\n{out}"
    );
}

/// Finds an object anywhere in `v` whose `key` equals `value`.
fn find_object<'a>(v: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if m.get(key).and_then(Value::as_str) == Some(value) {
                return Some(v);
            }
            m.values().find_map(|c| find_object(c, key, value))
        }
        Value::Array(a) => a.iter().find_map(|c| find_object(c, key, value)),
        _ => None,
    }
}

#[test]
fn orchestration_status_json_shows_the_last_run() {
    let project = failing_first_layer(true);
    let out = project.runner().args(["--use-layers", "fast,later"]).run();
    out.assert_code(1);
    let run_id = project.events()[0]["run_id"].as_str().unwrap().to_string();

    let status = project
        .runner()
        .args(["--orchestration-status", "--json"])
        .run();
    status.assert_code(0);
    let json: Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("--orchestration-status --json is not JSON ({e})\n{status}"));
    let last = find_object(&json, "run_id", &run_id)
        .unwrap_or_else(|| panic!("status does not mention run {run_id}\n{status}"));
    assert_eq!(last["outcome"], "failed", "last run: {last}");
    assert_eq!(last["counts"]["failed"], 1, "last run: {last}");
    assert_eq!(last["counts"]["skipped"], 1, "last run: {last}");
    assert!(
        json["runs_in_progress"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "no run is in progress: {json}"
    );

    let text = project.runner().arg("--orchestration-status").run();
    text.assert_code(0);
    assert!(
        text.stdout.contains(&run_id),
        "text status names the last run\n{text}"
    );
}

#[test]
fn category_cwd_is_relative_to_the_project_root() {
    let project = Project::new();
    project.file("sub/dir/keep", "");
    project.layers(
        r#"
version: 1
categories:
  here: { command: "pwd -P > where.txt" }
  there: { command: "pwd -P > where.txt", cwd: "sub/dir" }
layers:
  - name: main
    categories: [here, there]
"#,
    );
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(2, 0, 0);
    check_run(&project, &out);
    let root = project.root().canonicalize().unwrap();
    assert_eq!(project.read("where.txt").trim(), root.to_str().unwrap());
    assert_eq!(
        project.read("sub/dir/where.txt").trim(),
        root.join("sub/dir").to_str().unwrap()
    );
}

#[test]
fn resume_from_skips_the_layers_before() {
    let project = Project::from_fixture("two_layers");
    let out = project
        .runner()
        .args([
            "--use-layers",
            "fast,integration",
            "--resume-from",
            "integration",
        ])
        .run();
    out.assert_code(0);
    let (events, _) = check_run(&project, &out);
    let ran: Vec<&str> = of_type(&events, "test_started")
        .iter()
        .map(|e| e["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        ran,
        ["integration/integration/integration"],
        "{}",
        dump(&events)
    );
    assert!(!project.path("out/fast_lint_lint.env").exists());
}

/// `fast` and `integration` in the foreground, `e2e` in the background.
fn background_project() -> Project {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  unit: { command: "touch unit-ran" }
  integ: { command: "touch integ-ran" }
  e2e_cat: { command: "touch e2e-ran" }
layers:
  - name: fast
    categories: [unit]
  - name: integration
    categories: [integ]
  - name: e2e
    background: true
    categories: [e2e_cat]
"#,
    );
    project
}

fn ran(project: &Project) -> Vec<&'static str> {
    ["unit", "integ", "e2e"]
        .into_iter()
        .filter(|n| project.path(&format!("{n}-ran")).exists())
        .collect()
}

/// Runs `background_project` with `args`; returns the project and the layers that ran.
fn run_background_project(args: &[&str], passed: usize) -> (Project, Vec<Value>) {
    let project = background_project();
    let out = project.runner().args(args).run();
    out.assert_code(0).assert_counts_line(passed, 0, 0);
    let (events, _) = check_run(&project, &out);
    (project, events)
}

#[test]
fn bare_use_layers_runs_every_foreground_layer() {
    let (project, _) = run_background_project(&["--use-layers"], 2);
    assert_eq!(ran(&project), ["unit", "integ"]);
}

#[test]
fn execution_mode_fast_feedback_runs_the_first_foreground_layer() {
    let (project, _) = run_background_project(&["--execution-mode", "fast-feedback"], 1);
    assert_eq!(ran(&project), ["unit"]);
}

#[test]
fn execution_mode_accepts_fast_feedback_with_an_underscore() {
    // The spelling of the documented contract: `--execution-mode fast_feedback`.
    let (project, _) = run_background_project(&["--execution-mode", "fast_feedback"], 1);
    assert_eq!(ran(&project), ["unit"]);
}

#[test]
fn execution_mode_background_runs_only_background_layers() {
    let (project, _) = run_background_project(&["--execution-mode", "background"], 1);
    assert_eq!(ran(&project), ["e2e"]);
}

#[test]
fn execution_mode_hybrid_runs_background_alongside_and_waits_for_both() {
    let (project, events) = run_background_project(&["--execution-mode", "hybrid"], 3);
    assert_eq!(ran(&project), ["unit", "integ", "e2e"]);
    let e2e = of_type(&events, "layer_started")
        .into_iter()
        .find(|e| e["layer"] == "e2e")
        .unwrap_or_else(|| panic!("e2e never started:\n{}", dump(&events)));
    assert_eq!(e2e["background"], true);
    assert_eq!(layer_finished(&events, "e2e")["outcome"], "passed");
}
