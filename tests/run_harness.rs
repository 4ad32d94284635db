//! Self-checks of the test harness: if these fail, the other tests prove nothing.

mod common;

use std::process::Command;

use common::*;

#[test]
fn process_scan_finds_a_marked_process_by_environment_and_cmdline() {
    let project = Project::new();
    let mut child = Command::new("sh")
        .args(["-c", "setsid sleep 3999 & wait"])
        .env("LR_MARK", project.marker())
        .spawn()
        .expect("spawn sh");
    // Wait until the grandchild exists (it appears in /proc with the marker).
    let deadline = std::time::Instant::now() + WAIT_DEADLINE;
    while processes_with(project.marker()).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "marked processes never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let found = processes_with(project.marker());
    assert!(
        found.iter().any(|(_, cmd)| cmd.contains("sleep 3999")),
        "{found:?}"
    );
    assert!(!processes_with("sleep 3999").is_empty(), "cmdline scan");

    let result = std::panic::catch_unwind(|| assert_no_process_with(project.marker()));
    assert!(
        result.is_err(),
        "assert_no_process_with must fail while they live"
    );
    // ...and it killed them on the way.
    let _ = child.wait();
    assert!(processes_with(project.marker()).is_empty());
}

#[test]
fn counts_line_is_parsed_strictly() {
    assert_eq!(parse_counts_line("3 passed, 1 failed"), Some((3, 1, 0)));
    assert_eq!(
        parse_counts_line("0 passed, 0 failed, 4 skipped"),
        Some((0, 0, 4))
    );
    assert_eq!(parse_counts_line("3 passed, 1 failed."), None);
    assert_eq!(parse_counts_line("Summary: 3 passed, 1 failed"), None);
    assert_eq!(parse_counts_line("1 failed, 3 passed"), None);
    assert_eq!(parse_counts_line(""), None);
}

#[test]
fn fixture_files_get_the_marker() {
    let project = Project::new();
    project.file("a/b.txt", "x=@MARK@\n");
    assert_eq!(project.read("a/b.txt"), format!("x={}\n", project.marker()));
    assert_ne!(
        Project::new().marker(),
        project.marker(),
        "markers are unique"
    );
}
