//! Benchmark client for `bench/ws_fanout.sh`: N WebSocket clients follow one run.
//!
//!     cargo run --release --example ws_fanout -- WS_URL CLIENTS [GATE_FILE]
//!
//! Connects CLIENTS clients to WS_URL (`ws://HOST:PORT/ws`), waits until every one
//! has its snapshot, creates GATE_FILE (the bench's run waits for it), then reads
//! until `run_finished`. For each live event it records the latency from the
//! event's `ts` (emit time, millisecond precision, truncated) to its arrival, and
//! checks that `seq` has no gap. Prints one JSON object: clients, events per
//! client, latency p50/p99/max in ms, gaps, resyncs. A URL with `batch=1` gets the
//! live events as JSON arrays (one message per server tick); each event counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

struct Tally {
    latencies_us: Vec<i64>,
    events: u64,
    gaps: u64,
    resyncs: u64,
}

impl Tally {
    /// Count one live event that arrived at `arrived`; true for `run_finished`.
    fn event(&mut self, head: &Head, seq: &mut u64, arrived: i64) -> bool {
        if head.seq != *seq + 1 {
            self.gaps += 1;
        }
        *seq = head.seq;
        self.events += 1;
        if let Some(emitted) = head.ts.as_deref().and_then(ts_us) {
            self.latencies_us.push(arrived - emitted);
        }
        head.ty == "run_finished"
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What the client reads of each message (the rest is skipped, not built).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(default)]
    seq: u64,
    #[serde(default, borrow)]
    ts: Option<std::borrow::Cow<'a, str>>,
}

fn ts_us(ts: &str) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(t.as_microsecond())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: ws_fanout WS_URL CLIENTS [GATE_FILE]")
        .clone();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let gate = args.get(3).cloned();

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                .await
                .expect("connect");
            let mut t = Tally {
                latencies_us: Vec::with_capacity(8192),
                events: 0,
                gaps: 0,
                resyncs: 0,
            };
            let mut seq = 0u64;
            let mut first = true;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let arrived = now_us();
                if text.as_str().starts_with('[') {
                    let heads: Vec<Head> = serde_json::from_str(text.as_str()).expect("JSON");
                    let mut done = false;
                    for head in heads {
                        done |= t.event(&head, &mut seq, arrived);
                    }
                    if done {
                        break;
                    }
                    continue;
                }
                let head: Head = serde_json::from_str(text.as_str()).expect("JSON");
                match head.ty.as_ref() {
                    "snapshot" => {
                        let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                        seq = v["state"]["seq"].as_u64().unwrap_or(0);
                        if first {
                            first = false;
                            let _ = ready.send(()).await;
                        } else {
                            t.resyncs += 1;
                        }
                        continue;
                    }
                    "resume" => continue,
                    _ => {}
                }
                if t.event(&head, &mut seq, arrived) {
                    break;
                }
            }
            t
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.expect("every client gets a snapshot");
    }
    if let Some(gate) = gate {
        std::fs::write(gate, "").expect("open the gate");
    }
    let mut all = Vec::new();
    let (mut events, mut gaps, mut resyncs) = (Vec::new(), 0, 0);
    for t in tasks {
        let t = tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .expect("the run ends")
            .expect("client task");
        events.push(t.events);
        gaps += t.gaps;
        resyncs += t.resyncs;
        all.extend(t.latencies_us);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i] as f64 / 1000.0
    };
    let out = serde_json::json!({
        "clients": n,
        "events_min": events.iter().min(),
        "events_max": events.iter().max(),
        "samples": all.len(),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": pct(1.0),
        "gaps": gaps,
        "resyncs": resyncs,
    });
    println!("{out}");
}
