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
//! used. Orphans are reparented to the runner's main thread, which starts no process
//! itself (see `orphans`): only the main thread's children are reaped here, each by its
//! pid, and never a registered unit leader.
//!
//! Unit leaders are reaped inline by [`run_unit`](super::run_unit) (it awaits a pidfd),
//! so nothing here runs per unit: [`orphans::reap_adopted_orphans`] is for the slow path (after
//! orphans were stopped), the end of a run, and [`reap_orphans_until`].

use std::io;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::{self, registry};
use super::{orphans, procfs, unix};

/// Makes the runner a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`) on Linux; does
/// nothing elsewhere. Affects the whole process, for the rest of its life: call it once at
/// startup. Orphans adopted this way are reaped by [`orphans::reap_adopted_orphans`].
///
/// # Errors
///
/// The `prctl` error, if the kernel refuses (it does not in practice).
pub fn become_subreaper() -> io::Result<()> {
    unix::set_child_subreaper()?;
    registry::set_subreaper(cfg!(target_os = "linux"), procfs::boot_ticks_now());
    Ok(())
}

/// Spawns a unit leader and registers it (leader and token) under the registry lock, so
/// a reap pass never sees a new leader unregistered.
pub(crate) fn spawn_registered<T>(
    token: &str,
    spawn: impl FnOnce() -> io::Result<(T, u32)>,
) -> io::Result<(T, u32)> {
    let mut reg = registry();
    let (child, pid) = spawn()?;
    reg.leaders.insert(pid);
    reg.tokens.insert(pid, token.to_string());
    Ok((child, pid))
}

/// The leader `pid` has been reaped by its owner: from now on it is no longer protected.
pub(crate) fn leader_reaped(pid: u32) {
    registry().leaders.remove(&pid);
}

/// `run_unit` is done with the unit of group `pgid`.
pub(crate) fn unit_finished(pgid: u32) {
    registry().tokens.remove(&pgid);
}

/// Runs [`orphans::reap_adopted_orphans`] on every SIGCHLD and at least every `period`, until
/// `shutdown` is cancelled.
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
        orphans::reap_adopted_orphans();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn never_reaps_a_child_that_is_not_an_orphan() {
        // A plain child of a test thread, exited but not waited for: it is the runner's
        // by ppid, but not an adopted orphan. Its status stays its owner's.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("exit 7")
            .spawn()
            .unwrap();
        let pid = child.id();
        while procfs::read_stat(pid).is_some_and(|p| p.is_live()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        orphans::reap_adopted_orphans();
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
        orphans::reap_adopted_orphans();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        leader_reaped(pid);
        unit_finished(pid);
        assert!(!registry().tokens.contains_key(&pid));
    }
}
