//! Finding and killing whatever is left of a background run once its worker is gone
//! (or will not go): the worker, its units and services, escapees included.
//!
//! A process belongs to run `ID` when its environment holds
//! `RUNNER_BACKGROUND_ID=ID` (the worker has it, and everything it starts inherits
//! it), or, while the worker's identity is known, when it is in the worker's session
//! and started after the worker did (the session id is the worker's pid; the start
//! time rules out a later session that got the same number).
//!
//! This is the one place outside `exec/` that sends signals to processes: units of a
//! dead worker are not any live runner's units any more. Each process is signalled
//! by pid right after its start time is checked again, so a pid reused in between
//! is not hit (the remaining window needs a full wrap of the pid space).

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::read_stat;

/// `(pid, start time)` of every live process of run `id`. `session`: the worker's
/// `(pid, start time)` when known.
pub(crate) fn members(id: &str, session: Option<(u32, u64)>) -> Vec<(u32, u64)> {
    let me = std::process::id();
    let needle = format!("{}={id}", super::WORKER_ENV).into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || pid <= 1 {
            continue;
        }
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        if stat.zombie {
            continue;
        }
        let in_session =
            session.is_some_and(|(sid, start)| stat.session == sid && stat.start_time >= start);
        let marked = in_session
            || std::fs::read(entry.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|e| e == needle.as_slice()))
                .unwrap_or(false);
        if marked {
            found.push((pid, stat.start_time));
        }
    }
    found.sort_unstable();
    found
}

/// Signals `pid` if it is still the process that started at `start_time`.
pub(crate) fn signal(pid: u32, start_time: u64, sig: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 1 || pid == std::process::id() {
        return false;
    }
    match read_stat(pid) {
        Some(now) if now.start_time == start_time && !now.zombie => {
            kill(Pid::from_raw(raw), sig).is_ok()
        }
        _ => false,
    }
}

/// The processes of a detached background run: every process carrying its marker
/// (`RUNNER_BACKGROUND_ID`), or in its worker's session; each re-checked by start time.
struct RunProcesses {
    id: String,
    session: Option<(u32, u64)>,
    termed: std::collections::HashSet<(u32, u64)>,
}

impl crate::exec::Targets for RunProcesses {
    type Proc = (u32, u64);

    fn scan(&self) -> impl std::future::Future<Output = Vec<(u32, u64)>> + Send {
        let (id, session) = (self.id.clone(), self.session);
        async move {
            tokio::task::spawn_blocking(move || members(&id, session))
                .await
                .unwrap_or_default()
        }
    }

    fn term(&mut self, found: &[(u32, u64)]) {
        for &(pid, start) in found {
            if self.termed.insert((pid, start)) {
                signal(pid, start, Signal::SIGTERM);
                signal(pid, start, Signal::SIGCONT);
            }
        }
    }

    fn kill(&mut self, found: &[(u32, u64)]) {
        for &(pid, start) in found {
            signal(pid, start, Signal::SIGKILL);
        }
    }

    fn describe(&self, found: &[(u32, u64)]) -> String {
        format!("background run {}: {found:?}", self.id)
    }
}

/// Every process of run `id` through the one terminate sequence
/// ([`crate::exec::terminate_targets`]). Returns how many there were.
pub(crate) async fn kill_all(id: &str, session: Option<(u32, u64)>, grace: Duration) -> usize {
    let mut targets = RunProcesses {
        id: id.to_string(),
        session,
        termed: Default::default(),
    };
    let first = crate::exec::Targets::scan(&targets).await;
    if first.is_empty() {
        return 0;
    }
    crate::exec::terminate_targets(&mut targets, grace, std::future::pending()).await;
    first.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marked_processes_are_found_and_killed() {
        let id = format!("sweep-test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("3600")
            .env(super::super::WORKER_ENV, &id)
            .spawn()
            .unwrap();
        let pid = child.id();
        let found = members(&id, None);
        assert_eq!(found.iter().map(|p| p.0).collect::<Vec<_>>(), vec![pid]);
        assert!(members("some-other-run", None).is_empty());
        // Our own session (we started before the child): the child is in it.
        let me = read_stat(std::process::id()).unwrap();
        assert!(
            members("nothing", Some((me.session, me.start_time)))
                .iter()
                .any(|p| p.0 == pid)
        );
        let stale = found[0].1 + 1;
        assert!(
            !signal(pid, stale, Signal::SIGKILL),
            "wrong start time: left alone"
        );
        assert_eq!(kill_all(&id, None, Duration::from_millis(500)).await, 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(members(&id, None).is_empty());
    }
}
