//! From the configuration to budgets: global and per-layer slots and memory, the
//! admission estimate of a unit, and the budgets as `--orchestration-status` shows them.
//!
//! `max_cpu_percent` is a share of the machine's cores and turns into slots: at most
//! ceil(cores × percent / 100) units at once (at least one), globally
//! ([`crate::runner::slots`]) and per layer ([`layer_slots`]).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{LayerBudget, ResourceSettings};
use crate::config::{Config, Layer, ResourceLimits};

/// The number of cores the runner may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Slots allowed by a share of `cores`, in percent: ceil(cores × percent / 100), at least 1.
pub fn cpu_slots(cores: usize, percent: u32) -> usize {
    ((cores as u64 * u64::from(percent)).div_ceil(100)).max(1) as usize
}

/// A layer's slot cap: its `max_parallel_instances` and its `max_cpu_percent` share of
/// the cores, whichever is smaller (`None`: no cap of its own).
pub fn layer_slots(limits: &ResourceLimits, cores: usize) -> Option<usize> {
    let cpu = limits.max_cpu_percent.map(|p| cpu_slots(cores, p));
    match (limits.max_parallel_instances, cpu) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl ResourceSettings {
    /// The budgets of a run of `layers` with `slots` global slots.
    pub fn from_config<'a>(
        config: &Config,
        slots: usize,
        layers: impl IntoIterator<Item = &'a Layer>,
    ) -> Self {
        let cores = cores();
        let rm = &config.agents.resource_manager;
        Self {
            slots,
            memory_budget_mb: config.execution.max_memory_mb,
            layers: layers
                .into_iter()
                .map(|l| {
                    let budget = LayerBudget {
                        slots: layer_slots(&l.resource_limits, cores),
                        memory_mb: l.resource_limits.max_memory_mb,
                    };
                    (l.name.clone(), budget)
                })
                .filter(|(_, b)| b.slots.is_some() || b.memory_mb.is_some())
                .collect::<HashMap<_, _>>(),
            bypass_window: Duration::from_millis(rm.bypass_window_ms),
            sample_interval: Duration::from_millis(rm.sample_interval_ms.max(10)),
            memory_pressure_percent: rm.memory_pressure_percent,
            background_slots: Some(
                config
                    .execution
                    .background_max_slots
                    .unwrap_or(slots.saturating_sub(1))
                    .clamp(1, slots.max(1)),
            ),
        }
    }
}

/// What the admission estimate of a unit is made of.
#[derive(Debug, Clone, Copy, Default)]
pub struct EstimateInputs {
    /// The category's `min_memory_mb`.
    pub declared_mb: Option<u64>,
    /// The unit's peak measured earlier in this run (an earlier attempt).
    pub peak_this_run_mb: Option<u64>,
    /// The unit's peak in past runs (history; `None` until history feeds it).
    pub history_mb: Option<u64>,
    /// The category's `max_memory_mb`: a unit is never estimated above its hard limit.
    pub limit_mb: Option<u64>,
}

/// The admission estimate: the largest of what is declared and what was measured,
/// capped by the hard limit (a unit cannot legitimately use more).
pub fn memory_estimate(inputs: &EstimateInputs) -> u64 {
    let est = [
        inputs.declared_mb,
        inputs.peak_this_run_mb,
        inputs.history_mb,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    match inputs.limit_mb {
        Some(limit) => est.min(limit),
        None => est,
    }
}

/// The budgets of a configuration, for `--orchestration-status`.
pub fn budgets_view(config: &Config, slots: usize) -> Value {
    let cores = cores();
    let rm = &config.agents.resource_manager;
    json!({
        "cores": cores,
        "slots": slots,
        "max_memory_mb": config.execution.max_memory_mb,
        "max_cpu_percent": config.execution.max_cpu_percent,
        "sample_interval_ms": rm.sample_interval_ms,
        "memory_pressure_percent": rm.memory_pressure_percent,
        "layers": config.layers.iter().map(|l| json!({
            "name": l.name,
            "slots": layer_slots(&l.resource_limits, cores),
            "max_memory_mb": l.resource_limits.max_memory_mb,
            "max_cpu_percent": l.resource_limits.max_cpu_percent,
            "max_parallel_instances": l.resource_limits.max_parallel_instances,
        })).collect::<Vec<_>>(),
        "categories": config.categories.values().map(|c| json!({
            "name": c.name,
            "max_parallel_instances": c.max_parallel_instances,
            "min_memory_mb": c.min_memory_mb,
            "max_memory_mb": c.max_memory_mb,
            "rlimit_as_mb": c.rlimit_as_mb,
        })).collect::<Vec<_>>(),
    })
}

/// The last `resource_sample` of a run's `events.jsonl` (read from its tail), for
/// showing a run in progress.
pub fn last_sample(events: &std::path::Path) -> Option<Value> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 * 1024;
    let mut f = std::fs::File::open(events).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .lines()
        .rev()
        .filter(|l| l.contains("\"resource_sample\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "resource_sample")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_turns_into_slots() {
        assert_eq!(cpu_slots(16, 50), 8);
        assert_eq!(cpu_slots(2, 25), 1, "rounded up, at least one");
        assert_eq!(cpu_slots(2, 1), 1);
        assert_eq!(cpu_slots(4, 100), 4);
        let limits = |cpu, par| ResourceLimits {
            max_memory_mb: None,
            max_cpu_percent: cpu,
            max_parallel_instances: par,
        };
        assert_eq!(layer_slots(&limits(None, None), 8), None);
        assert_eq!(layer_slots(&limits(Some(50), None), 8), Some(4));
        assert_eq!(layer_slots(&limits(Some(50), Some(2)), 8), Some(2));
        assert_eq!(layer_slots(&limits(None, Some(3)), 8), Some(3));
    }

    #[test]
    fn estimate_is_the_largest_known_figure_capped_by_the_limit() {
        let e = |d, p, h, l| {
            memory_estimate(&EstimateInputs {
                declared_mb: d,
                peak_this_run_mb: p,
                history_mb: h,
                limit_mb: l,
            })
        };
        assert_eq!(e(None, None, None, None), 0);
        assert_eq!(e(Some(300), None, None, None), 300);
        assert_eq!(e(Some(300), Some(450), None, None), 450);
        assert_eq!(e(Some(300), Some(450), Some(600), None), 600);
        assert_eq!(e(Some(300), Some(900), None, Some(500)), 500);
    }

    #[test]
    fn last_sample_reads_the_newest_resource_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"seq\":1,\"type\":\"resource_sample\",\"running\":1}\n",
                "{\"seq\":2,\"type\":\"resource_sample\",\"running\":2}\n",
                "{\"seq\":3,\"type\":\"test_started\",\"unit\":\"resource_sample\"}\n",
                "{\"seq\":4,\"type\":\"resource_samp",
            ),
        )
        .unwrap();
        assert_eq!(last_sample(&path).unwrap()["running"], 2);
        assert!(last_sample(&dir.path().join("none")).is_none());
    }
}
