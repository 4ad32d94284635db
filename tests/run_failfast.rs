//! Fail-fast strategies: immediate, category, layer, disabled, and the
//! `--fast-fail` / `--no-fail-fast` overrides.
//!
//! Fixtures (tests/fixtures/projects/failfast*) order their units through files and
//! `events.jsonl` instead of sleeps: a `bad` unit fails only once its sibling runs,
//! and a sibling finishes only once the runner has recorded the failure.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The `failfast` fixture with its `fail_fast: category` replaced by `strategy`.
fn failfast_project(strategy: &str) -> Project {
    let project = Project::from_fixture("failfast");
    let yaml = project.read("layers.yaml");
    assert!(yaml.contains("fail_fast: category"));
    project.layers(&yaml.replace("fail_fast: category", &format!("fail_fast: {strategy}")));
    project
}

/// Unit ids of a category whose (single) test_started happened.
fn started_units(events: &[Value], ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| !unit_events(events, "test_started", id).is_empty())
        .cloned()
        .collect()
}

fn final_outcome(events: &[Value], id: &str) -> Option<String> {
    unit_events(events, "test_finished", id)
        .last()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
}

#[test]
fn immediate_cancels_running_units_and_skips_the_rest() {
    let project = Project::from_fixture("failfast_immediate");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after"])
        .spawn()
        .wait_within(Duration::from_secs(30));
    out.assert_code(1).assert_counts_line(0, 1, 3);
    let (events, summary) = check_run(&project, &out);

    // The long unit was running when `bad` failed: it is cancelled, not waited for.
    let long = &planned_units(&events, "fast", "long")[0];
    assert_eq!(unit_events(&events, "test_started", long).len(), 1);
    assert_eq!(
        final_outcome(&events, long).as_deref(),
        Some("cancelled"),
        "{long}"
    );
    assert_eq!(summary["units"][long]["outcome"], "cancelled");
    assert_no_process_with(project.marker());

    // One `bad` unit failed; the other was still pending and is skipped, never started.
    let bad = planned_units(&events, "fast", "bad");
    let ran = started_units(&events, &bad);
    assert_eq!(
        ran.len(),
        1,
        "only one bad unit may start:\n{}",
        dump(&events)
    );
    assert_eq!(final_outcome(&events, &ran[0]).as_deref(), Some("failed"));
    let pending: Vec<_> = bad.iter().filter(|id| **id != ran[0]).collect();
    assert_eq!(unit_events(&events, "test_skipped", pending[0]).len(), 1);
    assert_eq!(summary["units"][pending[0]]["status"], "skipped");

    // The later layer is skipped.
    assert_eq!(layer_finished(&events, "fast")["outcome"], "failed");
    assert_eq!(layer_finished(&events, "after")["outcome"], "skipped");
    assert!(!project.path("after-ran").exists());
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn fast_fail_flag_makes_a_disabled_layer_immediate() {
    let project = Project::from_fixture("failfast_immediate");
    let yaml = project
        .read("layers.yaml")
        .replace("fail_fast: immediate", "fail_fast: disabled");
    project.layers(&yaml);
    let out = project
        .runner()
        .args(["--use-layers", "fast,after", "--fast-fail"])
        .spawn()
        .wait_within(Duration::from_secs(30));
    out.assert_code(1).assert_counts_line(0, 1, 3);
    let (events, _) = check_run(&project, &out);
    let long = &planned_units(&events, "fast", "long")[0];
    assert_eq!(final_outcome(&events, long).as_deref(), Some("cancelled"));
    assert_eq!(layer_finished(&events, "after")["outcome"], "skipped");
    assert_no_process_with(project.marker());
}

#[test]
fn category_skips_the_failing_category_and_lets_siblings_finish() {
    let project = failfast_project("category");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after,dependent"])
        .run();
    out.assert_code(1).assert_counts_line(2, 1, 3);
    let (events, summary) = check_run(&project, &out);

    // `bad`: the first unit failed, the second was skipped without starting.
    let bad = planned_units(&events, "fast", "bad");
    let ran = started_units(&events, &bad);
    assert_eq!(
        ran.len(),
        1,
        "only one bad unit may start:\n{}",
        dump(&events)
    );
    let failed_at = position(&events, "bad failed", |e| {
        e["type"] == "test_finished" && e["unit"] == ran[0].as_str() && e["outcome"] == "failed"
    });
    let pending = bad.iter().find(|id| **id != ran[0]).unwrap();
    assert_eq!(
        summary["units"][pending]["status"],
        "skipped",
        "{}",
        unit_table(&summary)
    );

    // `sibling`: the running unit finished and passed, the pending one still started.
    let siblings = planned_units(&events, "fast", "sibling");
    for id in &siblings {
        assert_eq!(
            final_outcome(&events, id).as_deref(),
            Some("passed"),
            "{id}:\n{}",
            dump(&events)
        );
    }
    let started_after_failure = siblings.iter().any(|id| {
        events[failed_at..]
            .iter()
            .any(|e| e["type"] == "test_started" && e["unit"] == id.as_str())
    });
    assert!(
        started_after_failure,
        "a pending sibling unit must still be admitted after the failure:\n{}",
        dump(&events)
    );

    // Later layers are skipped.
    assert_eq!(layer_finished(&events, "fast")["outcome"], "failed");
    assert_eq!(layer_finished(&events, "after")["outcome"], "skipped");
    assert_eq!(layer_finished(&events, "dependent")["outcome"], "skipped");
    assert!(!project.path("after-ran").exists());
    assert!(!project.path("dependent-ran").exists());
}

#[test]
fn layer_completes_the_layer_then_skips_later_layers() {
    let project = failfast_project("layer");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after,dependent"])
        .run();
    out.assert_code(1).assert_counts_line(2, 2, 2);
    let (events, _) = check_run(&project, &out);
    for id in planned_units(&events, "fast", "bad") {
        assert_eq!(
            final_outcome(&events, &id).as_deref(),
            Some("failed"),
            "{id}"
        );
    }
    for id in planned_units(&events, "fast", "sibling") {
        assert_eq!(
            final_outcome(&events, &id).as_deref(),
            Some("passed"),
            "{id}"
        );
    }
    let fast = layer_finished(&events, "fast");
    assert_eq!(fast["outcome"], "failed");
    for later in ["after", "dependent"] {
        let l = layer_finished(&events, later);
        assert_eq!(l["outcome"], "skipped", "{l}");
        assert!(
            l["reason"].as_str().unwrap_or_default().contains("fast"),
            "skip reason should name the failed layer: {l}"
        );
    }
    assert!(!project.path("after-ran").exists());
}

#[test]
fn disabled_runs_everything_but_layers_depending_on_the_failure() {
    let project = failfast_project("disabled");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after,dependent"])
        .run();
    out.assert_code(1).assert_counts_line(3, 2, 1);
    let (events, summary) = check_run(&project, &out);
    for id in planned_units(&events, "fast", "bad") {
        assert_eq!(
            final_outcome(&events, &id).as_deref(),
            Some("failed"),
            "{id}"
        );
    }
    assert_eq!(layer_finished(&events, "fast")["outcome"], "failed");
    assert_eq!(layer_finished(&events, "after")["outcome"], "passed");
    assert!(
        project.path("after-ran").exists(),
        "an independent layer still runs"
    );
    let dependent = layer_finished(&events, "dependent");
    assert_eq!(dependent["outcome"], "skipped");
    assert!(
        dependent["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fast"),
        "skip reason should name the failed dependency: {dependent}"
    );
    assert!(!project.path("dependent-ran").exists());
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn no_fail_fast_flag_overrides_the_layer_strategy() {
    let project = failfast_project("category");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after,dependent", "--no-fail-fast"])
        .run();
    out.assert_code(1).assert_counts_line(3, 2, 1);
    let (events, _) = check_run(&project, &out);
    assert_eq!(layer_finished(&events, "after")["outcome"], "passed");
    assert_eq!(layer_finished(&events, "dependent")["outcome"], "skipped");
}
