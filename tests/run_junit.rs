//! JUnit in and out, on the real binary: `--junit` reports read by a real JUnit consumer
//! (Python's junitparser) with counts equal to the run's summary, a real pytest suite
//! imported case by case through `{junit}`, missing and corrupt imports as warnings,
//! GitHub Actions annotations and job summary, and a valid report after Ctrl-C.
//!
//! junitparser and pytest are installed by `.ci/run`; where they are missing locally the
//! parts that need them are skipped with a note (the Rust-side checks still run).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};
use serde_json::Value;

/// Counts and cases of a JUnit file as junitparser reads it; `None` (with a note on
/// stderr) when Python or junitparser is not installed.
fn junitparser(path: &Path) -> Option<Value> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from junitparser import JUnitXml, Failure, Error, Skipped
except ImportError:
    print("NO_JUNITPARSER")
    sys.exit(0)
xml = JUnitXml.fromfile(sys.argv[1])
suites = list(xml) if isinstance(xml, JUnitXml) else [xml]
out = {"declared": {"tests": xml.tests, "failures": xml.failures, "errors": xml.errors,
                    "skipped": xml.skipped},
       "tests": 0, "failures": 0, "errors": 0, "skipped": 0, "suites": [], "cases": []}
for suite in suites:
    out["suites"].append(suite.name)
    for case in suite:
        out["tests"] += 1
        kinds = [type(r).__name__ for r in case.result]
        for kind, key in (("Failure", "failures"), ("Error", "errors"), ("Skipped", "skipped")):
            if kind in kinds:
                out[key] += 1
        out["cases"].append({
            "suite": suite.name, "name": case.name, "classname": case.classname,
            "kinds": kinds, "file": case._elem.get("file"), "line": case._elem.get("line"),
            "messages": [r.message for r in case.result],
        })
print(json.dumps(out))
"#;
    let out = match Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip_without("python3", &format!("{e}"));
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.trim() == "NO_JUNITPARSER" {
        skip_without("junitparser", "python3 -m pip install junitparser");
        return None;
    }
    assert!(
        out.status.success(),
        "junitparser could not read {}:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    Some(serde_json::from_str(&stdout).expect("junitparser script prints JSON"))
}

fn has_pytest() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_without("pytest", "python3 -m pip install pytest");
    }
    ok
}

fn read_report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read JUnit report {}: {e}", path.display()));
    Report::deserialize_from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid JUnit report ({e}):\n{text}",
            path.display()
        )
    })
}

fn case<'a>(report: &'a Report, suite: &str, name: &str) -> &'a quick_junit::TestCase {
    report
        .test_suites
        .iter()
        .filter(|s| s.name.as_str() == suite)
        .flat_map(|s| &s.test_cases)
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("no testcase {suite} / {name}"))
}

/// Asserts that a report's counts equal `summary.json`'s `tests` counts (and, when
/// `units` is set, its unit counts too).
#[track_caller]
fn assert_counts_match(report: &Report, summary: &Value, units: bool) {
    let n = |v: &Value| v.as_u64().unwrap() as usize;
    let t = &summary["tests"];
    assert_eq!(
        (
            report.tests,
            report.failures + report.errors,
            report.skipped
        ),
        (n(&t["total"]), n(&t["failed"]), n(&t["skipped"])),
        "JUnit counts differ from summary.json `tests`: {t}"
    );
    if units {
        let c = &summary["counts"];
        assert_eq!(
            (
                report.tests,
                report.failures + report.errors,
                report.skipped
            ),
            (n(&c["total"]), n(&c["failed"]), n(&c["skipped"])),
            "JUnit counts differ from summary.json `counts`: {c}"
        );
    }
}

#[test]
fn junit_report_of_a_mixed_run_is_valid_and_matches_the_summary() {
    let project = Project::new();
    project
        .file(
            "flaky.sh",
            "if [ -e failed-once ]; then exit 0; fi\ntouch failed-once\necho 'first attempt fails'\nexit 1\n",
        )
        .file(
            // Invalid UTF-8, control characters, an ANSI colour and XML specials.
            "bad_output.sh",
            "printf '\\001\\033[31m\\377\\376 bad <&> ]]> \\033[0m\\n'\nexit 1\n",
        )
        .layers(
            r#"
version: 1
execution: { retry_backoff_ms: 10, kill_grace_seconds: 1 }
categories:
  pass: { command: "true" }
  fail: { command: "echo 'expected 3, got 2'; exit 1", retries: 1 }
  flaky: { command: "sh flaky.sh", retries: 2 }
  slow: { command: "sleep 30", timeout_seconds: 0.5 }
  services: { command: "true", requires_real_services: true }
  bad_output: { command: "sh bad_output.sh" }
layers:
  - name: main
    fail_fast: disabled
    categories: [pass, fail, flaky, slow, services, bad_output]
"#,
        );
    let report_path = project.path("reports/junit.xml");
    let out = project
        .runner()
        .env("RUNNER_REAL_SERVICES", "false")
        .args(["--use-layers", "main", "--junit"])
        .arg(&report_path)
        .run();
    out.assert_code(1).assert_counts_line(2, 3, 1);
    let (_events, summary) = check_run(&project, &out);

    let bytes = std::fs::read(&report_path).unwrap();
    for bad in [0x01u8, 0x1b, 0x00] {
        assert!(
            !bytes.contains(&bad),
            "byte {bad:#04x} in the report:\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let text = String::from_utf8(bytes).expect("the report is UTF-8");
    let report = read_report(&report_path);
    assert_counts_match(&report, &summary, true);
    assert_eq!(report.test_suites.len(), 6, "one suite per category");
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), "main/pass");
    let props: Vec<&str> = suite.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(props, ["run_id", "environment", "layer", "category"]);
    assert_eq!(
        suite.properties[0].value.as_str(),
        summary["run_id"].as_str().unwrap()
    );

    match &case(&report, "main/fail", "fail").status {
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            ty,
            message,
            description,
            reruns,
        } => {
            assert_eq!(ty.as_ref().unwrap().as_str(), "failed");
            assert_eq!(message.as_ref().unwrap().as_str(), "exit code 1");
            assert!(
                description
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .contains("expected 3, got 2")
            );
            assert_eq!(
                reruns.runs.len(),
                1,
                "the retried attempt is a rerunFailure"
            );
        }
        other => panic!("fail: {other:?}"),
    }
    match &case(&report, "main/flaky", "flaky").status {
        TestCaseStatus::Success { flaky_runs } => {
            assert_eq!(flaky_runs.len(), 1);
            assert!(
                flaky_runs[0]
                    .description
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .contains("first attempt fails")
            );
        }
        other => panic!("flaky: {other:?}"),
    }
    assert!(text.contains("<flakyFailure"), "{text}");
    assert!(text.contains("<rerunFailure"), "{text}");
    assert!(matches!(
        &case(&report, "main/slow", "slow").status,
        TestCaseStatus::NonSuccess { ty: Some(t), .. } if t.as_str() == "timeout"
    ));
    assert!(matches!(
        &case(&report, "main/services", "services").status,
        TestCaseStatus::Skipped { message: Some(m), .. } if m.as_str().contains("real services")
    ));
    match &case(&report, "main/bad_output", "bad_output").status {
        TestCaseStatus::NonSuccess { description, .. } => {
            let d = description.as_ref().unwrap().as_str();
            assert!(d.contains("\u{fffd}\u{fffd} bad <&> ]]>"), "{d:?}");
        }
        other => panic!("bad_output: {other:?}"),
    }

    if let Some(parsed) = junitparser(&report_path) {
        let n = |k: &str| parsed[k].as_u64().unwrap();
        let c = &summary["counts"];
        assert_eq!(n("tests"), c["total"].as_u64().unwrap(), "{parsed}");
        assert_eq!(
            n("failures") + n("errors"),
            c["failed"].as_u64().unwrap(),
            "{parsed}"
        );
        assert_eq!(n("skipped"), c["skipped"].as_u64().unwrap(), "{parsed}");
        for key in ["tests", "failures", "errors", "skipped"] {
            assert_eq!(
                parsed["declared"][key], parsed[key],
                "declared `{key}` differs from the testcases: {parsed}"
            );
        }
    }
}

#[test]
fn pytest_suite_is_imported_case_by_case() {
    if !has_pytest() {
        return;
    }
    let project = Project::from_fixture("pytest_suite");
    let report_path = project.path("junit.xml");
    let summary_md = project.path("step-summary.md");
    std::fs::write(&summary_md, "# earlier step\n").unwrap();
    let out = project
        .runner()
        .args([
            "--use-layers",
            "python",
            "--progress-mode",
            "simple",
            "--junit",
        ])
        .arg(&report_path)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", project.root().to_str().unwrap())
        .env("GITHUB_STEP_SUMMARY", summary_md.to_str().unwrap())
        .run();
    // Units: test_ok.py passes; test_math.py and test_strings.py fail.
    out.assert_code(1).assert_counts_line(1, 2, 0);
    let (events, summary) = check_run(&project, &out);

    let cases = of_type(&events, "test_case");
    let got: Vec<(String, String, String)> = cases
        .iter()
        .map(|c| {
            (
                c["unit"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("python/pytest/tests/test_math.py", "test_add", "passed"),
        ("python/pytest/tests/test_math.py", "test_div", "failed"),
        (
            "python/pytest/tests/test_math.py",
            "test_skipped",
            "skipped",
        ),
        ("python/pytest/tests/test_ok.py", "test_ok", "passed"),
        (
            "python/pytest/tests/test_strings.py",
            "test_upper",
            "passed",
        ),
        (
            "python/pytest/tests/test_strings.py",
            "test_uses_broken",
            "error",
        ),
        ("python/pytest/tests/test_strings.py", "test_join", "passed"),
    ];
    let mut sorted = got.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sorted,
        want.map(|(u, n, o)| (u.to_string(), n.to_string(), o.to_string())),
        "{}",
        dump(&events)
    );
    // Each unit's cases follow its test_finished.
    for c in &cases {
        let unit = c["unit"].as_str().unwrap();
        let finished = position(&events, "test_finished", |e| {
            e["type"] == "test_finished" && e["unit"] == unit
        });
        let at = events.iter().position(|e| e == *c).unwrap();
        assert!(finished < at, "test_case before its test_finished: {c}");
    }
    let div = cases.iter().find(|c| c["name"] == "test_div").unwrap();
    assert_eq!(div["classname"], "tests.test_math");
    assert_eq!(div["file"], "tests/test_math.py");
    assert_eq!(div["line"], 9, "line from the traceback: {div}");
    assert_eq!(div["message"], "assert 1 == 2");
    assert!(div["details"].as_str().unwrap().contains("AssertionError"));
    let join = cases.iter().find(|c| c["name"] == "test_join").unwrap();
    assert_eq!(join["classname"], "tests.test_strings.TestJoin");
    assert_eq!(join["file"], "tests/test_strings.py");

    // Counts: units in `counts` and the closing line; cases in `tests` and the line above.
    let t = &summary["tests"];
    assert_eq!(
        (&t["total"], &t["passed"], &t["failed"], &t["skipped"]),
        (&7.into(), &4.into(), &2.into(), &1.into()),
        "{t}"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[lines.len() - 2],
        "tests: 4 passed, 2 failed, 1 skipped",
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "python/pytest/tests/test_math.py › tests.test_math::test_div: assert 1 == 2"
        ),
        "failing cases are shown live:\n{out}"
    );
    let units = &summary["units"]["python/pytest/tests/test_math.py"];
    assert_eq!(units["cases"].as_array().unwrap().len(), 3);

    // JUnit: the cases, not the units, under the category's suite.
    let report = read_report(&report_path);
    assert_counts_match(&report, &summary, false);
    assert_eq!(report.test_suites.len(), 1);
    assert_eq!(report.test_suites[0].name.as_str(), "python/pytest");
    let div_case = case(&report, "python/pytest", "test_div");
    assert_eq!(
        div_case.classname.as_ref().unwrap().as_str(),
        "tests.test_math"
    );
    assert!(matches!(
        &div_case.status,
        TestCaseStatus::NonSuccess { kind: NonSuccessKind::Failure, message: Some(m), .. } if m.as_str() == "assert 1 == 2"
    ));
    assert!(matches!(
        &case(&report, "python/pytest", "test_uses_broken").status,
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Error,
            ..
        }
    ));
    if let Some(parsed) = junitparser(&report_path) {
        assert_eq!(parsed["tests"], 7, "{parsed}");
        assert_eq!(parsed["failures"], 1, "{parsed}");
        assert_eq!(parsed["errors"], 1, "{parsed}");
        assert_eq!(parsed["skipped"], 1, "{parsed}");
        let div = parsed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "test_div")
            .unwrap();
        assert_eq!(div["file"], "tests/test_math.py", "{div}");
        assert_eq!(div["line"], "9", "{div}");
    }

    // GitHub Actions: located annotations before the closing line, and a job summary.
    let annotations: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(annotations.len(), 2, "{out}");
    assert!(
        annotations[0].starts_with(
            "::error file=tests/test_math.py,line=9,title=tests.test_math%3A%3Atest_div (python/pytest/tests/test_math.py)::assert 1 == 2"
        ),
        "{}",
        annotations[0]
    );
    assert!(
        annotations[1].starts_with("::error file=tests/test_strings.py,"),
        "{}",
        annotations[1]
    );
    let last_annotation = lines
        .iter()
        .rposition(|l| l.starts_with("::error"))
        .unwrap();
    assert!(
        last_annotation < lines.len() - 2,
        "annotations come before the closing lines"
    );
    let md = std::fs::read_to_string(&summary_md).unwrap();
    assert!(md.starts_with("# earlier step\n## "), "appended: {md}");
    assert!(
        md.contains("| python | failed (2 units failed) | 1 | 2 | 0 |"),
        "{md}"
    );
    assert!(md.contains("### Failures (2)"), "{md}");
    assert!(
        md.contains("`tests.test_math::test_div`: assert 1 == 2"),
        "{md}"
    );
    assert!(md.contains("### Slowest units"), "{md}");
}

#[test]
fn missing_or_corrupt_import_is_a_warning_on_the_unit() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  missing: { command: "echo no report here {junit}" }
  corrupt: { command: "printf '<testsuite><testcase name=' > {junit}" }
  good: { command: "printf '<testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"><skipped/></testcase></testsuite>' > {junit}" }
layers:
  - name: main
    categories: [missing, corrupt, good]
"#,
    );
    let report_path = project.path("junit.xml");
    let out = project
        .runner()
        .args(["--use-layers", "main", "--junit"])
        .arg(&report_path)
        .run();
    out.assert_code(0).assert_counts_line(3, 0, 0);
    let (events, summary) = check_run(&project, &out);
    let warnings = of_type(&events, "warning");
    for unit in ["main/missing/missing", "main/corrupt/corrupt"] {
        let w: Vec<_> = warnings.iter().filter(|w| w["unit"] == unit).collect();
        assert_eq!(w.len(), 1, "{unit}: {}", dump(&events));
        assert!(
            w[0]["message"].as_str().unwrap().contains("JUnit file"),
            "{}",
            w[0]
        );
    }
    assert!(
        out.stdout.contains("main/missing/missing: JUnit file"),
        "the warning is shown:\n{out}"
    );
    assert_eq!(of_type(&events, "test_case").len(), 2);
    // The report: units without cases stay one testcase each; `good` has its two cases.
    let report = read_report(&report_path);
    assert_counts_match(&report, &summary, false);
    assert_eq!((report.tests, report.skipped), (4, 1));
    let log = read_unit_log(
        summary["units"]["main/missing/missing"]["log"]
            .as_str()
            .unwrap(),
    );
    assert!(
        log.contains("no report here ") && log.contains("/junit/main_missing_missing.1.xml"),
        "the placeholder is replaced by a path in the run directory: {log}"
    );
}

#[test]
fn ctrl_c_mid_run_leaves_a_valid_junit_file() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  quick: { command: "true" }
  hang: { command: "sleep 3600" }
  later: { command: "true" }
layers:
  - name: main
    execution_mode: sequential
    categories: [quick, hang, later]
"#,
    );
    let report_path = project.path("junit.xml");
    let mut child = project
        .runner()
        .args(["--use-layers", "main", "--junit"])
        .arg(&report_path)
        .spawn();
    project.wait_for_events(&mut child, "the hanging unit to start", |ev| {
        ev.iter()
            .any(|e| e["type"] == "test_started" && e["unit"] == "main/hang/hang")
    });
    child.signal("INT");
    let out = child.wait();
    out.assert_code(130);
    let (_events, summary) = check_run(&project, &out);
    let report = read_report(&report_path);
    assert_counts_match(&report, &summary, true);
    assert_eq!(report.tests, 3, "every unit is in the report");
    assert!(matches!(
        &case(&report, "main/quick", "quick").status,
        TestCaseStatus::Success { .. }
    ));
    for (suite, name) in [("main/hang", "hang"), ("main/later", "later")] {
        assert!(
            matches!(
                &case(&report, suite, name).status,
                TestCaseStatus::Skipped { .. }
            ),
            "{name} is skipped after Ctrl-C: {:?}\n{}",
            case(&report, suite, name).status,
            std::fs::read_to_string(&report_path).unwrap()
        );
    }
    if let Some(parsed) = junitparser(&report_path) {
        assert_eq!(parsed["tests"], 3, "{parsed}");
        assert_eq!(parsed["skipped"], 2, "{parsed}");
    }
}
