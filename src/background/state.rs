//! The background store: `.runner/background/`, one directory per detached run.
//!
//! ```text
//! .runner/background/
//!   slots/0.lock ...            flock'ed by running workers (max_concurrent of them)
//!   <id>/state.json             BackgroundRun, written atomically under <id>/state.lock
//!   <id>/worker.log             the worker's stdout and stderr
//!   <id>/run.json, events.jsonl, summary.json, logs/   the run itself (as in .runner/runs/)
//! ```
//!
//! The queue is implicit: the runs in state `queued`, oldest id first (ids sort by
//! time). Every writer (launcher, worker, `--kill-background`, a status view that
//! finds a dead worker) does read-modify-write under an exclusive `flock` on the
//! run's `state.lock` and replaces `state.json` by rename, so readers never see half a
//! file and no update is lost.
//!
//! A run is `queued` or `running` only while its worker lives: the worker's pid, its
//! start time (field 22 of `/proc/PID/stat`) and the boot id are recorded, and a run
//! whose worker is gone, or whose pid now names another process (reused, or after a
//! reboot), is shown and recorded as `dead` (or, if it managed to write its summary,
//! with the summary's outcome).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::event::{Counts, RunOutcome, RunState};
use crate::report::files;

/// Where a background run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a slot (`max_concurrent`).
    Queued,
    /// Running its layers.
    Running,
    /// Finished: every layer passed.
    Passed,
    /// Finished: a layer failed, or the run could not be carried out (see `message`).
    Failed,
    /// Stopped by `--kill-background` (or a signal to the worker).
    Cancelled,
    /// The worker disappeared without finishing (killed -9, machine reboot).
    Dead,
}

impl Status {
    /// True once the run will not change any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// The serde name (`running`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Dead => "dead",
        }
    }
}

/// `state.json`: everything a later command needs to know about a detached run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackgroundRun {
    /// Id (also the run id of its events).
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// The layers file (absolute).
    pub config: PathBuf,
    /// `--env`, if given.
    #[serde(default)]
    pub environment: Option<String>,
    /// Layers it runs (empty when it runs categories).
    #[serde(default)]
    pub layers: Vec<String>,
    /// Categories it runs (`--background-category`).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Queued at (RFC 3339).
    pub created_at: String,
    /// Got a slot at.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Finished at.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The worker's pid.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The worker's process group (= its pid: it leads a new session).
    #[serde(default)]
    pub pgid: Option<u32>,
    /// The worker's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    #[serde(default)]
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the worker started.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// `--background-timeout`, minutes.
    #[serde(default)]
    pub timeout_minutes: Option<f64>,
    /// The worker's exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Final unit counts.
    #[serde(default)]
    pub counts: Option<Counts>,
    /// Run duration, ms.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Why it failed, was cancelled or is dead.
    #[serde(default)]
    pub message: Option<String>,
    /// `--kill-background` asked it to stop.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Address of the worker's progress server (`runner watch`), if it runs one.
    #[serde(default)]
    pub progress_addr: Option<String>,
    /// The run directory (this state file's directory).
    pub dir: PathBuf,
    /// `events.jsonl` of the run.
    pub events: PathBuf,
    /// `summary.json` of the run (once finished).
    pub summary: PathBuf,
    /// The worker's stdout and stderr.
    pub log: PathBuf,
    /// JUnit report, when one is written.
    #[serde(default)]
    pub junit: Option<PathBuf>,
}

impl BackgroundRun {
    /// A new queued run in `dir`.
    pub fn queued(id: &str, dir: &Path, config: &Path) -> Self {
        BackgroundRun {
            id: id.to_string(),
            status: Status::Queued,
            config: config.to_path_buf(),
            environment: None,
            layers: Vec::new(),
            categories: Vec::new(),
            created_at: crate::bus::now_rfc3339(),
            started_at: None,
            finished_at: None,
            pid: None,
            pgid: None,
            start_time: None,
            boot_id: None,
            timeout_minutes: None,
            exit_code: None,
            counts: None,
            duration_ms: None,
            message: None,
            cancel_requested: false,
            progress_addr: None,
            dir: dir.to_path_buf(),
            events: dir.join("events.jsonl"),
            summary: dir.join("summary.json"),
            log: dir.join("worker.log"),
            junit: None,
        }
    }

    /// What it runs, in words: `e2e, smoke` or `categories browser`.
    pub fn what(&self) -> String {
        if self.categories.is_empty() {
            self.layers.join(", ")
        } else {
            format!("categories {}", self.categories.join(", "))
        }
    }

    /// Records the worker's identity (pid, process group, start time, boot id).
    pub fn set_worker(&mut self, pid: u32) {
        self.pid = Some(pid);
        self.pgid = Some(pid);
        self.start_time = process_start_time(pid);
        self.boot_id = boot_id();
    }

    /// True while the recorded worker is this very process, alive (not a zombie).
    pub fn worker_alive(&self) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        if let (Some(then), Some(now)) = (&self.boot_id, boot_id())
            && *then != now
        {
            return false;
        }
        match read_stat(pid) {
            Some(stat) if !stat.zombie => self.start_time.is_none_or(|t| t == stat.start_time),
            _ => false,
        }
    }

    /// The fold of its events so far (progress of a running run); None without events.
    pub fn progress(&self) -> Option<RunState> {
        let text = std::fs::read_to_string(&self.events).ok()?;
        let mut state = RunState::default();
        for line in text.lines() {
            if let Ok(event) = serde_json::from_str(line) {
                state.apply(&event);
            }
        }
        (state.seq > 0).then_some(state)
    }

    /// The final summary, once written.
    pub fn final_summary(&self) -> Option<RunState> {
        serde_json::from_slice(&std::fs::read(&self.summary).ok()?).ok()
    }
}

/// Identity fields of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process group.
    pub pgrp: u32,
    /// Session.
    pub session: u32,
    /// Start time, clock ticks since boot (field 22).
    pub start_time: u64,
    /// Zombie or dead.
    pub zombie: bool,
}

/// Parses `/proc/PID/stat` (the command name may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // Fields from 3 (state) on; field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        zombie: matches!(f.first()?.chars().next()?, 'Z' | 'X' | 'x'),
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/stat` of a live or zombie process; None when there is none.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Start time of `pid` (field 22 of `/proc/PID/stat`).
pub fn process_start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// This boot's id (changes on every reboot).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `.runner/background/` of one project.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held slot: while this lives, the run counts against `max_concurrent`. The
/// kernel drops the lock when the process dies, however it dies.
pub type Slot = Flock<File>;

impl Store {
    /// The store of the project at `project_root`.
    pub fn new(project_root: &Path) -> Self {
        Store {
            root: files::state_dir(project_root).join("background"),
        }
    }

    /// `.runner/background/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of run `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Writes a new run's state.
    pub fn create(&self, run: &BackgroundRun) -> io::Result<()> {
        std::fs::create_dir_all(&run.dir)?;
        let _lock = self.lock(&run.id)?;
        write(run)
    }

    /// Reads run `id`'s state as recorded (no liveness check).
    pub fn read(&self, id: &str) -> io::Result<BackgroundRun> {
        let path = self.dir(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&path)?).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Read-modify-write of run `id`'s state under its lock; returns the new state.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut BackgroundRun),
    ) -> io::Result<BackgroundRun> {
        let _lock = self.lock(id)?;
        let mut run = self.read(id)?;
        change(&mut run);
        write(&run)?;
        Ok(run)
    }

    fn lock(&self, id: &str) -> io::Result<Flock<File>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir(id).join("state.lock"))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    /// Every run, oldest first, as recorded.
    pub fn list(&self) -> Vec<BackgroundRun> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut runs: Vec<BackgroundRun> = entries
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .filter_map(|e| self.read(&e.file_name().to_string_lossy()).ok())
            .collect();
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        runs
    }

    /// Every run, oldest first, with dead workers detected (and recorded).
    pub fn list_checked(&self) -> Vec<BackgroundRun> {
        self.list().into_iter().map(|r| self.check(r)).collect()
    }

    /// `run` as it really stands: a queued or running run whose worker is gone is
    /// recorded as dead (or with its summary's outcome, if it wrote one).
    pub fn check(&self, run: BackgroundRun) -> BackgroundRun {
        if run.status.is_finished() || run.worker_alive() {
            return run;
        }
        // A launcher writes the pid right after spawning: give a run without one a moment.
        if run.pid.is_none() && age(&run.created_at).is_some_and(|a| a < Duration::from_secs(30)) {
            return run;
        }
        let id = run.id.clone();
        self.update(&id, |r| {
            if r.status.is_finished() || r.worker_alive() {
                return;
            }
            mark_gone(r);
        })
        .unwrap_or(run)
    }

    /// Resolves a run id given in full or as a unique suffix (`3fa2c1`).
    pub fn resolve(&self, wanted: &str) -> Result<String, String> {
        let runs = self.list();
        if runs.iter().any(|r| r.id == wanted) {
            return Ok(wanted.to_string());
        }
        let matches: Vec<&BackgroundRun> = runs
            .iter()
            .filter(|r| !wanted.is_empty() && r.id.ends_with(wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => {
                let mut msg = format!("no background run `{wanted}` in {}", self.root.display());
                match runs.last() {
                    Some(last) => msg.push_str(&format!(
                        "\n  help: the most recent is `{}`; see `runner --background-status`",
                        last.id
                    )),
                    None => msg.push_str("\n  help: there are no background runs"),
                }
                Err(msg)
            }
            many => Err(format!(
                "`{wanted}` matches several background runs: {}",
                many.iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Tries to take one of `max` slots without waiting.
    pub fn try_slot(&self, max: usize) -> io::Result<Option<Slot>> {
        let dir = self.root.join("slots");
        std::fs::create_dir_all(&dir)?;
        for k in 0..max.max(1) {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{k}.lock")))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(lock)),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Deletes finished runs older than `retention` (by finish time, else creation
    /// time). Returns how many were deleted.
    pub fn prune(&self, retention: Duration) -> usize {
        let mut deleted = 0;
        for run in self.list_checked() {
            let when = run.finished_at.as_deref().unwrap_or(&run.created_at);
            if run.status.is_finished()
                && age(when).is_some_and(|a| a > retention)
                && std::fs::remove_dir_all(&run.dir).is_ok()
            {
                deleted += 1;
            }
        }
        deleted
    }
}

/// A run whose worker is gone: its summary's outcome if it wrote one, else cancelled
/// when `--kill-background` asked for it, else dead.
fn mark_gone(r: &mut BackgroundRun) {
    match r.final_summary() {
        Some(s) if s.outcome.is_some() => {
            r.status = match s.outcome {
                Some(RunOutcome::Passed) => Status::Passed,
                Some(RunOutcome::Interrupted) => Status::Cancelled,
                Some(RunOutcome::Dead) => Status::Dead,
                _ => Status::Failed,
            };
            r.exit_code = s.exit_code;
            r.counts = Some(s.counts);
            r.duration_ms = s.duration_ms;
            r.finished_at = s.finished_at.clone();
            if r.status == Status::Dead {
                r.message = Some(gone_message(r.pid));
            }
        }
        _ => {
            r.counts = r.progress().map(|p| p.counts);
            r.finished_at = Some(crate::bus::now_rfc3339());
            // `--kill-background` asked it to stop, and it did (its own update may come
            // after another command noticed the worker gone).
            if r.cancel_requested {
                r.status = Status::Cancelled;
                r.message = Some("cancelled by --kill-background".into());
            } else {
                r.status = Status::Dead;
                r.message = Some(gone_message(r.pid));
            }
        }
    }
}

fn gone_message(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("worker (pid {pid}) is gone without finishing"),
        None => "worker never started".into(),
    }
}

fn write(run: &BackgroundRun) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(run).map_err(io::Error::other)?;
    files::write_atomic(&run.dir.join("state.json"), &bytes)
}

/// Time since an RFC 3339 timestamp.
pub fn age(ts: &str) -> Option<Duration> {
    let then: jiff::Timestamp = ts.parse().ok()?;
    let secs = jiff::Timestamp::now().duration_since(then).as_secs_f64();
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        (dir, store)
    }

    fn new_run(store: &Store, id: &str) -> BackgroundRun {
        let run = BackgroundRun::queued(id, &store.dir(id), Path::new("/x/layers.yaml"));
        store.create(&run).unwrap();
        run
    }

    #[test]
    fn stat_parsing_handles_spaces_and_parens_in_the_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.pgrp, s.session, s.start_time, s.zombie),
            (4242, 4242, 987654, false)
        );
        let own = read_stat(std::process::id()).unwrap();
        assert!(!own.zombie);
        assert!(own.start_time > 0);
    }

    #[test]
    fn a_run_whose_worker_died_is_dead_and_recorded_so() {
        let (_d, store) = store();
        let run = new_run(&store, "20260101T000000-aaaaaa");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid);
        child.wait().unwrap();
        store
            .update(&run.id, |r| {
                r.status = Status::Running;
                r.pid = Some(pid);
                r.start_time = start;
                r.boot_id = boot_id();
            })
            .unwrap();
        let checked = store.check(store.read(&run.id).unwrap());
        assert_eq!(checked.status, Status::Dead);
        assert_eq!(
            store.read(&run.id).unwrap().status,
            Status::Dead,
            "recorded"
        );
    }

    #[test]
    fn a_reused_pid_does_not_keep_a_run_alive() {
        let (_d, store) = store();
        let run = new_run(&store, "20260101T000000-bbbbbb");
        let me = std::process::id();
        let real = process_start_time(me).unwrap();
        store
            .update(&run.id, |r| {
                r.status = Status::Running;
                r.set_worker(me);
            })
            .unwrap();
        assert_eq!(
            store.check(store.read(&run.id).unwrap()).status,
            Status::Running
        );
        store
            .update(&run.id, |r| r.start_time = Some(real + 1))
            .unwrap();
        assert_eq!(
            store.check(store.read(&run.id).unwrap()).status,
            Status::Dead
        );
    }

    #[test]
    fn a_worker_recorded_before_a_reboot_is_not_alive() {
        let mut run = BackgroundRun::queued("x", Path::new("/nonexistent"), Path::new("/x"));
        run.set_worker(std::process::id());
        assert!(run.worker_alive());
        if run.boot_id.is_some() {
            run.boot_id = Some("another-boot".into());
            assert!(!run.worker_alive(), "same pid and start time, other boot");
        }
    }

    #[test]
    fn a_gone_worker_with_a_summary_keeps_its_outcome() {
        let (_d, store) = store();
        let run = new_run(&store, "20260101T000000-cccccc");
        let summary = RunState {
            outcome: Some(RunOutcome::Passed),
            exit_code: Some(0),
            ..RunState::default()
        };
        files::write_atomic(&run.summary, &serde_json::to_vec(&summary).unwrap()).unwrap();
        store
            .update(&run.id, |r| {
                r.status = Status::Running;
                r.pid = Some(u32::MAX - 1);
            })
            .unwrap();
        assert_eq!(
            store.check(store.read(&run.id).unwrap()).status,
            Status::Passed
        );
    }

    #[test]
    fn ids_resolve_by_unique_suffix() {
        let (_d, store) = store();
        new_run(&store, "20260101T000000-abc123");
        new_run(&store, "20260101T000001-ffc123");
        assert_eq!(store.resolve("abc123").unwrap(), "20260101T000000-abc123");
        assert!(store.resolve("c123").unwrap_err().contains("several"));
        assert!(
            store
                .resolve("zzz")
                .unwrap_err()
                .contains("no background run `zzz`")
        );
    }

    #[test]
    fn slots_are_limited_and_freed_on_drop() {
        let (_d, store) = store();
        let a = store.try_slot(2).unwrap().expect("first slot");
        let b = store.try_slot(2).unwrap().expect("second slot");
        assert!(store.try_slot(2).unwrap().is_none(), "only two slots");
        drop(a);
        assert!(
            store.try_slot(2).unwrap().is_some(),
            "a freed slot is reused"
        );
        drop(b);
    }

    #[test]
    fn prune_deletes_only_old_finished_runs() {
        let (_d, store) = store();
        let old = new_run(&store, "20260101T000000-000001");
        let fresh = new_run(&store, "20260101T000000-000002");
        let queued = new_run(&store, "20260101T000000-000003");
        store
            .update(&old.id, |r| {
                r.status = Status::Passed;
                r.finished_at = Some("2020-01-01T00:00:00Z".into());
            })
            .unwrap();
        store
            .update(&fresh.id, |r| {
                r.status = Status::Failed;
                r.finished_at = Some(crate::bus::now_rfc3339());
            })
            .unwrap();
        store
            .update(&queued.id, |r| r.set_worker(std::process::id()))
            .unwrap();
        assert_eq!(store.prune(Duration::from_secs(86400)), 1);
        let left: Vec<String> = store.list().into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec![fresh.id, queued.id]);
    }
}
