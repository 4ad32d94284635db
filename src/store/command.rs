//! `runner history [--slowest N] [--flaky] [--json]`: the slowest and the flakiest units.
//!
//! Without `--slowest` or `--flaky` both lists are shown (ten units each). Figures come
//! from the results history keeps ([`super::KEEP_RESULTS_PER_UNIT`] per unit).

use std::path::Path;

use serde_json::json;

use super::{History, UnitStats};
use crate::exit_code;
use crate::report::out::{self, Listed, outln};

/// Default length of each list.
pub const DEFAULT_TOP: usize = 10;

/// What `runner history` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The slowest N units (None: not asked).
    pub slowest: Option<usize>,
    /// The flakiest units.
    pub flaky: bool,
    /// JSON instead of text.
    pub json: bool,
}

impl Request {
    /// (slowest N, flaky N) to show: what was asked, or both by default.
    fn lists(&self) -> (Option<usize>, Option<usize>) {
        match (self.slowest, self.flaky) {
            (None, false) => (Some(DEFAULT_TOP), Some(DEFAULT_TOP)),
            (s, f) => (s, f.then_some(s.unwrap_or(DEFAULT_TOP))),
        }
    }
}

/// The slowest units by the median duration of their passing runs, longest first (ties
/// by id). Units that never passed are left out: their median is of failures (a timeout,
/// a crash), which says nothing of how long the unit takes.
pub fn slowest(stats: &[UnitStats], n: usize) -> Vec<&UnitStats> {
    let mut v: Vec<&UnitStats> = stats
        .iter()
        .filter(|s| s.passed > 0 && s.median_ms.is_some())
        .collect();
    v.sort_by(|a, b| b.median_ms.cmp(&a.median_ms).then(a.unit.cmp(&b.unit)));
    v.truncate(n);
    v
}

/// The flakiest units: flaky passes and failures of units that also pass; most first.
pub fn flakiest(stats: &[UnitStats], n: usize) -> Vec<&UnitStats> {
    let mut v: Vec<&UnitStats> = stats.iter().filter(|s| s.flakiness() > 0).collect();
    v.sort_by(|a, b| {
        b.flakiness()
            .cmp(&a.flakiness())
            .then(b.failure_rate.total_cmp(&a.failure_rate))
            .then(a.unit.cmp(&b.unit))
    });
    v.truncate(n);
    v
}

fn secs(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.3}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn table(rows: &[&UnitStats]) -> Vec<String> {
    let mut out = vec![format!(
        "  {:>9} {:>9} {:>5} {:>6} {:>5} {:>8}  unit",
        "median", "mean", "runs", "fail%", "flaky", "peakMiB"
    )];
    for s in rows {
        out.push(format!(
            "  {:>9} {:>9} {:>5} {:>5.0}% {:>5} {:>8}  {}",
            secs(s.median_ms),
            secs(s.mean_ms),
            s.runs,
            s.failure_rate * 100.0,
            s.flaky,
            s.peak_memory_mb
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            s.unit
        ));
    }
    out
}

/// Runs the subcommand for the project at `root`; returns the exit code.
pub fn run(root: &Path, req: Request) -> i32 {
    out::listing(|| write(root, req))
}

fn write(root: &Path, req: Request) -> Listed {
    let path = super::path(root);
    let history = match History::open_existing(&path) {
        Ok(Some(h)) => h,
        Ok(None) => {
            if req.json {
                outln!(
                    "{}",
                    json!({ "path": path, "runs": 0, "slowest": [], "flaky": [] })
                )?;
            } else {
                outln!(
                    "no history yet: {} does not exist (it is written at the end of every run)",
                    path.display()
                )?;
            }
            return Ok(exit_code::PASSED);
        }
        Err(e) => {
            eprintln!("error: history: {e}");
            return Ok(exit_code::INFRASTRUCTURE);
        }
    };
    let read = || -> Result<_, super::StoreError> {
        let units = history.all_units()?;
        Ok((history.run_count()?, history.runs(1)?, units))
    };
    let (runs, last, units) = match read() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: history: {e}");
            return Ok(exit_code::INFRASTRUCTURE);
        }
    };
    let mut stats: Vec<UnitStats> = units.iter().map(|(id, h)| UnitStats::of(id, h)).collect();
    stats.sort_by(|a, b| a.unit.cmp(&b.unit));
    let (slow_n, flaky_n) = req.lists();
    let slow = slow_n.map(|n| slowest(&stats, n));
    let flaky = flaky_n.map(|n| flakiest(&stats, n));
    if req.json {
        let v = json!({
            "path": path,
            "runs": runs,
            "units": stats.len(),
            "keep_results_per_unit": super::KEEP_RESULTS_PER_UNIT,
            "last_run": last.first(),
            "slowest": slow,
            "flaky": flaky,
        });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())?;
        return Ok(exit_code::PASSED);
    }
    let mut out = vec![format!(
        "history: {} · {runs} run(s) · {} unit(s) · last {} results per unit",
        path.display(),
        stats.len(),
        super::KEEP_RESULTS_PER_UNIT
    )];
    if let Some(r) = last.first() {
        out.push(format!(
            "last run: {} ({}{}, {}) started {} · {} units, {} failed{}",
            r.run_id,
            r.mode,
            r.partition
                .as_deref()
                .map(|p| format!(", shard {p}"))
                .unwrap_or_default(),
            r.outcome.as_deref().unwrap_or("unfinished"),
            r.started_at,
            r.units,
            r.failed,
            r.duration_ms
                .map(|d| format!(" · {:.1}s", d as f64 / 1000.0))
                .unwrap_or_default()
        ));
    }
    if let Some(rows) = slow {
        out.push(String::new());
        out.push(format!(
            "slowest {} unit(s), by median duration of passing runs (units that never passed are left out):",
            rows.len()
        ));
        out.extend(table(&rows));
    }
    if let Some(rows) = flaky {
        out.push(String::new());
        if rows.is_empty() {
            out.push(
                "flaky units: none (no unit both passed and failed, or passed on a retry)".into(),
            );
        } else {
            out.push(format!(
                "flakiest {} unit(s): passed on a retry, or both passed and failed:",
                rows.len()
            ));
            out.extend(table(&rows));
        }
    }
    for l in out {
        outln!("{l}")?;
    }
    Ok(exit_code::PASSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(unit: &str, median: u64, passed: usize, failed: usize, flaky: usize) -> UnitStats {
        UnitStats {
            unit: unit.into(),
            runs: passed + failed,
            passed,
            failed,
            flaky,
            failure_rate: failed as f64 / (passed + failed).max(1) as f64,
            mean_ms: Some(median),
            median_ms: Some(median),
            peak_memory_mb: None,
            last_outcome: "passed".into(),
        }
    }

    #[test]
    fn lists_sort_by_median_and_by_flakiness() {
        let stats = vec![
            stat("a", 100, 5, 0, 0),
            stat("b", 3000, 5, 0, 0),
            stat("c", 200, 3, 2, 1),
            stat("d", 50, 0, 5, 0),
            stat("e", 3000, 4, 0, 1),
            stat("never_passed", 9000, 0, 3, 0),
        ];
        let ids = |v: Vec<&UnitStats>| v.iter().map(|s| s.unit.clone()).collect::<Vec<_>>();
        assert_eq!(ids(slowest(&stats, 3)), vec!["b", "e", "c"]);
        // Ranked by passing runs only: a unit that always times out is not "slow".
        assert_eq!(ids(slowest(&stats, 10)), vec!["b", "e", "c", "a"]);
        // c: 1 flaky + 2 failures while also passing; d always fails: not flaky.
        assert_eq!(ids(flakiest(&stats, 10)), vec!["c", "e"]);
        let r = |slowest, flaky| Request {
            slowest,
            flaky,
            json: false,
        };
        assert_eq!(r(None, false).lists(), (Some(10), Some(10)));
        assert_eq!(r(Some(3), false).lists(), (Some(3), None));
        assert_eq!(r(None, true).lists(), (None, Some(10)));
        assert_eq!(r(Some(3), true).lists(), (Some(3), Some(3)));
    }
}
