//! Environment overlays (`config/environments/<name>.yaml`, `--env`): deep merge of
//! categories, merge of layers by name, short names, and errors for unknown or invalid
//! environments. Fixture: tests/fixtures/projects/environments.

mod common;

use common::*;

fn greeting(project: &Project) -> String {
    project.read("greeting.txt").trim().to_string()
}

#[test]
fn default_environment_uses_the_base_config() {
    let project = Project::from_fixture("environments");
    let out = project.runner().args(["--use-layers", "fast,after"]).run();
    out.assert_code(1).assert_counts_line(1, 1, 1);
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["environment"], "test");
    assert_eq!(greeting(&project), "from-base");
    assert_eq!(layer_finished(&events, "after")["outcome"], "skipped");
}

#[test]
fn ci_overlay_changes_category_env_and_layer_fail_fast() {
    let project = Project::from_fixture("environments");
    let out = project
        .runner()
        .args(["--use-layers", "fast,after", "--env", "ci"])
        .run();
    out.assert_code(1).assert_counts_line(2, 1, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["environment"], "ci");
    // Deep merge: the overlay's env replaced GREETING, the command stayed.
    assert_eq!(greeting(&project), "from-ci");
    // Layers merge by name: `fast` kept its categories and took fail_fast: disabled.
    assert_eq!(planned_units(&events, "fast", "greet").len(), 1);
    assert_eq!(planned_units(&events, "fast", "bad").len(), 1);
    assert_eq!(layer_finished(&events, "fast")["outcome"], "failed");
    assert_eq!(layer_finished(&events, "after")["outcome"], "passed");
    assert!(project.path("after-ran").exists());
}

#[test]
fn runner_env_variable_selects_the_environment() {
    let project = Project::from_fixture("environments");
    let out = project
        .runner()
        .args(["--use-layers", "fast"])
        .env("RUNNER_ENV", "ci")
        .run();
    out.assert_code(1);
    check_run(&project, &out);
    assert_eq!(greeting(&project), "from-ci");
}

#[test]
fn ci_overlay_shortens_a_category_timeout() {
    let base = Project::from_fixture("environments");
    let out = base.runner().args(["--use-layers", "napping"]).run();
    out.assert_code(0).assert_counts_line(1, 0, 0);

    let ci = Project::from_fixture("environments");
    let out = ci
        .runner()
        .args(["--use-layers", "napping", "--env", "ci"])
        .run();
    out.assert_code(1).assert_counts_line(0, 1, 0);
    let (events, _) = check_run(&ci, &out);
    let finished = unit_events(&events, "test_finished", "napping/nap/nap");
    assert_eq!(finished[0]["outcome"], "timeout", "{}", finished[0]);
    assert_no_process_with(ci.marker());
}

#[test]
fn short_environment_name_dev_selects_development() {
    let project = Project::from_fixture("environments");
    let out = project
        .runner()
        .args(["--use-layers", "fast", "--env", "dev"])
        .run();
    out.assert_code(1);
    let (events, _) = check_run(&project, &out);
    assert_eq!(events[0]["environment"], "development");
    assert_eq!(greeting(&project), "from-development");
}

#[test]
fn unknown_environment_is_a_usage_error_with_a_suggestion() {
    let project = Project::from_fixture("environments");
    let out = project
        .runner()
        .args(["--use-layers", "fast", "--env", "cii"])
        .run();
    out.assert_code(2).assert_stderr_contains("cii");
    assert!(
        out.stderr.contains("`ci`") || out.stderr.contains("did you mean ci"),
        "stderr should suggest `ci`\n{out}"
    );
    assert!(!project.path("greeting.txt").exists(), "nothing runs");
    assert!(project.run_dirs().is_empty(), "no run is recorded");
}

#[test]
fn invalid_overlay_is_reported_with_its_file_and_a_suggestion() {
    let project = Project::from_fixture("environments");
    project.environment("ci", "categories:\n  nap:\n    timeout_secs: 1\n");
    let out = project
        .runner()
        .args(["--use-layers", "fast", "--env", "ci"])
        .run();
    out.assert_code(2).assert_stderr_contains("timeout_secs");
    out.assert_stderr_contains("ci.yaml");
    out.assert_stderr_contains("timeout_seconds");
    assert!(!project.path("greeting.txt").exists(), "nothing runs");
}
