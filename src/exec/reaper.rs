//! The runner as a child subreaper: adopting and reaping orphans without stealing the
//! exit status of anyone else's child.
//!
//! With `PR_SET_CHILD_SUBREAPER` (see [`become_subreaper`]), a unit's processes whose
//! parent dies are reparented to the runner instead of init. They stay visible (their
//! `ppid` is ours), and when they die they become *our* zombies, which only we can reap.
//!
//! Reaping must never take the status of a child someone else is waiting for: tokio
//! waits on each unit leader, and other parts of the runner (services, external agents,
//! `cargo nextest list`) spawn children of their own. `waitpid(-1)` is therefore never
//! used. A pid whose parent is the runner is reaped only with evidence that it belongs
//! to a unit, kept in a registry:
//!
//! * **leaders**: the main process of every unit being run. Never reaped here: tokio owns
//!   their status.
//! * **units**: process group id → token of every unit spawned and not yet retired. A
//!   zombie keeps its process group in `/proc/PID/stat`, so "its group is a unit's" is
//!   evidence even after death. A unit is retired once it has finished and no process of
//!   its group is left; before that, its group id cannot be reused (see `unix.rs`).
//! * **seen**: `(pid, start time)` of processes found in a unit while they were alive
//!   (by [`unit_processes`](super::unit_processes), and by the adoption scan here, which
//!   reads the token of live adopted processes). This covers escapees that left the group;
//!   the start time makes a reused pid harmless.
//!
//! Spawning a unit and registering its leader happen under the registry lock, so a reap
//! pass never sees a new leader unregistered.
//!
//! What this cannot do: reap a zombie that left its unit's group *and* was never seen
//! alive by a scan (a short-lived `setsid` child that died before any scan), or one that
//! cleared its environment. Those stay zombies until the runner exits. The one residual
//! race: a finished unit's group empties, its id is reused by another child of the runner
//! that makes itself a group leader, before the next pass retires the unit. That needs
//! the kernel's cyclic pid allocator to wrap around `pid_max` in between.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::procfs;
use super::registry::{self, Registry, UnitRecord, registry};
use super::unix;

/// Makes the runner a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`) on Linux; does
/// nothing elsewhere. Affects the whole process, for the rest of its life: call it once at
/// startup. Orphans adopted this way are reaped by [`reap_adopted_orphans`].
///
/// # Errors
///
/// The `prctl` error, if the kernel refuses (it does not in practice).
pub fn become_subreaper() -> io::Result<()> {
    unix::set_child_subreaper()?;
    registry::set_subreaper(cfg!(target_os = "linux"));
    Ok(())
}

/// Spawns a unit leader and registers it (leader and group) under the registry lock.
pub(crate) fn spawn_registered<T>(
    token: &str,
    spawn: impl FnOnce() -> io::Result<(T, u32)>,
) -> io::Result<(T, u32)> {
    let mut reg = registry();
    let (child, pid) = spawn()?;
    reg.leaders.insert(pid);
    reg.units.insert(
        pid,
        UnitRecord {
            token: token.to_string(),
            running: true,
        },
    );
    Ok((child, pid))
}

/// The leader `pid` has been reaped by its owner: from now on it is no longer protected.
pub(crate) fn leader_reaped(pid: u32) {
    registry().leaders.remove(&pid);
}

/// `run_unit` is done with the unit of group `pgid`: it is retired once its group is empty.
pub(crate) fn unit_finished(pgid: u32) {
    if let Some(unit) = registry().units.get_mut(&pgid) {
        unit.running = false;
    }
}

/// Reaps adopted orphans: `waitpid(pid, WNOHANG)` on each child of the runner that is
/// not a unit leader and that belongs to a unit (see the module docs). Returns how many
/// were reaped.
///
/// Cheap (one [`procfs::scan`]). Call it after every unit ends (`run_unit` does)
/// and periodically ([`reap_orphans_until`]).
pub fn reap_adopted_orphans() -> usize {
    let me = std::process::id();
    let all = procfs::scan();
    let mut reg = registry();
    let Registry {
        leaders,
        units,
        seen,
    } = &mut *reg;
    let mut reaped = 0;
    for p in all
        .iter()
        .filter(|p| p.ppid == me && !leaders.contains(&p.pid))
    {
        if units.contains_key(&p.pgrp) || seen.contains(&(p.pid, p.start_time)) {
            // A live one makes this a no-op; it is reaped on a later pass once it dies.
            if unix::reap_nohang(p.pid) {
                reaped += 1;
            }
        } else if p.is_live() {
            // Adopted after leaving its group: recognise it by its token while it is
            // alive (a zombie's environment can no longer be read).
            let environ = procfs::read_environ(p.pid);
            if let Some(token) = procfs::token_in_environ(&environ)
                && units.values().any(|u| u.token.as_bytes() == token)
            {
                seen.insert((p.pid, p.start_time));
            }
        }
    }
    // Forget what no longer exists; retire finished units whose group is empty.
    let present: HashSet<(u32, u64)> = all.iter().map(|p| (p.pid, p.start_time)).collect();
    seen.retain(|id| present.contains(id));
    let groups: HashSet<u32> = all.iter().map(|p| p.pgrp).collect();
    units.retain(|pgid, unit| unit.running || leaders.contains(pgid) || groups.contains(pgid));
    reaped
}

/// Runs [`reap_adopted_orphans`] on every SIGCHLD and at least every `period`, until
/// `shutdown` is cancelled. Spawn it once next to [`become_subreaper`].
pub async fn reap_orphans_until(period: Duration, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigchld = signal(SignalKind::child()).ok();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
            Some(()) = async {
                match sigchld.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let _ = tokio::task::spawn_blocking(reap_adopted_orphans).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn never_reaps_a_child_that_is_not_a_units() {
        // A plain child of the test process, exited but not waited for: it is ours only
        // by ppid, with no unit evidence. The reaper must leave its status to its owner.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exit 7")
            .spawn()
            .unwrap();
        let pid = child.id();
        while procfs::read_stat(pid).is_some_and(|p| p.is_live()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        reap_adopted_orphans();
        assert_eq!(child.wait().unwrap().code(), Some(7));
    }

    #[test]
    fn registered_leaders_are_left_to_their_owner() {
        let (mut child, pid) = spawn_registered("reaper-test-token", || {
            let c = Command::new("/bin/sh").arg("-c").arg("exit 3").spawn()?;
            let pid = c.id();
            Ok((c, pid))
        })
        .unwrap();
        while procfs::read_stat(pid).is_some_and(|p| p.is_live()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The leader is in its own registered "group" only by pid here (no process_group),
        // but the leader registry alone must protect it.
        reap_adopted_orphans();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        leader_reaped(pid);
        unit_finished(pid);
        reap_adopted_orphans();
        assert!(!registry().units.contains_key(&pid) || procfs::read_stat(pid).is_some());
    }
}
