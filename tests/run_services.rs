//! Services layers require: started once (dependencies first) before the first layer
//! that needs them, used as is when already up, stopped at the end of the run (also
//! on Ctrl-C), and a service that does not come up is exit code 3 with its log tail.
//! The fixtures are tiny Python servers on ports the test picks; every service
//! carries the project's marker so /proc scans find leftovers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const STORE_PY: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("store listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello\n")
    c.close()
"#;

const PING_PY: &str = r#"
import socket, sys, urllib.request
r = urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=5)
assert r.status == 200, r.status
c = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
assert c.recv(16).startswith(b"hello")
print("both services answered")
"#;

fn position_of(events: &[Value], ty: &str, service: &str) -> usize {
    position(events, &format!("{ty} {service}"), |e| {
        e["type"] == ty && e["service"] == service
    })
}

fn service_events<'a>(events: &'a [Value], ty: &str, service: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == ty && e["service"] == service)
        .collect()
}

#[test]
fn a_service_two_layers_need_starts_once_after_its_dependency_and_stops_at_the_end() {
    let (web, store) = (free_port(), free_port());
    let project = Project::new();
    project.file("store.py", STORE_PY).file("ping.py", PING_PY);
    project.layers(&format!(
        r#"
version: 1
execution: {{ kill_grace_seconds: 2 }}
services:
  store:
    start: "python3 store.py {store}"
    ready: {{ tcp: "127.0.0.1:{store}" }}
    env: {{ LR_MARK: "@MARK@" }}
  web:
    start: "python3 -m http.server {web} --bind 127.0.0.1"
    ready: {{ http: "http://127.0.0.1:{web}/" }}
    startup_timeout_seconds: 20
    depends_on: [store]
    env: {{ LR_MARK: "@MARK@" }}
categories:
  ping:
    command: "python3 ping.py {web} {store}"
layers:
  - name: api
    categories: [ping]
    required_services: [web]
  - name: more
    categories: [ping]
    required_services: [web, store]
"#
    ));
    let out = project.runner().args(["--use-layers", "api,more"]).run();
    out.assert_code(0).assert_counts_line(2, 0, 0);
    let (events, _) = check_run(&project, &out);
    for service in ["store", "web"] {
        assert_eq!(
            service_events(&events, "service_starting", service).len(),
            1,
            "{service} starts once:\n{}",
            dump(&events)
        );
        let ready = service_events(&events, "service_ready", service);
        assert_eq!(ready.len(), 1, "{}", dump(&events));
        assert_eq!(ready[0]["started"], true);
        assert_eq!(
            service_events(&events, "service_stopped", service).len(),
            1,
            "{}",
            dump(&events)
        );
    }
    // Dependencies first; up before the first layer; down after the last, in reverse.
    assert!(
        position_of(&events, "service_ready", "store")
            < position_of(&events, "service_starting", "web")
    );
    let first_layer = position(&events, "layer_started", |e| e["type"] == "layer_started");
    assert!(position_of(&events, "service_ready", "web") < first_layer);
    let last_layer = events
        .iter()
        .rposition(|e| e["type"] == "layer_finished")
        .unwrap();
    assert!(position_of(&events, "service_stopped", "web") > last_layer);
    assert!(
        position_of(&events, "service_stopped", "web")
            < position_of(&events, "service_stopped", "store")
    );
    let log = project.run_dir().join("services/store.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("store listening"),
        "service output goes to {}",
        log.display()
    );
    assert_no_process_with(project.marker());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", web)).is_err(),
        "web still answers after the run"
    );
}

#[test]
fn a_service_that_never_becomes_ready_is_exit_3_with_its_log_tail_and_nothing_runs() {
    let port = free_port();
    let project = Project::new();
    project.layers(&format!(
        r#"
version: 1
execution: {{ kill_grace_seconds: 1 }}
services:
  broken:
    start: "echo starting the broken service; echo 'fatal: cannot bind {port}' >&2; sleep 4801"
    ready: {{ tcp: "127.0.0.1:{port}" }}
    startup_timeout_seconds: 1
    env: {{ LR_MARK: "@MARK@" }}
categories:
  unit:
    command: "touch ran.txt"
layers:
  - name: first
    categories: [unit]
    required_services: [broken]
  - name: second
    depends_on: [first]
    categories: [unit]
"#
    ));
    let out = project.runner().args(["--use-layers", "second"]).run();
    out.assert_code(3)
        .assert_stderr_contains("service `broken` did not become ready")
        .assert_stderr_contains("not ready after 1s")
        .assert_stderr_contains(&format!("fatal: cannot bind {port}"));
    let (events, summary) = check_run(&project, &out);
    assert!(
        of_type(&events, "test_started").is_empty(),
        "{}",
        dump(&events)
    );
    assert!(!project.path("ran.txt").exists());
    let failed = service_events(&events, "service_failed", "broken");
    assert_eq!(failed.len(), 1, "{}", dump(&events));
    assert!(failed[0]["reason"].as_str().unwrap().contains("not ready"));
    assert_eq!(
        service_events(&events, "service_stopped", "broken").len(),
        1
    );
    assert_eq!(summary["outcome"], "error");
    assert_eq!(layer_finished(&events, "first")["outcome"], "skipped");
    assert_eq!(layer_finished(&events, "second")["outcome"], "skipped");
    assert!(
        processes_with("sleep 4801").is_empty(),
        "the service survived"
    );
    assert_no_process_with(project.marker());
}

#[test]
fn a_start_command_that_fails_is_reported_without_waiting_for_the_timeout() {
    let project = Project::new();
    project.layers(&format!(
        r#"
version: 1
services:
  db:
    start: "echo 'no such database' >&2; exit 4"
    ready: {{ tcp: "127.0.0.1:{}" }}
    startup_timeout_seconds: 30
categories:
  unit: {{ command: "true" }}
layers:
  - name: main
    categories: [unit]
    required_services: [db]
"#,
        free_port()
    ));
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(Duration::from_secs(30));
    out.assert_code(3)
        .assert_stderr_contains("exited with code 4")
        .assert_stderr_contains("no such database");
    assert!(
        out.elapsed < Duration::from_secs(15),
        "waited for the timeout: {:?}",
        out.elapsed
    );
}

#[test]
fn a_service_already_up_is_used_as_is_and_left_running() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let project = Project::new();
    project.layers(&format!(
        r#"
version: 1
services:
  db:
    start: "touch started.txt; sleep 4802"
    ready: {{ tcp: "127.0.0.1:{port}" }}
categories:
  unit: {{ command: "true" }}
layers:
  - name: main
    categories: [unit]
    required_services: [db]
"#
    ));
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let (events, _) = check_run(&project, &out);
    let ready = service_events(&events, "service_ready", "db");
    assert_eq!(ready.len(), 1, "{}", dump(&events));
    assert_eq!(ready[0]["started"], false);
    assert!(service_events(&events, "service_starting", "db").is_empty());
    assert!(service_events(&events, "service_stopped", "db").is_empty());
    assert!(
        !project.path("started.txt").exists(),
        "`start` must not run"
    );
    drop(listener);
}

#[test]
fn ctrl_c_stops_the_services_the_run_started() {
    let port = free_port();
    let project = Project::new();
    project.file("store.py", STORE_PY);
    project.layers(&format!(
        r#"
version: 1
execution: {{ kill_grace_seconds: 1 }}
services:
  store:
    start: "python3 store.py {port}"
    ready: {{ tcp: "127.0.0.1:{port}" }}
    env: {{ LR_MARK: "@MARK@" }}
categories:
  wait:
    command: "sleep 4803"
    env: {{ LR_MARK: "@MARK@" }}
layers:
  - name: main
    categories: [wait]
    required_services: [store]
"#
    ));
    let mut child = project.runner().args(["--use-layers", "main"]).spawn();
    project.wait_for_events(&mut child, "the unit to start", |events| {
        !of_type(events, "test_started").is_empty()
    });
    child.signal("INT");
    let out = child.wait();
    out.assert_code(130);
    let (events, _) = check_run(&project, &out);
    assert_eq!(service_events(&events, "service_stopped", "store").len(), 1);
    assert_no_process_with(project.marker());
}

#[test]
fn categories_needing_real_services_run_only_when_allowed() {
    let port = free_port();
    let project = Project::new();
    project.file("store.py", STORE_PY);
    project.layers(&format!(
        r#"
version: 1
execution: {{ kill_grace_seconds: 1 }}
services:
  store:
    start: "python3 store.py {port}"
    ready: {{ tcp: "127.0.0.1:{port}" }}
    env: {{ LR_MARK: "@MARK@" }}
categories:
  real:
    command: "true"
    requires_real_services: true
layers:
  - name: main
    categories: [real]
    required_services: [store]
"#
    ));
    // Not allowed: skipped with the reason, and its service is not even started.
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(0, 0, 1);
    let (events, summary) = check_run(&project, &out);
    assert!(
        of_type(&events, "service_starting").is_empty(),
        "{}",
        dump(&events)
    );
    let reason = summary["units"]["main/real/real"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("real services"), "{}", unit_table(&summary));

    // Allowed by the environment variable.
    std::fs::remove_dir_all(project.path(".runner")).unwrap();
    let out = project
        .runner()
        .args(["--use-layers", "main"])
        .env("RUNNER_REAL_SERVICES", "1")
        .run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    let (events, _) = check_run(&project, &out);
    assert_eq!(of_type(&events, "service_starting").len(), 1);

    // Allowed by the configuration (what an environment overlay would set).
    std::fs::remove_dir_all(project.path(".runner")).unwrap();
    project.environment("ci", "execution:\n  real_services: true\n");
    let out = project
        .runner()
        .args(["--use-layers", "main", "--env", "ci"])
        .run();
    out.assert_code(0).assert_counts_line(1, 0, 0);
    assert_no_process_with(project.marker());
}
