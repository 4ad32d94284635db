//! The run directory and atomic writes.
//!
//! `.runner/runs/<run_id>/` holds `run.json` (written at start: pid, config, mode),
//! `events.jsonl`, `summary.json` (the final `RunState`, written at the end, also on
//! Ctrl-C) and `logs/`. Every report is written to a temporary file in the same
//! directory and renamed into place, so a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Write `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `value` as pretty JSON to `path` atomically, streamed (no copy of the whole
/// document in memory).
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    write_atomic_with(path, |w| {
        serde_json::to_writer_pretty(w, value).map_err(std::io::Error::other)
    })
}

/// Write `path` atomically: `write` fills a temporary file in the same directory, which
/// is synced and renamed into place.
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(&tmp)?);
    write(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `run.json`: what a later command needs to know about a run in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Runner pid.
    pub pid: u32,
    /// The runner's start time in clock ticks since boot (`/proc/PID/stat` field 22):
    /// with `pid`, its identity (a reused pid is not the runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Mode name.
    pub mode: String,
    /// Layers file.
    pub config: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// The progress server's viewer URL (`http://ADDR/`), when it serves the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_url: Option<String>,
}

/// The `.runner/` directory of a project root.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join(".runner")
}

/// The directory of run `run_id`.
pub fn run_dir(root: &Path, run_id: &str) -> PathBuf {
    state_dir(root).join("runs").join(run_id)
}

/// A new run id: UTC time plus a random suffix (sortable, unique).
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y%m%dT%H%M%S").to_string();
    let suffix: u32 = rand::random::<u32>() & 0xffffff;
    format!("{stamp}-{suffix:06x}")
}

/// Runs recorded under `root`, newest first: (run dir, info, summary if finished).
pub fn list_runs(root: &Path) -> Vec<(PathBuf, RunInfo, Option<crate::event::RunState>)> {
    let Ok(entries) = std::fs::read_dir(state_dir(root).join("runs")) else {
        return Vec::new();
    };
    let mut runs: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let info: RunInfo =
                serde_json::from_slice(&std::fs::read(dir.join("run.json")).ok()?).ok()?;
            let summary = std::fs::read(dir.join("summary.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            Some((dir, info, summary))
        })
        .collect();
    runs.sort_by(|a, b| b.1.run_id.cmp(&a.1.run_id));
    runs
}

/// True when a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/summary.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261121T221506-abcdef".len());
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }
}
