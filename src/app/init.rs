//! `runner init [--force] [--dry-run]`: a first `layers.yaml` for the project in the
//! current directory (or where `--config` points), from what it finds there.
//!
//! Detection, each giving categories for a fast layer and an integration layer:
//!
//! | found | fast | integration |
//! |---|---|---|
//! | `Cargo.toml` | `nextest: kind(lib) \| kind(bin)`, one unit per Rust test (`cargo test --lib --bins` without cargo-nextest) | `nextest: kind(test)` when `tests/*.rs` exist (`cargo test --tests`) |
//! | pytest (`pytest.ini`, `[tool.pytest…]` in `pyproject.toml`, `[tool:pytest]` in `setup.cfg`, `conftest.py`, or `test_*.py` files) | one unit per file of `tests/unit/` (else of the whole suite) | one unit per file of `tests/integration/` when it exists |
//! | `package.json` with a `test` script (jest, vitest, `node --test`, ...) | `npm test` | |
//! | `go.mod` | `go test -short ./...` | `go test ./...` |
//! | a `Makefile` with a `test:` target | | `make test` |
//!
//! Nothing found: one placeholder category, so that the file still validates and runs.
//! With no integration category, the integration layer is written commented out. The
//! file is checked by loading it before it is written (a bug here must not hand the user
//! a file that does not load); an existing file is kept unless `--force`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::exit_code;

/// One category `init` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Category {
    name: &'static str,
    comment: String,
    /// The YAML mapping body (after `name: `), one line.
    body: String,
}

/// What `init` found, as categories for each layer.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    fast: Vec<Category>,
    integration: Vec<Category>,
    notes: Vec<String>,
}

/// Runs `runner init`.
pub fn run(config: &Path, force: bool, dry_run: bool) -> Result<i32, Error> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let root = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let found = detect(&root, nextest_installed());
    let text = render(&found);
    // Never hand out a file that does not load.
    check(&text, &root)?;
    if dry_run {
        crate::report::out::line(text.trim_end());
        return Ok(exit_code::PASSED);
    }
    if config.exists() && !force {
        return Err(Error::usage(format!(
            "error: {} already exists; not overwriting it\n  help: `runner init --dry-run` prints what it would write; `--force` replaces the file",
            config.display()
        )));
    }
    crate::report::files::write_atomic(&config, text.as_bytes()).map_err(|e| {
        Error::infrastructure(format!("runner: cannot write {}: {e}", config.display()))
    })?;
    eprintln!("runner: wrote {}", config.display());
    for note in &found.notes {
        eprintln!("  {note}");
    }
    eprintln!(
        "  next: `runner --list --use-layers` shows what would run, `runner --use-layers fast` runs the fast layer"
    );
    Ok(exit_code::PASSED)
}

fn nextest_installed() -> bool {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["nextest", "--version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Loads `text` as `layers.yaml` of a project at `root` (in a scratch copy: only the
/// file itself, with `root`'s files visible through globs being irrelevant to validity).
fn check(text: &str, root: &Path) -> Result<(), Error> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::infrastructure(format!("runner: temporary directory: {e}")))?;
    let path = dir.path().join("layers.yaml");
    std::fs::write(&path, text)
        .map_err(|e| Error::infrastructure(format!("runner: temporary file: {e}")))?;
    crate::config::load(&crate::config::LoadOptions {
        path,
        environment: None,
    })
    .map(|_| ())
    .map_err(|e| {
        Error::infrastructure(format!(
            "runner: internal error: the generated layers.yaml for {} does not load:\n{e}",
            root.display()
        ))
    })
}

fn exists(root: &Path, rel: &str) -> bool {
    root.join(rel).exists()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_default()
}

/// Whether any `test_*.py` file is under `dir` (a few levels deep).
fn has_python_tests(dir: &Path) -> bool {
    [
        "test_*.py",
        "*/test_*.py",
        "*/*/test_*.py",
        "*/*/*/test_*.py",
    ]
    .iter()
    .any(|pattern| {
        glob::glob(&dir.join(pattern).to_string_lossy())
            .is_ok_and(|mut paths| paths.any(|p| p.is_ok()))
    })
}

fn cat(name: &'static str, comment: &str, body: String) -> Category {
    Category {
        name,
        comment: comment.to_string(),
        body,
    }
}

fn detect(root: &Path, nextest: bool) -> Found {
    let mut f = Found::default();
    if exists(root, "Cargo.toml") {
        rust(root, nextest, &mut f);
    }
    python(root, &mut f);
    if exists(root, "package.json") {
        javascript(root, &mut f);
    }
    if exists(root, "go.mod") {
        f.fast.push(cat(
            "go_short",
            "Go: the tests that honour -short",
            r#"{ command: "go test -short ./...", timeout_seconds: 600 }"#.into(),
        ));
        f.integration.push(cat(
            "go_all",
            "Go: every test",
            r#"{ command: "go test ./...", timeout_seconds: 1800 }"#.into(),
        ));
    }
    let makefile = ["Makefile", "makefile", "GNUmakefile"]
        .iter()
        .map(|m| read(root, m))
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    if makefile.lines().any(|l| l.starts_with("test:")) {
        f.integration.push(cat(
            "make_test",
            "the Makefile's `test` target",
            r#"{ command: "make test", timeout_seconds: 1800 }"#.into(),
        ));
    }
    if f.fast.is_empty() && f.integration.is_empty() {
        f.fast.push(cat(
            "smoke",
            "nothing detected: replace this with your test command",
            r#"{ command: "echo 'replace me: runner found no tests to run'", timeout_seconds: 60 }"#
                .into(),
        ));
        f.notes
            .push("no Cargo.toml, pytest suite, package.json, go.mod or Makefile `test` target found: edit the `smoke` category".into());
    } else if f.fast.is_empty() {
        // Only slow things found: the first is the fast feedback there is.
        f.fast.push(f.integration.remove(0));
    }
    f
}

fn rust(root: &Path, nextest: bool, f: &mut Found) {
    let manifest = read(root, "Cargo.toml");
    let workspace = manifest.lines().any(|l| l.trim() == "[workspace]");
    let ws = if workspace { ", workspace: true" } else { "" };
    if nextest {
        f.fast.push(cat(
            "rust_unit",
            "Rust unit tests (library and binaries), one unit per test, listed by cargo nextest",
            format!(
                r#"{{ nextest: {{ filter: "kind(lib) | kind(bin)"{ws} }}, timeout_seconds: 120 }}"#
            ),
        ));
    } else {
        let flag = if workspace { " --workspace" } else { "" };
        f.fast.push(cat(
            "rust_unit",
            "Rust unit tests; with cargo-nextest installed (`cargo install cargo-nextest --locked`) use `nextest: { filter: \"kind(lib) | kind(bin)\" }` for one unit per test",
            format!(r#"{{ command: "cargo test{flag} --lib --bins --quiet", timeout_seconds: 900 }}"#),
        ));
        f.notes.push(
            "cargo-nextest is not installed: Rust tests run as one command per category (see the comments)".into(),
        );
    }
    let rust_files = |pattern: &str| {
        glob::glob(&root.join(pattern).to_string_lossy()).is_ok_and(|mut g| g.next().is_some())
    };
    let integration_dirs = rust_files("tests/*.rs") || (workspace && rust_files("*/tests/*.rs"));
    if integration_dirs {
        f.integration.push(if nextest {
            cat(
                "rust_integration",
                "Rust integration tests (tests/*.rs), one unit per test",
                format!(r#"{{ nextest: {{ filter: "kind(test)"{ws} }}, timeout_seconds: 600, retries: 1 }}"#),
            )
        } else {
            let flag = if workspace { " --workspace" } else { "" };
            cat(
                "rust_integration",
                "Rust integration tests (tests/*.rs)",
                format!(r#"{{ command: "cargo test{flag} --tests --quiet", timeout_seconds: 1800 }}"#),
            )
        });
    }
}

fn python(root: &Path, f: &mut Found) {
    let configured = exists(root, "pytest.ini")
        || exists(root, "conftest.py")
        || read(root, "pyproject.toml").contains("[tool.pytest")
        || read(root, "setup.cfg").contains("[tool:pytest]")
        || read(root, "tox.ini").contains("[pytest]");
    let tests = root.join("tests");
    let has_tests = has_python_tests(&tests) || has_python_tests(root);
    if !configured && !has_tests {
        return;
    }
    let pytest = r#"python3 -m pytest -q {file} --junitxml={junit}"#;
    let split = has_python_tests(&tests.join("unit"));
    let (fast_glob, fast_comment) = if split {
        (
            "tests/unit/**/test_*.py",
            "pytest: the unit tests, one unit per file",
        )
    } else if has_python_tests(&tests) {
        ("tests/**/test_*.py", "pytest: one unit per test file")
    } else {
        ("**/test_*.py", "pytest: one unit per test file")
    };
    f.fast.push(cat(
        "py_unit",
        fast_comment,
        format!(r#"{{ command: "{pytest}", files: "{fast_glob}", timeout_seconds: 300 }}"#),
    ));
    if split && has_python_tests(&tests.join("integration")) {
        f.integration.push(cat(
            "py_integration",
            "pytest: the integration tests, one unit per file",
            format!(
                r#"{{ command: "{pytest}", files: "tests/integration/**/test_*.py", timeout_seconds: 900, retries: 1 }}"#
            ),
        ));
    }
}

fn javascript(root: &Path, f: &mut Found) {
    let package: serde_json::Value =
        serde_json::from_str(&read(root, "package.json")).unwrap_or_default();
    let Some(test) = package["scripts"]["test"].as_str() else {
        return;
    };
    if test.contains("no test specified") {
        return;
    }
    let runner = if test.contains("vitest") {
        "Vitest"
    } else if test.contains("jest") {
        "Jest"
    } else if test.contains("node --test") {
        "node --test"
    } else {
        "the package's test script"
    };
    f.fast.push(cat(
        "js_test",
        &format!("JavaScript: `npm test` ({runner}); run `npm ci` first on a fresh checkout"),
        r#"{ command: "npm test --silent", timeout_seconds: 600 }"#.into(),
    ));
}

/// The commented file.
fn render(f: &Found) -> String {
    let mut out = String::from(
        "# layers.yaml: the tests `runner` runs, as layers (written by `runner init`).\n\
         #   runner --list --use-layers       # what would run\n\
         #   runner --use-layers fast         # the fast layer: seconds to the first failure\n\
         #   runner --use-layers              # every layer, in order\n\
         # Every field: docs/configuration.md of layered-runner.\n\
         version: 1\n\n\
         categories:\n",
    );
    for c in f.fast.iter().chain(&f.integration) {
        out.push_str(&format!("  # {}\n  {}: {}\n", c.comment, c.name, c.body));
    }
    let names = |v: &[Category]| v.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
    out.push_str(&format!(
        "\nlayers:\n  \
         # Fast feedback: stop at the first failure.\n  \
         - name: fast\n    execution_mode: parallel\n    fail_fast: immediate\n    categories: [{}]\n",
        names(&f.fast)
    ));
    let categories = if f.integration.is_empty() {
        "my_integration_category".to_string()
    } else {
        names(&f.integration)
    };
    let prefix = if f.integration.is_empty() {
        out.push_str(
            "  # No integration tests were found: define a category and uncomment this layer.\n",
        );
        "  # "
    } else {
        "  "
    };
    for line in [
        "# Integration: runs when the fast layer passed; every failure reported.".to_string(),
        "- name: integration".to_string(),
        "  depends_on: [fast]".to_string(),
        "  fail_fast: disabled".to_string(),
        format!("  categories: [{categories}]"),
    ] {
        out.push_str(prefix);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn names(v: &[Category]) -> Vec<&str> {
        v.iter().map(|c| c.name).collect()
    }

    #[test]
    fn detects_each_ecosystem() {
        let rust = project(&[("Cargo.toml", "[package]\n"), ("tests/it.rs", "")]);
        let py_tests_only = project(&[("Cargo.toml", "[package]\n"), ("tests/test_a.py", "")]);
        let f = detect(py_tests_only.path(), true);
        assert_eq!(names(&f.fast), ["rust_unit", "py_unit"]);
        assert!(f.integration.is_empty(), "tests/ of Python is not Rust's");
        let f = detect(rust.path(), true);
        assert_eq!(names(&f.fast), ["rust_unit"]);
        assert_eq!(names(&f.integration), ["rust_integration"]);
        assert!(f.fast[0].body.contains("nextest"));
        let f = detect(rust.path(), false);
        assert!(f.fast[0].body.contains("cargo test --lib --bins"));

        let py = project(&[
            ("pyproject.toml", "[tool.pytest.ini_options]\n"),
            ("tests/unit/test_a.py", ""),
            ("tests/integration/test_b.py", ""),
        ]);
        let f = detect(py.path(), true);
        assert_eq!(names(&f.fast), ["py_unit"]);
        assert_eq!(names(&f.integration), ["py_integration"]);

        let js = project(&[("package.json", r#"{"scripts":{"test":"vitest run"}}"#)]);
        let f = detect(js.path(), true);
        assert_eq!(names(&f.fast), ["js_test"]);
        assert!(f.fast[0].comment.contains("Vitest"));
        let npm_default = project(&[(
            "package.json",
            r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
        )]);
        assert_eq!(names(&detect(npm_default.path(), true).fast), ["smoke"]);

        let go = project(&[("go.mod", "module x\n"), ("Makefile", "test:\n\tgo test\n")]);
        let f = detect(go.path(), true);
        assert_eq!(names(&f.fast), ["go_short"]);
        assert_eq!(names(&f.integration), ["go_all", "make_test"]);

        let make = project(&[("Makefile", "build:\n\ttrue\ntest:\n\ttrue\n")]);
        let f = detect(make.path(), true);
        assert_eq!(
            names(&f.fast),
            ["make_test"],
            "the only check is the fast one"
        );
        assert!(f.integration.is_empty());
    }

    #[test]
    fn every_generated_file_loads() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("Cargo.toml", "[workspace]\n"), ("a/tests/x.rs", "")],
            vec![
                ("Cargo.toml", "[package]\n"),
                ("tests/x.rs", ""),
                ("test_x.py", ""),
                ("package.json", r#"{"scripts":{"test":"jest"}}"#),
                ("go.mod", ""),
                ("Makefile", "test:\n"),
            ],
            vec![("conftest.py", "")],
            vec![("Makefile", "test:\n")],
        ];
        for files in cases {
            let dir = project(&files);
            for nextest in [true, false] {
                let text = render(&detect(dir.path(), nextest));
                check(&text, dir.path()).unwrap_or_else(|e| panic!("{files:?}:\n{text}\n{e}"));
                assert!(text.contains("- name: fast"), "{text}");
                assert!(text.contains("name: integration"), "{text}");
            }
        }
    }
}
