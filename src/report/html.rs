//! `--html PATH`: one self-contained HTML page of a finished run (inline CSS and a few
//! lines of inline script; no network access needed to view it).
//!
//! What it shows: the totals, one row per layer, the failures with the lines that matter
//! and the end of their output ([`super::excerpt`]) and the path of the full output, the
//! slowest units, and a timeline of every attempt per slot (a Gantt chart: where the wall
//! time went).
//!
//! Built from the run's final fold ([`RunState`]) and, for the timeline, from its events
//! (`events.jsonl`: each attempt's `test_started` time and `test_finished` duration).
//! Slots are not events: attempts are laid out on lanes greedily (an attempt takes the
//! lowest lane free when it starts), which gives as many lanes as units ran at once.
//!
//! Bounded for large runs: at most [`MAX_FAILURES_WITH_OUTPUT`] failures carry their
//! output (the others are listed with their message and log), [`SLOWEST`] slowest units.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use crate::event::RunState;

/// Failures shown with their output; later ones are listed with message and log path.
pub const MAX_FAILURES_WITH_OUTPUT: usize = 100;

/// Units in the "slowest" table.
pub const SLOWEST: usize = 15;

/// One attempt of a unit on the timeline, in ms from the run's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Unit id.
    pub unit: String,
    /// Attempt number.
    pub attempt: u32,
    /// Start, ms after the run started.
    pub start_ms: u64,
    /// End, ms after the run started.
    pub end_ms: u64,
    /// Outcome name (`passed`, `failed`, ...), `running` when it never finished.
    pub outcome: String,
}

/// Writes the report of `state` to `path` (atomically), with the timeline read from the
/// run's `events` file.
pub fn write(path: &Path, state: &RunState, events: &Path) -> std::io::Result<()> {
    let attempts = attempts_from_events(events, &state.started_at);
    super::files::write_atomic(path, render(state, &attempts).as_bytes())
}

fn ms_of(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Every attempt of the run from its events file (missing or unreadable: none).
pub fn attempts_from_events(events: &Path, run_started_at: &str) -> Vec<Attempt> {
    let Ok(text) = std::fs::read_to_string(events) else {
        return Vec::new();
    };
    let base = ms_of(run_started_at);
    let mut started: HashMap<(String, u32), i64> = HashMap::new();
    let mut out = Vec::new();
    let mut first_ts = None;
    for line in text.lines() {
        // Cheap pre-filter: most lines of a long run are resource samples.
        if !line.contains("\"test_started\"") && !line.contains("\"test_finished\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(ty), Some(unit), Some(ts)) = (
            v["type"].as_str(),
            v["unit"].as_str(),
            v["ts"].as_str().and_then(ms_of),
        ) else {
            continue;
        };
        first_ts.get_or_insert(ts);
        let attempt = v["attempt"].as_u64().unwrap_or(1) as u32;
        match ty {
            "test_started" => {
                started.insert((unit.to_string(), attempt), ts);
            }
            "test_finished" => {
                // From its `test_started` to its `test_finished`: the time it held its
                // slot (a few ms more than the process ran).
                let duration = v["duration_ms"].as_u64().unwrap_or(0) as i64;
                let start = started
                    .remove(&(unit.to_string(), attempt))
                    .unwrap_or(ts - duration);
                out.push((
                    unit.to_string(),
                    attempt,
                    start,
                    ts.max(start),
                    v["outcome"].as_str().unwrap_or("error").to_string(),
                ));
            }
            _ => {}
        }
    }
    for ((unit, attempt), start) in started {
        out.push((unit, attempt, start, start, "running".into()));
    }
    let base = base.or(first_ts).unwrap_or(0);
    let rel = |t: i64| (t - base).max(0) as u64;
    let mut attempts: Vec<Attempt> = out
        .into_iter()
        .map(|(unit, attempt, s, e, outcome)| Attempt {
            unit,
            attempt,
            start_ms: rel(s),
            end_ms: rel(e).max(rel(s)),
            outcome,
        })
        .collect();
    attempts.sort_by(|a, b| (a.start_ms, &a.unit).cmp(&(b.start_ms, &b.unit)));
    attempts
}

/// Overlap tolerated between an attempt and the next on its lane: event timestamps are
/// taken when events are emitted, and a slot may be handed on a moment before the
/// finished attempt's event is stamped.
pub const LANE_SLACK_MS: u64 = 20;

/// Lays `attempts` (sorted by start) out on lanes: each takes the lowest lane free at its
/// start (within [`LANE_SLACK_MS`]). Returns the lane of each attempt and the number of
/// lanes.
pub fn lanes(attempts: &[Attempt]) -> (Vec<usize>, usize) {
    let mut free: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    let mut busy: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut count = 0;
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        while let Some(Reverse((end, lane))) = busy.peek().copied() {
            if end > a.start_ms + LANE_SLACK_MS {
                break;
            }
            busy.pop();
            free.push(Reverse(lane));
        }
        let lane = match free.pop() {
            Some(Reverse(lane)) => lane,
            None => {
                count += 1;
                count - 1
            }
        };
        busy.push(Reverse((a.end_ms.max(a.start_ms + 1), lane)));
        out.push(lane);
    }
    (out, count)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#5b6475}.totals{display:flex;gap:12px;margin:16px 0}
.total{padding:8px 14px;border-radius:6px;background:#f2f4f8;min-width:70px}
.total b{display:block;font-size:20px}.passed b{color:#1a7f37}.failed b{color:#cf222e}
.skipped b{color:#8c6d00}.flaky b{color:#9a6700}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #e4e7ed}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.o-passed{color:#1a7f37}.o-failed,.o-timeout,.o-crashed,.o-memory_limit,.o-error{color:#cf222e}
.failure{margin:8px 0;border-left:3px solid #cf222e;padding-left:10px}
.failure pre{background:#f6f8fa;padding:8px;overflow-x:auto;max-height:360px;font-size:12px}
.log{color:#5b6475;font-size:12px}
#timeline{position:relative;border:1px solid #e4e7ed;margin-top:4px}
.lane{position:relative;height:12px;border-bottom:1px solid #f2f4f8}
.bar{position:absolute;top:1px;height:10px;min-width:1px;background:#2da44e}
.bar.failed,.bar.timeout,.bar.crashed,.bar.memory_limit,.bar.error{background:#cf222e}
.bar.cancelled,.bar.running{background:#8c959f}.bar.retry{background:#d4a72c}
.axis{display:flex;justify-content:space-between;color:#5b6475;font-size:12px}
";

/// The page.
pub fn render(state: &RunState, attempts: &[Attempt]) -> String {
    let mut h = String::with_capacity(4096 + attempts.len() * 140);
    let outcome = state
        .outcome
        .as_ref()
        .map(name)
        .unwrap_or_else(|| "unfinished".into());
    let total_ms = state
        .duration_ms
        .unwrap_or(0)
        .max(attempts.iter().map(|a| a.end_ms).max().unwrap_or(0))
        .max(1);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>runner: {} ({})</title><style>{STYLE}</style></head>\n\
         <body data-outcome=\"{}\">\n<h1>Run {}: {}</h1>\n\
         <div class=\"meta\">mode {} · environment {} · started {} · {} · {} slots</div>\n",
        escape(&state.run_id),
        escape(&outcome),
        escape(&outcome),
        escape(&state.run_id),
        escape(&outcome),
        escape(&state.mode),
        escape(&state.environment),
        escape(&state.started_at),
        secs(state.duration_ms.unwrap_or(0)),
        state.slots,
    );
    let c = &state.counts;
    let _ = write!(h, "<div class=\"totals\">");
    for (id, label, n) in [
        ("total", "units", c.total),
        ("passed", "passed", c.passed),
        ("failed", "failed", c.failed),
        ("skipped", "skipped", c.skipped),
        ("flaky", "flaky", c.flaky),
    ] {
        let _ = write!(
            h,
            "<div class=\"total {id}\"><b id=\"count-{id}\">{n}</b>{label}</div>"
        );
    }
    let _ = writeln!(h, "</div>");
    // Tests as JUnit counts them: imported cases, or units without any.
    if state.tests.total != c.total {
        let t = &state.tests;
        let _ = writeln!(
            h,
            "<div class=\"meta\">{} tests (with the cases imported from JUnit): {} passed, {} failed, {} skipped</div>",
            t.total, t.passed, t.failed, t.skipped
        );
    }

    // Layers.
    let _ = writeln!(
        h,
        "<h2>Layers</h2>\n<table id=\"layers\"><tr><th>layer</th><th>outcome</th>\
         <th>passed</th><th>failed</th><th>skipped</th><th>flaky</th><th>duration</th><th></th></tr>"
    );
    for (layer, l) in &state.layers {
        let o = l.outcome.as_ref().map(name).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            h,
            "<tr class=\"layer-row\" data-layer=\"{}\"><td>{}</td><td class=\"o-{}\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td></tr>",
            escape(layer),
            escape(layer),
            escape(&o),
            escape(&o),
            l.counts.passed,
            l.counts.failed,
            l.counts.skipped,
            l.counts.flaky,
            l.duration_ms.map(secs).unwrap_or_else(|| "-".into()),
            escape(l.reason.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(h, "</table>");

    failures(&mut h, state);
    slowest(&mut h, state);
    timeline(&mut h, attempts, total_ms);
    let _ = writeln!(
        h,
        "<script>\n// Marks the page rendered: how many timeline bars have a width on screen.\n\
         const bars=[...document.querySelectorAll('#timeline .bar')];\n\
         document.body.dataset.barsRendered=bars.filter(b=>b.getBoundingClientRect().width>0).length;\n\
         </script>\n</body></html>"
    );
    h
}

fn failures(h: &mut String, state: &RunState) {
    let failed: Vec<(&String, &crate::event::UnitState)> = state
        .units
        .iter()
        .filter(|(_, u)| u.outcome.is_some_and(|o| o.is_failure()))
        .collect();
    let _ = writeln!(h, "<h2>Failures ({})</h2>", failed.len());
    if failed.is_empty() {
        let _ = writeln!(h, "<p>None.</p>");
    }
    for (i, (id, u)) in failed.iter().enumerate() {
        let outcome = u.outcome.as_ref().map(name).unwrap_or_default();
        let _ = write!(
            h,
            "<div class=\"failure\" data-unit=\"{}\"><b>{}</b> <span class=\"o-{}\">{}</span> {}",
            escape(id),
            escape(id),
            escape(&outcome),
            escape(&outcome),
            escape(u.message.as_deref().unwrap_or(""))
        );
        if i < MAX_FAILURES_WITH_OUTPUT {
            let tail = u.details().output_tail.as_deref().unwrap_or("");
            let log = u.log.as_deref().map(Path::new);
            let excerpt = super::excerpt::excerpt_of_failure(tail, log, 12).join("\n");
            if !excerpt.is_empty() {
                let _ = write!(h, "<pre class=\"excerpt\">{}</pre>", escape(&excerpt));
            }
            if !tail.trim().is_empty() && tail.trim() != excerpt.trim() {
                let _ = write!(
                    h,
                    "<details><summary>end of the output</summary><pre class=\"tail\">{}</pre></details>",
                    escape(tail)
                );
            }
        }
        if let Some(log) = &u.log {
            let _ = write!(h, "<div class=\"log\">full output: {}</div>", escape(log));
        }
        let _ = writeln!(h, "</div>");
    }
}

fn slowest(h: &mut String, state: &RunState) {
    let mut units: Vec<(&String, u64, String)> = state
        .units
        .iter()
        .filter_map(|(id, u)| {
            let outcome = u.outcome.as_ref().map(name)?;
            Some((id, u.duration_ms?, outcome))
        })
        .collect();
    units.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    units.truncate(SLOWEST);
    let _ = writeln!(
        h,
        "<h2>Slowest units</h2>\n<table id=\"slowest\"><tr><th>duration</th><th>outcome</th><th>unit</th></tr>"
    );
    for (id, ms, outcome) in units {
        let _ = writeln!(
            h,
            "<tr class=\"slow-row\"><td class=\"n\">{}</td><td class=\"o-{}\">{}</td><td>{}</td></tr>",
            secs(ms),
            escape(&outcome),
            escape(&outcome),
            escape(id)
        );
    }
    let _ = writeln!(h, "</table>");
}

fn timeline(h: &mut String, attempts: &[Attempt], total_ms: u64) {
    let (lane_of, lane_count) = lanes(attempts);
    let _ = writeln!(
        h,
        "<h2>Timeline</h2>\n<div class=\"meta\">{} attempts on {} slots over {}; \
         green passed, red failed, yellow failed and retried, grey cancelled</div>",
        attempts.len(),
        lane_count,
        secs(total_ms)
    );
    let _ = write!(
        h,
        "<div class=\"axis\"><span>0s</span><span>{}</span><span>{}</span><span>{}</span><span>{}</span></div>\
         <div id=\"timeline\" data-lanes=\"{lane_count}\" data-attempts=\"{}\">",
        secs(total_ms / 4),
        secs(total_ms / 2),
        secs(total_ms * 3 / 4),
        secs(total_ms),
        attempts.len()
    );
    // Attempts retried later are drawn as retries.
    let mut last_attempt: HashMap<&str, u32> = HashMap::new();
    for a in attempts {
        let e = last_attempt.entry(&a.unit).or_insert(0);
        *e = (*e).max(a.attempt);
    }
    let mut by_lane: Vec<Vec<usize>> = vec![Vec::new(); lane_count];
    for (i, lane) in lane_of.iter().enumerate() {
        by_lane[*lane].push(i);
    }
    let pct = |ms: u64| ms as f64 * 100.0 / total_ms as f64;
    for lane in by_lane {
        let _ = write!(h, "<div class=\"lane\">");
        for i in lane {
            let a = &attempts[i];
            let class = if a.attempt < last_attempt[a.unit.as_str()] && a.outcome != "passed" {
                "retry"
            } else {
                a.outcome.as_str()
            };
            let _ = write!(
                h,
                "<div class=\"bar {}\" style=\"left:{:.3}%;width:{:.3}%\" title=\"{} #{} {} {}\"></div>",
                escape(class),
                pct(a.start_ms),
                pct(a.end_ms - a.start_ms),
                escape(&a.unit),
                a.attempt,
                escape(&a.outcome),
                secs(a.end_ms - a.start_ms)
            );
        }
        let _ = write!(h, "</div>");
    }
    let _ = writeln!(h, "</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(unit: &str, start: u64, end: u64) -> Attempt {
        Attempt {
            unit: unit.into(),
            attempt: 1,
            start_ms: start,
            end_ms: end,
            outcome: "passed".into(),
        }
    }

    #[test]
    fn lanes_reuse_the_lowest_free_lane() {
        let attempts = [
            a("a", 0, 1000),
            a("b", 0, 500),
            a("c", 500, 800),
            a("d", 900, 1200),
            a("e", 1000, 1100),
            a("f", 1050, 3000),
        ];
        let (lane, count) = lanes(&attempts);
        assert_eq!(lane, [0, 1, 1, 1, 0, 2]);
        assert_eq!(count, 3);
        // Within the slack, a lane counts as free.
        assert_eq!(lanes(&[a("a", 0, 100), a("b", 90, 200)]).1, 1);
        assert_eq!(lanes(&[]).1, 0);
    }

    #[test]
    fn escaping_keeps_markup_out() {
        assert_eq!(
            escape("<script>\"x\" & 'y'\u{1b}[31m"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;[31m"
        );
    }

    #[test]
    fn attempts_from_events_pairs_starts_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            r#"{"type":"run_started","ts":"2026-01-01T00:00:00Z"}
{"type":"test_started","unit":"l/c/a","attempt":1,"ts":"2026-01-01T00:00:01Z"}
{"type":"resource_sample","ts":"2026-01-01T00:00:01.5Z"}
{"type":"test_finished","unit":"l/c/a","attempt":1,"outcome":"failed","duration_ms":1000,"ts":"2026-01-01T00:00:02Z"}
{"type":"test_started","unit":"l/c/a","attempt":2,"ts":"2026-01-01T00:00:02.5Z"}
not json
"#,
        )
        .unwrap();
        let got = attempts_from_events(&path, "2026-01-01T00:00:00Z");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].start_ms, got[0].end_ms), (1000, 2000));
        assert_eq!(got[0].outcome, "failed");
        assert_eq!(
            (got[1].start_ms, got[1].outcome.as_str()),
            (2500, "running")
        );
        assert!(attempts_from_events(&dir.path().join("none"), "").is_empty());
    }
}
