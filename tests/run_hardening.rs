//! Hardening: a killed runner, hostile local clients, odd trees, terminal junk in CI
//! output, a run directory that grows. Each test reproduces a way the runner once broke.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Waits (up to 30 s) until no process carries `needle`, then asserts so.
#[track_caller]
fn wait_until_gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with(needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_process_with(needle);
}

/// Waits (up to 20 s) until `path` holds `needle`.
#[track_caller]
fn wait_for_text(path: &Path, needle: &str) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?} in {}: {:?}",
            path.display(),
            std::fs::read_to_string(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A layer with one quick unit and one that hangs after starting a daemon that clears
/// its environment and leaves the session (`env -i setsid`): its environment holds only
/// the project's marker, not the run's `RUNNER_RUN_ID`.
const HANG: &str = r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  quick:
    command: "echo fine"
  hang:
    command: "(env -i LR_DAEMON=@MARK@ setsid sh -c 'echo $$ > daemon.pid; exec sleep 3160' </dev/null >/dev/null 2>&1 &); sleep 3161"
    env: { LR_MARK: "@MARK@" }
layers:
  # Sequential: the quick unit ends before the daemon exists. An env-cleared orphan that
  # appears while two units run is blamed on the first to end (and killed then).
  - name: main
    execution_mode: sequential
    categories: [quick, hang]
"#;

/// Starts the `HANG` run and waits until the quick unit passed and the runner's
/// watchdog knows the daemon. Returns the runner and its run directory.
fn start_hanging_run(project: &Project) -> (Spawned, std::path::PathBuf) {
    project.layers(HANG);
    let mut child = project.runner().args(["--use-layers", "main"]).spawn();
    project.wait_for_events(&mut child, "the quick unit's end", |events| {
        unit_events(events, "test_finished", "main/quick/quick").len() == 1
            && unit_events(events, "test_started", "main/hang/hang").len() == 1
    });
    wait_for_file(&project.path("daemon.pid"));
    let daemon = project.read("daemon.pid").trim().to_string();
    let run_dir = project.run_dir();
    wait_for_text(
        &run_dir.join("watchdog.log"),
        &format!("watching pid {daemon}\n"),
    );
    (child, run_dir)
}

/// `kill -9` of a foreground runner used to leave every unit running, and the next
/// `--orchestration-status` said "runs in progress: none", with no summary and no
/// history row. Now its watchdog ends the units (the hidden daemon too) and closes the
/// run as `dead` with the results it reached.
#[test]
fn a_sigkilled_runner_takes_its_units_along_and_is_shown_dead() {
    let project = Project::new();
    let (child, run_dir) = start_hanging_run(&project);
    child.signal("KILL");
    let out = child.wait_within(Duration::from_secs(30));
    assert!(!out.status.success());
    wait_until_gone(project.marker());

    let status = project
        .runner()
        .args(["--orchestration-status", "--json"])
        .run();
    status.assert_code(0);
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(
        status["runs_in_progress"],
        serde_json::json!([]),
        "{status:#}"
    );
    assert_eq!(status["last_run"]["outcome"], "dead", "{status:#}");
    assert_eq!(status["last_run"]["counts"]["passed"], 1, "{status:#}");

    let summary = project.summary();
    assert_eq!(summary["outcome"], "dead");
    assert_eq!(summary["units"]["main/quick/quick"]["outcome"], "passed");
    let events = read_events(&run_dir.join("events.jsonl"));
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["outcome"].as_str()),
        (Some("run_finished"), Some("dead"))
    );
    let history = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(project.root())
        .args(["history", "--json"])
        .env_remove("RUNNER_CONFIG")
        .output()
        .expect("run runner history");
    let history: Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    assert_eq!(history["runs"], 1, "{history:#}");
}

/// With its watchdog killed too, the next `runner` invocation ends what is left of the
/// dead run (what carries its `RUNNER_RUN_ID`) and closes it.
#[test]
fn a_dead_run_without_watchdog_is_swept_by_the_next_invocation() {
    let project = Project::new();
    let (child, run_dir) = start_hanging_run(&project);
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let watchdogs = processes_with(&format!("RUNNER_WATCHDOG={{\"run_id\":\"{run_id}\""));
    assert_eq!(watchdogs.len(), 1, "{watchdogs:?}");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &watchdogs[0].0.to_string()])
        .status();
    child.signal("KILL");
    child.wait_within(Duration::from_secs(30));
    // The unit's own sleep carries the marker in its environment, and lives on.
    assert!(
        processes_with(&format!("LR_MARK={}", project.marker()))
            .iter()
            .any(|(_, cmd)| cmd.contains("sleep 3161")),
        "the unit outlived its runner and watchdog"
    );

    let status = project.runner().args(["--orchestration-status"]).run();
    status.assert_code(0);
    assert!(
        status.stdout.contains(&format!("last run: {run_id} dead")),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("runs in progress: none"));
    // The unit is gone; the daemon that cleared its environment was known only to the
    // watchdog: it is ended here so that nothing outlives the test.
    let gone = Instant::now() + Duration::from_secs(30);
    while processes_with(&format!("LR_MARK={}", project.marker()))
        .iter()
        .any(|(_, c)| c.contains("sleep 3161"))
    {
        assert!(Instant::now() < gone, "the unit survived the sweep");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, _) in processes_with(project.marker()) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert_eq!(project.summary()["outcome"], "dead");
}

/// A local process that opened more idle sockets to the progress port than the runner
/// had file descriptors made every unit fail with "Too many open files" (exit 1). The
/// server now holds a bounded share of the descriptors (and closes connections over
/// it at once), so the run passes.
#[test]
fn idle_sockets_to_the_progress_port_do_not_starve_the_units() {
    use std::os::unix::process::CommandExt;
    const RUNNER_LIMIT: u64 = 128;
    let project = Project::new();
    for i in 0..10 {
        project.file(&format!("t/test_{i}.sh"), "cat layers.yaml > /dev/null\n");
    }
    project.layers(&format!(
        r#"
version: 1
execution: {{ max_parallel_tests: 2 }}
categories:
  gate:
    command: "{}"
  many:
    command: "sh {{file}}"
    files: "t/*.sh"
layers:
  - name: first
    categories: [gate]
  - name: second
    categories: [many]
"#,
        sh_wait_for("go")
    ));
    let mut cmd = project
        .runner()
        .args([
            "--use-layers",
            "first,second",
            "--websocket-addr",
            "127.0.0.1:0",
        ])
        .into_command();
    cmd.stdout(std::fs::File::create(project.path("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(project.path("stderr.txt")).unwrap());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                RUNNER_LIMIT,
                RUNNER_LIMIT,
            )
            .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("spawn runner");
    let deadline = Instant::now() + WAIT_DEADLINE;
    let url = loop {
        let info = project
            .run_dirs()
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("run.json")).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(url) = info.as_ref().and_then(|i| i["progress_url"].as_str()) {
            break url.to_string();
        }
        assert!(child.try_wait().unwrap().is_none(), "runner exited early");
        assert!(Instant::now() < deadline, "no progress_url");
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // The client raises its own limit to open more sockets than the runner may hold.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let wanted = RUNNER_LIMIT as usize + 100;
    let mut sockets = Vec::new();
    for _ in 0..wanted {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => sockets.push(s),
            Err(e) => panic!("connect {addr}: {e} after {} sockets", sockets.len()),
        }
    }
    std::fs::write(project.path("go"), "").unwrap();
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runner did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(sockets);
    let stdout = project.read("stdout.txt");
    let stderr = project.read("stderr.txt");
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        parse_counts_line(last_line(&stdout)),
        Some((11, 0, 0)),
        "{stdout}"
    );
}

/// `ln -s .. tests/loop` once turned one test file into 41 units (globs followed the
/// link round and round). Links to directories are not followed now, each file is one
/// unit, `exclude:` removes files, and `--show-layers --json` lists what matched.
#[test]
fn files_globs_do_not_follow_directory_links_and_honour_exclude() {
    let project = Project::new();
    project.file("tests/test_one.sh", "true\n");
    project.file("tests/slow/test_two.sh", "true\n");
    std::os::unix::fs::symlink("..", project.path("tests/loop")).unwrap();
    std::os::unix::fs::symlink("test_one.sh", project.path("tests/test_again.sh")).unwrap();
    project.layers(
        r#"
version: 1
categories:
  unit:
    command: "sh {file}"
    files: "tests/**/test_*.sh"
    exclude: ["tests/slow/**"]
layers:
  - name: main
    categories: [unit]
"#,
    );
    let shown = project.runner().args(["--show-layers", "--json"]).run();
    shown.assert_code(0);
    let shown: Value = serde_json::from_str(&shown.stdout).expect("JSON");
    let category = &shown["layers"][0]["categories"][0];
    assert_eq!(
        category["files"],
        serde_json::json!(["tests/test_one.sh"]),
        "{category:#}"
    );
    assert_eq!(category["units"], 1);
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
}

/// Annotations and the job summary once carried raw ANSI/OSC escapes, NUL and other
/// control bytes from test output, and the 50-annotation cap dropped the rest silently.
#[test]
fn github_output_is_free_of_terminal_junk_and_the_cap_is_announced() {
    let project = Project::new();
    for i in 0..55 {
        project.file(
            &format!("t/test_{i:02}.sh"),
            "printf '\\033[31mred\\033[0m \\033]0;title\\007 nul\\000 bell\\007 esc\\033c\\n'; exit 1\n",
        );
    }
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 4 }
categories:
  unit:
    command: "sh {file}"
    files: "t/*.sh"
layers:
  - name: main
    categories: [unit]
"#,
    );
    let summary_file = project.path("step_summary.md");
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", summary_file.to_str().unwrap())
        .run();
    out.assert_code(1);
    let commands: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(commands.len(), 50, "{}", out.stdout);
    assert!(
        commands[49].ends_with("::… and 6 more failures: see the summary"),
        "{}",
        commands[49]
    );
    let junk = ['\u{1b}', '\0', '\u{7}'];
    for line in &commands {
        assert!(!line.contains(junk), "{line:?}");
    }
    assert!(commands[0].contains("red  nul bell esc"), "{}", commands[0]);
    let summary = std::fs::read_to_string(&summary_file).unwrap();
    assert!(!summary.contains(junk), "{summary:?}");
    assert!(summary.contains("red  nul bell esc"), "{summary}");
}

/// `.runner/runs/` was never pruned (7.5 MB after 9 small runs). It keeps the newest
/// `execution.keep_runs` runs now, plus the newest run that failed.
#[test]
fn old_run_directories_are_pruned_but_the_last_failed_one_stays() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { keep_runs: 2 }
categories:
  unit:
    command: "test -e pass"
layers:
  - name: main
    categories: [unit]
"#,
    );
    project
        .runner()
        .args(["--use-layers", "main"])
        .run()
        .assert_code(1);
    let failed = project.run_dir();
    project.file("pass", "");
    let mut passed = Vec::new();
    for _ in 0..4 {
        project
            .runner()
            .args(["--use-layers", "main"])
            .run()
            .assert_code(0);
        let newest = project
            .run_dirs()
            .into_iter()
            .filter(|d| *d != failed && !passed.contains(d))
            .collect::<Vec<_>>();
        assert_eq!(newest.len(), 1, "one new run directory per run");
        passed.push(newest[0].clone());
    }
    let mut expected = vec![failed, passed[2].clone(), passed[3].clone()];
    expected.sort();
    assert_eq!(project.run_dirs(), expected);
}

/// Messages that misled: a non-UTF-8 file had no position, `ready.http:
/// "http://[::1:1/"` passed validation and failed at run time (exit 3), the list of
/// valid categories read "valid categorys".
#[test]
fn bad_input_is_refused_at_load_with_a_position() {
    let project = Project::new();
    std::fs::write(
        project.path("layers.yaml"),
        b"version: 1\ncategories:\n  unit:\n    command: \"caf\xe9\"\n",
    )
    .unwrap();
    let out = project.runner().arg("--show-layers").run();
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("is not valid UTF-8: byte 0xe9 at offset 48 (line 4, column 18)")
            && out.stderr.contains("layers.yaml:4:18"),
        "{}",
        out.stderr
    );

    project.layers(
        r#"
version: 1
services:
  web:
    start: "sleep 1"
    ready: { http: "http://[::1:1/" }
categories:
  unit: { command: "true" }
layers:
  - name: main
    categories: [nope]
    required_services: [web]
"#,
    );
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("invalid `ready.http` of service `web`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("layers.yaml:6:20"), "{}", out.stderr);
    assert!(
        out.stderr.contains("valid categories: `unit`"),
        "{}",
        out.stderr
    );
    assert!(project.run_dirs().is_empty(), "nothing ran");
}

/// `Host: 127.0.0.1:PORT@evil.example` was taken for a loopback host.
#[test]
fn a_host_header_with_user_info_is_refused() {
    use std::io::{Read, Write};
    let project = Project::new();
    project.layers(&format!(
        r#"
version: 1
categories:
  gate: {{ command: "{}" }}
layers:
  - name: main
    categories: [gate]
"#,
        sh_wait_for("go")
    ));
    let mut child = project
        .runner()
        .args(["--use-layers", "main", "--websocket-addr", "127.0.0.1:0"])
        .spawn();
    let events = project.wait_for_events(&mut child, "the gate unit's start", |events| {
        !of_type(events, "test_started").is_empty()
    });
    drop(events);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(project.run_dir().join("run.json")).unwrap())
            .unwrap();
    let addr = info["progress_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let status_of = |host: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines().next().unwrap_or("").to_string()
    };
    assert!(status_of(&addr).contains(" 200 "), "{}", status_of(&addr));
    let hostile = status_of(&format!("{addr}@evil.example"));
    assert!(
        hostile.contains(" 403 ") || hostile.contains(" 400 "),
        "{hostile}"
    );
    std::fs::write(project.path("go"), "").unwrap();
    child.wait().assert_code(0);
}
