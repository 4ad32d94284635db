//! `/metrics`: the run as Prometheus text (exposition format 0.0.4).
//!
//! Everything is derived from the folded `RunState` at scrape time (runs, units by
//! state and by outcome, durations, running units, the last resource sample), plus
//! the runner process's own memory and CPU and the server's client counters.

use std::fmt::Write;

use jiff::Timestamp;

use super::redact::Redactor;
use crate::event::{EventKind, Outcome, RunOutcome, RunState, UnitStatus};

/// Upper bounds of the unit duration histogram, seconds.
const DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// The progress server's own counters, at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCounters {
    /// Connected WebSocket clients.
    pub clients: u64,
    /// Connections accepted so far.
    pub connections: u64,
    /// Requests refused (limits, token, origin).
    pub rejected: u64,
    /// Events published.
    pub events: u64,
    /// Client queue overflows.
    pub lagged: u64,
    /// Resync snapshots.
    pub resyncs: u64,
    /// Clients dropped for being too slow.
    pub dropped: u64,
}

/// The runner process's resource use.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

impl ProcessStats {
    /// This process, from `/proc/self` (None where unavailable).
    pub fn current() -> Option<Self> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields after the command: state is index 0, utime 11, stime 12.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        Some(Self {
            resident_bytes: resident_pages * page.max(1) as u64,
            cpu_seconds: (utime + stime) as f64 / ticks.max(1) as f64,
        })
    }
}

struct Out<'a> {
    text: String,
    redactor: &'a Redactor,
}

impl Out<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = self.redactor.redact_str(v);
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(&v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn seconds_between(from: &str, to: Timestamp) -> Option<f64> {
    let from: Timestamp = from.parse().ok()?;
    Some(to.duration_since(from).as_secs_f64().max(0.0))
}

const OUTCOMES: &[(Outcome, &str)] = &[
    (Outcome::Passed, "passed"),
    (Outcome::Failed, "failed"),
    (Outcome::Timeout, "timeout"),
    (Outcome::Crashed, "crashed"),
    (Outcome::MemoryLimit, "memory_limit"),
    (Outcome::Cancelled, "cancelled"),
    (Outcome::Error, "error"),
];

/// Render `state` (and the server's and process's figures) as Prometheus text.
pub fn render(
    state: &RunState,
    server: Option<ServerCounters>,
    process: Option<ProcessStats>,
    now: Timestamp,
    redactor: &Redactor,
) -> String {
    let mut o = Out {
        text: String::new(),
        redactor,
    };
    let started = !state.run_id.is_empty();

    o.header("runner_info", "gauge", "The run being served (always 1).");
    o.sample(
        "runner_info",
        &[
            ("run_id", &state.run_id),
            ("mode", &state.mode),
            ("environment", &state.environment),
        ],
        1.0,
    );
    o.metric(
        "runner_runs_total",
        "counter",
        "Runs started by this runner process.",
        if started { 1.0 } else { 0.0 },
    );
    o.header(
        "runner_runs_finished_total",
        "counter",
        "Runs finished by this runner process, by outcome.",
    );
    for (outcome, name) in [
        (RunOutcome::Passed, "passed"),
        (RunOutcome::Failed, "failed"),
        (RunOutcome::Interrupted, "interrupted"),
        (RunOutcome::Error, "error"),
    ] {
        let v = if state.outcome == Some(outcome) {
            1.0
        } else {
            0.0
        };
        o.sample("runner_runs_finished_total", &[("outcome", name)], v);
    }
    let run_secs = match state.duration_ms {
        Some(ms) => ms as f64 / 1000.0,
        None if started => seconds_between(&state.started_at, now).unwrap_or(0.0),
        None => 0.0,
    };
    o.metric(
        "runner_run_duration_seconds",
        "gauge",
        "Wall-clock time of the run so far (final once finished).",
        run_secs,
    );
    if let Some(code) = state.exit_code {
        o.metric(
            "runner_run_exit_code",
            "gauge",
            "Exit code of the finished run.",
            code as f64,
        );
    }

    let c = state.counts;
    let pending = state
        .units
        .values()
        .filter(|u| u.status == UnitStatus::Pending)
        .count();
    o.header("runner_units", "gauge", "Units of the run by state.");
    for (name, v) in [
        ("total", c.total),
        ("pending", pending),
        ("running", c.running),
        ("passed", c.passed),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("flaky", c.flaky),
    ] {
        o.sample("runner_units", &[("state", name)], v as f64);
    }
    o.metric(
        "runner_running_units",
        "gauge",
        "Units running now.",
        c.running as f64,
    );
    o.header(
        "runner_units_by_outcome",
        "gauge",
        "Finished units by final outcome.",
    );
    for (outcome, name) in OUTCOMES {
        let n = state
            .units
            .values()
            .filter(|u| u.outcome == Some(*outcome))
            .count();
        o.sample("runner_units_by_outcome", &[("outcome", name)], n as f64);
    }

    o.header(
        "runner_layer_units",
        "gauge",
        "Units of each layer by state.",
    );
    for (layer, l) in &state.layers {
        let lc = l.counts;
        for (name, v) in [
            ("total", lc.total),
            ("running", lc.running),
            ("passed", lc.passed),
            ("failed", lc.failed),
            ("skipped", lc.skipped),
        ] {
            o.sample(
                "runner_layer_units",
                &[("layer", layer), ("state", name)],
                v as f64,
            );
        }
    }
    o.header(
        "runner_layer_duration_seconds",
        "gauge",
        "Wall-clock time of each finished layer.",
    );
    for (layer, l) in &state.layers {
        if let Some(ms) = l.duration_ms {
            o.sample(
                "runner_layer_duration_seconds",
                &[("layer", layer)],
                ms as f64 / 1000.0,
            );
        }
    }

    let durations: Vec<f64> = state
        .units
        .values()
        .filter(|u| u.status == UnitStatus::Finished)
        .filter_map(|u| u.duration_ms)
        .map(|ms| ms as f64 / 1000.0)
        .collect();
    o.header(
        "runner_unit_duration_seconds",
        "histogram",
        "Duration of the last attempt of each finished unit.",
    );
    for le in DURATION_BUCKETS {
        let n = durations.iter().filter(|d| **d <= *le).count();
        o.sample(
            "runner_unit_duration_seconds_bucket",
            &[("le", &number(*le))],
            n as f64,
        );
    }
    o.sample(
        "runner_unit_duration_seconds_bucket",
        &[("le", "+Inf")],
        durations.len() as f64,
    );
    o.sample(
        "runner_unit_duration_seconds_sum",
        &[],
        durations.iter().sum(),
    );
    o.sample(
        "runner_unit_duration_seconds_count",
        &[],
        durations.len() as f64,
    );

    if let Some(EventKind::ResourceSample {
        admitted_memory_mb,
        used_memory_mb,
        available_memory_mb,
        cpu_percent,
        ..
    }) = &state.resources
    {
        const MIB: f64 = 1024.0 * 1024.0;
        o.metric(
            "runner_units_memory_used_bytes",
            "gauge",
            "Resident memory of all running units' process trees (last sample).",
            *used_memory_mb as f64 * MIB,
        );
        o.metric(
            "runner_units_memory_admitted_bytes",
            "gauge",
            "Memory admitted for running units: the sum of their estimates (last sample).",
            *admitted_memory_mb as f64 * MIB,
        );
        o.metric(
            "runner_system_memory_available_bytes",
            "gauge",
            "System available memory (last sample).",
            *available_memory_mb as f64 * MIB,
        );
        o.metric(
            "runner_system_cpu_percent",
            "gauge",
            "System CPU use in percent (last sample).",
            f64::from(*cpu_percent),
        );
    }
    o.metric(
        "runner_admission_throttled",
        "gauge",
        "1 while admission is paused by memory pressure.",
        if state.throttled { 1.0 } else { 0.0 },
    );

    if let Some(p) = process {
        o.metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the runner process.",
            p.resident_bytes as f64,
        );
        o.metric(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the runner process.",
            p.cpu_seconds,
        );
    }

    if let Some(s) = server {
        o.metric(
            "runner_ws_clients",
            "gauge",
            "Connected WebSocket clients.",
            s.clients as f64,
        );
        for (name, help, v) in [
            (
                "runner_ws_connections_total",
                "WebSocket connections accepted.",
                s.connections,
            ),
            (
                "runner_ws_rejected_total",
                "Requests refused (client limit, token, origin, host).",
                s.rejected,
            ),
            (
                "runner_ws_events_total",
                "Events published to clients.",
                s.events,
            ),
            (
                "runner_ws_lagged_total",
                "Times a client's queue overflowed.",
                s.lagged,
            ),
            (
                "runner_ws_resyncs_total",
                "Resync snapshots sent to clients that fell behind.",
                s.resyncs,
            ),
            (
                "runner_ws_dropped_total",
                "Clients closed for falling behind too often.",
                s.dropped,
            ),
        ] {
            o.metric(name, "counter", help, v as f64);
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, PlannedUnit};

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            v: 1,
            seq,
            ts: "2026-01-01T00:00:00Z".into(),
            run_id: "r1".into(),
            thread_id: None,
            agent: "a".into(),
            kind,
        }
    }

    #[test]
    fn counts_outcomes_and_histogram() {
        let mut s = RunState::default();
        let unit = |n: &str| PlannedUnit {
            id: format!("fast/c/{n}"),
            layer: "fast".into(),
            category: "c".into(),
            name: n.into(),
            expected_ms: None,
        };
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "te\"st".into(),
                config: "c".into(),
                layers: vec!["fast".into()],
                slots: 1,
                units: vec![unit("a"), unit("b"), unit("c")],
                pid: 1,
            },
        ));
        for (seq, (u, outcome, ms)) in [("a", Outcome::Passed, 50), ("b", Outcome::Timeout, 7000)]
            .into_iter()
            .enumerate()
        {
            s.apply(&ev(
                seq as u64 + 2,
                EventKind::TestFinished {
                    unit: format!("fast/c/{u}"),
                    attempt: 1,
                    outcome,
                    will_retry: false,
                    duration_ms: ms,
                    exit_code: None,
                    signal: None,
                    peak_memory_mb: None,
                    message: None,
                    output_tail: None,
                    log: None,
                },
            ));
        }
        let text = render(
            &s,
            Some(ServerCounters {
                clients: 2,
                ..Default::default()
            }),
            ProcessStats::current(),
            "2026-01-01T00:00:10Z".parse().unwrap(),
            &Redactor::default(),
        );
        for line in [
            "runner_units{state=\"total\"} 3",
            "runner_units{state=\"pending\"} 1",
            "runner_units_by_outcome{outcome=\"timeout\"} 1",
            "runner_units_by_outcome{outcome=\"passed\"} 1",
            "runner_unit_duration_seconds_bucket{le=\"0.1\"} 1",
            "runner_unit_duration_seconds_bucket{le=\"10\"} 2",
            "runner_unit_duration_seconds_bucket{le=\"+Inf\"} 2",
            "runner_unit_duration_seconds_count 2",
            "runner_run_duration_seconds 10",
            "runner_ws_clients 2",
            "runner_layer_units{layer=\"fast\",state=\"failed\"} 1",
            "environment=\"te\\\"st\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes "));
    }
}
