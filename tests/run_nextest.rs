//! The `nextest` unit kind end to end, on the fixture crate `tests/fixtures/nextest_crate`:
//! one unit per Rust test, every outcome (pass, fail, flaky, slow, leak, crash, timeout,
//! ignored), the overlap rules between categories, and the infrastructure errors (a test
//! that does not compile, cargo-nextest missing).
//!
//! The fixture is built in place, once for this test binary, into
//! `target/tmp/nextest-fixture` (`CARGO_TARGET_DIR` given to the runner, which passes it
//! on to cargo); the runner's own files go to a temporary project.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The fixture crate (run in place: a copy would be rebuilt for every test).
fn fixture_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nextest_crate")
}

/// Where the fixture is built, shared by every test of this binary.
fn fixture_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("nextest-fixture")
}

/// A project whose `layers.yaml` is `yaml` with `@CRATE@` (the fixture crate) and
/// `@STATE@` (a directory the fixture's tests write to) filled in.
fn project(yaml: &str) -> (Project, PathBuf) {
    let project = Project::new();
    let state = project.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let yaml = yaml
        .replace("@CRATE@", &fixture_crate().display().to_string())
        .replace("@STATE@", &state.display().to_string());
    project.layers(&yaml);
    (project, state)
}

fn run(project: &Project, args: &[&str]) -> Output {
    project
        .runner()
        .args(args)
        .env(
            "CARGO_TARGET_DIR",
            fixture_target_dir().to_str().expect("utf-8 target dir"),
        )
        .run()
}

/// The unit of `test` in `layer/category` (`binary$test`) from the summary.
fn unit<'a>(summary: &'a Value, id: &str) -> &'a Value {
    let u = &summary["units"][id];
    assert!(
        !u.is_null(),
        "no unit {id}; units:\n{}",
        unit_table(summary)
    );
    u
}

const ALL_OUTCOMES: &str = r#"
categories:
  unit:
    cwd: "@CRATE@"
    nextest: { filter: "kind(lib) and not test(/^tests::(hangs|leaks_child)$/)" }
    retries: 1
    slow_seconds: 0.5
    env: { FIXTURE_STATE_DIR: "@STATE@", MARK: "@MARK@" }
  leaky:
    cwd: "@CRATE@"
    nextest: { filter: "test(=tests::leaks_child)", leak: fail }
    env: { FIXTURE_STATE_DIR: "@STATE@", MARK: "@MARK@" }
  integration:
    cwd: "@CRATE@"
    nextest: { filter: "kind(test)" }
    env: { MARK: "@MARK@" }
  hanging:
    cwd: "@CRATE@"
    nextest: { filter: "test(=tests::hangs)" }
    timeout_seconds: 1
    env: { MARK: "@MARK@" }
layers:
  - name: rust
    execution_mode: parallel
    fail_fast: disabled
    categories: [unit, leaky, integration, hanging]
"#;

#[test]
fn every_outcome_of_a_rust_test_suite() {
    let (project, state) = project(ALL_OUTCOMES);
    let out = run(&project, &["--use-layers", "rust", "--jobs", "4"]);
    out.assert_code(1).assert_counts_line(6, 4, 1);
    let (events, summary) = check_run(&project, &out);

    // One unit per test, named `<binary-id>$<test>`, in the category whose filter selects it.
    let mut unit_ids = planned_units(&events, "rust", "unit");
    unit_ids.sort();
    let lib = |t: &str| format!("rust/unit/nextest_fixture$tests::{t}");
    let mut expected: Vec<String> = [
        "adds",
        "fails",
        "flaky",
        "ignored_by_default",
        "reads_crate_file",
        "segfaults",
        "slow",
    ]
    .iter()
    .map(|t| lib(t))
    .collect();
    expected.sort();
    assert_eq!(unit_ids, expected);
    assert_eq!(
        planned_units(&events, "rust", "integration"),
        [
            "rust/integration/nextest_fixture::integration$integration_passes",
            "rust/integration/nextest_fixture::integration$integration_sees_its_binary_id"
        ]
    );

    // Passes, including the test that needs the crate root and nextest's environment.
    for t in ["adds", "reads_crate_file", "slow"] {
        let u = unit(&summary, &lib(t));
        assert_eq!(u["outcome"], "passed", "{t}: {u}");
        assert_eq!(u["attempts"], 1, "{t}: {u}");
    }
    for t in ["integration_passes", "integration_sees_its_binary_id"] {
        let id = format!("rust/integration/nextest_fixture::integration${t}");
        assert_eq!(unit(&summary, &id)["outcome"], "passed");
    }

    // A failure is retried, then reported with its exit code and output.
    let fails = unit(&summary, &lib("fails"));
    assert_eq!(fails["outcome"], "failed");
    assert_eq!(fails["attempts"], 2);
    let finished = unit_events(&events, "test_finished", &lib("fails"));
    assert_eq!(finished.last().unwrap()["exit_code"], 101);
    assert!(
        finished.last().unwrap()["output_tail"]
            .as_str()
            .unwrap()
            .contains("deliberate failure"),
        "{}",
        finished.last().unwrap()
    );
    // The console shows the panic (location, message, left and right), not libtest's
    // trailer, and where the full output is.
    let fail_line = out
        .stdout
        .lines()
        .position(|l| l.contains("FAIL") && l.contains("tests::fails"))
        .unwrap_or_else(|| panic!("no FAIL line\n{out}"));
    let excerpt: Vec<&str> = out.stdout.lines().skip(fail_line + 1).take(6).collect();
    let excerpt = excerpt.join("\n");
    assert!(
        excerpt.contains("panicked at src/lib.rs:"),
        "{excerpt}\n{out}"
    );
    assert!(excerpt.contains("deliberate failure"), "{excerpt}");
    assert!(
        excerpt.contains("left: 4") && excerpt.contains("right: 5"),
        "{excerpt}"
    );
    assert!(excerpt.contains("full output: "), "{excerpt}");
    assert!(!excerpt.contains("test result:"), "{excerpt}");

    // Flaky: fails on attempt 1, passes on attempt 2; NEXTEST_ATTEMPT follows the attempts.
    let flaky = unit(&summary, &lib("flaky"));
    assert_eq!(flaky["outcome"], "passed");
    assert_eq!(flaky["flaky"], true);
    assert_eq!(flaky["attempts"], 2);
    assert!(state.join("flaky-attempt-1").exists());
    assert!(state.join("flaky-attempt-2").exists());

    // Slow: a warning event, and it still passes.
    assert_eq!(
        unit_events(&events, "test_slow", &lib("slow")).len(),
        1,
        "{}",
        dump(&events)
    );

    // A crash names its signal.
    let segv = unit_events(&events, "test_finished", &lib("segfaults"));
    let last = segv.last().unwrap();
    assert_eq!(last["outcome"], "crashed", "{last}");
    assert_eq!(last["signal"], "SIGSEGV", "{last}");

    // A timeout.
    let hangs = unit(&summary, "rust/hanging/nextest_fixture$tests::hangs");
    assert_eq!(hangs["outcome"], "timeout", "{hangs}");

    // A leak fails the test (leak: fail) and the leaked process is killed.
    let leak_id = "rust/leaky/nextest_fixture$tests::leaks_child";
    let leaky = unit(&summary, leak_id);
    assert_eq!(leaky["outcome"], "failed", "{leaky}");
    assert!(
        leaky["message"]
            .as_str()
            .unwrap_or_default()
            .contains("leaked 1 process(es)"),
        "{leaky}"
    );
    let leaked = unit_events(&events, "test_leaked", leak_id);
    assert_eq!(leaked.len(), 1, "{}", dump(&events));
    assert!(
        leaked[0]["processes"][0]
            .as_str()
            .unwrap()
            .contains("sleep 3617"),
        "{}",
        leaked[0]
    );
    let pid = std::fs::read_to_string(state.join("leaked-pid")).unwrap();
    assert!(
        !processes_with("3617")
            .iter()
            .any(|(p, _)| p.to_string() == pid.trim()),
        "the leaked sleep {pid} is still alive"
    );

    // Ignored tests are reported skipped, not run.
    let ignored = unit(&summary, &lib("ignored_by_default"));
    assert_eq!(ignored["status"], "skipped", "{ignored}");
    assert_eq!(ignored["message"], "ignored");
    assert!(!state.join("ignored-ran").exists());

    // Nothing of the run survives it.
    assert_no_process_with(project.marker());
}

#[test]
fn run_ignored_runs_ignored_tests() {
    let yaml = r#"
categories:
  ignored:
    cwd: "@CRATE@"
    nextest: { filter: "test(ignored_by_default)" }
    env: { FIXTURE_STATE_DIR: "@STATE@" }
layers:
  - { name: rust, categories: [ignored] }
"#;
    let (project, state) = project(yaml);
    run(&project, &["--use-layers", "rust", "--run-ignored"])
        .assert_code(0)
        .assert_counts_line(1, 0, 0);
    assert!(state.join("ignored-ran").exists(), "the ignored test ran");

    let (project, state) = self::project(yaml);
    let out = run(&project, &["--use-layers", "rust"]);
    out.assert_code(0).assert_counts_line(0, 0, 1);
    assert!(!state.join("ignored-ran").exists());
}

#[test]
fn leak_warn_keeps_the_outcome() {
    let (project, _state) = project(
        r#"
categories:
  leaky:
    cwd: "@CRATE@"
    nextest: { filter: "test(=tests::leaks_child)", leak: warn }
    env: { FIXTURE_STATE_DIR: "@STATE@", MARK: "@MARK@" }
layers:
  - { name: rust, categories: [leaky] }
"#,
    );
    let out = run(&project, &["--use-layers", "rust"]);
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(
        of_type(&events, "test_leaked").len(),
        1,
        "{}",
        dump(&events)
    );
    assert_no_process_with(project.marker());
}

#[test]
fn a_test_belongs_to_one_category() {
    // Two categories of one layer selecting the same test: a configuration error.
    let (project, _) = project(
        r#"
categories:
  quick: { cwd: "@CRATE@", nextest: { filter: "test(=tests::adds)" } }
  lib: { cwd: "@CRATE@", nextest: { filter: "kind(lib)" } }
layers:
  - { name: rust, categories: [quick, lib] }
"#,
    );
    let out = run(&project, &["--use-layers", "rust"]);
    out.assert_code(2)
        .assert_stderr_contains("nextest_fixture$tests::adds")
        .assert_stderr_contains("`quick`")
        .assert_stderr_contains("`lib`");

    // In layers that run one after the other, the first layer keeps it.
    let (project, _) = self::project(
        r#"
categories:
  quick: { cwd: "@CRATE@", nextest: { filter: "test(=tests::adds)" } }
  more: { cwd: "@CRATE@", nextest: { filter: "test(=tests::adds) or test(=tests::reads_crate_file)" } }
layers:
  - { name: first, categories: [quick] }
  - { name: second, depends_on: [first], categories: [more] }
"#,
    );
    let out = run(&project, &["--use-layers", "second"]);
    out.assert_code(0).assert_counts_line(2, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(
        planned_units(&events, "second", "more"),
        ["second/more/nextest_fixture$tests::reads_crate_file"]
    );
    assert!(
        of_type(&events, "warning").iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("already run by layer `first`")),
        "{}",
        dump(&events)
    );
}

#[test]
fn a_compile_error_is_an_infrastructure_error() {
    let project = Project::new();
    project
        .file(
            "broken/Cargo.toml",
            "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
        )
        .file(
            "broken/src/lib.rs",
            "#[test]\nfn t() { assert_eq!(undefined_value_xyz, 1); }\n",
        )
        .layers(
            r#"
categories:
  unit: { cwd: broken, nextest: { filter: "all()" } }
layers:
  - { name: rust, categories: [unit] }
"#,
        );
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nextest-broken");
    let out = project
        .runner()
        .args(["--use-layers", "rust"])
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .run();
    out.assert_code(3)
        .assert_stderr_contains("do not build")
        .assert_stderr_contains("undefined_value_xyz");
}

#[test]
fn missing_cargo_nextest_says_how_to_install() {
    // A PATH and CARGO_HOME where cargo exists and cargo-nextest does not.
    let real_cargo = std::env::var("CARGO").expect("tests run under cargo");
    let project = Project::new();
    let bin = project.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(project.path("cargo-home")).unwrap();
    std::os::unix::fs::symlink(&real_cargo, bin.join("cargo")).unwrap();
    let path: Vec<PathBuf> = std::iter::once(bin)
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .filter(|dir| !dir.join("cargo-nextest").exists()),
        )
        .collect();
    let path = std::env::join_paths(path).unwrap();
    project.layers(&format!(
        r#"
categories:
  unit: {{ cwd: "{}", nextest: {{ filter: "all()" }} }}
layers:
  - {{ name: rust, categories: [unit] }}
"#,
        fixture_crate().display()
    ));
    let out = project
        .runner()
        .args(["--use-layers", "rust"])
        .env("PATH", path.to_str().unwrap())
        .env("CARGO", &real_cargo)
        .env("CARGO_HOME", project.path("cargo-home").to_str().unwrap())
        .run();
    out.assert_code(3)
        .assert_stderr_contains("cargo-nextest is not installed")
        .assert_stderr_contains("cargo install cargo-nextest --locked");
}

/// An interrupt while the Rust tests build (here: a build script that takes 60 s) stops
/// cargo and everything it started, writes the run's reports and exits 130; the same
/// for SIGTERM and for a SIGINT sent to the runner alone (not to its process group).
#[test]
fn an_interrupt_while_building_stops_cargo_and_exits_130() {
    for signal in ["TERM", "INT"] {
        let project = Project::new();
        project
            .file(
                "slow/Cargo.toml",
                "[package]\nname = \"slow\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
            )
            .file(
                "slow/build.rs",
                "fn main() { std::thread::sleep(std::time::Duration::from_secs(60)); }\n",
            )
            .file("slow/src/lib.rs", "#[test]\nfn t() {}\n")
            .layers(
                r#"
categories:
  unit: { cwd: slow, nextest: { filter: "all()" } }
layers:
  - { name: rust, categories: [unit] }
"#,
            );
        let target = project.path(&format!("target-{}", project.marker()));
        let needle = target.display().to_string();
        let spawned = project
            .runner()
            .args(["--use-layers", "rust", "--junit", "junit.xml"])
            .env("CARGO_TARGET_DIR", &needle)
            .spawn();
        // Wait until the build script runs (its path is under the target directory).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !processes_with(&needle)
            .iter()
            .any(|(_, cmd)| cmd.contains("build-script-build"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the build script never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        spawned.signal(signal);
        let out = spawned.wait_within(std::time::Duration::from_secs(20));
        out.assert_code(130);
        let summary = project.summary();
        assert_eq!(summary["stop_cause"]["kind"], "interrupted", "{summary}");
        assert_eq!(summary["exit_code"], 130);
        assert!(project.path("junit.xml").exists(), "no JUnit report\n{out}");
        assert_no_process_with(&needle);
    }
}

/// `-E` reaches nextest's own filterset: `test()` narrows the listing, a category the
/// filter rejects whole is not listed at all, and `--list` shows the Rust tests.
#[test]
fn a_filter_narrows_the_nextest_listing() {
    let (project, _) = project(
        r#"
categories:
  unit: { cwd: "@CRATE@", nextest: { filter: "kind(lib)" } }
  integration: { cwd: "@CRATE@", nextest: { filter: "kind(test)" } }
layers:
  - { name: rust, categories: [unit, integration] }
"#,
    );
    // A cargo that records its arguments, then runs the real one.
    let log = project.path("cargo-args.log");
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    project.file(
        "cargo-wrapper.sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    );
    let wrapper = project.path("cargo-wrapper.sh");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = project
        .runner()
        .args([
            "--list",
            "--json",
            "--use-layers",
            "rust",
            "-E",
            "category(unit) & test(=tests::adds)",
        ])
        .env("CARGO", wrapper.to_str().unwrap())
        .env(
            "CARGO_TARGET_DIR",
            fixture_target_dir().to_str().expect("utf-8 target dir"),
        )
        .run();
    out.assert_code(0);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = doc["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rust/unit/nextest_fixture$tests::adds"], "{out}");
    assert_eq!(doc["units"][0]["kind"], "nextest");
    // Without a terminal the build says when it starts and when it ends.
    out.assert_stderr_contains("runner: building the Rust tests of category `unit`")
        .assert_stderr_contains("runner: built and listed the Rust tests of category `unit` in ");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("(kind(lib)) and (test(=tests::adds))"),
        "the listing is narrowed by the filter:\n{calls}"
    );
    assert!(
        !calls.contains("kind(test)"),
        "the rejected category is not listed:\n{calls}"
    );
}
