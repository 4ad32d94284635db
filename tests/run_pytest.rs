//! The `pytest:` unit kind through the real binary on `tests/fixtures/projects/pytest_kind`:
//! collection honours conftest (`collect_ignore`), markers and `-k`; every test id is a
//! unit with its own outcome, attempts and output; retries rerun only failed ids; a
//! hanging test is named and the rest of its batch runs; a leaked process is attributed
//! and killed; collection errors and a missing interpreter are exit 3.
//!
//! pytest is installed by `.ci/run`; where it is missing locally the tests say so and
//! pass (`common::skip_without`), and fail under `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use serde_json::Value;

fn has_pytest() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_without("python3 with pytest", "python3 -m pip install pytest");
    }
    ok
}

fn project() -> Project {
    let p = Project::from_fixture("pytest_kind");
    std::fs::create_dir_all(p.path("state")).unwrap();
    p
}

fn run(p: &Project, layer: &str, extra: &[&str]) -> Output {
    p.runner()
        .args(["--use-layers", layer, "--progress-mode", "simple"])
        .args(extra)
        .env("FIXTURE_STATE", p.path("state").to_str().unwrap())
        .run()
}

/// The unit ids of a layer/category without their prefix: pytest's node ids.
fn ids(units: Vec<String>, prefix: &str) -> Vec<String> {
    units
        .into_iter()
        .map(|u| u.strip_prefix(prefix).unwrap_or(&u).to_string())
        .collect()
}

/// The final word on each node id: `passed`, `failed`, `timeout`, ... or the skip reason.
fn outcomes(events: &[Value], prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in events {
        let Some(unit) = e["unit"].as_str().and_then(|u| u.strip_prefix(prefix)) else {
            continue;
        };
        match e["type"].as_str() {
            Some("test_finished") if e["will_retry"] == false => {
                out.insert(unit.to_string(), e["outcome"].as_str().unwrap().to_string());
            }
            Some("test_skipped") => {
                out.insert(unit.to_string(), e["reason"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_test_id_is_a_unit_with_its_own_outcome() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let out = run(&p, "unit", &["--jobs", "2"]);
    out.assert_code(1).assert_counts_line(12, 3, 2);
    let (events, _) = check_run(&p, &out);
    let prefix = "unit/py/";
    let planned = ids(planned_units(&events, "unit", "py"), prefix);
    assert_eq!(planned.len(), 17, "{planned:?}");
    for id in [
        "tests/test_params.py::test_params[a b]",
        "tests/test_params.py::test_params[[x]]",
        "tests/test_params.py::test_params[c::d]",
        "tests/test_params.py::test_params_ids[three [four]]",
        "tests/test_module_fixture.py::TestGrouped::test_in_class",
    ] {
        assert!(planned.iter().any(|p| p == id), "{id} not in {planned:?}");
    }
    assert!(
        !planned.iter().any(|p| p.contains("ignored_dir")),
        "conftest's collect_ignore applies: {planned:?}"
    );
    let got = outcomes(&events, prefix);
    assert_eq!(got.len(), 17, "one outcome per test: {got:?}");
    let t = |id: &str| got[&format!("tests/{id}")].as_str();
    assert_eq!(t("test_outcomes.py::test_passes"), "passed");
    assert_eq!(t("test_outcomes.py::test_fails"), "failed");
    assert_eq!(t("test_outcomes.py::test_setup_error"), "failed");
    assert_eq!(t("test_outcomes.py::test_xpasses"), "passed");
    assert_eq!(t("test_outcomes.py::test_flaky"), "passed");
    assert_eq!(t("test_outcomes.py::test_skipped"), "skipped: not today");
    assert_eq!(t("test_outcomes.py::test_xfails"), "xfailed: known bug");
    assert_eq!(t("test_params.py::test_params[end]"), "failed");
    assert_eq!(t("test_module_fixture.py::test_second"), "passed");

    // Retries rerun only the failed ids; the flaky one passes on its second attempt.
    let starts =
        |id: &str| unit_events(&events, "test_started", &format!("{prefix}tests/{id}")).len();
    assert_eq!(starts("test_outcomes.py::test_passes"), 1);
    assert_eq!(starts("test_outcomes.py::test_fails"), 2);
    assert_eq!(starts("test_outcomes.py::test_flaky"), 2);
    // Per-test output and message of a failure.
    let failed = unit_events(
        &events,
        "test_finished",
        &format!("{prefix}tests/test_outcomes.py::test_fails"),
    );
    let last = failed.last().unwrap();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("assert (1 + 1) == 3"),
        "{last}"
    );
    assert!(
        last["output_tail"]
            .as_str()
            .unwrap()
            .contains("output of a failing test"),
        "{last}"
    );
    assert!(out.stdout.contains("flaky"), "{}", out.stdout);
}

#[test]
fn markers_and_keywords_select_at_collection() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let out = run(&p, "select", &[]);
    out.assert_code(1).assert_counts_line(5, 1, 0);
    let (events, _) = check_run(&p, &out);
    let mut planned = ids(
        planned_units(&events, "select", "selected"),
        "select/selected/",
    );
    planned.sort();
    assert!(
        planned
            .iter()
            .all(|id| id.starts_with("tests/test_params.py::")),
        "{planned:?}"
    );
    assert_eq!(planned.len(), 6);
}

#[test]
fn a_hanging_test_is_named_and_the_rest_of_its_batch_still_runs() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let out = run(&p, "hang", &["--jobs", "1"]);
    out.assert_code(1).assert_counts_line(3, 1, 0);
    let (events, _) = check_run(&p, &out);
    let got = outcomes(&events, "hang/hang/hang/test_hang.py::");
    assert_eq!(got["test_hangs"], "timeout");
    for id in ["test_before", "test_after_one", "test_after_two"] {
        assert_eq!(got[id], "passed", "{got:?}");
    }
    let timeout = unit_events(
        &events,
        "test_finished",
        "hang/hang/hang/test_hang.py::test_hangs",
    );
    assert!(
        timeout[0]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s"),
        "{}",
        timeout[0]
    );
    assert_no_process_with(p.marker());
}

#[test]
fn a_leaked_process_is_named_with_its_test_and_killed() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let out = run(&p, "leak", &[]);
    out.assert_code(0).assert_counts_line(2, 0, 0);
    let (events, _) = check_run(&p, &out);
    let leaks = of_type(&events, "test_leaked");
    assert_eq!(leaks.len(), 1, "{}", dump(&events));
    assert_eq!(
        leaks[0]["unit"],
        "leak/leak/leak/test_leak.py::test_leaks_a_process"
    );
    assert!(
        leaks[0]["processes"][0]
            .as_str()
            .unwrap()
            .contains("sleep 300")
    );
    assert_no_process_with(p.marker());
}

#[test]
fn a_collection_error_is_exit_3_with_pytests_message_and_the_command() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let out = run(&p, "broken", &[]);
    out.assert_code(3)
        .assert_stderr_contains("pytest could not collect the tests")
        .assert_stderr_contains("ModuleNotFoundError: No module named 'module_that_does_not_exist'")
        .assert_stderr_contains("command: python3 -m pytest --collect-only -q");
}

#[test]
fn a_missing_interpreter_is_exit_3() {
    let p = project();
    let out = run(&p, "nopython", &[]);
    out.assert_code(3)
        .assert_stderr_contains("cannot run the Python interpreter `python3-does-not-exist`")
        .assert_stderr_contains("command: python3-does-not-exist -m pytest");
}

#[test]
fn rerun_failed_selects_the_failed_test_ids() {
    if !has_pytest() {
        return;
    }
    let p = project();
    run(&p, "unit", &["--jobs", "2"]).assert_code(1);
    let first = p.run_dirs();
    let out = run(&p, "unit", &["--rerun-failed"]);
    out.assert_code(1);
    let dir = p
        .run_dirs()
        .into_iter()
        .find(|d| !first.contains(d))
        .expect("a second run directory");
    let events = read_events(&dir.join("events.jsonl"));
    check_stream(&events, &dir);
    let mut planned = ids(planned_units(&events, "unit", "py"), "unit/py/");
    planned.sort();
    // The three failures, and the two pytest skipped (they did not pass).
    assert_eq!(
        planned,
        [
            "tests/test_outcomes.py::test_fails",
            "tests/test_outcomes.py::test_setup_error",
            "tests/test_outcomes.py::test_skipped",
            "tests/test_outcomes.py::test_xfails",
            "tests/test_params.py::test_params[end]",
        ]
    );
}

#[test]
fn junit_has_one_testcase_per_test_id() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let junit = p.path("junit.xml");
    let out = run(&p, "select", &["--junit", junit.to_str().unwrap()]);
    out.assert_code(1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 6, "{xml}");
    assert!(xml.contains("test_params[[x]]"), "{xml}");
    assert!(
        xml.contains("AssertionError: the last parameter fails"),
        "{xml}"
    );
}

#[test]
fn list_and_filter_expressions_select_test_ids() {
    if !has_pytest() {
        return;
    }
    let p = project();
    let listed = p
        .runner()
        .args(["--use-layers", "unit", "--list", "--json"])
        .args(["-E", "kind(pytest) & test(~test_params)"])
        .run();
    listed.assert_code(0);
    let json: Value = serde_json::from_str(&listed.stdout).expect("--list --json is JSON");
    let mut names: Vec<String> = json["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            assert_eq!(u["kind"], "pytest", "{u}");
            u["name"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{}", listed.stdout);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("tests/test_params.py::test_params")),
        "{names:?}"
    );

    let out = run(&p, "unit", &["-E", "test(~test_params)", "--jobs", "2"]);
    let dir = p.run_dirs().pop().expect("a run directory");
    let events = read_events(&dir.join("events.jsonl"));
    check_stream(&events, &dir);
    let mut planned = ids(planned_units(&events, "unit", "py"), "unit/py/");
    planned.sort();
    assert_eq!(planned, names, "the run plans what --list listed");
    assert!(matches!(out.code(), 0 | 1), "{}", out.stderr);
}
