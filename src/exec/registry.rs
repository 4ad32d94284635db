//! What the reaper and the orphan check need to know about the units being run: their
//! leaders (whose exit status tokio owns), their tokens (to tell whose an adopted orphan
//! is), and whether and since when the runner is a child subreaper. A leaf: it imports
//! nothing of `exec`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

/// The units being run (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Unit leaders whose status tokio is waiting for: never reaped by the reaper.
    pub(super) leaders: HashSet<u32>,
    /// The `RUNNER_UNIT_TOKEN` of every running unit, by process group id.
    pub(super) tokens: HashMap<u32, String>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

pub(super) fn registry() -> MutexGuard<'static, Registry> {
    // The registry holds plain sets; a panic elsewhere cannot leave it inconsistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Set once the runner became a child subreaper.
static SUBREAPER: AtomicBool = AtomicBool::new(false);
/// Clock ticks since boot when the runner became a child subreaper.
static SUBREAPER_SINCE: AtomicU64 = AtomicU64::new(0);

/// True when this process is a child subreaper.
pub(crate) fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
}

/// Clock ticks since boot when the runner became a child subreaper (0 if it did not).
pub(super) fn subreaper_since() -> u64 {
    SUBREAPER_SINCE.load(Ordering::Relaxed)
}

pub(super) fn set_subreaper(on: bool, since: u64) {
    if on && !SUBREAPER.swap(true, Ordering::Relaxed) {
        SUBREAPER_SINCE.store(since, Ordering::Relaxed);
    }
}
