//! Units of `nextest:` categories: Rust tests listed by `cargo nextest list`, one unit
//! per test, run by the runner itself.
//!
//! # Discovery: one build, one list per filter
//!
//! Categories that build the same way (same directory, `package`, `workspace` and
//! `features`) form a group. For each group, the first category's filter is listed with
//! `cargo nextest list --message-format json --run-ignored all -E <filter>`: that call
//! builds every test binary of the selection, once. Every further filter of the group is
//! listed against *those same binaries* with `--binaries-metadata` and `--cargo-metadata`
//! (no cargo invocation, no rebuild, a few tens of milliseconds each, in parallel), so all
//! categories see one consistent build. The output is parsed with `nextest-metadata`
//! ([`TestListSummary`]); a test belongs to a category when its `filter-match` is
//! `matches`.
//!
//! cargo runs with the runner's environment (`CARGO_TARGET_DIR`, `RUSTFLAGS`... apply);
//! a category's `env` is for its tests only. Its output is forwarded live when stderr is
//! a terminal, and shown when listing fails.
//!
//! # Execution
//!
//! Each test is a [`UnitSpec::Program`]: `<binary> --exact <name> --nocapture
//! [--ignored] <test_args...>`, in the suite's `cwd` (the package directory), with the
//! dynamic-library path nextest would set (linked paths, the artifact and `deps`
//! directories, the rustc sysroot libdir) and the nextest-compatible variables listed in
//! [`suite_env`] plus `NEXTEST_TEST_NAME` and `NEXTEST_TOTAL_ATTEMPTS`. The executor adds
//! `NEXTEST_ATTEMPT` per attempt. A unit is named `<binary-id>$<test name>`, nextest's
//! own spelling (`mycrate$tests::adds`, `mycrate::integration$it_works`).
//!
//! # One test, one category
//!
//! [`assign`] gives each test to exactly one place in the plan. Two categories of one
//! layer selecting the same test is an error, and so is a test selected in two layers that
//! run at the same time (the same stage, or a background layer). Otherwise the layer
//! that runs first keeps it: a later layer's category leaves it out, with a warning.
//!
//! # Layout
//!
//! - here: the discovered [`Test`]s and the [`units`] they become.
//! - `list`: grouping, the `cargo nextest list` calls and their errors ([`discover`]).
//! - `environment`: reading a listing ([`tests_of`]): dylib paths, the test environment.
//! - `assign`: one test, one category ([`assign`]).

mod assign;
mod environment;
mod list;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

pub use assign::{Placement, assign};
pub use environment::{DYLIB_PATH_VAR, dylib_paths, package_version, suite_env, tests_of};
pub use list::{INSTALL_HINT, discover};

use super::{Unit, UnitSpec};
use crate::config::{Category, NextestSpec};

/// The skip reason of an ignored test (without `--run-ignored`).
pub const IGNORED: &str = "ignored";

/// A `nextest:` category to discover.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The category.
    pub category: &'a Category,
    /// Its `nextest:` settings.
    pub spec: &'a NextestSpec,
    /// Where cargo runs (the category's `cwd`, or the project root).
    pub cwd: PathBuf,
}

/// Why discovery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The configuration is wrong (an invalid filterset): exit code 2.
    Config(String),
    /// Tools or the build failed (cargo-nextest missing, a compile error): exit code 3.
    Infrastructure(String),
}

/// One test a category selected.
#[derive(Debug, Clone)]
pub struct Test {
    /// nextest's binary id (`mycrate`, `mycrate::integration`, `mycrate::bin/tool`).
    pub binary_id: String,
    /// The test's name in its binary (`tests::adds`).
    pub name: String,
    /// The test binary.
    pub binary_path: PathBuf,
    /// Where it runs: its package's directory.
    pub cwd: PathBuf,
    /// Marked `#[ignore]`.
    pub ignored: bool,
    /// Environment shared by the tests of its binary (see [`suite_env`]).
    pub suite_env: Arc<Vec<(String, String)>>,
    /// Directories for the dynamic-library path, in order.
    pub dylib_paths: Arc<Vec<PathBuf>>,
}

/// The tests of every requested category, by category name.
#[derive(Debug, Default)]
pub struct Discovery {
    tests: HashMap<String, Vec<Test>>,
}

impl Discovery {
    /// The tests `category` selected (empty when it was not requested).
    pub fn tests(&self, category: &str) -> &[Test] {
        self.tests.get(category).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The name of a test's unit: `<binary-id>$<test name>`.
pub fn unit_name(binary_id: &str, test: &str) -> String {
    format!("{binary_id}${test}")
}

/// Categories that share one build: same directory and cargo selection.
/// Ignored tests are units too: without `run_ignored` they carry the skip reason
/// [`IGNORED`]; with it they run with `--ignored`.
pub fn units(
    layer: &str,
    category: &Category,
    spec: &NextestSpec,
    tests: &[Test],
    run_ignored: bool,
) -> Vec<Unit> {
    // The category's own value (else the runner's) comes after the build's directories.
    let inherited: Option<OsString> = match category.env.get(DYLIB_PATH_VAR) {
        Some(v) => Some(v.into()),
        None => std::env::var_os(DYLIB_PATH_VAR),
    };
    // Tests of one listing share their directories: join them once per listing.
    let mut joined: Option<(Arc<Vec<PathBuf>>, String)> = None;
    let total_attempts = (category.retries + 1).to_string();
    let (layer_name, category_name): (Arc<str>, Arc<str>) =
        (layer.into(), category.name.as_str().into());
    // Tests of one package share its directory.
    let mut last_cwd: Option<Arc<std::path::Path>> = None;
    tests
        .iter()
        .map(|t| {
            let dylib = match &joined {
                Some((dirs, value)) if Arc::ptr_eq(dirs, &t.dylib_paths) => value.clone(),
                _ => {
                    let mut dirs: Vec<PathBuf> = t.dylib_paths.to_vec();
                    if let Some(rest) = &inherited {
                        dirs.extend(std::env::split_paths(rest));
                    }
                    let value = std::env::join_paths(dirs)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    joined = Some((Arc::clone(&t.dylib_paths), value.clone()));
                    value
                }
            };
            let mut env: Vec<(String, String)> = t
                .suite_env
                .iter()
                .filter(|(k, _)| !category.env.contains_key(k))
                .cloned()
                .collect();
            env.extend([
                (DYLIB_PATH_VAR.to_string(), dylib),
                ("NEXTEST_TEST_NAME".to_string(), t.name.clone()),
                ("NEXTEST_TOTAL_ATTEMPTS".to_string(), total_attempts.clone()),
            ]);
            let mut args = vec![
                "--exact".to_string(),
                t.name.clone(),
                "--nocapture".to_string(),
            ];
            if t.ignored {
                args.push("--ignored".into());
            }
            args.extend(spec.test_args.iter().cloned());
            let name = unit_name(&t.binary_id, &t.name);
            Unit {
                id: Unit::make_id(layer, &category.name, &name),
                layer: Arc::clone(&layer_name),
                category: Arc::clone(&category_name),
                name,
                spec: UnitSpec::Program {
                    path: t.binary_path.clone(),
                    args,
                },
                cwd: match &last_cwd {
                    Some(c) if **c == *t.cwd => Arc::clone(c),
                    _ => Arc::clone(last_cwd.insert(t.cwd.as_path().into())),
                },
                env,
                skip: (t.ignored && !run_ignored).then(|| IGNORED.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LeakPolicy, UnitKind};
    use nextest_metadata::TestListSummary;
    use std::path::Path;

    /// A listing as `cargo nextest list --message-format json` prints it (trimmed).
    const LIST: &str = r#"{
      "rust-build-meta": {
        "target-directory": "/t",
        "build-directory": "/t",
        "base-output-directories": ["debug"],
        "non-test-binaries": {
          "path+file:///w/app#app@1.20.3-beta.2+meta": [
            {"name": "app-tool", "kind": "bin-exe", "path": "debug/app-tool"}
          ]
        },
        "build-script-out-dirs": {"path+file:///w/app#app@1.20.3-beta.2+meta": "debug/build/app-1/out"},
        "build-script-info": {"path+file:///w/app#app@1.20.3-beta.2+meta": {"envs": {"BUILT_WITH": "x"}}},
        "linked-paths": ["does/not/exist"],
        "platforms": {
          "host": {
            "platform": {"triple": "x86_64-unknown-linux-gnu", "target-features": "unknown"},
            "libdir": {"status": "available", "path": "/sysroot/lib"}
          },
          "targets": []
        },
        "target-platforms": [],
        "target-platform": null
      },
      "test-count": 4,
      "rust-suites": {
        "app": {
          "package-name": "app", "binary-id": "app", "binary-name": "app",
          "package-id": "path+file:///w/app#app@1.20.3-beta.2+meta", "kind": "lib",
          "binary-path": "/t/debug/deps/app-1", "build-platform": "target",
          "cwd": "/w/app", "status": "listed",
          "testcases": {
            "tests::a": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}},
            "tests::b": {"kind": "test", "ignored": false, "filter-match": {"status": "mismatch", "reason": "expression"}},
            "tests::slow": {"kind": "test", "ignored": true, "filter-match": {"status": "matches"}}
          }
        },
        "app::it": {
          "package-name": "app", "binary-id": "app::it", "binary-name": "it",
          "package-id": "path+file:///w/app#app@1.20.3-beta.2+meta", "kind": "test",
          "binary-path": "/t/debug/deps/it-2", "build-platform": "target",
          "cwd": "/w/app", "status": "listed",
          "testcases": {
            "works": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}}
          }
        },
        "app::other": {
          "package-name": "app", "binary-id": "app::other", "binary-name": "other",
          "package-id": "path+file:///w/app#app@1.20.3-beta.2+meta", "kind": "test",
          "binary-path": "/t/debug/deps/other-3", "build-platform": "target",
          "cwd": "/w/app", "status": "skipped", "testcases": {}
        }
      }
    }"#;

    fn category(name: &str, spec: &NextestSpec) -> Category {
        Category {
            name: name.into(),
            description: String::new(),
            kind: UnitKind::Nextest(spec.clone()),
            timeout: None,
            slow_after: None,
            max_parallel_instances: None,
            priority_order: 0,
            retries: 2,
            min_memory_mb: None,
            max_memory_mb: None,
            rlimit_as_mb: None,
            critical: false,
            env: Default::default(),
            depends_on: vec![],
            requires_real_services: false,
            cwd: None,
            ..Default::default()
        }
    }

    fn spec(filter: &str) -> NextestSpec {
        NextestSpec {
            filter: filter.into(),
            features: vec![],
            packages: vec![],
            workspace: false,
            test_args: vec!["--test-threads=1".into()],
            leak: LeakPolicy::Fail,
        }
    }

    fn env_of(unit: &Unit) -> HashMap<&str, &str> {
        unit.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn matched_tests_become_program_units() {
        let summary = TestListSummary::parse_json(LIST).unwrap();
        let tests = tests_of(&summary);
        let names: Vec<String> = tests
            .iter()
            .map(|t| unit_name(&t.binary_id, &t.name))
            .collect();
        assert_eq!(names, ["app$tests::a", "app$tests::slow", "app::it$works"]);

        let spec = spec("all()");
        let mut cat = category("unit", &spec);
        cat.env.insert(DYLIB_PATH_VAR.into(), "/mine".into());
        let units = units("fast", &cat, &spec, &tests, false);
        let a = &units[0];
        assert_eq!(a.id, "fast/unit/app$tests::a");
        assert_eq!(*a.cwd, *Path::new("/w/app"));
        assert_eq!(
            a.spec,
            UnitSpec::Program {
                path: "/t/debug/deps/app-1".into(),
                args: vec![
                    "--exact".into(),
                    "tests::a".into(),
                    "--nocapture".into(),
                    "--test-threads=1".into()
                ],
            }
        );
        assert_eq!(a.skip, None);
        let env = env_of(a);
        assert_eq!(env["NEXTEST"], "1");
        assert_eq!(env["NEXTEST_TEST_NAME"], "tests::a");
        assert_eq!(env["NEXTEST_BINARY_ID"], "app");
        assert_eq!(env["NEXTEST_TOTAL_ATTEMPTS"], "3");
        assert_eq!(env["CARGO_MANIFEST_DIR"], "/w/app");
        assert_eq!(env["CARGO_PKG_NAME"], "app");
        assert_eq!(env["CARGO_PKG_VERSION"], "1.20.3-beta.2+meta");
        assert_eq!(env["CARGO_PKG_VERSION_MAJOR"], "1");
        assert_eq!(env["CARGO_PKG_VERSION_MINOR"], "20");
        assert_eq!(env["CARGO_PKG_VERSION_PATCH"], "3");
        assert_eq!(env["CARGO_PKG_VERSION_PRE"], "beta.2");
        assert_eq!(env["OUT_DIR"], "/t/debug/build/app-1/out");
        assert_eq!(env["BUILT_WITH"], "x");
        // Linked paths that do not exist are left out; the category's value comes last.
        assert_eq!(
            env[DYLIB_PATH_VAR],
            "/t/debug/deps:/t/debug:/sysroot/lib:/mine"
        );
        assert!(
            !env.contains_key("CARGO_BIN_EXE_app-tool"),
            "only for integration tests"
        );

        // An ignored test is skipped, or run with --ignored.
        assert_eq!(units[1].skip.as_deref(), Some(IGNORED));
        let with = super::units("fast", &cat, &spec, &tests, true);
        assert_eq!(with[1].skip, None);
        let UnitSpec::Program { args, .. } = &with[1].spec else {
            panic!()
        };
        assert!(args.contains(&"--ignored".to_string()), "{args:?}");

        let it = env_of(&units[2]);
        assert_eq!(it["CARGO_BIN_EXE_app-tool"], "/t/debug/app-tool");
        assert_eq!(it["NEXTEST_BIN_EXE_app_tool"], "/t/debug/app-tool");
    }
}
