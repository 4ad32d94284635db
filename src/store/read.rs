//! Reading history: a unit's recent results, and what follows from them.
//!
//! - Expected duration: the median of the recent passing durations (a median, not a
//!   mean, so one slow outlier does not reorder a suite); a unit that never passed in
//!   the window uses the median of its failed attempts that ran to their end.
//! - Memory: the largest peak of the last [`MEMORY_WINDOW`] results (a fixed leak is
//!   forgotten after a few runs, a regular peak is not).
//! - Failed last time: the newest result is a failure.
//! - Left to rerun: the newest result is a failure, a cancellation, a unit the run
//!   never finished, or a skip in a run that did not pass (skipped by fail-fast or an
//!   interruption, not by choice).
//! - Durations for balancing shards (`--partition` with `--durations-from` a history
//!   file): the expected duration from the results of runs that were not themselves
//!   shards only ([`UnitHistory::unsharded`], [`History::unsharded_units`]), so that
//!   what one shard records never changes what the next one balances by.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::params;
use serde::Serialize;

use super::record::{NOT_RUN, SKIPPED};
use super::{History, StoreError};

/// Results that count for the memory estimate.
pub const MEMORY_WINDOW: usize = 5;

/// One recorded result of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitResult {
    /// The run.
    pub run_id: String,
    /// The run's outcome (`passed`, `failed`, `interrupted`, `error`; None if unknown).
    pub run_outcome: Option<String>,
    /// The unit's outcome: an `Outcome` name, `skipped` or `not_run`.
    pub outcome: String,
    /// Its last attempt's duration, ms (attempts that ran to their end only).
    pub duration_ms: Option<u64>,
    /// Attempts started.
    pub attempts: u32,
    /// Passed after a failed attempt.
    pub flaky: bool,
    /// Peak memory of its process tree, MiB.
    pub peak_memory_mb: Option<u64>,
    /// `K/N` when the run was a shard of a partitioned run (`--partition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

impl UnitResult {
    /// Passed.
    pub fn passed(&self) -> bool {
        self.outcome == "passed"
    }

    /// Failed (failed, timeout, crashed, memory_limit, error).
    pub fn failed(&self) -> bool {
        !matches!(
            self.outcome.as_str(),
            "passed" | "cancelled" | SKIPPED | NOT_RUN
        )
    }

    /// Did not finish: cancelled, never finished, or skipped in a run that did not pass.
    pub fn unfinished(&self) -> bool {
        match self.outcome.as_str() {
            "cancelled" | NOT_RUN => true,
            SKIPPED => self.run_outcome.as_deref() != Some("passed"),
            _ => false,
        }
    }
}

/// A unit's recent results, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitHistory {
    /// At most [`super::KEEP_RESULTS_PER_UNIT`], newest first.
    pub results: Vec<UnitResult>,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

impl UnitHistory {
    /// The results of runs that were not shards (`--partition`), newest first: what
    /// balancing shards reads, which no shard's run changes.
    pub fn unsharded(&self) -> UnitHistory {
        UnitHistory {
            results: self
                .results
                .iter()
                .filter(|r| r.partition.is_none())
                .cloned()
                .collect(),
        }
    }

    /// Expected duration of the next run (see the module docs).
    pub fn expected(&self) -> Option<Duration> {
        let passing: Vec<u64> = self
            .results
            .iter()
            .filter(|r| r.passed())
            .filter_map(|r| r.duration_ms)
            .collect();
        let ms = match median(passing) {
            Some(ms) => Some(ms),
            None => median(
                self.results
                    .iter()
                    .filter(|r| r.failed())
                    .filter_map(|r| r.duration_ms)
                    .collect(),
            ),
        };
        ms.map(Duration::from_millis)
    }

    /// Largest peak memory of the last [`MEMORY_WINDOW`] results, MiB.
    pub fn peak_memory_mb(&self) -> Option<u64> {
        self.results
            .iter()
            .take(MEMORY_WINDOW)
            .filter_map(|r| r.peak_memory_mb)
            .max()
    }

    /// The newest result is a failure.
    pub fn failed_last(&self) -> bool {
        self.results.first().is_some_and(UnitResult::failed)
    }

    /// The newest result is a failure or did not finish (`--rerun-failed`).
    pub fn left_to_rerun(&self) -> bool {
        self.results
            .first()
            .is_some_and(|r| r.failed() || r.unfinished())
    }
}

/// The figures of one unit in `runner history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitStats {
    /// Unit id.
    pub unit: String,
    /// Results recorded (skips and runs that never reached it excluded).
    pub runs: usize,
    /// Passed (flaky included).
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Passed after a failed attempt.
    pub flaky: usize,
    /// failed / runs.
    pub failure_rate: f64,
    /// Mean duration of the passing results (else of all), ms.
    pub mean_ms: Option<u64>,
    /// Median duration of the passing results (else of the failed ones), ms.
    pub median_ms: Option<u64>,
    /// Largest peak memory recorded, MiB.
    pub peak_memory_mb: Option<u64>,
    /// Outcome of the newest result.
    pub last_outcome: String,
}

impl UnitStats {
    /// Figures from a unit's history.
    pub fn of(unit: &str, h: &UnitHistory) -> Self {
        let ran: Vec<&UnitResult> = h
            .results
            .iter()
            .filter(|r| r.passed() || r.failed())
            .collect();
        let passed = ran.iter().filter(|r| r.passed()).count();
        let failed = ran.len() - passed;
        let durations: Vec<u64> = {
            let p: Vec<u64> = ran
                .iter()
                .filter(|r| r.passed())
                .filter_map(|r| r.duration_ms)
                .collect();
            if p.is_empty() {
                ran.iter().filter_map(|r| r.duration_ms).collect()
            } else {
                p
            }
        };
        let mean_ms =
            (!durations.is_empty()).then(|| durations.iter().sum::<u64>() / durations.len() as u64);
        UnitStats {
            unit: unit.to_string(),
            runs: ran.len(),
            passed,
            failed,
            flaky: h.results.iter().filter(|r| r.flaky).count(),
            failure_rate: if ran.is_empty() {
                0.0
            } else {
                failed as f64 / ran.len() as f64
            },
            mean_ms,
            median_ms: h.expected().map(|d| d.as_millis() as u64),
            peak_memory_mb: h.results.iter().filter_map(|r| r.peak_memory_mb).max(),
            last_outcome: h
                .results
                .first()
                .map(|r| r.outcome.clone())
                .unwrap_or_default(),
        }
    }

    /// How flaky: flaky passes, plus failures when the unit also passes (it flips).
    pub fn flakiness(&self) -> usize {
        self.flaky + if self.passed > 0 { self.failed } else { 0 }
    }
}

/// A recorded run, for `runner history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// Mode.
    pub mode: String,
    /// Outcome.
    pub outcome: Option<String>,
    /// Duration, ms.
    pub duration_ms: Option<u64>,
    /// Units planned.
    pub units: u64,
    /// Units failed.
    pub failed: u64,
    /// `K/N` when the run was a shard of a partitioned run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

const SELECT_RESULTS: &str = "SELECT runs.run_id, runs.outcome, r.outcome, r.duration_ms,
        r.attempts, r.flaky, r.peak_memory_mb, r.unit_id, runs.partition
    FROM results r JOIN runs ON runs.seq = r.run_seq";

fn result_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, UnitResult)> {
    Ok((
        r.get(7)?,
        UnitResult {
            run_id: r.get(0)?,
            run_outcome: r.get(1)?,
            outcome: r.get(2)?,
            duration_ms: r.get::<_, Option<i64>>(3)?.map(|d| d.max(0) as u64),
            attempts: r.get::<_, i64>(4)?.max(0) as u32,
            flaky: r.get(5)?,
            peak_memory_mb: r.get::<_, Option<i64>>(6)?.map(|m| m.max(0) as u64),
            partition: r.get(8)?,
        },
    ))
}

impl History {
    /// The history of each of `ids` that has some (in one read transaction).
    pub fn units<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, UnitHistory>, StoreError> {
        let read = || -> rusqlite::Result<HashMap<String, UnitHistory>> {
            let tx = self.conn.unchecked_transaction()?;
            let mut out = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "{SELECT_RESULTS} WHERE r.unit_id = ?1 ORDER BY r.run_seq DESC"
                ))?;
                for id in ids {
                    let results = stmt
                        .query_map([id], result_row)?
                        .map(|r| r.map(|(_, res)| res))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    if !results.is_empty() {
                        out.insert(id.to_string(), UnitHistory { results });
                    }
                }
            }
            tx.finish()?;
            Ok(out)
        };
        read().map_err(|e| self.err(e))
    }

    /// Every unit's history (for `runner history`).
    pub fn all_units(&self) -> Result<HashMap<String, UnitHistory>, StoreError> {
        self.units_where("1")
    }

    /// Every unit's history from runs that were not shards (`--partition`): the
    /// durations shards balance by ([`super::durations_from`]).
    pub fn unsharded_units(&self) -> Result<HashMap<String, UnitHistory>, StoreError> {
        self.units_where("runs.partition IS NULL")
    }

    fn units_where(&self, filter: &str) -> Result<HashMap<String, UnitHistory>, StoreError> {
        let read = || -> rusqlite::Result<HashMap<String, UnitHistory>> {
            let mut stmt = self.conn.prepare(&format!(
                "{SELECT_RESULTS} WHERE {filter} ORDER BY r.unit_id, r.run_seq DESC"
            ))?;
            let mut out: HashMap<String, UnitHistory> = HashMap::new();
            for row in stmt.query_map([], result_row)? {
                let (unit, res) = row?;
                out.entry(unit).or_default().results.push(res);
            }
            Ok(out)
        };
        read().map_err(|e| self.err(e))
    }

    /// The newest `limit` runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let read = || -> rusqlite::Result<Vec<RunRow>> {
            let mut stmt = self.conn.prepare(
                "SELECT run_id, started_at, mode, outcome, duration_ms, units, failed, partition
                 FROM runs ORDER BY seq DESC LIMIT ?1",
            )?;
            stmt.query_map(params![limit as i64], |r| {
                Ok(RunRow {
                    run_id: r.get(0)?,
                    started_at: r.get(1)?,
                    mode: r.get(2)?,
                    outcome: r.get(3)?,
                    duration_ms: r.get::<_, Option<i64>>(4)?.map(|d| d.max(0) as u64),
                    units: r.get::<_, i64>(5)?.max(0) as u64,
                    failed: r.get::<_, i64>(6)?.max(0) as u64,
                    partition: r.get(7)?,
                })
            })?
            .collect()
        };
        read().map_err(|e| self.err(e))
    }

    /// Runs recorded.
    pub fn run_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }
}
