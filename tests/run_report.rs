//! What a person reads after a run, on the real binary: the console's failure excerpts
//! (the lines that matter, then the path of the full output).

mod common;

use common::*;

#[test]
fn a_failed_command_shows_its_last_lines_without_trailers_and_the_log_path() {
    let project = Project::new();
    project.file(
        "fails.sh",
        "echo 'step 1'\necho 'ERROR: connection refused'\necho\necho 'test result: FAILED. 0 passed; 1 failed'\necho\nexit 1\n",
    );
    project.layers(
        r#"
version: 1
categories:
  api: { command: "sh fails.sh" }
layers:
  - { name: fast, categories: [api] }
"#,
    );
    let out = project.runner().args(["--use-layers", "fast"]).run();
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let fail = lines
        .iter()
        .position(|l| l.contains("FAIL") && l.contains("fast/api/api"))
        .unwrap_or_else(|| panic!("no FAIL line\n{out}"));
    let excerpt = &lines[fail + 1..fail + 4];
    assert!(excerpt[0].ends_with("│ step 1"), "{out}");
    assert!(excerpt[1].ends_with("│ ERROR: connection refused"), "{out}");
    let log = excerpt[2]
        .split("full output: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no log path\n{out}"));
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("test result: FAILED"),
        "the log holds the whole output"
    );
}
