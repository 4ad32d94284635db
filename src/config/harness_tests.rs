//! Loading the replaced harness's files (`tests/fixtures/harness/`): every environment,
//! the mappings of old fields, command sources, and the rules of `environment_overrides`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/harness")
        .join(name)
}

fn load_env(path: &Path, env: Option<&str>) -> Result<Config, ConfigError> {
    load(&LoadOptions {
        path: path.to_path_buf(),
        environment: env.map(str::to_string),
    })
}

fn load_text(yaml: &str, env: Option<&str>) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layers.yaml");
    std::fs::write(&path, yaml).unwrap();
    load_env(&path, env)
}

#[test]
fn the_layers_fixture_loads_in_every_environment_with_its_overrides() {
    let path = fixture("test_layers.yaml");
    for env in [
        "test",
        "development",
        "staging",
        "production",
        "dev",
        "prod",
    ] {
        let c = load_env(&path, Some(env)).unwrap_or_else(|e| panic!("{env}: {e}"));
        assert!(c.harness_format);
        assert_eq!(c.layers.len(), 4);
        assert_eq!(c.categories.len(), 16, "{env}");
        assert_eq!(c.services.len(), 5);
        assert!(c.overlays.is_empty(), "no environment file is needed");
    }
    let layer = |env: &str, name: &str| {
        load_env(&path, Some(env))
            .unwrap()
            .layer(name)
            .cloned()
            .unwrap()
    };
    // Deep merge: only the mode changes, the timeout stays.
    let ff = layer("staging", "fast_feedback");
    let llm = ff.llm.unwrap();
    assert_eq!((llm.mode, llm.timeout_seconds), (LlmMode::Real, Some(20.0)));
    let ci = layer("production", "core_integration");
    assert_eq!(ci.llm.as_ref().unwrap().fallback_to_mock, Some(false));
    assert_eq!(ci.llm.as_ref().unwrap().timeout_seconds, Some(45.0));
    // Lists replace (the categories' services are added after).
    let ci = layer("staging", "core_integration");
    assert_eq!(
        ci.required_services,
        ["postgresql", "redis", "backend_service", "auth_service"]
    );
    assert_eq!(
        layer("development", "service_integration").max_duration,
        Some(Duration::from_secs(30 * 60))
    );
    let bg = layer("test", "e2e_background");
    assert!(
        !bg.background,
        "the test override wins over background_layers"
    );
    assert!(layer("staging", "e2e_background").background);
    assert_eq!(
        layer("development", "e2e_background")
            .success_criteria
            .min_pass_rate,
        Some(70.0)
    );
    assert_eq!(
        layer("production", "fast_feedback").fail_fast,
        FailFast::Immediate
    );
}

#[test]
fn old_layer_fields_are_mapped() {
    let c = load_env(&fixture("test_layers.yaml"), None).unwrap();
    let ff = c.layer("fast_feedback").unwrap();
    assert_eq!(ff.display_name.as_deref(), Some("Fast Feedback"));
    assert_eq!(ff.priority, 5, "old priority 1 goes first: 6 - 1");
    assert_eq!(ff.fail_fast, FailFast::Immediate);
    assert_eq!(ff.success_criteria.min_pass_rate, Some(99.0));
    let si = c.layer("service_integration").unwrap();
    assert_eq!(si.conflicting_categories, ["performance", "load"]);
    assert!(si.conflicts.is_empty());
    assert!(si.success_criteria.allow_partial_success);
    let bg = c.layer("e2e_background").unwrap();
    assert_eq!(bg.conflicts, ["fast_feedback"]);
    assert_eq!(bg.depends_on, ["service_integration"]);
    assert_eq!(c.execution.max_parallel_tests, Some(6));
    assert_eq!(c.execution.max_memory_mb, Some(8192));
    assert_eq!(c.execution.max_background_layers, Some(1));
    assert_eq!(
        c.execution.layer_startup_timeout,
        Some(Duration::from_secs(40))
    );
    assert_eq!(c.services["redis"].startup_timeout, Duration::from_secs(10));
    assert!(matches!(
        &c.services["backend_service"].ready,
        Some(ReadyProbe::Http { url }) if url == "http://localhost:8000/health"
    ));
    assert!(matches!(
        &c.services["postgresql"].ready,
        Some(ReadyProbe::Tcp { address }) if address == "localhost:5432"
    ));
    let agent = c.category_in(si, "agent");
    assert!(agent.exclusive && agent.requires_real_llm);
    assert_eq!(agent.min_memory_mb, Some(512));
    assert!(
        agent
            .mappings
            .iter()
            .any(|m| m.from == "resource_requirements.dedicated_resources")
    );
    assert!(matches!(agent.kind, UnitKind::Missing));
    let ws = c.category_in(c.layer("core_integration").unwrap(), "websocket");
    assert_eq!(
        ws.required_services,
        ["redis"],
        "no websocket service is defined"
    );
}

#[test]
fn legacy_categories_are_mapped() {
    let path = fixture("categories.yaml");
    let c = load_env(&path, None).unwrap();
    assert!(!c.has_layers && c.harness_format);
    let cat = |n: &str| &c.categories[n];
    assert_eq!(cat("smoke").priority_order, 1);
    assert_eq!(cat("load").priority_order, 5);
    assert_eq!(cat("unit").retries, 1);
    assert_eq!(cat("integration").depends_on, ["unit", "database"]);
    assert!(cat("e2e").exclusive && !cat("unit").exclusive);
    assert_eq!(cat("performance").heavy, ["memory", "cpu"]);
    assert_eq!(cat("performance").conflicts, ["database", "e2e", "cypress"]);
    assert_eq!(cat("performance").success_rate_threshold, Some(90.0));
    assert_eq!(cat("post_deployment").requires_environment, ["staging"]);
    assert_eq!(
        cat("smoke").estimated_duration,
        Some(Duration::from_secs(30))
    );
    assert_eq!(cat("security").parent.as_deref(), Some("integration"));
    assert_eq!(cat("security").timeout, Some(Duration::from_secs(300)));
    let prod = load_env(&path, Some("production")).unwrap();
    assert_eq!(
        prod.categories["security"].timeout,
        Some(Duration::from_secs(600)),
        "a category's environment_overrides"
    );
}

#[test]
fn commands_come_from_the_object_the_entry_or_the_template() {
    let c = load_text(
        "execution:\n  default_command: 'pytest -k \"{filter_expr}\" tests/{category}'\ncategories:\n  unit:\n    command: pytest tests/unit\nlayers:\n  fast:\n    categories:\n      - name: unit\n        timeout_seconds: 5\n      - name: lint\n        command: ruff check\n      - name: smoke\n        filters: {include_patterns: [a, b], exclude_patterns: [c]}\n",
        None,
    )
    .unwrap();
    let fast = c.layer("fast").unwrap();
    let command = |n: &str| match &c.category_in(fast, n).kind {
        UnitKind::Command(spec) => spec.command.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(command("unit"), "pytest tests/unit");
    assert_eq!(
        c.category_in(fast, "unit").timeout,
        Some(Duration::from_secs(5))
    );
    assert!(
        c.category_in(fast, "unit")
            .mappings
            .contains(&Mapping::new("command", "from `categories.unit`"))
    );
    assert_eq!(command("lint"), "ruff check");
    assert_eq!(
        command("smoke"),
        "pytest -k \"(a or b) and not (c)\" tests/smoke"
    );
}

#[test]
fn environments_named_in_overrides_are_valid_and_close_typos_are_not() {
    let yaml = |env: &str| {
        format!(
            "categories:\n  unit: {{command: 'true'}}\nlayers:\n  fast:\n    categories: [unit]\n    max_duration_minutes: 1\n    environment_overrides:\n      {env}:\n        max_duration_minutes: 9\n"
        )
    };
    let qa = load_text(&yaml("qa"), Some("qa")).unwrap();
    assert_eq!(qa.environment, "qa");
    assert_eq!(
        qa.layer("fast").unwrap().max_duration,
        Some(Duration::from_secs(540))
    );
    let err = load_text(&yaml("stagign"), None).unwrap_err().to_string();
    assert!(err.contains("unknown environment `stagign`"), "{err}");
    assert!(err.contains("did you mean `staging`?"), "{err}");
    let err = load_text(&yaml("qa"), Some("uat")).unwrap_err().to_string();
    assert!(err.contains("unknown environment `uat`"), "{err}");
    assert!(err.contains("qa"), "{err}");
}

#[test]
fn native_keys_and_old_keys_cannot_both_hide_a_problem() {
    let err = load_text(
        "service_dependencies:\n  db: {health_check_endpoint: 'localhost:1'}\nservices:\n  db: {ready: {tcp: 'localhost:2'}}\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("service `db` is defined in both `services` and `service_dependencies`"),
        "{err}"
    );
    let err = load_text("categories:\n  a: {command: x, heavy: [memroy]}\n", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `memory`?"), "{err}");
}
