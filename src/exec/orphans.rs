//! Orphans the runner adopted as a child subreaper: listing them without scanning
//! `/proc`, telling whose they are, and stopping them with everything they started.
//!
//! An orphan is reparented to the first live thread of its nearest subreaper: the
//! runner's main thread. `main` runs the whole program on the runtime's worker threads,
//! so the main thread starts no process itself and its children are exactly the adopted
//! orphans. They are listed by reading `/proc/self/task/<pid>/children` through a
//! descriptor opened once and re-read from offset 0: the check at the end of every unit
//! is one `pread` of the runner's own entry, no `open`, no directory listing, and never
//! a file of a unit's process.
//!
//! Whose is an orphan? One that carries a unit's token belongs to that unit. One that
//! cleared its environment (`env -i setsid …`) belongs to the unit that is ending if it
//! started after that unit did: with several units running at once it may be ascribed
//! to the first of them to end. Either way it is reported as a leak and killed, with its
//! process group and its descendants; at the end of the run [`sweep_adopted`] stops
//! whatever was adopted since the runner became a subreaper.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::outcome::LeakedProcess;
use super::procfs::{self, ProcInfo};
use super::registry::{self, registry};
use super::unix;

/// The main thread's `children` file, opened on first use (`None` without it).
fn children_file() -> Option<&'static File> {
    static FILE: OnceLock<Option<File>> = OnceLock::new();
    FILE.get_or_init(|| File::open(format!("/proc/self/task/{}/children", std::process::id())).ok())
        .as_ref()
}

/// Pids of the runner's adopted orphans, zombies included; empty unless the runner is a
/// child subreaper.
pub(crate) fn adopted() -> Vec<u32> {
    if !registry::is_subreaper() {
        return Vec::new();
    }
    let Some(file) = children_file() else {
        // No `children` files (CONFIG_PROC_CHILDREN): the runner's children from a scan.
        let me = std::process::id();
        let leaders = registry().leaders.clone();
        return procfs::snapshot()
            .into_iter()
            .filter(|p| p.ppid == me && !leaders.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
    };
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match file.read_at(&mut buf, text.len() as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    text.split(|b| b.is_ascii_whitespace())
        .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .collect()
}

/// The live adopted orphans that are the unit's (marked `token`, started at or after
/// `since` in clock ticks after boot; see the module docs), after reaping those that
/// died. Reads `/proc` only when something was adopted.
pub(crate) fn adopted_by_unit(token: &str, since: u64) -> Vec<ProcInfo> {
    let pids = adopted();
    if pids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let (leaders, others): (HashSet<u32>, HashSet<String>) = {
        let reg = registry();
        let others = reg.tokens.values().filter(|t| *t != token).cloned();
        (reg.leaders.clone(), others.collect())
    };
    pids.into_iter()
        .filter(|pid| !leaders.contains(pid))
        // Orphans that already died (a killed unit's children) are reaped here.
        .filter(|pid| !unix::reap_nohang(*pid))
        .filter_map(procfs::read_stat)
        .filter(|p| p.ppid == me && p.is_live())
        .filter(|p| {
            let environ = procfs::read_environ(p.pid);
            match procfs::token_in_environ(&environ) {
                Some(t) if t == token.as_bytes() => true,
                // Another running unit's: that unit's end deals with it.
                Some(t) if others.iter().any(|o| o.as_bytes() == t) => false,
                _ => p.start_time >= since,
            }
        })
        .collect()
}

/// Adopted orphans (`roots`), their process groups and descendants, as the terminate
/// sequence's targets. Found by a scan of `/proc` (this is the slow path).
pub(crate) struct OrphanTrees {
    roots: Vec<ProcInfo>,
    warned: HashSet<(u32, u64)>,
}

impl OrphanTrees {
    pub(crate) fn new(roots: Vec<ProcInfo>) -> Self {
        Self {
            roots,
            warned: HashSet::new(),
        }
    }

    /// Every live process of the trees now.
    pub(crate) fn members(&self) -> Vec<ProcInfo> {
        let all = procfs::scan();
        let me = std::process::id();
        let mut members: HashSet<u32> = HashSet::new();
        for root in &self.roots {
            if all
                .iter()
                .any(|p| p.pid == root.pid && p.start_time == root.start_time)
            {
                members.insert(root.pid);
                members.extend(all.iter().filter(|p| p.pgrp == root.pid).map(|p| p.pid));
            }
        }
        let mut stack: Vec<u32> = members.iter().copied().collect();
        while let Some(pid) = stack.pop() {
            for p in all.iter().filter(|p| p.ppid == pid) {
                if p.pid != me && members.insert(p.pid) {
                    stack.push(p.pid);
                }
            }
        }
        all.into_iter()
            .filter(|p| members.contains(&p.pid) && p.is_live() && p.pid > 1 && p.pid != me)
            .collect()
    }

    /// What a leak report says about them (read before they are killed).
    pub(crate) fn describe_leaks(&self) -> Vec<LeakedProcess> {
        self.members()
            .into_iter()
            .map(|p| LeakedProcess {
                pid: p.pid,
                cmdline: procfs::cmdline(p.pid),
            })
            .collect()
    }

    /// Reaps the roots that died (they are the runner's children).
    fn reap(&self) {
        for root in &self.roots {
            unix::reap_nohang(root.pid);
        }
    }
}

impl unix::Targets for OrphanTrees {
    type Proc = ProcInfo;

    fn scan(&self) -> impl std::future::Future<Output = Vec<ProcInfo>> + Send {
        let members = self.members();
        async move { members }
    }

    fn term(&mut self, found: &[ProcInfo]) {
        for p in found {
            if self.warned.insert((p.pid, p.start_time)) {
                unix::signal_process(p, Signal::SIGTERM);
                unix::signal_process(p, Signal::SIGCONT);
            }
        }
    }

    fn kill(&mut self, found: &[ProcInfo]) {
        for p in found {
            unix::signal_process(p, Signal::SIGKILL);
        }
    }

    fn describe(&self, found: &[ProcInfo]) -> String {
        let pids: Vec<u32> = found.iter().map(|p| p.pid).collect();
        format!("adopted orphans: {pids:?}")
    }
}

/// Stops the orphan trees (SIGTERM, up to `grace`, SIGKILL) and reaps their roots.
pub(crate) async fn stop(mut trees: OrphanTrees, grace: Duration) {
    unix::terminate_targets(&mut trees, grace, std::future::pending()).await;
    trees.reap();
    reap_adopted_orphans();
}

/// Stops every live orphan adopted since the runner became a child subreaper, with
/// their descendants, and reaps what it can. For the end of a run: nothing the run
/// started survives it. Returns what was stopped.
pub async fn sweep_adopted(grace: Duration) -> Vec<LeakedProcess> {
    let since = registry::subreaper_since();
    let me = std::process::id();
    let leaders = registry().leaders.clone();
    let roots: Vec<ProcInfo> = adopted()
        .into_iter()
        .filter(|pid| !leaders.contains(pid))
        .filter_map(procfs::read_stat)
        .filter(|p| p.ppid == me && p.is_live() && p.start_time >= since)
        .collect();
    if roots.is_empty() {
        reap_adopted_orphans();
        return Vec::new();
    }
    let trees = OrphanTrees::new(roots);
    let stopped = trees.describe_leaks();
    tracing::warn!(
        count = stopped.len(),
        "processes adopted during the run were still alive at its end; stopping them"
    );
    stop(trees, grace).await;
    stopped
}

/// Reaps adopted orphans that have exited: `waitpid(pid, WNOHANG)` on each child of the
/// runner's main thread that is not a unit leader. Returns how many were reaped.
///
/// One read of the runner's own `children` file, no scan.
pub fn reap_adopted_orphans() -> usize {
    let leaders = registry().leaders.clone();
    adopted()
        .into_iter()
        .filter(|pid| !leaders.contains(pid))
        .filter(|pid| unix::reap_nohang(*pid))
        .count()
}
