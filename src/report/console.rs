//! The console: what a person sees while a run goes on.
//!
//! The sink reads the bus's own fold (it keeps no copy of a run's units) and renders
//! each event: live bars per layer on a TTY (`rich`), one plain line
//! per finished unit in CI or when not a TTY (`simple`), every event as a JSON
//! line (`json`), or nothing (`silent`). Whatever the mode, the last line of the
//! run is `N passed, N failed[, N skipped]`, alone on its line (on stderr in
//! `json` mode so stdout stays pure JSON lines). When stdout's reader goes away
//! (`runner … | head -1`) the console stops writing and the run goes on
//! ([`super::out::Sink`]).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::out::Sink;
use crate::bus::{EventBus, Subscription};
use crate::cli::ProgressMode;
use crate::event::{Event, EventKind, LayerOutcome, Outcome, RunState};

/// Colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    on: bool,
}

impl Palette {
    /// Colours when `on`.
    pub fn new(on: bool) -> Self {
        Self { on }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// Pick the console mode: the flag, else rich on a TTY outside CI, else simple.
pub fn resolve_mode(flag: Option<ProgressMode>, stdout_tty: bool, ci: bool) -> ProgressMode {
    match flag {
        Some(ProgressMode::Rich) if !stdout_tty => ProgressMode::Simple,
        Some(m) => m,
        None if stdout_tty && !ci => ProgressMode::Rich,
        None => ProgressMode::Simple,
    }
}

fn secs(ms: u64) -> String {
    format!("{:>8.3}s", ms as f64 / 1000.0)
}

/// An expected remaining time (history's ETA): `12.3s`, `4m05s`, `1h02m`.
pub fn eta_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The line printed for a finished attempt (None for nothing to print).
pub fn unit_line(state: &RunState, event: &Event, p: Palette) -> Option<String> {
    let EventKind::TestFinished {
        unit,
        attempt,
        outcome,
        will_retry,
        duration_ms,
        message,
        ..
    } = &event.kind
    else {
        return None;
    };
    let u = state.units.get(unit);
    let attempts_total = u.map(|u| u.attempts).unwrap_or(0).max(*attempt);
    let (label, colour): (&str, fn(&Palette, &str) -> String) = match (outcome, will_retry) {
        (_, true) => ("RETRY", Palette::yellow),
        (Outcome::Passed, _) if *attempt > 1 => ("FLAKY", Palette::yellow),
        (Outcome::Passed, _) => ("PASS", Palette::green),
        (Outcome::Failed, _) => ("FAIL", Palette::red),
        (Outcome::Timeout, _) => ("TIMEOUT", Palette::red),
        (Outcome::Crashed, _) => ("CRASH", Palette::red),
        (Outcome::MemoryLimit, _) => ("MEMORY", Palette::red),
        (Outcome::Cancelled, _) => ("CANCEL", Palette::yellow),
        (Outcome::Error, _) => ("ERROR", Palette::red),
    };
    let mut line = format!("{:>9} [{}] {unit}", colour(&p, label), secs(*duration_ms));
    if *will_retry {
        line.push_str(&format!(" (attempt {attempt} failed)"));
    } else if *attempt > 1 {
        line.push_str(&format!(" (attempt {attempt}/{attempts_total})"));
    }
    if let Some(m) = message
        && !outcome.is_pass()
    {
        line.push_str(&format!(": {m}"));
    }
    Some(line)
}

/// The excerpt of a final failure's output ([`excerpt`](super::excerpt)), indented, at
/// most `max_lines` lines, followed by the path of the full output.
pub fn failure_tail(event: &Event, max_lines: usize, p: Palette) -> Option<String> {
    let EventKind::TestFinished {
        outcome,
        will_retry: false,
        output_tail,
        log,
        ..
    } = &event.kind
    else {
        return None;
    };
    if !outcome.is_failure() {
        return None;
    }
    let tail = output_tail.as_deref().unwrap_or("");
    let log_path = log.as_deref().map(std::path::Path::new);
    let mut lines: Vec<String> = super::excerpt::excerpt_of_failure(tail, log_path, max_lines)
        .iter()
        .map(|l| format!("          {} {l}", p.dim("│")))
        .collect();
    if let Some(log) = log {
        lines.push(format!("          {} full output: {log}", p.dim("└")));
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Lines for layer, category and run events (simple and rich modes).
pub fn structure_lines(state: &RunState, event: &Event, p: Palette) -> Vec<String> {
    match &event.kind {
        EventKind::RunStarted {
            mode,
            environment,
            units,
            slots,
            ..
        } => vec![p.bold(&format!(
            "runner: run {} · mode {mode} · env {environment} · {} units · {slots} slots{}",
            event.run_id,
            units.len(),
            state
                .eta_ms
                .map(|ms| format!(" · ~{} expected", eta_text(ms)))
                .unwrap_or_default()
        ))],
        EventKind::LayerStarted {
            layer,
            units,
            background,
        } => vec![format!(
            "{} {}{} ({units} units{})",
            p.bold("──"),
            p.bold(&format!("layer {layer}")),
            if *background { " [background]" } else { "" },
            state
                .layers
                .get(layer)
                .and_then(|l| l.eta_ms)
                .map(|ms| format!(", ~{} expected", eta_text(ms)))
                .unwrap_or_default()
        )],
        EventKind::LayerFinished {
            layer,
            outcome,
            reason,
            duration_ms,
        } => {
            let c = state
                .layers
                .get(layer)
                .map(|l| l.counts)
                .unwrap_or_default();
            let (word, paint): (&str, fn(&Palette, &str) -> String) = match outcome {
                LayerOutcome::Passed => ("passed", Palette::green),
                LayerOutcome::Failed => ("failed", Palette::red),
                LayerOutcome::Skipped => ("skipped", Palette::yellow),
                LayerOutcome::Cancelled => ("cancelled", Palette::yellow),
                LayerOutcome::Partial => ("partial", Palette::yellow),
            };
            let mut line = format!("{} layer {layer} {}", p.bold("──"), paint(&p, word));
            if *outcome != LayerOutcome::Skipped {
                line.push_str(&format!(
                    " in {:.1}s: {} passed, {} failed",
                    *duration_ms as f64 / 1000.0,
                    c.passed,
                    c.failed
                ));
                if c.skipped > 0 {
                    line.push_str(&format!(", {} skipped", c.skipped));
                }
            }
            if let Some(r) = reason {
                line.push_str(&format!(" ({r})"));
            }
            vec![line]
        }
        EventKind::CategoryFinished {
            layer,
            category,
            reason: Some(reason),
            ..
        } => {
            let skipped = state
                .layer_units(layer)
                .filter(|(_, u)| {
                    &u.category == category && u.status == crate::event::UnitStatus::Skipped
                })
                .count();
            if skipped == 0 {
                vec![]
            } else {
                vec![format!(
                    "{:>9} {skipped} unit(s) of {layer}/{category}: {reason}",
                    p.yellow("SKIP")
                )]
            }
        }
        EventKind::TestCase {
            unit,
            name,
            classname,
            outcome,
            message,
            ..
        } if outcome.is_failure() => vec![format!(
            "{:>9} {unit} › {}{name}{}",
            p.red(if *outcome == crate::event::CaseOutcome::Error {
                "ERROR"
            } else {
                "FAIL"
            }),
            classname
                .as_ref()
                .map(|c| format!("{c}::"))
                .unwrap_or_default(),
            message
                .as_ref()
                .map(|m| format!(": {}", m.lines().next().unwrap_or("")))
                .unwrap_or_default()
        )],
        EventKind::TestSlow { unit, elapsed_ms } => vec![format!(
            "{:>9} [{}] {unit} is running long",
            p.yellow("SLOW"),
            secs(*elapsed_ms)
        )],
        EventKind::TestLeaked { unit, processes } => vec![format!(
            "{:>9} {unit} left {} process(es) behind; killed: {}",
            p.yellow("LEAK"),
            processes.len(),
            processes.join(", ")
        )],
        EventKind::Warning { message, unit } => vec![format!(
            "{:>9} {}{message}",
            p.yellow("WARN"),
            unit.as_ref().map(|u| format!("{u}: ")).unwrap_or_default()
        )],
        EventKind::ServiceFailed { service, reason } => {
            vec![format!(
                "{:>9} service {service}: {reason}",
                p.red("SERVICE")
            )]
        }
        _ => vec![],
    }
}

/// The closing block: failures, flaky units, then the counts line (last).
pub fn final_lines(state: &RunState, p: Palette) -> Vec<String> {
    let mut out = Vec::new();
    let failed: Vec<_> = state
        .units
        .iter()
        .filter(|(_, u)| u.outcome.is_some_and(Outcome::is_failure))
        .collect();
    let flaky: Vec<_> = state.units.iter().filter(|(_, u)| u.flaky).collect();
    let duration = state
        .duration_ms
        .map(|d| format!(" in {:.2}s", d as f64 / 1000.0));
    out.push(p.bold(&format!(
        "Summary{}: {} units{}",
        duration.unwrap_or_default(),
        state.counts.total,
        if state.counts.flaky > 0 {
            format!(", {} flaky", state.counts.flaky)
        } else {
            String::new()
        }
    )));
    for (id, u) in failed.iter().take(50) {
        out.push(format!(
            "  {} {id}{}",
            p.red("failed"),
            u.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    if failed.len() > 50 {
        out.push(format!("  ... and {} more failures", failed.len() - 50));
    }
    for (id, u) in flaky {
        out.push(format!(
            "  {} {id} (passed on attempt {})",
            p.yellow("flaky"),
            u.attempts
        ));
    }
    out.extend(state.tests_line());
    out.push(state.summary_line());
    out
}

/// Render the event stream to the terminal until the bus closes. Lines are made from
/// the bus's fold, which may already include later events than the one rendered (a
/// layer's counts are final by its `layer_finished`, so what it shows is the same).
pub async fn render(mut rx: Subscription, bus: EventBus, mode: ProgressMode, colour: bool) {
    let p = Palette::new(colour);
    // A closed stdout (`runner … | head -1`) stops the console, never the run.
    let mut stdout = Sink::new();
    let rich = (mode == ProgressMode::Rich).then(|| RichView::new(p));
    while let Some(event) = rx.recv().await {
        match mode {
            ProgressMode::Json => {
                if !stdout.is_closed() {
                    let mut line = serde_json::to_vec(&*event).unwrap_or_default();
                    line.push(b'\n');
                    stdout.write(&line);
                }
            }
            ProgressMode::Silent => {}
            ProgressMode::Simple | ProgressMode::Rich => {
                if rich.is_none() && stdout.is_closed() {
                    continue;
                }
                let (mut lines, unit, bars) = bus.with_state(|state| {
                    (
                        structure_lines(state, &event, p),
                        unit_line(state, &event, p),
                        rich.as_ref().map(|view| view.updates(state, &event)),
                    )
                });
                if let Some(l) = unit {
                    let verbose_pass = rich.is_none()
                        || !matches!(
                            &event.kind,
                            EventKind::TestFinished {
                                outcome: Outcome::Passed,
                                attempt: 1,
                                ..
                            }
                        );
                    if verbose_pass {
                        lines.push(l);
                    }
                }
                if let Some(t) = failure_tail(&event, 12, p) {
                    lines.push(t);
                }
                match &rich {
                    Some(view) => {
                        for l in lines {
                            view.println(&l);
                        }
                        view.apply(bars.unwrap_or_default());
                    }
                    None => stdout.lines(lines),
                }
            }
        }
    }
    if let Some(view) = rich {
        view.finish();
    }
    let (summary_line, lines) = bus.with_state(|state| match mode {
        ProgressMode::Json | ProgressMode::Silent => (state.summary_line(), Vec::new()),
        _ => (String::new(), final_lines(state, p)),
    });
    match mode {
        ProgressMode::Json => eprintln!("{summary_line}"),
        ProgressMode::Silent => stdout.lines([summary_line]),
        _ => stdout.lines(lines),
    }
    stdout.flush();
}

/// A change to the live bars.
enum BarUpdate {
    /// A layer started: its bar appears.
    Add { layer: String, total: u64 },
    /// A layer's bar moves.
    Set {
        layer: String,
        position: u64,
        message: String,
        finished: bool,
    },
}

/// Live bars, one per started layer, with the running units as the message.
struct RichView {
    multi: MultiProgress,
    bars: std::sync::Mutex<HashMap<String, ProgressBar>>,
    /// The running units (id -> layer, name), kept from the events: finding them in the
    /// fold would walk the layer's units on every event.
    running: std::sync::Mutex<indexmap::IndexMap<String, (String, String)>>,
    palette: Palette,
}

impl RichView {
    fn new(palette: Palette) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10)),
            bars: Default::default(),
            running: Default::default(),
            palette,
        }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// What the bars show after `event`, read from `state` (no terminal output here:
    /// this runs under the bus's lock).
    fn updates(&self, state: &RunState, event: &Event) -> Vec<BarUpdate> {
        let mut out = Vec::new();
        if let EventKind::LayerStarted { layer, .. } = &event.kind {
            let total = state.layers.get(layer).map(|l| l.counts.total).unwrap_or(0);
            out.push(BarUpdate::Add {
                layer: layer.clone(),
                total: total as u64,
            });
        }
        let mut running = self.running.lock().expect("running lock");
        match &event.kind {
            EventKind::TestStarted { unit, .. } => {
                if let Some(u) = state.units.get(unit) {
                    running.insert(unit.clone(), (u.layer.clone(), u.name.clone()));
                }
            }
            EventKind::TestFinished { unit, .. } | EventKind::TestSkipped { unit, .. } => {
                running.shift_remove(unit);
            }
            _ => {}
        }
        let bars = self.bars.lock().expect("bars lock");
        let started = match &event.kind {
            EventKind::LayerStarted { layer, .. } if !bars.contains_key(layer) => Some(layer),
            _ => None,
        };
        let names = bars.keys().chain(started);
        let mut sets = Vec::new();
        for name in names {
            let Some(l) = state.layers.get(name) else {
                continue;
            };
            let c = l.counts;
            let position = (c.passed + c.failed + c.skipped) as u64;
            if l.outcome.is_some() {
                sets.push(BarUpdate::Set {
                    layer: name.clone(),
                    position,
                    message: format!("{} passed, {} failed", c.passed, c.failed),
                    finished: true,
                });
                continue;
            }
            let running: Vec<&str> = running
                .values()
                .filter(|(layer, _)| layer == name)
                .map(|(_, unit)| unit.as_str())
                .take(3)
                .collect();
            let failed = if c.failed > 0 {
                self.palette.red(&format!("{} failed ", c.failed))
            } else {
                String::new()
            };
            let eta = l
                .eta_ms
                .map(|ms| format!("~{} left · ", eta_text(ms)))
                .unwrap_or_default();
            sets.push(BarUpdate::Set {
                layer: name.clone(),
                position,
                message: format!("{failed}{eta}{}", running.join(", ")),
                finished: false,
            });
        }
        out.extend(sets);
        out
    }

    /// Show `updates` on the terminal.
    fn apply(&self, updates: Vec<BarUpdate>) {
        let mut bars = self.bars.lock().expect("bars lock");
        for update in updates {
            match update {
                BarUpdate::Add { layer, total } => {
                    let bar = self.multi.add(ProgressBar::new(total));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>18.bold} [{bar:30.cyan/blue}] {pos}/{len} {elapsed:>4} {wide_msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(layer.clone());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bars.insert(layer, bar);
                }
                BarUpdate::Set {
                    layer,
                    position,
                    message,
                    finished,
                } => {
                    let Some(bar) = bars.get(&layer) else {
                        continue;
                    };
                    bar.set_position(position);
                    if finished {
                        if !bar.is_finished() {
                            bar.finish_with_message(message);
                        }
                    } else {
                        bar.set_message(message);
                    }
                }
            }
        }
    }

    fn finish(&self) {
        for bar in self.bars.lock().expect("bars lock").values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PlannedUnit;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            v: 1,
            seq,
            ts: "t".into(),
            run_id: "r".into(),
            thread_id: None,
            agent: "a".into(),
            kind,
        }
    }

    #[test]
    fn layer_lines_show_the_eta_when_history_knows() {
        assert_eq!(eta_text(12_345), "12.3s");
        assert_eq!(eta_text(245_000), "4m05s");
        assert_eq!(eta_text(3_720_000), "1h02m");
        let p = Palette::new(false);
        let mut s = RunState::default();
        let started = ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "c".into(),
                layers: vec!["l".into()],
                slots: 1,
                units: vec![PlannedUnit {
                    id: "l/c/u".into(),
                    layer: "l".into(),
                    category: "c".into(),
                    name: "u".into(),
                    expected_ms: Some(3000),
                }],
                pid: 1,
            },
        );
        s.apply(&started);
        let lines = structure_lines(&s, &started, p);
        assert!(lines[0].ends_with("1 slots · ~3.0s expected"), "{lines:?}");
        let layer = ev(
            2,
            EventKind::LayerStarted {
                layer: "l".into(),
                background: false,
                units: 1,
            },
        );
        s.apply(&layer);
        let lines = structure_lines(&s, &layer, p);
        assert!(lines[0].ends_with("(1 units, ~3.0s expected)"), "{lines:?}");
    }

    #[test]
    fn lines_for_pass_retry_flaky_and_failure() {
        let mut s = RunState::default();
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "c".into(),
                layers: vec!["l".into()],
                slots: 1,
                units: vec![PlannedUnit {
                    id: "l/c/u".into(),
                    layer: "l".into(),
                    category: "c".into(),
                    name: "u".into(),
                    expected_ms: None,
                }],
                pid: 1,
            },
        ));
        let fin = |attempt, outcome, will_retry| {
            ev(
                2,
                EventKind::TestFinished {
                    unit: "l/c/u".into(),
                    attempt,
                    outcome,
                    will_retry,
                    duration_ms: 1500,
                    exit_code: Some(1),
                    signal: None,
                    peak_memory_mb: None,
                    message: Some("exit code 1".into()),
                    output_tail: Some("a\nb\nboom".into()),
                    log: None,
                },
            )
        };
        let p = Palette::new(false);
        assert_eq!(
            unit_line(&s, &fin(1, Outcome::Failed, true), p).unwrap(),
            "    RETRY [   1.500s] l/c/u (attempt 1 failed): exit code 1"
        );
        assert_eq!(
            unit_line(&s, &fin(2, Outcome::Passed, false), p).unwrap(),
            "    FLAKY [   1.500s] l/c/u (attempt 2/2)"
        );
        assert_eq!(
            unit_line(&s, &fin(1, Outcome::Failed, false), p).unwrap(),
            "     FAIL [   1.500s] l/c/u: exit code 1"
        );
        let tail = failure_tail(&fin(1, Outcome::Failed, false), 2, p).unwrap();
        assert_eq!(tail, "          │ b\n          │ boom");
        assert!(failure_tail(&fin(1, Outcome::Failed, true), 2, p).is_none());
        // The path of the full output follows the excerpt.
        let mut with_log = fin(1, Outcome::Failed, false);
        if let EventKind::TestFinished { log, .. } = &mut with_log.kind {
            *log = Some("/r/logs/u.log".into());
        }
        let tail = failure_tail(&with_log, 2, p).unwrap();
        assert_eq!(
            tail,
            "          │ b\n          │ boom\n          └ full output: /r/logs/u.log"
        );
        s.apply(&fin(1, Outcome::Failed, false));
        let last = final_lines(&s, p);
        assert_eq!(last.last().unwrap(), "0 passed, 1 failed");
    }

    #[test]
    fn mode_resolution() {
        assert_eq!(resolve_mode(None, true, false), ProgressMode::Rich);
        assert_eq!(resolve_mode(None, true, true), ProgressMode::Simple);
        assert_eq!(
            resolve_mode(Some(ProgressMode::Rich), false, false),
            ProgressMode::Simple
        );
        assert_eq!(
            resolve_mode(Some(ProgressMode::Json), true, false),
            ProgressMode::Json
        );
    }
}
