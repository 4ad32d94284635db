//! Stopping a running unit from outside: [`StopHandle`] and [`StopReason`].
//!
//! A handle is created before the unit starts and cloned to whoever may stop it: the
//! executor (cancel, layer deadline), the resource manager (memory limit), the Ctrl-C
//! handler. [`run_unit`](super::run_unit) watches it. The first reason wins; later calls
//! are ignored, so concurrent stoppers need no coordination. [`StopHandle::kill_now`]
//! escalates an ongoing stop to SIGKILL without waiting for the grace period (a second
//! Ctrl-C).

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// Why the runner stopped a unit from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The run was cancelled (Ctrl-C, fail-fast, a user's cancel request).
    Cancelled,
    /// The unit's process tree used more memory than its limit.
    MemoryLimit {
        /// The configured limit, in MiB.
        limit_mb: u64,
        /// The resident size observed when the limit was hit, in MiB.
        observed_mb: u64,
    },
    /// A deadline larger than the unit's own timeout passed (layer or run deadline).
    Deadline,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Cancelled => f.write_str("cancelled"),
            StopReason::MemoryLimit {
                limit_mb,
                observed_mb,
            } => write!(
                f,
                "memory limit exceeded ({observed_mb} MiB > {limit_mb} MiB)"
            ),
            StopReason::Deadline => f.write_str("deadline reached"),
        }
    }
}

#[derive(Debug, Default)]
struct StopState {
    reason: Option<StopReason>,
    kill_now: bool,
}

/// A clonable handle to stop one running unit.
///
/// `stop(reason)` is idempotent: the first reason is kept. Stopping before the unit has
/// started is allowed: the unit is then stopped as soon as it is spawned.
#[derive(Debug, Clone)]
pub struct StopHandle {
    state: Arc<watch::Sender<StopState>>,
}

impl Default for StopHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl StopHandle {
    /// A handle that has not been stopped.
    pub fn new() -> Self {
        StopHandle {
            state: Arc::new(watch::Sender::new(StopState::default())),
        }
    }

    /// Asks the unit to stop: SIGTERM, the grace period, then SIGKILL. Only the first
    /// reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        self.state.send_if_modified(|s| {
            if s.reason.is_some() {
                return false;
            }
            s.reason = Some(reason);
            true
        });
    }

    /// Skips the grace period: the unit is killed with SIGKILL now. Without an earlier
    /// [`stop`](Self::stop), this also stops the unit with [`StopReason::Cancelled`].
    pub fn kill_now(&self) {
        self.state.send_if_modified(|s| {
            let changed = !s.kill_now || s.reason.is_none();
            s.reason.get_or_insert(StopReason::Cancelled);
            s.kill_now = true;
            changed
        });
    }

    /// The reason the unit was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.state.borrow().reason.clone()
    }

    /// True once [`kill_now`](Self::kill_now) was called.
    pub fn is_kill_now(&self) -> bool {
        self.state.borrow().kill_now
    }

    /// Resolves with the reason once the unit is asked to stop.
    pub(crate) async fn stopped(&self) -> StopReason {
        let mut rx = self.state.subscribe();
        // The borrow of the state must end before any other await (it is not `Send`).
        let reason = match rx.wait_for(|s| s.reason.is_some()).await {
            Ok(state) => state.reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The sender lives in `self`, so it cannot be dropped while we wait.
            None => std::future::pending().await,
        }
    }

    /// Resolves once [`kill_now`](Self::kill_now) is called (at once if it already was).
    pub(crate) async fn kill_now_requested(&self) {
        let mut rx = self.state.subscribe();
        let closed = rx.wait_for(|s| s.kill_now).await.is_err();
        if closed {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_clones_share_state() {
        let a = StopHandle::new();
        let b = a.clone();
        assert_eq!(a.reason(), None);
        b.stop(StopReason::Deadline);
        a.stop(StopReason::Cancelled);
        assert_eq!(a.reason(), Some(StopReason::Deadline));
        assert_eq!(a.stopped().await, StopReason::Deadline);
        assert!(!a.is_kill_now());
    }

    #[tokio::test]
    async fn kill_now_implies_a_stop_and_wakes_waiters() {
        let h = StopHandle::new();
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move {
                h.kill_now_requested().await;
                h.stopped().await
            })
        };
        tokio::task::yield_now().await;
        h.kill_now();
        assert_eq!(waiter.await.unwrap(), StopReason::Cancelled);
        assert!(h.is_kill_now());
    }

    #[test]
    fn reasons_read_well() {
        let r = StopReason::MemoryLimit {
            limit_mb: 512,
            observed_mb: 700,
        };
        assert_eq!(r.to_string(), "memory limit exceeded (700 MiB > 512 MiB)");
    }
}
