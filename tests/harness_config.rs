//! The configuration of the Python harness `runner` replaces, run unchanged:
//! `tests/fixtures/harness/test_layers.yaml` (layers keyed by id, `execution_config`,
//! `service_dependencies`, category objects in layers) and `categories.yaml` (legacy
//! categories). Shown, run once commands are added (from each of the three sources),
//! refused with exit 2 without commands, stopped with exit 3 when a service is down,
//! typos located, legacy mode with dependencies and conflicts, and the printed native
//! equivalent loading to the same plan.

mod common;

use common::*;
use serde_json::Value;

const LAYERS: &str = include_str!("fixtures/harness/test_layers.yaml");
const CATEGORIES: &str = include_str!("fixtures/harness/categories.yaml");

/// A project whose `layers.yaml` is the old layers file, edited by `edit`.
fn layers_project(edit: impl Fn(String) -> String) -> Project {
    let p = Project::new();
    p.layers(&edit(LAYERS.to_string()));
    p
}

/// The old layers file with a command from each source: `smoke` (and every other
/// category without one) from the `execution.default_command` template, `unit` from a
/// top-level `categories:` entry, `lint` from its own `command:` in the layer object.
fn with_commands(text: String) -> String {
    let text = text.replace(
        "execution_config:\n",
        "execution_config:\n  default_command: \"mkdir -p out && echo \\\"template {category} [{filter_expr}] $RUNNER_LLM_MODE\\\" > out/{category}.txt\"\n",
    );
    let text = text.replace(
        "      - name: \"lint\"\n        timeout_seconds: 60\n",
        "      - name: \"lint\"\n        timeout_seconds: 60\n        command: \"mkdir -p out && echo own > out/lint.txt\"\n",
    );
    format!(
        "{text}\ncategories:\n  unit:\n    command: \"mkdir -p out && echo entry > out/unit.txt\"\n    retries: 0\n"
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Points every service of the fixture at `127.0.0.1:<port>`, where nothing listens.
fn services_down(text: String, port: u16) -> String {
    [
        "localhost:5432",
        "localhost:6379",
        "localhost:8000",
        "localhost:8081",
        "localhost:3000",
    ]
    .iter()
    .fold(text, |t, addr| {
        t.replace(addr, &format!("127.0.0.1:{port}"))
    })
}

/// A project whose `layers.yaml` is `text` (as written).
fn project_with(text: &str) -> Project {
    let p = Project::new();
    p.layers(text);
    p
}

fn show_json(p: &Project) -> Value {
    let out = p.runner().args(["--show-layers", "--json"]).run();
    out.assert_code(0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// The plan as `--show-layers --json` shows it, without what only says where a value
/// came from (mappings, the file's path and format, metadata).
fn plan_only(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "mappings" | "config" | "format" | "metadata")
                })
                .map(|(k, v)| (k.clone(), plan_only(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(plan_only).collect()),
        v => v.clone(),
    }
}

#[test]
fn the_old_layers_file_loads_and_shows_what_each_field_became() {
    let p = layers_project(|t| t);
    let out = p.runner().arg("--show-layers").run();
    out.assert_code(0);
    for needle in [
        "layer fast_feedback \"Fast Feedback\"",
        "layer e2e_background \"E2E & Performance\"",
        "execution_config.max_global_parallel_tests -> execution.max_parallel_tests",
        "service_dependencies.backend_service.health_check_endpoint -> services.backend_service.ready.http: http://localhost:8000/health",
        "success_criteria.min_pass_rate: 0.99 -> min_pass_rate: 99%",
        "execution_config.fail_fast_strategy -> fail_fast: immediate",
        "resource_requirements.dedicated_resources -> exclusive",
        "resource_requirements.requires_websocket_server -> no service named",
        "never alongside categories: performance, load",
        "filter `(smoke or sanity) and not (slow)`",
        "cannot run, no command yet",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle:?}\n{out}");
    }

    let v = show_json(&p);
    assert_eq!(v["format"], "harness");
    assert_eq!(v["metadata"]["version"], "2.1.0");
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "fast_feedback",
            "core_integration",
            "service_integration",
            "e2e_background"
        ]
    );
    assert_eq!(layers[0]["display_name"], "Fast Feedback");
    assert_eq!(
        layers[0]["fail_fast"], "immediate",
        "from fail_fast_strategy"
    );
    assert_eq!(layers[1]["fail_fast"], "category");
    assert_eq!(layers[0]["success_criteria"]["min_pass_rate"], 99.0);
    assert_eq!(layers[2]["success_criteria"]["allow_partial_success"], true);
    assert_eq!(
        layers[2]["llm_requirements"]["mode"], "mock",
        "test override"
    );
    let mut categories: Vec<&str> = layers
        .iter()
        .flat_map(|l| l["categories"].as_array().unwrap())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    categories.sort();
    categories.dedup();
    assert_eq!(categories.len(), 16, "{categories:?}");
    assert_eq!(v["services"].as_array().unwrap().len(), 5);
    let smoke = &layers[0]["categories"][0];
    assert_eq!(smoke["kind"], "none");
    assert_eq!(smoke["settings"]["min_memory_mb"], 64);
    assert_eq!(smoke["settings"]["filters"]["include_patterns"][0], "smoke");
    let database = &layers[1]["categories"][0];
    assert_eq!(
        database["settings"]["required_services"],
        serde_json::json!(["postgresql", "redis"])
    );
    assert!(!layers[0]["mappings"].as_array().unwrap().is_empty());
    // In `test`, e2e_background's override turns background execution off.
    assert_eq!(layers[3]["background"], false);
}

#[test]
fn the_old_categories_file_runs_in_legacy_mode_and_shows_its_mappings() {
    let p = project_with(CATEGORIES);
    let out = p.runner().args(["--show-layers"]).run();
    out.assert_code(0);
    for needle in [
        "legacy category mode",
        "priority: CRITICAL -> priority_order: 1",
        "retry_count -> retries: 1",
        "parallel_safe: false -> exclusive",
        "memory_intensive -> heavy: memory",
        "requires_staging_environment -> requires_environment: staging",
        "estimated_duration_minutes -> expected duration",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle:?}\n{out}");
    }
    let v = show_json(&p);
    let order: Vec<&str> = v["layers"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 16);
    // CRITICAL first; dependencies before their dependents.
    assert_eq!(&order[..2], ["smoke", "post_deployment"]);
    let at = |n: &str| order.iter().position(|o| *o == n).unwrap();
    assert!(at("unit") < at("integration") && at("database") < at("integration"));
    assert!(at("integration") < at("performance"));
}

#[test]
fn running_without_commands_is_exit_2_naming_the_categories_and_the_three_ways() {
    let p = layers_project(|t| t);
    let out = p.runner().args(["--use-layers", "fast_feedback"]).run();
    out.assert_code(2)
        .assert_stderr_contains("no command for categories `smoke`, `unit`, `lint`")
        .assert_stderr_contains("`command:`")
        .assert_stderr_contains("top-level `categories:` entry")
        .assert_stderr_contains("execution.default_command");
    assert!(p.run_dirs().is_empty(), "nothing runs");
}

#[test]
fn commands_come_from_own_command_top_level_entry_or_template() {
    let p = layers_project(with_commands);
    let out = p.runner().args(["--use-layers", "fast_feedback"]).run();
    out.assert_code(0);
    check_run(&p, &out);
    assert_eq!(
        p.read("out/smoke.txt").trim(),
        "template smoke [(smoke or sanity) and not (slow)] mock"
    );
    assert_eq!(p.read("out/unit.txt").trim(), "entry");
    assert_eq!(p.read("out/lint.txt").trim(), "own");

    // `--real-llm` reaches the units; so does a staging override (no staging file).
    let out = p
        .runner()
        .args(["--use-layers", "fast_feedback", "--real-llm"])
        .run();
    out.assert_code(0);
    assert!(p.read("out/smoke.txt").trim().ends_with(" real"));
    let out = p
        .runner()
        .args(["--use-layers", "fast_feedback", "--env", "staging"])
        .run();
    out.assert_code(0);
    assert!(p.read("out/smoke.txt").trim().ends_with(" real"));
}

#[test]
fn old_layer_flags_select_space_separated_layers() {
    let p = layers_project(with_commands);
    let out = p
        .runner()
        .args([
            "--layers",
            "fast_feedback",
            "--no-progress-streaming",
            "--enable-monitoring",
        ])
        .run();
    out.assert_code(0);
    let (events, _) = check_run(&p, &out);
    let started = of_type(&events, "layer_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["layer"], "fast_feedback");
}

#[test]
fn a_service_that_is_down_stops_the_run_with_exit_3_before_any_unit() {
    let port = closed_port();
    let p = layers_project(|t| services_down(with_commands(t), port));
    let out = p
        .runner()
        .args(["--layers", "fast_feedback", "core_integration"])
        .run();
    out.assert_code(3)
        .assert_stderr_contains(&format!(
            "service `postgresql` is not running at tcp 127.0.0.1:{port}"
        ))
        .assert_stderr_contains(&format!(
            "service `backend_service` is not running at http http://127.0.0.1:{port}/health"
        ))
        .assert_stderr_contains("needed by layer core_integration");
    assert!(!p.path("out").exists(), "no unit ran:\n{out}");
}

#[test]
fn a_misspelt_key_in_a_layer_of_the_mapping_form_names_the_right_key() {
    let p = layers_project(|t| {
        t.replacen(
            "    execution_mode: \"parallel\"",
            "    execution_mod: \"parallel\"",
            1,
        )
    });
    let out = p.runner().arg("--show-layers").run();
    out.assert_code(2)
        .assert_stderr_contains("unknown key `execution_mod` in `layers[core_integration]`")
        .assert_stderr_contains("did you mean `execution_mode`?");
    let line = LAYERS
        .lines()
        .position(|l| l == "    execution_mode: \"parallel\"")
        .unwrap()
        + 1;
    out.assert_stderr_contains(&format!("layers.yaml:{line}:5"));
}

/// `guard.sh NAME OTHER...` fails when a unit of one of the OTHER categories is running
/// while it runs: a run passes only if categories that must not overlap never did.
const GUARD: &str = r#"name=$1; shift
mkdir -p running done
touch running/$name
i=0
while [ $i -lt 100 ]; do
  i=$((i+1))
  for other in "$@"; do
    if [ -e running/$other ]; then echo "$name overlaps $other"; rm -f running/$name; exit 1; fi
  done
done
touch done/$name
rm -f running/$name
"#;

#[test]
fn legacy_mode_adds_dependencies_and_orders_them() {
    let p = project_with(&format!(
        "execution:\n  default_command: \"true\"\n{CATEGORIES}"
    ));
    // `integration` brings `unit` and `database`; they finish before it starts.
    let out = p.runner().args(["--categories", "integration"]).run();
    out.assert_code(0);
    let (events, _) = check_run(&p, &out);
    assert_eq!(
        of_type(&events, "test_started").len(),
        3,
        "{}",
        dump(&events)
    );
    let at = |ty: &str, cat: &str| {
        position(&events, ty, |e| {
            e["type"] == ty
                && e["unit"]
                    .as_str()
                    .is_some_and(|u| u.contains(&format!("/{cat}/")))
        })
    };
    let started = |cat: &str| at("test_started", cat);
    let finished = |cat: &str| at("test_finished", cat);
    assert!(
        finished("unit") < started("integration"),
        "{}",
        dump(&events)
    );
    assert!(
        finished("database") < started("integration"),
        "{}",
        dump(&events)
    );
}

#[test]
fn legacy_conflicts_exclusive_and_heavy_categories_never_overlap() {
    let p = Project::new();
    p.file("guard.sh", GUARD);
    // All of one priority, so the legacy layer starts them together (six slots).
    p.layers(
        &[
            "execution:",
            "  max_parallel_tests: 6",
            "categories:",
            "  a: {priority: MEDIUM, conflicts: [b], command: sh guard.sh a b}",
            "  b: {priority: MEDIUM, command: sh guard.sh b a}",
            "  c: {priority: MEDIUM, memory_intensive: true, command: sh guard.sh c d}",
            "  d: {priority: MEDIUM, memory_intensive: true, command: sh guard.sh d c}",
            "  e: {priority: MEDIUM, parallel_safe: false, command: sh guard.sh e a b c d f}",
            "  f: {priority: MEDIUM, command: sh guard.sh f e}",
        ]
        .join("\n"),
    );
    let out = p.runner().run();
    out.assert_code(0);
    check_run(&p, &out);
    for cat in ["a", "b", "c", "d", "e", "f"] {
        assert!(p.path(&format!("done/{cat}")).exists(), "{cat} ran\n{out}");
    }
}

#[test]
fn the_printed_native_equivalent_loads_to_the_same_plan() {
    for text in [with_commands(LAYERS.to_string()), CATEGORIES.to_string()] {
        let old = project_with(&text);
        let out = old.runner().arg("--print-config").run();
        out.assert_code(0);
        assert!(!out.stdout.contains("execution_config"), "{out}");
        assert!(!out.stdout.contains("service_dependencies"), "{out}");
        let native = project_with(&out.stdout);
        let before = show_json(&old);
        let after = show_json(&native);
        assert_eq!(after["format"], "native", "{}", out.stdout);
        assert_eq!(plan_only(&before), plan_only(&after), "{}", out.stdout);
    }
}
