//! The reaper's evidence, shared by the scans that gather it and the reaper that uses it
//! (see `reaper` for the rules): unit leaders, units by process group, processes seen
//! alive in a unit, and whether the runner is a child subreaper. A leaf: it imports
//! nothing of `exec`, so `procfs` (which notes what it finds) and `reaper` (which reaps
//! by it) do not depend on each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// A unit known to the reaper.
#[derive(Debug)]
pub(super) struct UnitRecord {
    /// The unit's `RUNNER_UNIT_TOKEN` value.
    pub(super) token: String,
    /// True until `run_unit` has finished with it.
    pub(super) running: bool,
}

/// The evidence used to decide what may be reaped (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Unit leaders whose status tokio is waiting for.
    pub(super) leaders: HashSet<u32>,
    /// Units by process group id.
    pub(super) units: HashMap<u32, UnitRecord>,
    /// `(pid, start_time)` of processes seen alive inside a unit.
    pub(super) seen: HashSet<(u32, u64)>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

pub(super) fn registry() -> MutexGuard<'static, Registry> {
    // The registry holds plain sets; a panic elsewhere cannot leave it inconsistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Set once the runner became a child subreaper: unit scans may then stay in the
/// runner's subtree.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// True when this process is a child subreaper.
pub(crate) fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
}

pub(super) fn set_subreaper(on: bool) {
    SUBREAPER.store(on, Ordering::Relaxed);
}

/// Remembers processes (`(pid, start time)`) found alive in a registered unit.
pub(super) fn note_members(pgid: u32, procs: impl IntoIterator<Item = (u32, u64)>) {
    let mut reg = registry();
    if reg.units.contains_key(&pgid) {
        reg.seen.extend(procs);
    }
}
