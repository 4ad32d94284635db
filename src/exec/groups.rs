//! Process groups the runner starts outside units (the build and listing of Rust tests
//! during discovery), registered while they live so that an interrupt in that phase
//! can stop them, and everything they started in their group (rustc, build scripts).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

static TRACKED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A registered process group; dropping it unregisters the group.
#[derive(Debug)]
pub struct TrackedGroup(u32);

/// Register process group `pgid` (a child spawned with `process_group(0)`).
pub fn track_group(pgid: u32) -> TrackedGroup {
    TRACKED.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
    TrackedGroup(pgid)
}

impl Drop for TrackedGroup {
    fn drop(&mut self) {
        let mut groups = TRACKED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = groups.iter().position(|g| *g == self.0) {
            groups.swap_remove(at);
        }
    }
}

/// SIGTERM every registered group, wait up to `grace` for them to go, then SIGKILL
/// what is left. Blocking: call it off the async workers.
pub fn terminate_tracked_groups(grace: Duration) {
    let groups = || TRACKED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pgid in groups() {
        super::unix::signal_group(pgid, Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        let alive = groups().into_iter().any(group_has_live_members);
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for pgid in groups() {
        super::unix::signal_group(pgid, Signal::SIGKILL);
    }
}

/// Whether a process of group `pgid` is alive and not a zombie: the runner is a child
/// subreaper, so a killed build's orphans can be its own zombies for a moment, and a
/// group made only of zombies is gone for this purpose. (`kill(-pgid, 0)` counts
/// zombies; this reads `/proc`, on the interrupt path only.)
fn group_has_live_members(pgid: u32) -> bool {
    super::unix::signal_group_alive(pgid)
        && super::procfs::snapshot()
            .iter()
            .any(|p| p.pgrp == pgid && p.state != 'Z')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn an_interrupt_stops_a_tracked_group_and_its_children() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let guard = track_group(pgid);
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        terminate_tracked_groups(Duration::from_secs(2));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(guard);
        // Nothing of the group is left (the background sleep included).
        std::thread::sleep(Duration::from_millis(100));
        assert!(!group_has_live_members(pgid));
    }
}
