//! `runner init` on the real binary: the file it writes for a project validates and
//! runs as is; an existing file is kept without `--force`; `--dry-run` prints.

mod common;

use common::*;

/// `runner init ARGS` in the project's directory (`--config` is init's own option).
fn init(project: &Project, args: &[&str]) -> Output {
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(project.root())
        .arg("init")
        .args(args)
        .env_remove("RUNNER_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run runner init");
    Output {
        cmdline: format!("runner init {}", args.join(" ")),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

#[test]
fn a_makefile_project_gets_a_file_that_runs() {
    let project = Project::new();
    project.file("Makefile", "build:\n\ttrue\ntest:\n\t@echo make-test-ran\n");
    init(&project, &[]).assert_code(0);
    let yaml = project.read("layers.yaml");
    assert!(
        yaml.contains("make_test: { command: \"make test\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("# - name: integration"),
        "commented out: {yaml}"
    );
    project
        .runner()
        .args(["--use-layers", "fast"])
        .run()
        .assert_code(0)
        .assert_counts_line(1, 0, 0);
}

#[test]
fn a_python_project_gets_a_unit_per_test_file_in_two_layers() {
    if std::process::Command::new("python3")
        .args(["-c", "import pytest"])
        .status()
        .map_or(true, |s| !s.success())
    {
        skip_without("pytest", "python3 -m pip install pytest");
        return;
    }
    let project = Project::new();
    project.file("pytest.ini", "[pytest]\n");
    project.file(
        "tests/unit/test_math.py",
        "def test_add():\n    assert 1 + 1 == 2\n",
    );
    project.file(
        "tests/unit/test_text.py",
        "def test_upper():\n    assert 'a'.upper() == 'A'\n",
    );
    project.file(
        "tests/integration/test_flow.py",
        "def test_flow():\n    assert True\n",
    );
    init(&project, &[]).assert_code(0);
    let out = project.runner().args(["--use-layers"]).run();
    out.assert_code(0).assert_counts_line(3, 0, 0);
    let list = project
        .runner()
        .args(["--list", "--json", "--use-layers"])
        .run();
    let doc: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(doc["count"], 3, "{list}");
    assert!(
        doc["units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["layer"] == "integration" && u["name"] == "tests/integration/test_flow.py"),
        "{list}"
    );
}

#[test]
fn a_node_test_project_runs_npm_test() {
    if std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_without("npm", "apt-get install -y nodejs npm");
        return;
    }
    let project = Project::new();
    project.file(
        "package.json",
        r#"{"name":"x","version":"1.0.0","scripts":{"test":"node --test"}}"#,
    );
    project.file(
        "test/math.test.js",
        "const test = require('node:test');\nconst assert = require('node:assert');\ntest('adds', () => assert.strictEqual(1 + 1, 2));\n",
    );
    init(&project, &[]).assert_code(0);
    assert!(project.read("layers.yaml").contains("(node --test)"));
    project
        .runner()
        .args(["--use-layers", "fast"])
        .run()
        .assert_code(0)
        .assert_counts_line(1, 0, 0);
}

#[test]
fn an_existing_file_is_kept_unless_forced_and_dry_run_prints() {
    let project = Project::new();
    project.file("go.mod", "module example.com/x\n");
    project.layers("# mine\n");
    let out = init(&project, &[]);
    out.assert_code(2).assert_stderr_contains("already exists");
    assert_eq!(project.read("layers.yaml"), "# mine\n");

    let out = init(&project, &["--dry-run"]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("go_short: { command: \"go test -short ./...\""),
        "{out}"
    );
    assert!(out.stdout.contains("- name: integration"), "{out}");
    assert_eq!(
        project.read("layers.yaml"),
        "# mine\n",
        "--dry-run writes nothing"
    );

    init(&project, &["--force"]).assert_code(0);
    let yaml = project.read("layers.yaml");
    assert!(yaml.contains("go_all"), "{yaml}");
    // It validates (`go` itself need not be installed for that).
    project.runner().arg("--show-layers").run().assert_code(0);
}

#[test]
fn an_empty_project_gets_a_placeholder_that_runs() {
    let project = Project::new();
    init(&project, &[])
        .assert_code(0)
        .assert_stderr_contains("edit the `smoke` category");
    project
        .runner()
        .args(["--use-layers", "fast"])
        .run()
        .assert_code(0)
        .assert_counts_line(1, 0, 0);
}
