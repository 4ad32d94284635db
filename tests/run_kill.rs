//! Stopping units: timeouts kill the whole process tree (grandchildren, `setsid`
//! escapees, double-forked daemons), leaked processes of a passing unit are killed, and
//! SIGINT/SIGTERM to the runner cancel the run with exit 130, a valid summary and no
//! survivors. Every fixture puts the project's marker in its units' environment, and
//! `assert_no_process_with` scans /proc for it afterwards.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Bound for runs whose units would otherwise sleep for an hour.
const QUICK: Duration = Duration::from_secs(30);

#[test]
fn timeout_kills_the_whole_process_tree() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  hang:
    command: "sh -c 'sleep 3141 & setsid sleep 3142 & sleep 3143'"
    timeout_seconds: 1
    env: { LR_MARK: "@MARK@" }
  daemon:
    command: "(setsid sh -c 'sleep 3144' &); sleep 3145"
    timeout_seconds: 1
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    categories: [hang, daemon]
"#,
    );
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(QUICK);
    out.assert_code(1).assert_counts_line(0, 2, 0);
    let (events, summary) = check_run(&project, &out);
    for id in ["main/hang/hang", "main/daemon/daemon"] {
        let finished = unit_events(&events, "test_finished", id);
        assert_eq!(finished.len(), 1, "{id}:\n{}", dump(&events));
        assert_eq!(finished[0]["outcome"], "timeout", "{}", finished[0]);
        assert_eq!(summary["units"][id]["outcome"], "timeout");
    }
    // Every process of both trees (sleep 3141..3145) carries the marker in its
    // environment: the grandchild, the `setsid` escapee and the double-forked daemon
    // are all found this way, and listed by command line if they survived. (The sleeps'
    // command lines alone are not unique when two copies of the suite run at once.)
    assert_no_process_with(project.marker());
}

#[test]
fn leaked_process_of_a_passing_unit_is_reported_and_killed() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  leaky:
    command: "setsid sleep 3146 & echo leaving a daemon behind"
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    categories: [leaky]
"#,
    );
    // The leaked sleep holds the unit's stdout: the runner must not wait for it.
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(QUICK);
    let (events, _) = check_run(&project, &out);
    let leaked = unit_events(&events, "test_leaked", "main/leaky/leaky");
    assert_eq!(
        leaked.len(),
        1,
        "expected a test_leaked event:\n{}",
        dump(&events)
    );
    let processes = leaked[0]["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .any(|p| p.as_str().unwrap_or_default().contains("sleep 3146")),
        "test_leaked should list the sleep: {}",
        leaked[0]
    );
    assert_no_process_with(project.marker());
}

/// Project for the interrupt tests: two long units run (jobs 2), a third waits, and a
/// later layer has not started.
fn interrupt_project() -> Project {
    let project = Project::new();
    for i in 1..=3 {
        project.file(
            &format!("long/test_{i}.sh"),
            "sleep 2718 &\nsetsid sleep 2718 &\nwait\n",
        );
    }
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  long:
    command: "sh {file}"
    files: "long/test_*.sh"
    env: { LR_MARK: "@MARK@" }
  later_cat: { command: "touch later-ran" }
layers:
  - name: main
    categories: [long]
  - name: later
    categories: [later_cat]
"#,
    );
    project
}

fn started_count(events: &[Value]) -> usize {
    of_type(events, "test_started").len()
}

fn interrupt_mid_run(signal: &str) {
    let project = interrupt_project();
    let mut child = project
        .runner()
        .args(["--use-layers", "main,later"])
        .spawn();
    project.wait_for_events(&mut child, "two units to start", |ev| {
        started_count(ev) >= 2
    });
    child.signal(signal);
    let out = child.wait_within(QUICK);

    out.assert_code(130);
    // Two cancelled, one pending, one in the later layer: all skipped.
    out.assert_counts_line(0, 0, 4);
    let (events, summary) = check_run(&project, &out);
    assert_eq!(summary["outcome"], "interrupted", "{summary}");
    assert_eq!(summary["exit_code"], 130);
    assert_eq!(events.last().unwrap()["outcome"], "interrupted");

    let long = planned_units(&events, "main", "long");
    assert_eq!(long.len(), 3);
    let mut cancelled = 0;
    for id in &long {
        let unit = &summary["units"][id];
        if unit_events(&events, "test_started", id).is_empty() {
            assert_eq!(unit["status"], "skipped", "pending {id}: {unit}");
        } else {
            assert_eq!(unit["outcome"], "cancelled", "running {id}: {unit}");
            cancelled += 1;
        }
    }
    assert_eq!(cancelled, 2, "{}", unit_table(&summary));
    let main = layer_finished(&events, "main");
    assert_eq!(main["outcome"], "cancelled", "{main}");
    let later = layer_finished(&events, "later");
    assert_eq!(later["outcome"], "skipped", "{later}");
    assert!(!project.path("later-ran").exists());
    assert_no_process_with(project.marker());
}

#[test]
fn sigint_mid_run_cancels_cleanly_with_exit_130() {
    interrupt_mid_run("INT");
}

#[test]
fn sigterm_mid_run_cancels_cleanly_with_exit_130() {
    interrupt_mid_run("TERM");
}

#[test]
fn second_sigint_kills_at_once() {
    let project = Project::new();
    // Ignores SIGTERM (the trap), so only SIGKILL stops it; the grace period is long.
    project.file(
        "stubborn.sh",
        "trap 'touch got-term' TERM\ntouch trap-set\nwhile :; do sleep 0.1; done\n",
    );
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 60 }
categories:
  stubborn: { command: "sh stubborn.sh", env: { LR_MARK: "@MARK@" } }
layers:
  - name: main
    categories: [stubborn]
"#,
    );
    let mut child = project.runner().args(["--use-layers", "main"]).spawn();
    project.wait_for_events(&mut child, "the unit to start", |ev| started_count(ev) >= 1);
    // A SIGTERM before the trap is set would simply end the unit.
    wait_for_file(&project.path("trap-set"));
    child.signal("INT");
    // The first Ctrl-C sent SIGTERM to the unit, which shrugged it off.
    wait_for_file(&project.path("got-term"));
    assert!(
        child.try_wait().is_none(),
        "the runner waits out the grace period"
    );
    child.signal("INT");
    let out = child.wait_within(Duration::from_secs(15));
    out.assert_code(130);
    assert!(
        parse_counts_line(out.last_line()).is_some(),
        "the closing line is printed even on a second Ctrl-C\n{out}"
    );
    assert_no_process_with(project.marker());
}

/// A chain of 5,000 one-unit layers (the measured defect: 20,000 chained layers ignored
/// SIGTERM and two Ctrl-Cs for over a minute): SIGTERM mid-run stops it with exit 130,
/// every one of the 5,000 planned units has exactly one outcome, and the reports agree.
/// How fast it stops is measured by `bench/scale_layers.sh`, not asserted here.
#[test]
fn sigterm_stops_a_long_chain_of_layers_with_every_unit_accounted_for() {
    let project = Project::new();
    let mut yaml = String::from("version: 1\ncategories:\n  c: { command: \"true\" }\nlayers:\n");
    for i in 0..5000 {
        yaml.push_str(&format!(
            "  - name: l{i}\n    categories: [c]\n    execution_order: {i}\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    depends_on: [l{}]\n", i - 1));
        }
    }
    project.layers(&yaml);
    let mut spawned = project
        .runner()
        .args(["--use-layers", "--progress-mode", "silent"])
        .spawn();
    // Once some layers have run, stop it.
    project.wait_for_events(&mut spawned, "20 units finished", |events| {
        of_type(events, "test_finished").len() >= 20
    });
    spawned.signal("TERM");
    let out = spawned.wait_within(QUICK);
    out.assert_code(130);
    let summary = project.summary();
    assert_eq!(summary["stop_cause"]["kind"], "interrupted");
    let c = &summary["counts"];
    assert_eq!(c["total"], 5000);
    assert_eq!(
        c["passed"].as_u64().unwrap()
            + c["failed"].as_u64().unwrap()
            + c["skipped"].as_u64().unwrap(),
        5000,
        "{c}"
    );
    assert!(c["skipped"].as_u64().unwrap() > 0, "{c}");
}

/// A daemon that clears its environment, leaves the unit's session and closes its output
/// (`env -i setsid … </dev/null >/dev/null 2>&1 &` from a subshell that exits) used to
/// survive the unit, the run and everything after it, with the unit passing silently.
/// The runner adopts it as a child subreaper: it is the unit's leak, reported and killed.
#[test]
fn a_hidden_daemon_is_the_units_leak_and_is_killed() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  hides:
    command: "( env -i setsid sh -c 'echo $$ > daemon.pid; exec sleep 3147' </dev/null >/dev/null 2>&1 & ); while [ ! -s daemon.pid ]; do sleep 0.05; done; sleep 1"
layers:
  - name: main
    categories: [hides]
"#,
    );
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(QUICK);
    let daemon: u32 = project.read("daemon.pid").trim().parse().unwrap();
    let alive = daemon_alive(daemon);
    if alive {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &daemon.to_string()])
            .status();
    }
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert!(!alive, "the hidden daemon (pid {daemon}) survived the run");
    let leaked = unit_events(&events, "test_leaked", "main/hides/hides");
    assert_eq!(
        leaked.len(),
        1,
        "expected a test_leaked event:\n{}",
        dump(&events)
    );
    let processes = leaked[0]["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .any(|p| p.as_str().unwrap_or_default().contains("sleep 3147")),
        "test_leaked should list the daemon: {}",
        leaked[0]
    );
}

/// Whether `pid` is a live `sleep 3147` (and not a reused pid).
fn daemon_alive(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    String::from_utf8_lossy(&cmdline).contains("3147") && !zombie
}
