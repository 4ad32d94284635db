//! Measuring: the system's memory and CPU, and the resident memory of each running
//! unit's whole process tree.
//!
//! [`Probe`] is the seam: the agent samples through it on a blocking thread every
//! `sample_interval_ms`, and tests inject a scripted probe. [`SystemProbe`] is the real
//! one: sysinfo for the system (refreshing only RAM and CPU usage, plus the cgroup's
//! limit when the runner is confined to one), and `/proc` through the exec module for
//! the trees (the unit's process group, its descendants, and escapees carrying its
//! token), so a unit that forks children holding memory is measured as a whole.
//!
//! Sampling is unavailable when sysinfo cannot start, `/proc` cannot be read, or
//! `RUNNER_DISABLE_SAMPLING=1` is set (a switch for tests of the degraded mode).

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

use crate::exec;

/// The environment variable that makes sampling unavailable (for tests).
pub const DISABLE_ENV: &str = "RUNNER_DISABLE_SAMPLING";

const MIB: u64 = 1024 * 1024;

/// System-wide figures of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemSample {
    /// Memory the runner may use at most (the machine's, or its cgroup's limit), MiB.
    pub total_mb: u64,
    /// Memory still available to new work, MiB.
    pub available_mb: u64,
    /// CPU use of the whole system since the previous sample, percent of all cores.
    pub cpu_percent: f32,
}

impl SystemSample {
    /// Available memory as a share of the total, percent.
    pub fn available_percent(&self) -> f64 {
        if self.total_mb == 0 {
            return 100.0;
        }
        self.available_mb as f64 * 100.0 / self.total_mb as f64
    }
}

/// Where samples come from.
pub trait Probe: Send + 'static {
    /// The system's memory and CPU. An error makes the agent degrade to slot-only limits.
    fn system(&mut self) -> Result<SystemSample, String>;
    /// Resident memory of a unit's whole process tree, MiB (`None`: nothing of it is left).
    fn tree_rss_mb(&mut self, pgid: u32, token: &str) -> Option<u64>;
}

/// The real probe: sysinfo and `/proc`.
pub struct SystemProbe {
    sys: System,
}

impl SystemProbe {
    /// A probe, or why sampling is unavailable.
    pub fn new() -> Result<Self, String> {
        if std::env::var_os(DISABLE_ENV).is_some_and(|v| v != "0" && !v.is_empty()) {
            return Err(format!("system sampling disabled by {DISABLE_ENV}"));
        }
        let mut sys = System::new().map_err(|e| format!("system sampling unavailable: {e}"))?;
        if std::fs::metadata("/proc/self/statm").is_err() {
            return Err("system sampling unavailable: /proc cannot be read".into());
        }
        sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        Ok(Self { sys })
    }
}

impl Probe for SystemProbe {
    fn system(&mut self) -> Result<SystemSample, String> {
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.sys
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let mut total = self.sys.total_memory();
        let mut available = self.sys.available_memory();
        if total == 0 {
            return Err("system sampling unavailable: total memory reads as 0".into());
        }
        if let Some(cg) = self.sys.cgroup_limits()
            && cg.total_memory > 0
            && cg.total_memory < total
        {
            total = cg.total_memory;
            available = available.min(cg.free_memory);
        }
        Ok(SystemSample {
            total_mb: total / MIB,
            available_mb: available / MIB,
            cpu_percent: self.sys.global_cpu_usage(),
        })
    }

    fn tree_rss_mb(&mut self, pgid: u32, token: &str) -> Option<u64> {
        let pids = exec::unit_processes(pgid, token);
        if pids.is_empty() {
            return None;
        }
        Some(exec::tree_rss_bytes(&pids) / MIB)
    }
}

/// A running unit to measure: (track id, process group, token).
pub type Target = (u64, u32, String);

/// One sample: the system, and each target's tree (`None`: gone).
#[derive(Debug, Clone)]
pub struct Sample {
    /// System figures.
    pub system: SystemSample,
    /// Per target, its tree's RSS in MiB.
    pub trees: Vec<(u64, Option<u64>)>,
}

/// Take one sample (blocking: reads `/proc`).
pub fn take(probe: &mut dyn Probe, targets: &[Target]) -> Result<Sample, String> {
    let system = probe.system()?;
    let trees = targets
        .iter()
        .map(|(id, pgid, token)| (*id, probe.tree_rss_mb(*pgid, token)))
        .collect();
    Ok(Sample { system, trees })
}

/// Admission pauses under `threshold` percent available and resumes at `threshold`
/// plus this many points, so a run hovering at the line does not flap.
pub const RESUME_MARGIN_PERCENT: f64 = 2.0;

/// The pressure state after a sample: `Some(true)` to throttle, `Some(false)` to
/// resume, `None` to stay as is.
pub fn pressure_change(throttled: bool, available_percent: f64, threshold: f64) -> Option<bool> {
    if threshold <= 0.0 {
        return (throttled).then_some(false);
    }
    if !throttled && available_percent < threshold {
        Some(true)
    } else if throttled && available_percent >= threshold + RESUME_MARGIN_PERCENT {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_has_hysteresis() {
        assert_eq!(pressure_change(false, 50.0, 10.0), None);
        assert_eq!(pressure_change(false, 9.9, 10.0), Some(true));
        assert_eq!(pressure_change(true, 11.0, 10.0), None, "inside the margin");
        assert_eq!(pressure_change(true, 12.0, 10.0), Some(false));
        assert_eq!(pressure_change(true, 1.0, 0.0), Some(false), "0 disables");
        assert_eq!(pressure_change(false, 0.0, 0.0), None);
    }

    #[test]
    fn available_percent_of_total() {
        let s = SystemSample {
            total_mb: 2000,
            available_mb: 500,
            cpu_percent: 0.0,
        };
        assert_eq!(s.available_percent(), 25.0);
    }

    #[test]
    fn the_real_probe_measures_a_process_tree() {
        use std::os::unix::process::CommandExt;
        // Unless a test run disables sampling on purpose.
        let Ok(mut probe) = SystemProbe::new() else {
            return;
        };
        let sys = probe.system().expect("system sample");
        assert!(
            sys.total_mb > 0 && sys.available_mb <= sys.total_mb,
            "{sys:?}"
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let measured = probe.tree_rss_mb(child.id(), "");
        let _ = child.kill();
        let _ = child.wait();
        assert!(measured.is_some(), "a live group is measured");
        assert_eq!(
            probe.tree_rss_mb(child.id(), ""),
            None,
            "a gone group is not"
        );
    }
}
