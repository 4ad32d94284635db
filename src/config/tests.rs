//! End-to-end tests of [`super::load`]: the invalid-fixture corpus, table-driven error
//! cases (YAML -> message, line, column), environment overlays and
//! `environment_overrides`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Writes `files` (relative path -> content) under a fresh temporary directory.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn load_in(dir: &Path, env: Option<&str>) -> Result<Config, ConfigError> {
    load(&LoadOptions {
        path: dir.join("layers.yaml"),
        environment: env.map(str::to_string),
    })
}

fn load_str(yaml: &str) -> Result<Config, ConfigError> {
    let dir = project(&[("layers.yaml", yaml)]);
    load_in(dir.path(), None)
}

/// Reads `# expect: <substring>` and `# at: LINE:COL` from a fixture's first two lines.
pub(crate) fn fixture_expectation(text: &str) -> (String, u64, u64) {
    let mut lines = text.lines();
    let expect = lines
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .expect("first line: # expect: <substring>")
        .to_string();
    let at = lines
        .next()
        .and_then(|l| l.strip_prefix("# at: "))
        .expect("second line: # at: LINE:COL");
    let (line, col) = at.split_once(':').expect("LINE:COL");
    (
        expect,
        line.trim().parse().unwrap(),
        col.trim().parse().unwrap(),
    )
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_fails_where_it_says() {
    let files = fixtures();
    assert!(files.len() >= 20, "only {} fixtures", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (expect, line, col) = fixture_expectation(&text);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match load(&LoadOptions::new(path)) {
            Ok(_) => failures.push(format!("{name}: loaded without error")),
            Err(err) => {
                let shown = err.to_string();
                let place = format!("{name}:{line}:{col}");
                if !shown.contains(&expect) || !shown.contains(&place) {
                    failures.push(format!(
                        "{name}: expected `{expect}` at {line}:{col}, got:\n{shown}"
                    ));
                }
                if (err.line(), err.column()) != (Some(line), Some(col)) {
                    failures.push(format!(
                        "{name}: first error at {:?}:{:?}, expected {line}:{col}:\n{shown}",
                        err.line(),
                        err.column()
                    ));
                }
                if err.file() != path.as_path() {
                    failures.push(format!("{name}: error names {}", err.file().display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const CATS: &str = "categories:\n  unit:\n    nextest: {filter: \"kind(lib)\"}\n  lint:\n    command: cargo clippy\n";

/// (yaml, expected substring, line, column). `CATS` is 5 lines long.
fn table() -> Vec<(String, &'static str, u64, u64)> {
    let with_cats = |rest: &str| format!("{CATS}{rest}");
    vec![
        (
            with_cats("layers:\n  - name: f\n    categories: [unit, lnt]\n"),
            "unknown category `lnt` in layer `f`",
            8,
            24,
        ),
        (
            with_cats("layers:\n  - name: f\n    categories: [unit]\n    priority: high\n"),
            "invalid type for `layers[f].priority`: expected an integer, found string \"high\"",
            9,
            15,
        ),
        (
            with_cats("layers:\n  - name: f\n    categories: [unit]\n    background: 1\n"),
            "expected a boolean, found integer `1`",
            9,
            17,
        ),
        (
            with_cats(
                "layers:\n  - name: f\n    categories: [unit]\n    resource_limits: {max_cpu_percent: 0}\n",
            ),
            "invalid `resource_limits.max_cpu_percent` of layer `f`: expected a whole percentage from 1 to 100, found `0`",
            9,
            40,
        ),
        (
            with_cats(
                "layers:\n  - name: f\n    categories: [unit]\n    resource_limits: {max_mem_mb: 10}\n",
            ),
            "unknown key `max_mem_mb` in `layers[f].resource_limits`",
            9,
            23,
        ),
        (
            with_cats("layers:\n  - name: f\n    categories: [unit]\n    conflicts: [f]\n"),
            "layer `f` conflicts with itself",
            9,
            17,
        ),
        (
            with_cats("layers:\n  - name: f\n    categories: [unit, unit]\n"),
            "category `unit` is listed twice in layer `f`",
            8,
            24,
        ),
        (
            "categories:\n  c:\n    command: x\n    retries: -1\n".into(),
            "invalid `retries` of category `c`: expected an integer from 0 to 100, found `-1`",
            4,
            14,
        ),
        (
            "categories:\n  c:\n    command: x\n    env: {A: [1]}\n".into(),
            "expected a string, number or boolean, found a list",
            4,
            14,
        ),
        (
            "categories:\n  c:\n    nextest: {filter: x, leak: ignore}\n".into(),
            "unknown value `ignore` for `categories.c.nextest.leak`",
            3,
            32,
        ),
        (
            "categories:\n  c:\n    command: x\n    files: [\"[z\"]\n".into(),
            "invalid glob `[z` in `files` of category `c`",
            4,
            13,
        ),
        (
            "services:\n  s:\n    ready: {http: \"localhost:80\"}\n".into(),
            "expected an `http://` or `https://` URL",
            3,
            19,
        ),
        (
            "services:\n  s:\n    ready: {tcp: \"a:1\", http: \"http://a\"}\n".into(),
            "expected one of `tcp`, `http`, `command`, found a mapping",
            3,
            12,
        ),
        (
            "services:\n  s:\n    stop: ./stop\n".into(),
            "service `s` has neither `start` nor `ready`",
            2,
            3,
        ),
        (
            "- just\n- a list\n".into(),
            "expected a mapping at the top level, found a list",
            1,
            1,
        ),
        (
            "categories:\n  c: {command: [x}\n".into(),
            "invalid YAML: mismatched bracket",
            2,
            16,
        ),
        (
            with_cats(
                "layers:\n  - name: f\n    categories: [unit]\n    environment_overrides:\n      test:\n        name: g\n",
            ),
            "`environment_overrides` of layer `f` cannot change `name`",
            11,
            9,
        ),
        (
            with_cats(
                "layers:\n  - name: f\n    categories: [unit]\n    environment_overrides:\n      staging:\n        categories: [nope]\n",
            ),
            "unknown category `nope` in layer `f`",
            11,
            22,
        ),
        (
            with_cats(
                "layers:\n  - name: f\n    categories: [unit]\n    environment_overrides:\n      production: {fail_fats: layer}\n",
            ),
            "unknown key `fail_fats` in `layers[f].environment_overrides.production`",
            10,
            20,
        ),
    ]
}

#[test]
fn table_of_errors() {
    let mut failures = Vec::new();
    for (yaml, expect, line, col) in table() {
        match load_str(&yaml) {
            Ok(_) => failures.push(format!("loaded without error:\n{yaml}")),
            Err(err) => {
                let shown = err.to_string();
                if !shown.contains(expect) || (err.line(), err.column()) != (Some(line), Some(col))
                {
                    failures.push(format!(
                        "expected `{expect}` at {line}:{col}, got {:?}:{:?}:\n{shown}\n--- yaml:\n{yaml}",
                        err.line(),
                        err.column()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn several_unknown_keys_are_reported_together() {
    let err = load_str("execution:\n  max_paralel_tests: 2\ncategories:\n  c:\n    comand: x\n")
        .unwrap_err();
    assert_eq!(err.diagnostics().len(), 2, "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("did you mean `max_parallel_tests`?"),
        "{shown}"
    );
    assert!(shown.contains("did you mean `command`?"), "{shown}");
    assert!(
        shown.contains("aborting due to 2 configuration errors"),
        "{shown}"
    );
}

#[test]
fn missing_file_names_the_path_and_the_flag() {
    let err = load(&LoadOptions::new("/definitely/not/here/layers.yaml")).unwrap_err();
    assert_eq!(err.file(), Path::new("/definitely/not/here/layers.yaml"));
    assert_eq!(err.line(), None);
    let shown = err.to_string();
    assert!(
        shown.contains("/definitely/not/here/layers.yaml"),
        "{shown}"
    );
    assert!(shown.contains("--config PATH"), "{shown}");
}

#[test]
fn defaults_and_legacy_mode() {
    let config = load_str(CATS).unwrap();
    assert!(!config.has_layers);
    assert!(config.layers.is_empty());
    assert_eq!(config.version, 1);
    assert_eq!(config.environment, "test");
    assert!(config.overlays.is_empty());
    assert_eq!(config.execution.kill_grace, Duration::from_secs(5));
    assert_eq!(config.execution.retry_backoff, Duration::from_millis(200));
    assert_eq!(config.execution.output_head_bytes, 16384);
    assert_eq!(config.execution.output_tail_bytes, 65536);
    assert_eq!(config.execution.log_file_max_bytes, 8 << 20);
    let unit = &config.categories["unit"];
    assert!(
        matches!(&unit.kind, UnitKind::Nextest(n) if n.filter == "kind(lib)" && n.leak == LeakPolicy::Fail)
    );
    assert_eq!(unit.retries, 0);
    assert!(!unit.critical);
    assert!(config.source.is_absolute());
    assert_eq!(config.root, config.source.parent().unwrap());
}

#[test]
fn layer_fields_and_defaults() {
    let yaml = format!(
        "{CATS}layers:\n  - name: a\n    categories: [unit]\n  - name: b\n    categories: [lint]\n    fail_fast: false\n    execution_mode: hybrid\n    max_duration_minutes: 1.5\n    success_criteria: {{min_pass_rate: 90, max_failures: 2, critical_tests_must_pass: false}}\n  - name: c\n    categories: [lint]\n    fail_fast: true\n    execution_order: 10\n"
    );
    let config = load_str(&yaml).unwrap();
    assert!(config.has_layers);
    let [a, b, c] = &config.layers[..] else {
        panic!()
    };
    assert_eq!(
        (a.execution_order, b.execution_order, c.execution_order),
        (1, 2, 10)
    );
    assert_eq!(a.fail_fast, FailFast::Layer);
    assert_eq!(a.execution_mode, LayerMode::Parallel);
    assert!(a.success_criteria.critical_tests_must_pass);
    assert_eq!(b.fail_fast, FailFast::Disabled);
    assert_eq!(c.fail_fast, FailFast::Immediate);
    assert_eq!(b.execution_mode, LayerMode::Hybrid);
    assert_eq!(b.max_duration, Some(Duration::from_secs(90)));
    assert_eq!(b.success_criteria.min_pass_rate, Some(90.0));
    assert_eq!(b.success_criteria.max_failures, Some(2));
    assert!(!b.success_criteria.critical_tests_must_pass);
}

#[test]
fn command_files_env_and_packages() {
    let yaml = "categories:\n  py:\n    command: pytest {file}\n    files: tests/test_*.py\n    env: {N: 1, F: 1.5, B: false, S: s}\n  rs:\n    nextest: {filter: all(), package: core, leak: warn}\n  rs2:\n    nextest: {filter: all(), package: [a, b], workspace: true, features: [x], test_args: [--ignored]}\n";
    let config = load_str(yaml).unwrap();
    let UnitKind::Command(py) = &config.categories["py"].kind else {
        panic!()
    };
    assert_eq!(py.files, ["tests/test_*.py"]);
    let env = &config.categories["py"].env;
    assert_eq!(
        (env["N"].as_str(), env["F"].as_str(), env["B"].as_str()),
        ("1", "1.5", "false")
    );
    let UnitKind::Nextest(rs) = &config.categories["rs"].kind else {
        panic!()
    };
    assert_eq!(
        (rs.packages.clone(), rs.leak),
        (vec!["core".to_string()], LeakPolicy::Warn)
    );
    let UnitKind::Nextest(rs2) = &config.categories["rs2"].kind else {
        panic!()
    };
    assert_eq!(rs2.packages, ["a", "b"]);
    assert!(rs2.workspace);
    assert_eq!(rs2.test_args, ["--ignored"]);
}

const BASE: &str = "execution:\n  max_parallel_tests: 4\n  max_memory_mb: 8192\ncategories:\n  unit:\n    nextest: {filter: \"kind(lib)\"}\n    timeout_seconds: 30\n  lint:\n    command: cargo clippy\nlayers:\n  - name: fast_feedback\n    categories: [unit, lint]\n    max_duration_minutes: 5\n    environment_overrides:\n      dev:\n        max_duration_minutes: 60\n        fail_fast: immediate\n      production:\n        success_criteria: {max_failures: 0}\n  - name: full\n    categories: [unit, lint]\n";

fn overlay_project() -> tempfile::TempDir {
    project(&[
        ("layers.yaml", BASE),
        (
            "config/environments/test.yaml",
            "# nothing special under test\n",
        ),
        (
            "config/environments/development.yaml",
            "execution:\n  max_parallel_tests: 2\ncategories:\n  unit:\n    timeout_seconds: 120\nlayers:\n  - name: full\n    fail_fast: disabled\n  - name: extra\n    categories: [lint]\n",
        ),
        (
            "config/environments/production.yaml",
            "execution:\n  max_memory_mb: 4096\nlayers:\n  - name: fast_feedback\n    resource_limits:\n      max_memory_mb: 6000\n",
        ),
    ])
}

#[test]
fn environments_are_listed_sorted() {
    let dir = overlay_project();
    assert_eq!(
        environments_in(dir.path()),
        ["development", "production", "test"]
    );
    assert!(environments_in(Path::new("/definitely/not/here")).is_empty());
}

#[test]
fn default_environment_is_test() {
    let dir = overlay_project();
    let config = load_in(dir.path(), None).unwrap();
    assert_eq!(config.environment, "test");
    assert_eq!(config.overlays.len(), 1);
    assert!(config.overlays[0].ends_with("config/environments/test.yaml"));
    assert_eq!(config.execution.max_parallel_tests, Some(4));
    assert_eq!(config.layers.len(), 2);
    assert_eq!(
        config.layers[0].max_duration,
        Some(Duration::from_secs(300))
    );
    assert_eq!(config.layers[0].fail_fast, FailFast::Layer);
}

#[test]
fn dev_short_name_merges_overlay_and_overrides() {
    let dir = overlay_project();
    for name in ["dev", "development"] {
        let config = load_in(dir.path(), Some(name)).unwrap();
        assert_eq!(config.environment, "development");
        assert!(config.overlays[0].ends_with("config/environments/development.yaml"));
        // Overlay: scalar replaced, untouched sibling kept.
        assert_eq!(config.execution.max_parallel_tests, Some(2));
        assert_eq!(config.execution.max_memory_mb, Some(8192));
        assert_eq!(
            config.categories["unit"].timeout,
            Some(Duration::from_secs(120))
        );
        assert!(matches!(
            config.categories["unit"].kind,
            UnitKind::Nextest(_)
        ));
        // Layers merged by name, new names appended.
        let names: Vec<&str> = config.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["fast_feedback", "full", "extra"]);
        assert_eq!(config.layer("full").unwrap().fail_fast, FailFast::Disabled);
        assert_eq!(config.layer("full").unwrap().categories, ["unit", "lint"]);
        // environment_overrides keyed `dev` apply to `development`.
        let ff = config.layer("fast_feedback").unwrap();
        assert_eq!(ff.max_duration, Some(Duration::from_secs(3600)));
        assert_eq!(ff.fail_fast, FailFast::Immediate);
        assert_eq!(ff.success_criteria.max_failures, None);
    }
}

#[test]
fn production_override_applies_and_invalid_overlay_value_points_at_overlay() {
    let dir = overlay_project();
    // production.yaml lowers the budget below the layer limit it sets: 6000 > 4096.
    let err = load_in(dir.path(), Some("prod")).unwrap_err();
    assert!(
        err.file().ends_with("config/environments/production.yaml"),
        "{err}"
    );
    assert_eq!((err.line(), err.column()), (Some(6), Some(22)));
    let shown = err.to_string();
    assert!(shown.contains("production.yaml:6:22"), "{shown}");
    assert!(
        shown.contains("is greater than the global budget"),
        "{shown}"
    );

    std::fs::write(
        dir.path().join("config/environments/production.yaml"),
        "execution:\n  max_memory_mb: 4096\n",
    )
    .unwrap();
    let config = load_in(dir.path(), Some("production")).unwrap();
    assert_eq!(config.environment, "production");
    assert_eq!(
        config
            .layer("fast_feedback")
            .unwrap()
            .success_criteria
            .max_failures,
        Some(0)
    );
    assert_eq!(
        config.layer("fast_feedback").unwrap().fail_fast,
        FailFast::Layer
    );

    std::fs::write(
        dir.path().join("config/environments/production.yaml"),
        "execution:\n  max_parallel_tests: \"many\"\n",
    )
    .unwrap();
    let err = load_in(dir.path(), Some("prod")).unwrap_err();
    assert!(err.file().ends_with("production.yaml"));
    assert_eq!((err.line(), err.column()), (Some(2), Some(23)));
}

#[test]
fn unknown_environment_lists_files_and_suggests() {
    let dir = overlay_project();
    let err = load_in(dir.path(), Some("prdo")).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("unknown environment `prdo`"), "{shown}");
    assert!(shown.contains("did you mean `production`?"), "{shown}");
    assert!(
        shown.contains("available environments: development, production, staging, test"),
        "{shown}"
    );
    assert!(err.file().ends_with("config/environments/prdo.yaml"));

    // Every environment file is optional for the standard names.
    let bare = project(&[("layers.yaml", CATS)]);
    assert_eq!(load_in(bare.path(), None).unwrap().environment, "test");
    let staging = load_in(bare.path(), Some("staging")).unwrap();
    assert_eq!(staging.environment, "staging");
    assert!(staging.overlays.is_empty());
    let err = load_in(bare.path(), Some("qa")).unwrap_err().to_string();
    assert!(err.contains("unknown environment `qa`"), "{err}");
}

#[test]
fn overlay_syntax_error_points_at_overlay() {
    let dir = project(&[
        ("layers.yaml", CATS),
        (
            "config/environments/test.yaml",
            "execution:\n  max_parallel_tests: [1\n",
        ),
    ]);
    let err = load_in(dir.path(), None).unwrap_err();
    assert!(err.file().ends_with("test.yaml"), "{err}");
    assert!(err.to_string().contains("invalid YAML"), "{err}");
}

#[test]
fn overlay_unknown_key_points_at_overlay() {
    let dir = project(&[
        ("layers.yaml", CATS),
        (
            "config/environments/test.yaml",
            "execution:\n  max_paralel_tests: 1\n",
        ),
    ]);
    let err = load_in(dir.path(), None).unwrap_err();
    assert!(
        err.file().ends_with("config/environments/test.yaml"),
        "{err}"
    );
    assert_eq!((err.line(), err.column()), (Some(2), Some(3)));
    assert!(
        err.to_string()
            .contains("did you mean `max_parallel_tests`?"),
        "{err}"
    );
}

#[test]
fn project_layers_load_in_every_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let envs = environments_in(root);
    for env in ["test", "development", "staging", "production"] {
        assert!(
            envs.iter().any(|e| e == env),
            "config/environments/{env}.yaml missing"
        );
    }
    for env in envs.iter().map(String::as_str).chain(["dev", "prod"]) {
        let opts = LoadOptions {
            path: root.join("layers.yaml"),
            environment: Some(env.to_string()),
        };
        if let Err(e) = load(&opts) {
            panic!("layers.yaml with --env {env}:\n{e}");
        }
    }
}

#[test]
fn anchors_live_in_x_keys_and_merge_errors_show_the_definition() {
    let yaml = "x-py: &py\n  timeout_seconds: 30\n  retries: 1\ncategories:\n  a:\n    <<: *py\n    command: pytest a\n  b:\n    <<: *py\n    command: pytest b\n    retries: 3\n";
    let config = load_str(yaml).unwrap();
    assert_eq!(config.categories["a"].retries, 1);
    assert_eq!(config.categories["b"].retries, 3);
    assert_eq!(
        config.categories["b"].timeout,
        Some(Duration::from_secs(30))
    );

    let err = load_str(&yaml.replace("retries: 1", "retries: \"1\"")).unwrap_err();
    // Reported where the merge key uses the value, with a note pointing at its definition.
    assert_eq!((err.line(), err.column()), (Some(6), Some(9)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("the value is defined at"), "{shown}");
    assert!(shown.contains("layers.yaml:3:12"), "{shown}");
}

/// Every numeric key of `layers.yaml`: (placeholder, the largest or smallest allowed
/// value, a value out of range, how the error names the key).
const NUMERIC_KEYS: &[(&str, &str, &str, &str)] = &[
    (
        "P_TESTS",
        "100000",
        "100001",
        "`execution.max_parallel_tests`",
    ),
    (
        "BG_SLOTS",
        "100000",
        "0",
        "`execution.background_max_slots`",
    ),
    (
        "MEM",
        "1073741824",
        "1073741825",
        "`execution.max_memory_mb`",
    ),
    ("CPU", "100", "101", "`execution.max_cpu_percent`"),
    (
        "GLOBAL_T",
        "525600",
        "525600.5",
        "`execution.global_timeout_minutes`",
    ),
    ("GRACE", "31536000", "-1", "`execution.kill_grace_seconds`"),
    (
        "BACKOFF",
        "31536000000",
        "31536000001",
        "`execution.retry_backoff_ms`",
    ),
    (
        "HEAD",
        "1073741824",
        "1073741825",
        "`execution.output_head_bytes`",
    ),
    ("TAIL", "0", "-1", "`execution.output_tail_bytes`"),
    ("LOG", "1073741824", "1e20", "`execution.log_file_max_mb`"),
    (
        "STARTUP",
        "31536000",
        "1e300",
        "`startup_timeout_seconds` of service `db`",
    ),
    (
        "TIMEOUT",
        "31536000",
        "31536001",
        "`timeout_seconds` of category `c`",
    ),
    ("SLOW", "0.001", "-0.5", "`slow_seconds` of category `c`"),
    (
        "C_PAR",
        "100000",
        "4611686018427387904",
        "`max_parallel_instances` of category `c`",
    ),
    (
        "PRIO_ORDER",
        "-1000000",
        "-1000001",
        "`priority_order` of category `c`",
    ),
    ("RETRIES", "100", "4294967295", "`retries` of category `c`"),
    ("C_MIN_MEM", "0", "-1", "`min_memory_mb` of category `c`"),
    (
        "C_MAX_MEM",
        "1073741824",
        "18446744073709551615",
        "`max_memory_mb` of category `c`",
    ),
    (
        "RLIMIT",
        "1073741824",
        "99999999999999999999",
        "`rlimit_as_mb` of category `c`",
    ),
    (
        "ORDER",
        "1000000",
        "1000001",
        "`execution_order` of layer `f`",
    ),
    (
        "PRIORITY",
        "-1000000",
        "-2000000",
        "`priority` of layer `f`",
    ),
    (
        "MAX_DUR",
        "525600",
        "1e300",
        "`max_duration_minutes` of layer `f`",
    ),
    (
        "L_MEM",
        "1073741824",
        "0",
        "`resource_limits.max_memory_mb` of layer `f`",
    ),
    (
        "L_CPU",
        "1",
        "0",
        "`resource_limits.max_cpu_percent` of layer `f`",
    ),
    (
        "L_PAR",
        "100000",
        "100001",
        "`resource_limits.max_parallel_instances` of layer `f`",
    ),
    (
        "PASS",
        "100",
        "100.5",
        "`success_criteria.min_pass_rate` of layer `f`",
    ),
    (
        "FAILS",
        "1000000000",
        "1000000001",
        "`success_criteria.max_failures` of layer `f`",
    ),
];

const EVERY_NUMBER: &str = "version: 1
execution:
  max_parallel_tests: P_TESTS
  background_max_slots: BG_SLOTS
  max_memory_mb: MEM
  max_cpu_percent: CPU
  global_timeout_minutes: GLOBAL_T
  kill_grace_seconds: GRACE
  retry_backoff_ms: BACKOFF
  output_head_bytes: HEAD
  output_tail_bytes: TAIL
  log_file_max_mb: LOG
services:
  db:
    ready: {tcp: \"127.0.0.1:5432\"}
    startup_timeout_seconds: STARTUP
categories:
  c:
    command: x
    timeout_seconds: TIMEOUT
    slow_seconds: SLOW
    max_parallel_instances: C_PAR
    priority_order: PRIO_ORDER
    retries: RETRIES
    min_memory_mb: C_MIN_MEM
    max_memory_mb: C_MAX_MEM
    rlimit_as_mb: RLIMIT
layers:
  - name: f
    categories: [c]
    execution_order: ORDER
    priority: PRIORITY
    max_duration_minutes: MAX_DUR
    resource_limits:
      max_memory_mb: L_MEM
      max_cpu_percent: L_CPU
      max_parallel_instances: L_PAR
    success_criteria:
      min_pass_rate: PASS
      max_failures: FAILS
";

/// `EVERY_NUMBER` with each placeholder replaced by its allowed extreme, except `bad`,
/// which gets its out-of-range value.
fn every_number(bad: Option<&str>) -> String {
    let mut yaml = EVERY_NUMBER.to_string();
    // Longest placeholders first, so `C_MAX_MEM` is not taken for `MEM`.
    let mut keys: Vec<_> = NUMERIC_KEYS.iter().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.0.len()));
    for (key, good, out, _) in keys {
        let v = if bad == Some(*key) { out } else { good };
        yaml = yaml.replace(key, v);
    }
    yaml
}

#[test]
fn every_numeric_key_accepts_its_extremes() {
    let config = load_str(&every_number(None)).unwrap_or_else(|e| panic!("{e}"));
    let e = &config.execution;
    assert_eq!(e.max_parallel_tests, Some(100_000));
    assert_eq!(e.background_max_slots, Some(100_000));
    assert_eq!(e.max_memory_mb, Some(1 << 30));
    assert_eq!(e.global_timeout, Some(Duration::from_secs(365 * 86_400)));
    assert_eq!(e.retry_backoff, Duration::from_secs(365 * 86_400));
    assert_eq!(e.log_file_max_bytes, 1 << 50);
    let c = &config.categories["c"];
    assert_eq!((c.retries, c.max_parallel_instances), (100, Some(100_000)));
    assert_eq!(c.priority_order, -1_000_000);
    assert_eq!(c.slow_after, Some(Duration::from_millis(1)));
    let l = &config.layers[0];
    assert_eq!((l.execution_order, l.priority), (1_000_000, -1_000_000));
    assert_eq!(l.success_criteria.max_failures, Some(1_000_000_000));
    assert_eq!(l.success_criteria.min_pass_rate, Some(100.0));
}

#[test]
fn every_numeric_key_rejects_values_out_of_range() {
    let mut failures = Vec::new();
    for (key, _, out, what) in NUMERIC_KEYS {
        let yaml = every_number(Some(key));
        let key_line = format!(
            "{}: {out}",
            what.split('`').nth(1).unwrap().rsplit('.').next().unwrap()
        );
        let line = yaml
            .lines()
            .position(|l| l.trim() == key_line)
            .unwrap_or_else(|| panic!("no line `{key_line}`")) as u64
            + 1;
        match load_str(&yaml) {
            Ok(_) => failures.push(format!("{what} = {out}: loaded")),
            Err(err) => {
                let shown = err.to_string();
                let m = err.message();
                let ok = err.diagnostics().len() == 1
                    && err.line() == Some(line)
                    && m.starts_with(&format!("invalid {what}: expected "))
                    && m.ends_with(&format!(", found `{}`", out.trim_start_matches('+')))
                    && (m.contains(" from ") || m.contains("greater than 0 and at most"));
                if !ok {
                    failures.push(format!("{what} = {out} (line {line}):\n{shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn out_of_range_messages_name_the_value_and_the_range() {
    let err = load_str(&every_number(Some("RETRIES"))).unwrap_err();
    assert_eq!(
        err.message(),
        "invalid `retries` of category `c`: expected an integer from 0 to 100, found `4294967295`"
    );
    let err = load_str(&every_number(Some("C_MAX_MEM"))).unwrap_err();
    assert!(
        err.message().ends_with(
            "expected a whole number of MiB from 1 to 1073741824 (1 PiB), found `18446744073709551615`"
        ),
        "{err}"
    );
    let err = load_str(&every_number(Some("MAX_DUR"))).unwrap_err();
    assert!(err.message().ends_with("found `1e300`"), "{err}");
    // 0 where 0 means nothing: the help says why.
    let err = load_str(&every_number(Some("L_CPU"))).unwrap_err();
    assert!(err.to_string().contains("= help: 0% of the cores"), "{err}");
    let err = load_str("categories:\n  c:\n    command: x\n    timeout_seconds: 0\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("= help: a duration of 0 would be over at once"),
        "{err}"
    );
    // A whole number written with an exponent is an integer; a fraction is not.
    let config = load_str("categories:\n  c:\n    command: x\n    retries: 1e1\n").unwrap();
    assert_eq!(config.categories["c"].retries, 10);
    let err = load_str("categories:\n  c:\n    command: x\n    retries: 1.5\n").unwrap_err();
    assert!(
        err.message()
            .ends_with("expected an integer from 0 to 100, found `1.5`"),
        "{err}"
    );
    let err = load_str("version: 18446744073709551616\n").unwrap_err();
    assert!(err.message().starts_with("unsupported `version`"), "{err}");
}

#[test]
fn serde_integer_overflow_states_the_range_of_the_type() {
    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[allow(dead_code)]
        n: u32,
    }
    let mut sources = node::Sources::default();
    let tree = node::parse(&mut sources, Path::new("t.yaml"), "n: 4294967296\n".into()).unwrap();
    let err = de::from_node::<T>(&tree, &sources).unwrap_err();
    assert_eq!(
        err[0].message,
        "invalid value for `n`: expected an integer from 0 to 4294967295, found integer `4294967296`"
    );
    let tree = node::parse(&mut sources, Path::new("t.yaml"), "n: -1\n".into()).unwrap();
    let err = de::from_node::<T>(&tree, &sources).unwrap_err();
    assert!(err[0].message.contains("from 0 to 4294967295"), "{err:?}");
}

#[test]
fn every_bounded_key_is_in_the_documented_ranges() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let start = docs.find("### Ranges").expect("a Ranges section");
    let section = &docs[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |i| i + 4)];
    let layers_keys = NUMERIC_KEYS
        .iter()
        .map(|(_, _, _, what)| what.split('`').nth(1).unwrap().rsplit('.').next().unwrap());
    let agent_keys = [
        "test_orchestrator",
        "resource_manager",
        "progress_streamer",
        "background_e2e",
    ]
    .into_iter()
    .flat_map(|stem| agents::numeric_keys(stem).iter().map(|(k, _)| *k));
    let missing: Vec<&str> = layers_keys
        .chain(agent_keys)
        .filter(|k| !section.contains(&format!("`{k}`")) && !section.contains(&format!(".{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md#ranges: {missing:?}"
    );
}

#[test]
fn pytest_categories_and_their_errors() {
    let yaml = "categories:\n  py:\n    pytest: {paths: tests, markers: \"not slow\", k: add, args: [-x], python: .venv/bin/python}\n  bare:\n    pytest: {}\n";
    let config = load_str(yaml).unwrap();
    let UnitKind::Pytest(py) = &config.categories["py"].kind else {
        panic!()
    };
    assert_eq!(py.paths, ["tests"]);
    assert_eq!(py.markers.as_deref(), Some("not slow"));
    assert_eq!(py.k.as_deref(), Some("add"));
    assert_eq!(py.args, ["-x"]);
    assert_eq!(py.python, ".venv/bin/python");
    let UnitKind::Pytest(bare) = &config.categories["bare"].kind else {
        panic!()
    };
    assert_eq!((bare.python.as_str(), bare.paths.len()), ("python3", 0));

    for (yaml, expect, line, col) in [
        (
            "categories:\n  c:\n    command: x\n    pytest: {}\n",
            "category `c` has both `command` and `pytest`: expected exactly one of `command`, `nextest`, `pytest`",
            4,
            13,
        ),
        (
            "categories:\n  c:\n    pytest: {marker: x}\n",
            "unknown key `marker` in `categories.c.pytest`",
            3,
            14,
        ),
        (
            "categories:\n  c:\n    pytest: {k: \" \"}\n",
            "empty `pytest.k` of category `c`",
            3,
            13,
        ),
        (
            "categories:\n  c:\n    pytest: {}\n    files: [x]\n",
            "`files` of category `c` only applies to `command` categories, not `pytest`",
            4,
            12,
        ),
    ] {
        let err = load_str(yaml).expect_err(yaml);
        let shown = err.to_string();
        assert!(shown.contains(expect), "{shown}");
        assert_eq!(
            (err.line(), err.column()),
            (Some(line), Some(col)),
            "{shown}"
        );
    }
}

#[test]
fn old_filters_and_markers_become_pytest_k_and_m() {
    let yaml = "categories:\n  py:\n    pytest: {}\n    filters: {include_patterns: [unit, fast], exclude_patterns: [slow]}\n    markers: [smoke, api]\n  own:\n    pytest: {k: mine, markers: own}\n    filters: {include_patterns: [unit]}\n";
    let config = load_str(yaml).unwrap();
    let UnitKind::Pytest(py) = &config.categories["py"].kind else {
        panic!()
    };
    assert_eq!(py.k.as_deref(), Some("(unit or fast) and not (slow)"));
    assert_eq!(py.markers.as_deref(), Some("smoke or api"));
    let UnitKind::Pytest(own) = &config.categories["own"].kind else {
        panic!()
    };
    assert_eq!(
        (own.k.as_deref(), own.markers.as_deref()),
        (Some("mine"), Some("own"))
    );
}
