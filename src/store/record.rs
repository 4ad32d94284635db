//! Writing a run into history: one transaction per run, from its final `RunState`.
//!
//! The run's summary goes to `runs` (with its partition `K/N` when it was a shard);
//! each unit's final result to `results`: its outcome (an [`Outcome`] name; `skipped`;
//! `not_run` when the run ended before the unit finished), its last attempt's duration,
//! attempts, flakiness and peak memory. Then each recorded unit keeps only its newest
//! [`KEEP_RESULTS_PER_UNIT`] results and the database its newest [`KEEP_RUNS`] runs,
//! counted separately for shards and for runs that were not shards, and pruned only in
//! the recorded run's own kind: a shard never removes a result of a run that was not a
//! shard, which is what balancing reads (see [`super::durations_from`]).

use rusqlite::{TransactionBehavior, params};

use super::{History, KEEP_RESULTS_PER_UNIT, KEEP_RUNS, StoreError};
use crate::event::{Outcome, RunState, UnitState, UnitStatus};

/// The `results.outcome` of a unit the run never finished.
pub const NOT_RUN: &str = "not_run";
/// The `results.outcome` of a skipped unit.
pub const SKIPPED: &str = "skipped";

/// What a recorded run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// The run's `seq` (recording order).
    pub seq: i64,
    /// Result rows written.
    pub results: usize,
}

/// The name an outcome is stored under (its snake_case wire name).
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Timeout => "timeout",
        Outcome::Crashed => "crashed",
        Outcome::MemoryLimit => "memory_limit",
        Outcome::Cancelled => "cancelled",
        Outcome::Error => "error",
    }
}

/// The stored outcome of a unit at the end of a run.
pub fn unit_outcome(u: &UnitState) -> &'static str {
    match (u.status, u.outcome) {
        (UnitStatus::Finished, Some(o)) => outcome_name(o),
        (UnitStatus::Skipped, _) => SKIPPED,
        _ => NOT_RUN,
    }
}

fn lower<T: serde::Serialize>(v: &T) -> Option<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

impl History {
    /// Records `run` (a run recorded twice replaces its first record).
    pub fn record(&mut self, run: &RunState) -> Result<RecordSummary, StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let c = &run.counts;
        tx.execute(
            "DELETE FROM results WHERE run_seq IN (SELECT seq FROM runs WHERE run_id = ?1)",
            [&run.run_id],
        )
        .map_err(err)?;
        tx.execute("DELETE FROM runs WHERE run_id = ?1", [&run.run_id])
            .map_err(err)?;
        let partition = run.partition.as_ref().map(crate::event::Shard::label);
        // Pruning below stays within this run's kind: shards, or runs that were not.
        let unsharded = partition.is_none();
        tx.execute(
            "INSERT INTO runs (run_id, started_at, finished_at, mode, environment, outcome,
                exit_code, duration_ms, slots, units, passed, failed, skipped, flaky, partition)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                run.run_id,
                run.started_at,
                run.finished_at,
                run.mode,
                run.environment,
                run.outcome.as_ref().and_then(lower),
                run.exit_code,
                run.duration_ms.map(|d| d as i64),
                run.slots as i64,
                c.total as i64,
                c.passed as i64,
                c.failed as i64,
                c.skipped as i64,
                c.flaky as i64,
                partition,
            ],
        )
        .map_err(err)?;
        let seq = tx.last_insert_rowid();
        let mut written = 0;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO results (run_seq, unit_id, outcome, duration_ms, attempts, flaky,
                        peak_memory_mb) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for (id, u) in &run.units {
                let outcome = unit_outcome(u);
                // A duration only means something for an attempt that ran to its end.
                let duration = match outcome {
                    NOT_RUN | SKIPPED | "cancelled" => None,
                    _ => u.duration_ms.map(|d| d as i64),
                };
                insert
                    .execute(params![
                        seq,
                        id,
                        outcome,
                        duration,
                        u.attempts,
                        u.flaky,
                        u.peak_memory_mb.map(|m| m as i64),
                    ])
                    .map_err(err)?;
                written += 1;
            }
        }
        // Each unit of this run keeps its newest results (of this run's kind) only.
        tx.execute(
            "DELETE FROM results WHERE rowid IN (
                SELECT id FROM (
                    SELECT r.rowid AS id, ROW_NUMBER() OVER (
                        PARTITION BY r.unit_id ORDER BY r.run_seq DESC) AS age
                    FROM results r JOIN runs ON runs.seq = r.run_seq
                    WHERE r.unit_id IN (SELECT unit_id FROM results WHERE run_seq = ?1)
                        AND (runs.partition IS NULL) = ?3)
                WHERE age > ?2)",
            params![seq, KEEP_RESULTS_PER_UNIT as i64, unsharded],
        )
        .map_err(err)?;
        // And the database its newest runs (of this run's kind) only.
        let oldest_kept: Option<i64> = tx
            .query_row(
                "SELECT seq FROM runs WHERE (partition IS NULL) = ?2
                 ORDER BY seq DESC LIMIT 1 OFFSET ?1",
                params![KEEP_RUNS as i64 - 1, unsharded],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(err)?;
        if let Some(oldest) = oldest_kept {
            tx.execute(
                "DELETE FROM results WHERE run_seq IN (
                    SELECT seq FROM runs WHERE seq < ?1 AND (partition IS NULL) = ?2)",
                params![oldest, unsharded],
            )
            .map_err(err)?;
            tx.execute(
                "DELETE FROM runs WHERE seq < ?1 AND (partition IS NULL) = ?2",
                params![oldest, unsharded],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(RecordSummary {
            seq,
            results: written,
        })
    }
}
