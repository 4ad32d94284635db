//! Live progress over WebSocket: the real binary serves a run, real clients
//! (tokio-tungstenite, raw HTTP, headless Chromium, `runner watch`) follow it.
//!
//! Runs are held open by a `gate` layer (a unit waiting for a file the test
//! creates), so clients connect while the run is in progress; the port is read
//! from `run.json`'s `progress_url` (`--websocket-addr 127.0.0.1:0`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use layered_runner::event::{Event, RunState};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A project: layer `gate` (one unit waiting for the file `gate`), then layer `fast`
/// with `units` shell units (`unit/test_NN.sh`, the third one failing when `failing`),
/// then layer `slow` with two units.
fn project(units: usize, failing: bool) -> Project {
    let p = Project::new();
    p.layers(&format!(
        r#"version: 1
execution:
  max_parallel_tests: 4
categories:
  gate:
    command: "{gate}"
  unit:
    command: "sh {{file}}"
    files: "unit/test_*.sh"
  slow:
    command: "sh {{file}}"
    files: "slow/test_*.sh"
layers:
  - name: gate
    categories: [gate]
  - name: fast
    execution_mode: parallel
    fail_fast: disabled
    categories: [unit]
  - name: slow
    categories: [slow]
"#,
        gate = sh_wait_for("gate")
    ));
    for i in 0..units {
        let body = if failing && i == 2 {
            "echo 'AssertionError: 2 != 3'; exit 1\n"
        } else {
            "echo ok\n"
        };
        p.file(&format!("unit/test_{i:03}.sh"), body);
    }
    p.file("slow/test_a.sh", "sleep 0.1\n");
    p.file("slow/test_b.sh", "sleep 0.1\n");
    p
}

fn open_gate(p: &Project) {
    std::fs::write(p.path("gate"), "").unwrap();
}

/// The run's `progress_url` from `run.json` (waits for it; panics if the runner exits first).
fn progress_url(p: &Project, child: &mut Spawned) -> String {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        if let Some(dir) = p.run_dirs().first()
            && let Ok(text) = std::fs::read_to_string(dir.join("run.json"))
            && let Ok(info) = serde_json::from_str::<Value>(&text)
        {
            let url = info["progress_url"].as_str();
            assert!(url.is_some(), "run.json has no progress_url: {text}");
            return url.unwrap().to_string();
        }
        if child.try_wait().is_some() {
            panic!("the runner exited before writing run.json");
        }
        assert!(
            Instant::now() < deadline,
            "no run.json within {WAIT_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `runner --use-layers` with the progress server on a free port; returns the
/// running child and its `progress_url`.
fn start_streamed(p: &Project) -> (Spawned, String) {
    let mut child = p
        .runner()
        .args(["--use-layers", "--websocket-addr", "127.0.0.1:0"])
        .spawn();
    let url = progress_url(p, &mut child);
    (child, url)
}

fn ws_url(progress_url: &str) -> String {
    format!("{}ws", progress_url.replacen("http://", "ws://", 1))
}

fn host_port(progress_url: &str) -> String {
    progress_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

/// The next text message as JSON; None when the server closed the connection.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT_DEADLINE, ws.next())
            .await
            .expect("no message from the server within the deadline")?;
        match msg {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).expect("JSON")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Every message until the run's `run_finished` (included).
async fn until_finished(ws: &mut Ws) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(m) = next_json(ws).await {
        let done = m["type"] == "run_finished";
        out.push(m);
        if done {
            return out;
        }
    }
    panic!(
        "the connection closed before run_finished after {} messages",
        out.len()
    );
}

/// The fold of `events` (wire JSON) onto `state`, checking `seq` continuity.
fn fold(mut state: RunState, events: &[Value]) -> RunState {
    for e in events {
        let ev: Event = serde_json::from_value(e.clone()).expect("an event");
        assert_eq!(ev.seq, state.seq + 1, "gap or repeat in the stream at {e}");
        state.apply(&ev);
    }
    state
}

/// A plain HTTP/1.1 GET: (status, head lowercased, body). Reads the body by its
/// `Content-Length` or chunks (some servers keep the connection open).
fn http_get(host_port: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s =
        TcpStream::connect(host_port).unwrap_or_else(|e| panic!("connect {host_port}: {e}"));
    s.set_read_timeout(Some(WAIT_DEADLINE)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            let complete = match length {
                Some(n) => body.len() >= n,
                None if head.contains("transfer-encoding: chunked") => body.contains("\r\n0\r\n"),
                None => false,
            };
            if complete {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read from {host_port}{path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_ascii_lowercase(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Read (and drop) messages until the server closes the connection.
async fn closed_within(ws: &mut Ws, limit: Duration) {
    let deadline = Instant::now() + limit;
    while next_json(ws).await.is_some() {
        assert!(Instant::now() < deadline, "the connection stayed open");
    }
}

fn spawn_blocking_wait(child: Spawned) -> tokio::task::JoinHandle<Output> {
    tokio::task::spawn_blocking(move || child.wait())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gets_a_snapshot_then_every_event_in_order() {
    let p = project(12, true);
    let (child, url) = start_streamed(&p);
    let mut ws = connect(&ws_url(&url)).await;
    let snapshot = next_json(&mut ws).await.expect("a snapshot");
    assert_eq!(snapshot["type"], "snapshot", "first message: {snapshot}");
    assert_eq!(snapshot["reason"], "connect");
    let state: RunState = serde_json::from_value(snapshot["state"].clone()).unwrap();
    open_gate(&p);
    let events = until_finished(&mut ws).await;
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!("runner: progress at {url} (")),
        "the URL is printed on stderr\n{out}"
    );
    let (file_events, summary) = check_run(&p, &out);

    // The snapshot is the fold of the file's events up to its seq, and the live
    // events are exactly the file's events after it.
    let s = state.seq as usize;
    assert!(s >= 1, "the snapshot comes after run_started: {snapshot}");
    assert!(
        events.len() > 20,
        "most of the run is streamed live: {}",
        events.len()
    );
    assert_eq!(
        serde_json::to_value(fold(RunState::default(), &file_events[..s])).unwrap(),
        snapshot["state"],
        "snapshot = fold of events.jsonl up to its seq"
    );
    assert_eq!(
        events,
        file_events[s..],
        "live events = events.jsonl after the snapshot"
    );
    let folded = fold(state, &events);
    assert_eq!(
        serde_json::to_value(&folded).unwrap()["counts"],
        summary["counts"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_client_gets_the_same_events_as_arrays() {
    let p = project(12, true);
    let (child, url) = start_streamed(&p);
    let mut ws = connect(&format!("{}?batch=1", ws_url(&url))).await;
    let snapshot = next_json(&mut ws).await.expect("a snapshot");
    assert_eq!(snapshot["type"], "snapshot", "first message: {snapshot}");
    let state: RunState = serde_json::from_value(snapshot["state"].clone()).unwrap();
    open_gate(&p);
    let mut events = Vec::new();
    let mut messages = 0;
    while !events
        .last()
        .is_some_and(|e: &Value| e["type"] == "run_finished")
    {
        let m = next_json(&mut ws)
            .await
            .expect("the connection closed before run_finished");
        let batch = m
            .as_array()
            .unwrap_or_else(|| panic!("a live message is an array: {m}"));
        assert!(!batch.is_empty(), "no empty batch");
        events.extend(batch.iter().cloned());
        messages += 1;
    }
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1);
    let (file_events, _) = check_run(&p, &out);
    let s = state.seq as usize;
    assert_eq!(
        events,
        file_events[s..],
        "live events = events.jsonl after the snapshot"
    );
    assert!(
        messages <= events.len(),
        "{messages} messages for {} events",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since_seq_loses_nothing() {
    let p = project(30, false);
    // The slow layer's first unit holds the run until `gate2` exists.
    p.file("slow/test_a.sh", &format!("{}\n", sh_wait_for("gate2")));
    let (child, url) = start_streamed(&p);
    let ws_base = ws_url(&url);

    // First connection: the snapshot and a few live events, then hang up.
    let mut first = connect(&ws_base).await;
    let snapshot = next_json(&mut first).await.unwrap();
    let mut state: RunState = serde_json::from_value(snapshot["state"].clone()).unwrap();
    open_gate(&p);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_json(&mut first).await.expect("an event"));
    }
    drop(first);
    state = fold(state, &seen);
    let k = state.seq;

    // Reconnect with ?since_seq=K: a resume acknowledgement, then K+1, K+2, ...
    let mut second = connect(&format!("{ws_base}?since_seq={k}")).await;
    let ack = next_json(&mut second).await.unwrap();
    assert_eq!(ack["type"], "resume", "{ack}");
    assert_eq!(ack["since_seq"], k);
    let mut rest = Vec::new();
    // Read up to the held unit: the run is still going.
    loop {
        let e = next_json(&mut second).await.expect("an event");
        let held = e["type"] == "test_started" && e["unit"] == "slow/slow/slow/test_a.sh";
        rest.push(e);
        if held {
            break;
        }
    }

    // The message form, on a connection opened mid-run: {"since_seq":K} restarts
    // the stream after K, whatever was queued before.
    let mut third = connect(&ws_base).await;
    assert_eq!(next_json(&mut third).await.unwrap()["type"], "snapshot");
    third
        .send(Message::text(format!(r#"{{"since_seq":{k}}}"#)))
        .await
        .unwrap();
    loop {
        let m = next_json(&mut third)
            .await
            .expect("the stream after since_seq");
        if m["type"] == "resume" {
            assert_eq!(m["since_seq"], k);
            break;
        }
        assert_ne!(m["type"], "snapshot", "the ring still holds seq {k}");
    }
    std::fs::write(p.path("gate2"), "").unwrap();
    rest.extend(until_finished(&mut second).await);
    let restarted = until_finished(&mut third).await;
    assert_eq!(
        restarted, rest,
        "both resumptions get the same events after {k}"
    );
    let final_state = fold(state.clone(), &rest);

    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(0);
    let (file_events, _) = check_run(&p, &out);
    let mut all = seen.clone();
    all.extend(rest);
    assert_eq!(
        all,
        file_events[file_events.len() - all.len()..],
        "first connection + resumed connection = the tail of events.jsonl, no gap"
    );
    assert_eq!(final_state.counts.passed, 33);
    assert_eq!(
        final_state.outcome,
        Some(layered_runner::event::RunOutcome::Passed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_and_one_that_never_reads_do_not_change_the_run() {
    let p = project(60, true);
    let (child, url) = start_streamed(&p);
    let url = ws_url(&url);
    // Connects, then never reads: its socket buffers and queue fill up.
    let stalled = connect(&url).await;
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut ws = connect(&url).await;
        readers.push(tokio::spawn(async move {
            let snap = next_json(&mut ws).await.expect("snapshot");
            let state: RunState = serde_json::from_value(snap["state"].clone()).unwrap();
            fold(state, &until_finished(&mut ws).await)
        }));
    }
    open_gate(&p);
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1).assert_counts_line(62, 1, 0);
    let (_, summary) = check_run(&p, &out);
    for r in readers {
        let state = r.await.unwrap();
        assert_eq!(
            serde_json::to_value(&state).unwrap()["counts"],
            summary["counts"],
            "every reader folds to the run's counts"
        );
        assert_eq!(state.exit_code, Some(1));
    }
    drop(stalled);
}

#[test]
fn non_loopback_bind_without_a_token_is_refused() {
    let p = project(1, false);
    open_gate(&p);
    let out = p
        .runner()
        .args(["--use-layers", "--websocket-addr", "0.0.0.0:0"])
        .env("RUNNER_WS_TOKEN", "")
        .run();
    out.assert_code(2)
        .assert_stderr_contains("not a loopback address")
        .assert_stderr_contains("--websocket-token");
    assert!(p.run_dirs().is_empty(), "nothing ran");
}

#[test]
fn a_wrong_token_is_rejected_and_the_right_one_accepted() {
    let p = project(2, false);
    let mut child = p
        .runner()
        .args(["--use-layers", "--websocket-addr", "0.0.0.0:0"])
        .env("RUNNER_WS_TOKEN", "s3cret-t0ken")
        .spawn();
    let url = progress_url(&p, &mut child);
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let hp = format!("127.0.0.1:{port}");
    for path in ["/status", "/metrics"] {
        let (code, head, _) = http_get(&hp, path, &[]);
        assert_eq!(code, 401, "{path} without a token");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        let (code, _, _) = http_get(&hp, path, &[("Authorization", "Bearer nope")]);
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _, _) = http_get(&hp, &format!("{path}?token=nope"), &[]);
        assert_eq!(code, 401, "{path} with a wrong ?token");
        let (code, _, body) = http_get(&hp, path, &[("Authorization", "Bearer s3cret-t0ken")]);
        assert_eq!(code, 200, "{path} with the token: {body}");
    }
    let (code, _, body) = http_get(&hp, "/status?token=s3cret-t0ken", &[]);
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["counts"]["total"], 5);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ws = format!("ws://{hp}/ws");
        match tokio_tungstenite::connect_async(format!("{ws}?token=wrong")).await {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("a wrong token must be refused with 401, got {other:?}"),
        }
        let mut req = ws.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", "Bearer s3cret-t0ken".parse().unwrap());
        let (mut conn, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(next_json(&mut conn).await.unwrap()["type"], "snapshot");
    });
    open_gate(&p);
    child.wait().assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let p = project(5, true);
    let mut child = p
        .runner()
        .args([
            "--use-layers",
            "gate,fast",
            "--websocket-addr",
            "127.0.0.1:0",
        ])
        .spawn();
    let url = progress_url(&p, &mut child);
    let hp = host_port(&url);
    let mut ws = connect(&ws_url(&url)).await;
    assert_eq!(next_json(&mut ws).await.unwrap()["type"], "snapshot");
    // Wait until the gate unit runs: then 1 unit is running and 5 are pending.
    p.wait_for_events(&mut child, "the gate unit started", |e| {
        !of_type(e, "test_started").is_empty()
    });
    let (code, head, text) = http_get(&hp, "/metrics", &[]);
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let scrape = check_prometheus(&text);
    let value = |metric: &str, label: Option<(&str, &str)>| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {metric} {label:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is not a scalar"),
        }
    };
    assert_eq!(value("runner_units", Some(("state", "total"))), 6.0);
    assert_eq!(value("runner_units", Some(("state", "running"))), 1.0);
    assert_eq!(value("runner_running_units", None), 1.0);
    assert_eq!(value("runner_runs_total", None), 1.0);
    assert_eq!(value("runner_ws_clients", None), 1.0);
    assert!(value("process_resident_memory_bytes", None) > 1e6);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "runner_unit_duration_seconds"
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "the duration histogram parses as a histogram"
    );

    open_gate(&p);
    let events = until_finished(&mut ws).await;
    assert_eq!(events.last().unwrap()["exit_code"], 1);
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1).assert_counts_line(5, 1, 0);
}

/// Parse with `prometheus-parse`, and check what that lenient parser would skip:
/// every sample line is a valid sample with a numeric value, every metric has HELP
/// and TYPE, and the histogram's buckets are cumulative and end with `+Inf`.
fn check_prometheus(text: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::LineInfo;
    let mut typed = std::collections::HashMap::new();
    let mut sample_lines = 0;
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type {
                metric_name,
                sample_type,
                ..
            } => {
                typed.insert(metric_name, sample_type);
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                sample_lines += 1;
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|b| typed.contains_key(&format!("{b}_bucket")))
                    .unwrap_or(metric_name);
                assert!(
                    typed.contains_key(base) || typed.contains_key(&format!("{base}_bucket")),
                    "sample before its TYPE: {line}"
                );
                assert!(
                    value == "+Inf" || value.parse::<f64>().is_ok(),
                    "bad value: {line}"
                );
            }
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(sample_lines > 30, "{text}");
    for s in &scrape.samples {
        // The parser keeps a histogram's `_sum` and `_count` as samples of their own.
        let base = ["_sum", "_count"]
            .iter()
            .find_map(|x| s.metric.strip_suffix(x))
            .filter(|b| typed.contains_key(&format!("{b}_bucket")))
            .unwrap_or(&s.metric);
        assert!(scrape.docs.contains_key(base), "no HELP for {}", s.metric);
        if let prometheus_parse::Value::Histogram(buckets) = &s.value {
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
            assert!(buckets.last().unwrap().less_than.is_infinite());
        }
    }
    scrape
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_in_events_snapshots_and_status() {
    let p = project(3, true);
    p.file(
        "unit/test_002.sh",
        "echo \"using DEPLOY_KEY=$DEPLOY_KEY and $DB_PASSWORD\"; exit 1\n",
    );
    let mut child = p
        .runner()
        .args([
            "--use-layers",
            "--websocket-addr",
            "127.0.0.1:0",
            "--websocket-linger",
            "60",
        ])
        .env("DEPLOY_KEY", "k3y-material-9876")
        .env("DB_PASSWORD", "pw-sup3r-secret")
        .spawn();
    let url = progress_url(&p, &mut child);
    let mut ws = connect(&ws_url(&url)).await;
    next_json(&mut ws).await.unwrap();
    open_gate(&p);
    let events = until_finished(&mut ws).await;
    let streamed = serde_json::to_string(&events).unwrap();
    let failed = events
        .iter()
        .find(|e| e["type"] == "test_finished" && e["outcome"] == "failed")
        .expect("the failing unit");
    assert_eq!(
        failed["output_tail"].as_str().unwrap().trim(),
        "using DEPLOY_KEY=*** and ***"
    );
    assert!(!streamed.contains("k3y-material-9876") && !streamed.contains("pw-sup3r-secret"));
    // Lingering after the run: a late client's snapshot and /status carry the final
    // state (with the failure's output tail), redacted too.
    let mut late = connect(&ws_url(&url)).await;
    let snap = next_json(&mut late).await.unwrap();
    assert_eq!(snap["state"]["outcome"], "failed");
    let tail = &snap["state"]["units"]["fast/unit/unit/test_002.sh"]["output_tail"];
    assert_eq!(
        tail.as_str().unwrap().trim(),
        "using DEPLOY_KEY=*** and ***"
    );
    assert_eq!(next_json(&mut late).await, None, "closed: the run is over");
    let (code, _, status) = http_get(&host_port(&url), "/status", &[]);
    assert_eq!(code, 200);
    assert!(status.contains("DEPLOY_KEY=***"), "{status}");
    for text in [snap.to_string(), status] {
        assert!(!text.contains("k3y-material-9876") && !text.contains("pw-sup3r-secret"));
    }
    // Ctrl-C ends the linger; the exit code is still the run's.
    child.signal("INT");
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1)
        .assert_stderr_contains("progress server stays up for 60s");
}

#[test]
fn a_port_in_use_degrades_the_streamer_to_console_only() {
    let p = project(2, false);
    open_gate(&p);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = p
        .runner()
        .args(["--use-layers", "--websocket-addr", &addr])
        .run();
    out.assert_code(0)
        .assert_counts_line(5, 0, 0)
        .assert_stderr_contains("continuing console-only");
    let (events, _) = check_run(&p, &out);
    assert!(
        events.iter().any(|e| e["type"] == "agent_health"
            && e["name"] == "progress_streamer"
            && e["status"] == "degraded"),
        "an agent_health event reports the degraded streamer:\n{}",
        dump(&events)
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "warning" && e["message"].as_str().unwrap().contains(&addr)),
        "a warning names the address"
    );
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(p.run_dir().join("run.json")).unwrap())
            .unwrap();
    assert!(info.get("progress_url").is_none(), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_mode_serves_by_default_and_filters_by_thread() {
    let p = project(3, false);
    let mut child = p
        .runner()
        .args(["--use-layers", "--websocket-thread-id", "t-42"])
        .spawn();
    let url = progress_url(&p, &mut child);
    let base = ws_url(&url);
    let mut mine = connect(&format!("{base}?thread_id=t-42")).await;
    let mut other = connect(&format!("{base}?thread_id=someone-else")).await;
    let snap = next_json(&mut mine).await.unwrap();
    assert_eq!(snap["thread_id"], "t-42");
    assert_eq!(snap["state"]["mode"], "streamed");
    assert_eq!(next_json(&mut other).await.unwrap()["type"], "snapshot");
    open_gate(&p);
    let events = until_finished(&mut mine).await;
    assert!(events.iter().all(|e| e["thread_id"] == "t-42"));
    // The other thread's client gets no event, and is closed when the run ends.
    assert_eq!(next_json(&mut other).await, None);
    spawn_blocking_wait(child).await.unwrap().assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_clients_and_frame_size() {
    let p = project(2, false);
    p.file(
        "agents/progress_streamer.yaml",
        "max_clients: 2\nmax_frame_bytes: 2048\n",
    );
    let (child, url) = start_streamed(&p);
    let url = ws_url(&url);
    let mut a = connect(&url).await;
    let mut b = connect(&url).await;
    next_json(&mut a).await.unwrap();
    next_json(&mut b).await.unwrap();
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third client must be refused, got {other:?}"),
    }
    // An oversized frame ends that client's connection; the other one is unaffected.
    b.send(Message::text("x".repeat(10_000))).await.ok();
    closed_within(&mut b, WAIT_DEADLINE).await;
    // Its place is free again.
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut c = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((c, _)) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the place never came back: {e}"),
        }
    };
    next_json(&mut c).await.unwrap();
    // Unknown client messages are ignored.
    a.send(Message::text(r#"{"hello":"server"}"#))
        .await
        .unwrap();
    open_gate(&p);
    let events = until_finished(&mut a).await;
    assert_eq!(events.last().unwrap()["outcome"], "passed");
    spawn_blocking_wait(child).await.unwrap().assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_resynchronised_then_dropped() {
    let p = project(40, false);
    // A one-event queue: any burst overflows it while the session waits to write.
    p.file("agents/progress_streamer.yaml", "client_queue: 1\n");
    let (child, url) = start_streamed(&p);
    let mut ws = connect(&ws_url(&url)).await;
    open_gate(&p);
    let (mut state, mut lagged, mut close_code) = (None::<RunState>, 0, None);
    loop {
        let msg = tokio::time::timeout(WAIT_DEADLINE, ws.next())
            .await
            .expect("a message within the deadline");
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                close_code = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        let m: Value = serde_json::from_str(text.as_str()).unwrap();
        if m["type"] == "snapshot" {
            if m["reason"] == "lagged" {
                lagged += 1;
            }
            state = Some(serde_json::from_value(m["state"].clone()).unwrap());
            continue;
        }
        // After every (re)snapshot the events continue exactly where it left off.
        let s = state.take().expect("a snapshot first");
        state = Some(fold(s, std::slice::from_ref(&m)));
    }
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(0).assert_counts_line(43, 0, 0);
    assert!(lagged >= 1, "a one-event queue must overflow");
    match close_code {
        Some((1008, reason)) => {
            assert_eq!(lagged, 3, "dropped after 3 resyncs");
            assert!(reason.contains("too slow"), "{reason}");
        }
        Some((1000, _)) => {
            let s = state.unwrap();
            assert_eq!(s.counts.passed, 43, "resynced to the end: {:?}", s.counts);
        }
        other => panic!("unexpected end of stream: {other:?}"),
    }
}

#[test]
fn runner_watch_follows_a_run_and_exits_with_its_code() {
    let p = project(4, true);
    let (child, url) = start_streamed(&p);
    // Without a URL, `runner watch` finds the run in ./.runner.
    let watch = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("watch")
        .current_dir(p.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let with_url = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["watch", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both are connected once the server counts two clients.
    let hp = host_port(&url);
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !http_get(&hp, "/metrics", &[])
        .2
        .contains("runner_ws_clients 2")
    {
        assert!(Instant::now() < deadline, "the watchers never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    open_gate(&p);
    let out = child.wait();
    out.assert_code(1);
    for w in [watch, with_url] {
        let w = w.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&w.stdout);
        assert_eq!(
            w.status.code(),
            Some(1),
            "watch exits with the run's code\n{stdout}\n{}",
            String::from_utf8_lossy(&w.stderr)
        );
        assert_eq!(last_line(&stdout), "6 passed, 1 failed", "{stdout}");
        assert!(stdout.contains("FAIL"), "{stdout}");
        assert!(stdout.contains("AssertionError: 2 != 3"), "{stdout}");
    }
}

#[test]
fn runner_watch_without_a_run_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("watch")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run in progress"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["watch", "http://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "nothing listens on port 1");
}

// ---- headless Chromium ------------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium in its own process group, killed whole (browser, zygotes, renderers)
/// when the test ends, whether it passes or panics.
struct KillGroup(std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Evaluate `expr` in the page through the DevTools protocol; returns its value.
async fn evaluate(page: &mut Ws, id: u64, expr: &str) -> Value {
    let call = serde_json::json!({
        "id": id,
        "method": "Runtime.evaluate",
        "params": {"expression": expr, "returnByValue": true},
    });
    page.send(Message::text(call.to_string())).await.unwrap();
    loop {
        let m = next_json(page).await.expect("devtools reply");
        if m["id"] == id {
            return m["result"]["result"]["value"].clone();
        }
    }
}

fn devtools_page(profile: &Path) -> String {
    let deadline = Instant::now() + WAIT_DEADLINE;
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
            && let Some(port) = text.lines().next().filter(|l| !l.is_empty())
        {
            break port.to_string();
        }
        assert!(Instant::now() < deadline, "chromium did not open DevTools");
        std::thread::sleep(Duration::from_millis(50));
    };
    loop {
        let (_, _, body) = http_get(&format!("127.0.0.1:{port}"), "/json/list", &[]);
        if let Ok(Value::Array(targets)) = serde_json::from_str::<Value>(&body)
            && let Some(page) = targets.iter().find(|t| t["type"] == "page")
        {
            return page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no page target: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The viewer's DOM, as the test reads it.
const DOM: &str = r#"JSON.stringify({
  status: document.getElementById('run-status').dataset.status,
  passed: document.getElementById('count-passed').textContent,
  failed: document.getElementById('count-failed').textContent,
  total: document.getElementById('count-total').textContent,
  layers: [...document.querySelectorAll('.layer-row')].map(r => [r.dataset.layer, r.dataset.done, r.dataset.total]),
  failures: [...document.querySelectorAll('.failure')].map(f => f.dataset.unit),
  tail: (document.querySelector('.failure pre') || {}).textContent || ''
})"#;

async fn dom(page: &mut Ws, id: u64) -> Value {
    let v = evaluate(page, id, DOM).await;
    serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_in_headless_chromium_shows_layers_and_final_counts() {
    if !Path::new(CHROMIUM).exists() {
        skip_without(CHROMIUM, "apt-get install -y chromium");
        return;
    }
    let p = project(8, true);
    let (child, url) = start_streamed(&p);
    let profile = tempfile::tempdir().unwrap();
    let chromium = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let _chromium = KillGroup(chromium);
    let page_url = devtools_page(profile.path());
    let mut page = connect(&page_url).await;
    let mut id = 0;

    // During the run: the layer rows are there, the gate unit runs.
    let deadline = Instant::now() + WAIT_DEADLINE;
    let during = loop {
        id += 1;
        let v = dom(&mut page, id).await;
        if v["status"] == "running" && v["layers"].as_array().is_some_and(|l| l.len() == 3) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer never showed the run: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(during["total"], "11");
    open_gate(&p);
    let out = spawn_blocking_wait(child).await.unwrap();
    out.assert_code(1);
    let (_, summary) = check_run(&p, &out);

    // After the run (the server is gone; the page keeps what it received).
    let deadline = Instant::now() + WAIT_DEADLINE;
    let after = loop {
        id += 1;
        let v = dom(&mut page, id).await;
        if v["status"] == "failed" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer never showed the end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after["passed"], summary["counts"]["passed"].to_string());
    assert_eq!(after["failed"], "1");
    assert_eq!(after["total"], "11");
    assert_eq!(
        after["layers"],
        serde_json::json!([["gate", "1", "1"], ["fast", "8", "8"], ["slow", "2", "2"]])
    );
    assert_eq!(
        after["failures"],
        serde_json::json!(["fast/unit/unit/test_002.sh"])
    );
    assert!(
        after["tail"]
            .as_str()
            .unwrap()
            .contains("AssertionError: 2 != 3")
    );
}
