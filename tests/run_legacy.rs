//! Legacy category mode: a config without `layers:`, or no layer requested, runs
//! categories directly (with their `depends_on` first) and says so on stderr.
//! Fixture: tests/fixtures/projects/legacy.

mod common;

use common::*;
use serde_json::Value;

fn categories_run(events: &[Value]) -> Vec<String> {
    of_type(events, "test_started")
        .iter()
        .map(|e| {
            let unit = e["unit"].as_str().unwrap();
            let planned = events[0]["units"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["id"] == unit)
                .unwrap_or_else(|| panic!("{unit} is not planned"));
            planned["category"].as_str().unwrap().to_string()
        })
        .collect()
}

fn order_log(project: &Project) -> Vec<String> {
    project
        .read("order.log")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn config_without_layers_runs_every_category_in_legacy_mode() {
    let project = Project::from_fixture("legacy");
    let out = project.runner().run();
    out.assert_code(0).assert_counts_line(3, 0, 0);
    assert!(
        out.stderr.to_lowercase().contains("legacy"),
        "stderr should say legacy mode\n{out}"
    );
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["mode"], "legacy");
    let mut ran = categories_run(&events);
    ran.sort();
    assert_eq!(ran, ["integration", "lint", "unit"]);
    let order = order_log(&project);
    let pos = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(
        pos("unit") < pos("integration"),
        "dependency first: {order:?}"
    );
}

#[test]
fn categories_flag_runs_the_dependency_first() {
    let project = Project::from_fixture("legacy");
    let out = project.runner().args(["--categories", "integration"]).run();
    out.assert_code(0).assert_counts_line(2, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["mode"], "legacy");
    assert_eq!(order_log(&project), ["unit", "integration"]);
    let id_of = |category: &str| -> String {
        let units = events[0]["units"].as_array().unwrap();
        let unit = units.iter().find(|u| u["category"] == category).unwrap();
        unit["id"].as_str().unwrap().to_string()
    };
    let (unit, integration) = (id_of("unit"), id_of("integration"));
    let unit_done = position(&events, "unit finished", |e| {
        e["type"] == "test_finished" && e["unit"] == unit.as_str()
    });
    let integ_started = position(&events, "integration started", |e| {
        e["type"] == "test_started" && e["unit"] == integration.as_str()
    });
    assert!(
        unit_done < integ_started,
        "unit must finish before integration starts:\n{}",
        dump(&events)
    );
}

#[test]
fn no_dependencies_runs_only_the_named_category() {
    let project = Project::from_fixture("legacy");
    let out = project
        .runner()
        .args(["--categories", "integration", "--no-dependencies"])
        .run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    check_run(&project, &out);
    assert_eq!(order_log(&project), ["integration"]);
}

#[test]
fn failing_dependency_skips_the_dependent_category() {
    let project = Project::from_fixture("legacy");
    let yaml = project
        .read("layers.yaml")
        .replace("\"sh step.sh unit\"", "\"sh step.sh unit 1\"");
    project.layers(&yaml);
    let out = project.runner().args(["--categories", "integration"]).run();
    out.assert_code(1).assert_counts_line(0, 1, 1);
    let (events, summary) = check_run(&project, &out);
    assert_eq!(order_log(&project), ["unit"]);
    let skipped = of_type(&events, "test_skipped");
    assert_eq!(skipped.len(), 1, "{}", dump(&events));
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("unit"),
        "the skip names the failed dependency: {}",
        skipped[0]
    );
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn layered_config_without_a_layer_request_falls_back_to_legacy() {
    let project = Project::from_fixture("two_layers");
    let out = project.runner().args(["--categories", "lint"]).run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    assert!(
        out.stderr.to_lowercase().contains("legacy"),
        "stderr should say legacy mode\n{out}"
    );
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["mode"], "legacy");
    assert_eq!(categories_run(&events), ["lint"]);
}

#[test]
fn unknown_category_is_a_usage_error_with_a_suggestion() {
    let project = Project::from_fixture("legacy");
    let out = project.runner().args(["--categories", "integraton"]).run();
    out.assert_code(2).assert_stderr_contains("integraton");
    out.assert_stderr_contains("integration");
    assert!(!project.path("order.log").exists(), "nothing runs");
}
