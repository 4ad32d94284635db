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

// ---- --html -------------------------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

/// Two layers: `fast` with 6 passing files, a failing one and a flaky one (retried),
/// `slow` with 2 files; `--jobs 3`.
fn suite() -> Project {
    let project = Project::new();
    for i in 0..6 {
        project.file(&format!("unit/test_{i}.sh"), "sleep 0.05\n");
    }
    project.file(
        "unit/test_fail.sh",
        "echo 'about to fail <b>bold</b>'\necho 'ERROR: expected 3, got 4' >&2\nexit 1\n",
    );
    project.file(
        "unit/test_flaky.sh",
        "if [ -e flaky.marker ]; then exit 0; fi\ntouch flaky.marker\nexit 1\n",
    );
    project.file("e2e/a.sh", "sleep 0.1\n");
    project.file("e2e/b.sh", "sleep 0.1\n");
    project.layers(
        r#"
version: 1
categories:
  unit: { command: "sh {file}", files: ["unit/*.sh"], retries: 1 }
  e2e: { command: "sh {file}", files: ["e2e/*.sh"] }
layers:
  - { name: fast, fail_fast: disabled, categories: [unit] }
  - { name: slow, categories: [e2e] }
"#,
    );
    project
}

#[test]
fn html_report_is_self_contained_and_complete() {
    let project = suite();
    let report = project.path("out/report.html");
    let out = project
        .runner()
        .args([
            "--use-layers",
            "fast,slow",
            "--no-fail-fast",
            "--jobs",
            "3",
            "--html",
        ])
        .arg(&report)
        .run();
    out.assert_code(1);
    let html = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{e}\n{out}"));
    // Nothing to fetch: no external URL in an attribute.
    for needle in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(needle), "references the network: {needle}");
    }
    assert!(html.contains("id=\"count-failed\">1<"), "totals");
    assert!(html.contains("data-layer=\"fast\"") && html.contains("data-layer=\"slow\""));
    assert!(
        html.contains("data-unit=\"fast/unit/unit/test_fail.sh\""),
        "failures"
    );
    assert!(
        html.contains("about to fail &lt;b&gt;bold&lt;/b&gt;"),
        "output is escaped"
    );
    assert!(html.contains("ERROR: expected 3, got 4"));
    assert!(html.contains("full output: "));
    assert!(html.contains("class=\"slow-row\""), "slowest units");
    // 11 attempts: 10 units, one of them retried; at most 3 at once.
    assert!(html.contains("data-attempts=\"12\""), "timeline attempts");
    let lanes: usize = html
        .split("data-lanes=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((1..=3).contains(&lanes), "{lanes} lanes for 3 slots");
    assert!(
        html.contains("class=\"bar retry\""),
        "the failed first attempt"
    );
}

#[test]
fn html_report_renders_in_headless_chromium() {
    if !std::path::Path::new(CHROMIUM).exists() {
        skip_without(CHROMIUM, "apt-get install -y chromium");
        return;
    }
    let project = suite();
    let report = project.path("report.html");
    project
        .runner()
        .args([
            "--use-layers",
            "fast,slow",
            "--no-fail-fast",
            "--jobs",
            "3",
            "--html",
        ])
        .arg(&report)
        .run()
        .assert_code(1);
    let profile = tempfile::tempdir().unwrap();
    let dom = dump_dom(&format!("file://{}", report.display()), profile.path());
    // The inline script ran after layout: every bar of the timeline has a width.
    assert!(
        dom.contains("data-bars-rendered=\"12\""),
        "bars on screen: {}",
        dom.lines().find(|l| l.contains("<body")).unwrap_or("")
    );
    assert!(dom.contains("data-outcome=\"failed\""));
    assert!(dom.contains("<td>fast</td>"));
}

/// `chromium --headless --dump-dom URL`, in its own process group, killed whole
/// when the test ends; panics when it does not finish within a minute.
fn dump_dom(url: &str, profile: &std::path::Path) -> String {
    use std::os::unix::process::CommandExt;
    struct KillGroup(std::process::Child);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
    let out = tempfile::NamedTempFile::new().unwrap();
    let child = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(out.reopen().unwrap())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let mut child = KillGroup(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chromium did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::read_to_string(out.path()).unwrap()
}
