//! Every invalid layers file in `tests/fixtures/invalid/` makes the real binary exit
//! with status 2 and print a diagnostic naming the file, line and column.
//!
//! Each fixture starts with two comment lines:
//!
//! ```yaml
//! # expect: <substring of the error message>
//! # at: LINE:COL
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `(expected substring, line, column)` from the fixture's header.
fn expectation(text: &str) -> (String, u64, u64) {
    let mut lines = text.lines();
    let expect = lines
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .expect("first line: # expect: <substring>");
    let at = lines
        .next()
        .and_then(|l| l.strip_prefix("# at: "))
        .expect("second line: # at: LINE:COL");
    let (line, col) = at.split_once(':').expect("LINE:COL");
    (
        expect.to_string(),
        line.trim().parse().unwrap(),
        col.trim().parse().unwrap(),
    )
}

#[test]
fn invalid_configs_exit_2_with_located_diagnostics() {
    let files = fixtures();
    assert!(files.len() >= 20, "only {} fixtures", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (expect, line, col) = expectation(&text);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([
                "--config".as_ref(),
                path.as_os_str(),
                "--show-layers".as_ref(),
            ])
            .env_remove("RUNNER_CONFIG")
            .env_remove("RUNNER_ENV")
            .output()
            .expect("run the runner binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let place = format!("{name}:{line}:{col}");
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit status {:?}, expected 2\nstderr:\n{stderr}",
                out.status.code()
            ));
        } else if !stderr.contains(&expect) || !stderr.contains(&place) {
            failures.push(format!(
                "{name}: expected `{expect}` at `{place}`\nstderr:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn unknown_environment_exits_2_with_suggestion() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["--config".as_ref(), dir.join("layers.yaml").as_os_str()])
        .args(["--env", "prdo", "--show-layers"])
        .env_remove("RUNNER_CONFIG")
        .env_remove("RUNNER_ENV")
        .output()
        .expect("run the runner binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("unknown environment `prdo`"), "{stderr}");
    assert!(stderr.contains("did you mean `production`?"), "{stderr}");
}
