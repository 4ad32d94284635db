//! Success criteria decide whether a layer with failures passes: `max_failures`,
//! `min_pass_rate`, critical categories and `critical_tests_must_pass`. A layer that
//! passes by its criteria lets later (dependent) layers run and the run exit 0.

mod common;

use common::*;
use serde_json::Value;

/// Layer `gate` (`passing` passing units, `failing` failing ones, optionally a failing
/// critical category) with `criteria` as its success_criteria; layer `next` depends on it.
fn run_gate(
    passing: usize,
    failing: usize,
    critical_fails: bool,
    criteria: &str,
) -> (Project, Output, Vec<Value>, Value) {
    let project = Project::new();
    for i in 0..passing {
        project.file(&format!("ok/test_{i}.sh"), "exit 0\n");
    }
    for i in 0..failing {
        project.file(
            &format!("ko/test_{i}.sh"),
            "echo failing on purpose; exit 1\n",
        );
    }
    let mut categories = vec!["ok"];
    if failing > 0 {
        categories.push("ko");
    }
    if critical_fails {
        categories.push("crit");
    }
    project.layers(&format!(
        r#"
version: 1
execution: {{ max_parallel_tests: 4, kill_grace_seconds: 1 }}
categories:
  ok: {{ command: "sh {{file}}", files: "ok/test_*.sh" }}
  ko: {{ command: "sh {{file}}", files: "ko/test_*.sh" }}
  crit: {{ command: "exit 1", critical: true }}
  next_cat: {{ command: "touch next-ran" }}
layers:
  - name: gate
    categories: [{}]
    success_criteria: {criteria}
  - name: next
    depends_on: [gate]
    categories: [next_cat]
"#,
        categories.join(", ")
    ));
    let out = project.runner().args(["--use-layers", "gate,next"]).run();
    let (events, summary) = check_run(&project, &out);
    (project, out, events, summary)
}

#[track_caller]
fn assert_gate_passed(project: &Project, out: &Output, events: &[Value]) {
    let gate = layer_finished(events, "gate");
    assert_eq!(
        gate["outcome"], "passed",
        "gate should pass by its criteria: {gate}\n{out}"
    );
    assert_eq!(layer_finished(events, "next")["outcome"], "passed");
    assert!(
        project.path("next-ran").exists(),
        "the dependent layer runs"
    );
    out.assert_code(0);
}

#[track_caller]
fn assert_gate_failed(project: &Project, out: &Output, events: &[Value], reason: &str) {
    let gate = layer_finished(events, "gate");
    assert_eq!(gate["outcome"], "failed", "gate should fail: {gate}\n{out}");
    let got = gate["reason"].as_str().unwrap_or_default();
    assert!(
        got.contains(reason),
        "reason {got:?} should mention {reason:?}"
    );
    assert_eq!(layer_finished(events, "next")["outcome"], "skipped");
    assert!(!project.path("next-ran").exists());
    out.assert_code(1);
}

#[test]
fn max_failures_tolerates_up_to_the_limit() {
    let (project, out, events, summary) = run_gate(3, 1, false, "{ max_failures: 1 }");
    assert_gate_passed(&project, &out, &events);
    // The failure is still counted and reported.
    out.assert_counts_line(4, 1, 0);
    assert_eq!(summary["outcome"], "passed");
    assert_eq!(summary["layers"]["gate"]["counts"]["failed"], 1);
}

#[test]
fn max_failures_exceeded_fails_the_layer() {
    let (project, out, events, summary) = run_gate(2, 2, false, "{ max_failures: 1 }");
    assert_gate_failed(&project, &out, &events, "2");
    out.assert_counts_line(2, 2, 1);
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn min_pass_rate_met_passes_the_layer() {
    let (project, out, events, _) = run_gate(2, 2, false, "{ min_pass_rate: 50 }");
    assert_gate_passed(&project, &out, &events);
    out.assert_counts_line(3, 2, 0);
}

#[test]
fn min_pass_rate_missed_fails_the_layer() {
    let (project, out, events, _) = run_gate(2, 2, false, "{ min_pass_rate: 75 }");
    assert_gate_failed(&project, &out, &events, "");
    let reason = layer_finished(&events, "gate")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("50") || reason.contains("75") || reason.contains("pass rate"),
        "reason should explain the pass rate: {reason:?}"
    );
    out.assert_counts_line(2, 2, 1);
}

#[test]
fn failing_critical_category_fails_the_layer_despite_max_failures() {
    let (project, out, events, _) = run_gate(3, 0, true, "{ max_failures: 5 }");
    assert_gate_failed(&project, &out, &events, "crit");
    out.assert_counts_line(3, 1, 1);
}

#[test]
fn critical_failure_tolerated_when_critical_tests_need_not_pass() {
    let (project, out, events, _) = run_gate(
        3,
        0,
        true,
        "{ max_failures: 5, critical_tests_must_pass: false }",
    );
    assert_gate_passed(&project, &out, &events);
    out.assert_counts_line(4, 1, 0);
}

#[test]
fn without_criteria_one_failure_fails_the_layer() {
    let (project, out, events, _) = run_gate(3, 1, false, "{}");
    assert_gate_failed(&project, &out, &events, "1");
    out.assert_counts_line(3, 1, 1);
}
