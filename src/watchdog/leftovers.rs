//! What is left of a run whose runner is gone, and ending it.
//!
//! A process belongs to run `ID` when its environment holds `RUNNER_RUN_ID=ID` (every
//! unit and service is started with it, and their children inherit it), or when the
//! watchdog saw it among the runner's descendants while the runner lived (same pid and
//! start time: a daemon that cleared its environment), or when it descends from either
//! now. Each process is signalled by pid right after its start time is checked again,
//! so a pid reused in between is not hit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nix::sys::signal::Signal;

// One re-checked signal (pid and start time) for dead runs and background runs alike.
use crate::background::sweep::signal;
use crate::exec::procfs::{self, ProcInfo};

/// The processes of a run whose runner is gone.
pub struct RunLeftovers {
    marker: Vec<u8>,
    seen: HashMap<u32, u64>,
    termed: HashSet<(u32, u64)>,
}

impl RunLeftovers {
    /// The leftovers of run `run_id`; `seen`: the runner's descendants as last seen
    /// (pid to start time), empty when nobody watched.
    pub fn new(run_id: &str, seen: HashMap<u32, u64>) -> Self {
        RunLeftovers {
            marker: format!("{}={run_id}", super::RUN_ID_ENV).into_bytes(),
            seen,
            termed: HashSet::new(),
        }
    }

    /// `(pid, start time)` of every live process of the run now.
    pub fn members(&self) -> Vec<(u32, u64)> {
        members_in(&procfs::snapshot(), &self.marker, &self.seen, |pid| {
            procfs::read_environ(pid)
        })
    }
}

/// The members among `procs`: marked or seen, and their descendants.
fn members_in(
    procs: &[ProcInfo],
    marker: &[u8],
    seen: &HashMap<u32, u64>,
    environ: impl Fn(u32) -> Vec<u8>,
) -> Vec<(u32, u64)> {
    let me = std::process::id();
    let live: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| p.is_live() && p.pid > 1 && p.pid != me && !p.is_kernel_thread())
        .collect();
    let mut children: HashMap<u32, Vec<&ProcInfo>> = HashMap::new();
    for p in &live {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut stack: Vec<&ProcInfo> = live
        .iter()
        .copied()
        .filter(|p| {
            seen.get(&p.pid) == Some(&p.start_time)
                || procfs::environ_contains(&environ(p.pid), marker)
        })
        .collect();
    let mut found = HashSet::new();
    while let Some(p) = stack.pop() {
        if found.insert((p.pid, p.start_time)) {
            stack.extend(children.get(&p.pid).into_iter().flatten().copied());
        }
    }
    let mut found: Vec<(u32, u64)> = found.into_iter().collect();
    found.sort_unstable();
    found
}

impl crate::exec::Targets for RunLeftovers {
    type Proc = (u32, u64);

    fn scan(&self) -> impl std::future::Future<Output = Vec<(u32, u64)>> + Send {
        let (marker, seen) = (self.marker.clone(), self.seen.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                members_in(&procfs::snapshot(), &marker, &seen, procfs::read_environ)
            })
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
        format!("leftovers of a dead run: {found:?}")
    }
}

/// Ends every process of run `run_id` through the one terminate sequence
/// ([`crate::exec::terminate_targets`]). Returns how many there were at first.
pub async fn end(run_id: &str, seen: HashMap<u32, u64>, grace: Duration) -> usize {
    let mut targets = RunLeftovers::new(run_id, seen);
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

    fn proc(pid: u32, ppid: u32, start_time: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp: pid,
            session: pid,
            state: 'S',
            start_time,
            flags: 0,
        }
    }

    #[test]
    fn marked_and_seen_processes_and_their_descendants_belong_to_the_run() {
        let procs = [
            proc(10, 1, 100),  // marked
            proc(11, 10, 101), // child of a marked one, environment cleared
            proc(20, 1, 200),  // seen while the runner lived (daemon, no marker)
            proc(21, 20, 201), // its child
            proc(30, 1, 300),  // same pid as a seen one, other start time: reused
            proc(40, 1, 400),  // unrelated
        ];
        let seen = HashMap::from([(20, 200), (30, 299)]);
        let environ = |pid| match pid {
            10 => b"A=1\0RUNNER_RUN_ID=r1\0".to_vec(),
            40 => b"RUNNER_RUN_ID=r10\0".to_vec(),
            _ => Vec::new(),
        };
        let found = members_in(&procs, b"RUNNER_RUN_ID=r1", &seen, environ);
        assert_eq!(found, vec![(10, 100), (11, 101), (20, 200), (21, 201)]);
    }

    #[tokio::test]
    async fn a_marked_process_is_ended() {
        let id = format!("leftovers-test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("3600")
            .env(super::super::RUN_ID_ENV, &id)
            .spawn()
            .unwrap();
        assert_eq!(
            RunLeftovers::new(&id, HashMap::new())
                .members()
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            vec![child.id()]
        );
        assert_eq!(
            end(&id, HashMap::new(), Duration::from_millis(500)).await,
            1
        );
        assert!(!child.wait().unwrap().success());
    }
}
