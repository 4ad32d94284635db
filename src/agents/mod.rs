//! The five agents the master controller supervises, and what they share: health.
//!
//! - [`test_orchestrator`]: plans the run; judges a layer against its success criteria
//!   ([`test_orchestrator::evaluate`], applied by the dispatcher).
//! - [`layer_executor`]: runs a layer's units with modes, limits, retries, timeouts,
//!   behind a [`layer_worker`] the dispatcher commands; `pytest_batches` runs the test
//!   ids of a `pytest:` category in batches, one pytest process each.
//! - background_e2e: runs background layers alongside the foreground, at a lower
//!   priority: a [`layer_worker`] of its own that the dispatcher commands.
//! - [`progress_streamer`]: console and JSON-lines output from the event stream.
//! - [`resource_manager`]: slots and memory budgets; admits every unit.
//! - [`external`]: external agents from `agents/*.yaml` with a `command:`.
//!
//! Every agent is a long-lived task behind a handle, with a [`Health`] record its own
//! loop writes (a heartbeat per tick of that loop, errors as they happen); the
//! dispatcher watches them and reports changes as `agent_health` events.

pub mod external;
pub mod layer_executor;
pub mod layer_run;
pub mod layer_worker;
pub mod progress_streamer;
mod pytest_batches;
pub mod resource_manager;
pub mod test_orchestrator;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::HealthStatus;

/// Agent names, as they appear in events.
pub mod names {
    /// The controller itself.
    pub const CONTROLLER: &str = "master_controller";
    /// TestOrchestratorAgent.
    pub const ORCHESTRATOR: &str = "test_orchestrator";
    /// LayerExecutorAgent.
    pub const EXECUTOR: &str = "layer_executor";
    /// BackgroundE2EAgent.
    pub const BACKGROUND: &str = "background_e2e";
    /// ProgressStreamerAgent.
    pub const STREAMER: &str = "progress_streamer";
    /// ResourceManagerAgent.
    pub const RESOURCES: &str = "resource_manager";
    /// All five, in start order.
    pub const ALL: [&str; 5] = [RESOURCES, STREAMER, ORCHESTRATOR, EXECUTOR, BACKGROUND];
}

/// A point-in-time health report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    /// Agent name.
    pub name: String,
    /// Status.
    pub status: HealthStatus,
    /// Seconds since the last heartbeat, when the report was made.
    pub last_heartbeat_secs: f64,
    /// Wall-clock time of the last heartbeat, ms since the Unix epoch: lets a later
    /// reader (another process) compute the heartbeat's age.
    #[serde(default)]
    pub last_heartbeat_unix_ms: u64,
    /// Errors so far.
    pub error_count: u64,
    /// Last error.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct HealthInner {
    status: HealthStatus,
    last_heartbeat: Instant,
    error_count: u64,
    last_error: Option<String>,
}

/// An agent's health record, written by the agent, read by the controller.
#[derive(Debug)]
pub struct Health {
    name: &'static str,
    inner: Mutex<HealthInner>,
    stale_after_ms: std::sync::atomic::AtomicU64,
}

impl Health {
    /// A new record in state `initialized`.
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            inner: Mutex::new(HealthInner {
                status: HealthStatus::Initialized,
                last_heartbeat: Instant::now(),
                error_count: 0,
                last_error: None,
            }),
            stale_after_ms: std::sync::atomic::AtomicU64::new(5000),
        })
    }

    /// No heartbeat for this long makes the agent `stale` (its manifest's `stale_after_ms`).
    pub fn set_stale_after(&self, after: Duration) {
        self.stale_after_ms.store(
            after.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The staleness threshold.
    pub fn stale_after(&self) -> Duration {
        Duration::from_millis(
            self.stale_after_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The agent's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The agent is alive. A stale agent that heartbeats again is healthy.
    pub fn heartbeat(&self) {
        let mut h = self.inner.lock().expect("health lock");
        h.last_heartbeat = Instant::now();
        if matches!(h.status, HealthStatus::Initialized | HealthStatus::Stale) {
            h.status = HealthStatus::Healthy;
        }
    }

    /// Running with reduced function.
    pub fn degrade(&self, why: impl Into<String>) {
        let mut h = self.inner.lock().expect("health lock");
        h.status = HealthStatus::Degraded;
        h.error_count += 1;
        h.last_error = Some(why.into());
    }

    /// Record an error without changing the status.
    pub fn error(&self, why: impl Into<String>) {
        let mut h = self.inner.lock().expect("health lock");
        h.error_count += 1;
        h.last_error = Some(why.into());
    }

    /// Set the status.
    pub fn set(&self, status: HealthStatus) {
        self.inner.lock().expect("health lock").status = status;
    }

    /// Mark stale when no heartbeat came for `after`; returns the current report.
    pub fn check(&self, after: Duration) -> HealthReport {
        let mut h = self.inner.lock().expect("health lock");
        let age = h.last_heartbeat.elapsed();
        if age > after && matches!(h.status, HealthStatus::Healthy) {
            h.status = HealthStatus::Stale;
        }
        HealthReport {
            name: self.name.to_string(),
            status: h.status,
            last_heartbeat_secs: age.as_secs_f64(),
            last_heartbeat_unix_ms: unix_ms(std::time::SystemTime::now())
                .saturating_sub(age.as_millis() as u64),
            error_count: h.error_count,
            last_error: h.last_error.clone(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running agent: its health, its stop signal and its task.
pub struct AgentHandle {
    /// Health record.
    pub health: Arc<Health>,
    /// Cancelled to ask the agent to stop.
    pub shutdown: CancellationToken,
    /// The agent's task.
    pub task: JoinHandle<()>,
}

impl AgentHandle {
    /// Ask the agent to stop and wait for it (bounded); a task that does not stop is aborted.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            abort.abort();
            self.health.error("did not stop within 5s; aborted");
        }
        self.health.set(HealthStatus::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_stale_and_recovery() {
        let h = Health::new("x");
        assert_eq!(
            h.check(Duration::from_secs(60)).status,
            HealthStatus::Initialized
        );
        h.heartbeat();
        assert_eq!(
            h.check(Duration::from_secs(60)).status,
            HealthStatus::Healthy
        );
        assert_eq!(h.check(Duration::ZERO).status, HealthStatus::Stale);
        h.heartbeat();
        assert_eq!(
            h.check(Duration::from_secs(60)).status,
            HealthStatus::Healthy
        );
        h.degrade("no sampling");
        let r = h.check(Duration::ZERO);
        assert_eq!((r.status, r.error_count), (HealthStatus::Degraded, 1));
    }

    #[test]
    fn reports_carry_the_wall_clock_time_of_the_last_heartbeat() {
        let h = Health::new("x");
        h.heartbeat();
        let before = unix_ms(std::time::SystemTime::now());
        let r = &h.check(h.stale_after());
        let after = unix_ms(std::time::SystemTime::now());
        assert!(
            r.last_heartbeat_unix_ms <= after && r.last_heartbeat_unix_ms + 1000 >= before,
            "{r:?}"
        );
        let back: HealthReport = serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
        assert_eq!(back.last_heartbeat_unix_ms, r.last_heartbeat_unix_ms);
    }
}
