//! Runs whose runner died: found, swept and closed as `dead`.
//!
//! A run directory under `.runner/runs/` with a `run.json` but no `summary.json`, whose
//! runner (pid and start time in `run.json`) is gone, is a dead run. Closing it appends
//! one `run_finished` event with outcome `dead` (exit code 3) to its `events.jsonl`
//! (unless the runner got as far as writing one), folds the file into its
//! `summary.json` and records it in history: every report of the run then shows the
//! results it reached. The watchdog closes its run when the runner dies; any later
//! `runner` run, `--orchestration-status` and `runner history` close the dead runs
//! they find (after ending what is left of them), for a watchdog killed with its runner.
//! Closing happens under an exclusive lock on the run's `close.lock`, once.

use std::io::Write;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::event::{Event, EventKind, PROTOCOL_VERSION, RunOutcome, RunState};
use crate::exit_code;
use crate::report::files::{self, RunInfo};

/// The `agent` of the `run_finished` event a dead run is closed with.
pub const AGENT: &str = "watchdog";

/// Closes the run in `run_dir` as dead (see the module docs). `Ok(None)` when it was
/// closed already or never started (no events).
pub fn close(run_dir: &Path, root: &Path) -> std::io::Result<Option<RunState>> {
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join("close.lock"))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    let summary_path = run_dir.join("summary.json");
    if summary_path.exists() {
        return Ok(None);
    }
    let events_path = run_dir.join("events.jsonl");
    let text = std::fs::read(&events_path).unwrap_or_default();
    let mut state = RunState::default();
    let mut last: Option<Event> = None;
    for line in text.split(|b| *b == b'\n') {
        if let Ok(event) = serde_json::from_slice::<Event>(line) {
            state.apply(&event);
            last = Some(event);
        }
    }
    let Some(last) = last else {
        return Ok(None);
    };
    if state.outcome.is_none() {
        let duration_ms = elapsed_ms(&state.started_at, &last.ts);
        let event = Event {
            v: PROTOCOL_VERSION,
            seq: state.seq + 1,
            ts: crate::bus::now_rfc3339(),
            run_id: last.run_id.clone(),
            thread_id: last.thread_id.clone(),
            agent: AGENT.to_string(),
            kind: EventKind::RunFinished {
                outcome: RunOutcome::Dead,
                exit_code: exit_code::INFRASTRUCTURE,
                duration_ms,
            },
        };
        let mut line = Vec::new();
        // A runner killed in the middle of a line left it unfinished.
        if !text.is_empty() && !text.ends_with(b"\n") {
            line.push(b'\n');
        }
        line.extend(serde_json::to_vec(&event).map_err(std::io::Error::other)?);
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .append(true)
            .open(&events_path)?
            .write_all(&line)?;
        state.apply(&event);
    }
    files::write_atomic(
        &summary_path,
        &serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
    )?;
    if let Err(e) = crate::store::save(root, &state) {
        eprintln!(
            "runner: history: cannot record dead run {}: {e}",
            state.run_id
        );
    }
    Ok(Some(state))
}

fn elapsed_ms(from: &str, to: &str) -> u64 {
    let (Ok(a), Ok(b)) = (
        from.parse::<jiff::Timestamp>(),
        to.parse::<jiff::Timestamp>(),
    ) else {
        return 0;
    };
    u64::try_from(b.duration_since(a).as_millis()).unwrap_or(0)
}

/// True while the runner recorded in `info` is alive (same pid, same start time).
pub fn runner_alive(info: &RunInfo) -> bool {
    match crate::exec::procfs::read_stat(info.pid) {
        Some(stat) => stat.is_live() && info.start_time.is_none_or(|t| t == stat.start_time),
        None => false,
    }
}

/// Ends what is left of every dead run under `root` and closes it. Returns the runs
/// closed now.
pub async fn sweep(root: &Path) -> Vec<RunState> {
    let mut closed = Vec::new();
    for (dir, info, summary) in files::list_runs(root) {
        if summary.is_some() || runner_alive(&info) {
            continue;
        }
        let ended = super::leftovers::end(&info.run_id, Default::default(), super::GRACE).await;
        if ended > 0 {
            eprintln!(
                "runner: ended {ended} leftover processes of dead run {}",
                info.run_id
            );
        }
        let root = root.to_path_buf();
        let closing = tokio::task::spawn_blocking(move || close(&dir, &root)).await;
        if let Ok(Ok(Some(state))) = closing {
            closed.push(state);
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PlannedUnit, RunState};

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            v: PROTOCOL_VERSION,
            seq,
            ts: "2026-12-03T10:00:00Z".into(),
            run_id: "r1".into(),
            thread_id: None,
            agent: "master_controller".into(),
            kind,
        }
    }

    #[test]
    fn a_dead_run_is_closed_once_with_what_it_reached() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join(".runner/runs/r1");
        std::fs::create_dir_all(&run_dir).unwrap();
        let started = event(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into()],
                slots: 1,
                units: vec![PlannedUnit {
                    id: "fast/unit/a".into(),
                    layer: "fast".into(),
                    category: "unit".into(),
                    name: "a".into(),
                    expected_ms: None,
                }],
                pid: 1,
            },
        );
        let mut text = serde_json::to_vec(&started).unwrap();
        text.extend(b"\n{\"v\":1,\"seq\":2,\"trunc");
        std::fs::write(run_dir.join("events.jsonl"), text).unwrap();

        let state = close(&run_dir, dir.path()).unwrap().expect("closed");
        assert_eq!(state.outcome, Some(RunOutcome::Dead));
        assert_eq!(state.exit_code, Some(exit_code::INFRASTRUCTURE));
        let summary: RunState =
            serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary.outcome, Some(RunOutcome::Dead));
        let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
        let last: Event = serde_json::from_str(events.lines().last().unwrap()).unwrap();
        assert_eq!((last.seq, last.agent.as_str()), (2, AGENT));
        assert!(close(&run_dir, dir.path()).unwrap().is_none(), "only once");
    }

    #[test]
    fn a_run_without_events_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(close(dir.path(), dir.path()).unwrap().is_none());
        assert!(!dir.path().join("summary.json").exists());
    }
}
