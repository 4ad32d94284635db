//! Pruning `.runner/runs/`: the newest `execution.keep_runs` runs are kept, and older
//! ones go first until the directory fits `execution.runs_max_mb`.
//!
//! Never deleted: a run without `summary.json` (in progress, or dead and not closed
//! yet: see [`crate::watchdog::dead_runs`]), the newest run (the one that just ended)
//! and the newest run that did not pass (what a developer opens next). Pruned at the
//! end of every run, after its own reports are written; a directory that cannot be
//! removed is left for the next run.

use std::path::{Path, PathBuf};

use crate::event::RunOutcome;
use crate::report::files;

/// What a prune did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Run directories deleted.
    pub deleted: Vec<String>,
    /// Bytes they held.
    pub freed_bytes: u64,
}

/// One run directory as the prune sees it.
#[derive(Debug)]
struct RunDir {
    id: String,
    /// `run.json`'s `started_at` (milliseconds: run ids only have seconds), else the id.
    order: String,
    path: PathBuf,
    bytes: u64,
    protected: bool,
}

/// Prunes `root`'s `.runner/runs/` to `keep` runs and `max_bytes` (see the module docs).
pub fn prune_runs(root: &Path, keep: usize, max_bytes: u64) -> Pruned {
    let runs_dir = files::state_dir(root).join("runs");
    let Ok(entries) = std::fs::read_dir(&runs_dir) else {
        return Pruned::default();
    };
    let mut runs: Vec<RunDir> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let path = e.path();
            let id = e.file_name().to_string_lossy().into_owned();
            let started = std::fs::read(path.join("run.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<files::RunInfo>(&b).ok())
                .and_then(|i| i.started_at.parse::<jiff::Timestamp>().ok());
            RunDir {
                order: match started {
                    Some(t) => format!("{t:.3}"),
                    None => id.clone(),
                },
                id,
                bytes: size_of(&path),
                protected: false,
                path,
            }
        })
        .collect();
    // Newest first.
    runs.sort_by(|a, b| b.order.cmp(&a.order).then(b.id.cmp(&a.id)));
    let mut last_failed_seen = false;
    for (i, run) in runs.iter_mut().enumerate() {
        // Only the outcome is read: a summary of 100,000 units is not folded again.
        let summary: Option<SummaryOutcome> = std::fs::File::open(run.path.join("summary.json"))
            .ok()
            .and_then(|f| serde_json::from_reader(std::io::BufReader::new(f)).ok());
        let failed = summary
            .as_ref()
            .is_some_and(|s| s.outcome.is_some_and(|o| o != RunOutcome::Passed));
        let newest_failed = failed && !last_failed_seen;
        last_failed_seen |= failed;
        run.protected = i == 0 || summary.is_none() || newest_failed;
    }
    let mut pruned = Pruned::default();
    let delete = |run: &RunDir, pruned: &mut Pruned| {
        if std::fs::remove_dir_all(&run.path).is_ok() {
            pruned.deleted.push(run.id.clone());
            pruned.freed_bytes += run.bytes;
            true
        } else {
            false
        }
    };
    let mut kept: Vec<RunDir> = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        if i >= keep && !run.protected && delete(&run, &mut pruned) {
            continue;
        }
        kept.push(run);
    }
    let mut total: u64 = kept.iter().map(|r| r.bytes).sum();
    // Oldest first until the rest fits.
    for run in kept.iter().rev() {
        if total <= max_bytes {
            break;
        }
        if !run.protected && delete(run, &mut pruned) {
            total -= run.bytes;
        }
    }
    pruned
}

/// The one field of `summary.json` that pruning needs.
#[derive(serde::Deserialize)]
struct SummaryOutcome {
    #[serde(default)]
    outcome: Option<RunOutcome>,
}

/// Bytes of the files under `path` (links not followed).
fn size_of(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RunState;

    fn run(root: &Path, id: &str, outcome: Option<RunOutcome>, bytes: usize) {
        let dir = files::run_dir(root, id);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("logs/unit.log"), vec![b'x'; bytes]).unwrap();
        if let Some(outcome) = outcome {
            let state = RunState {
                outcome: Some(outcome),
                ..RunState::default()
            };
            std::fs::write(
                dir.join("summary.json"),
                serde_json::to_vec(&state).unwrap(),
            )
            .unwrap();
        }
    }

    fn left(root: &Path) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(files::state_dir(root).join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn keeps_the_newest_the_last_failed_and_runs_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run(root, "20260101T000001-a", Some(RunOutcome::Passed), 10);
        run(root, "20260101T000002-b", None, 10); // in progress
        run(root, "20260101T000003-c", Some(RunOutcome::Failed), 10);
        run(root, "20260101T000004-d", Some(RunOutcome::Failed), 10);
        run(root, "20260101T000005-e", Some(RunOutcome::Passed), 10);
        run(root, "20260101T000006-f", Some(RunOutcome::Passed), 10);
        let pruned = prune_runs(root, 2, u64::MAX);
        assert_eq!(
            pruned.deleted,
            ["20260101T000003-c", "20260101T000001-a"],
            "older than the newest two, not the last failed, not in progress"
        );
        assert_eq!(
            left(root),
            [
                "20260101T000002-b",
                "20260101T000004-d",
                "20260101T000005-e",
                "20260101T000006-f"
            ]
        );
    }

    #[test]
    fn the_size_cap_deletes_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (i, id) in [
            "20260101T000001-a",
            "20260101T000002-b",
            "20260101T000003-c",
        ]
        .iter()
        .enumerate()
        {
            run(root, id, Some(RunOutcome::Passed), 10_000 + i);
        }
        let pruned = prune_runs(root, 100, 25_000);
        assert_eq!(pruned.deleted, ["20260101T000001-a"]);
        assert!(pruned.freed_bytes >= 10_000);
        // Even a cap below the newest run keeps the newest run.
        prune_runs(root, 100, 1);
        assert_eq!(left(root), ["20260101T000003-c"]);
    }
}
