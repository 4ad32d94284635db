//! History: what past runs say about each unit, in `.runner/history.sqlite`.
//!
//! One embedded SQLite database (bundled, through rusqlite) per project, next to the
//! run directories. It is written once per run, at the end, from the run's final
//! [`RunState`](crate::event::RunState) (the fold of its events, like every other
//! report), in one transaction; it is read at plan time to order units longest-first,
//! estimate their memory, show ETAs, and select units for `--failed-first`,
//! `--rerun-failed` and a timing-balanced `--partition`.
//!
//! - [`db`]: opening (WAL, busy timeout, schema), and errors sorted into corrupt,
//!   locked and other.
//! - [`record`]: writing a run: one `runs` row (with its partition `K/N` when it was a
//!   shard), one `results` row per unit, pruning.
//! - [`read`]: a unit's recent results and what follows from them (expected duration,
//!   peak memory, failed last time), and the figures of `runner history`.
//! - [`command`]: the `runner history` subcommand.
//! - [`prune`]: keeping `.runner/runs/` within `execution.keep_runs` and `runs_max_mb`.
//!
//! Bounded: each unit keeps its last [`KEEP_RESULTS_PER_UNIT`] results and the database
//! its last [`KEEP_RUNS`] runs. Safe for concurrent runs: WAL lets readers go on while a
//! run writes, writes take the lock up front (`BEGIN IMMEDIATE`) and wait up to
//! [`BUSY_TIMEOUT`] for another writer. History is never on a run's critical path: a
//! corrupt, locked or unreadable database is reported (a `warning` event at the start,
//! a stderr line at the end) and the run goes on without it.

pub mod command;
pub mod db;
pub mod prune;
pub mod read;
pub mod record;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::{Hints, Plan, UnitHint};

pub use db::{History, StoreError};
pub use read::{UnitHistory, UnitResult, UnitStats};
pub use record::RecordSummary;

/// Results kept per unit (the newest ones): enough for a stable median duration and a
/// flaky rate, small enough that a suite of 10,000 tests stays a few MiB. Counted apart
/// for shards (`--partition`) and for runs that were not shards.
pub const KEEP_RESULTS_PER_UNIT: usize = 20;

/// Runs kept (the newest); results of older runs go with them. Counted apart for shards
/// and for runs that were not shards.
pub const KEEP_RUNS: usize = 1000;

/// How long a run waits for another run's write before giving up on history.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `<root>/.runner/history.sqlite`.
pub fn path(root: &Path) -> PathBuf {
    root.join(".runner").join("history.sqlite")
}

/// What history says about a plan's units, read at plan time.
#[derive(Debug, Default)]
pub struct Known {
    /// Units with at least one recorded result, by id.
    pub units: HashMap<String, UnitHistory>,
    /// Set when history could not be read (the run goes on without it), in words.
    pub warning: Option<String>,
}

/// Reads the history of `ids` under `root`. Never fails: a missing database is empty
/// history, an unreadable one is empty history with a warning.
pub fn load<'a>(root: &Path, ids: impl IntoIterator<Item = &'a str>) -> Known {
    let path = path(root);
    let result = History::open_existing(&path).and_then(|h| match h {
        Some(h) => h.units(ids),
        None => Ok(HashMap::new()),
    });
    match result {
        Ok(units) => Known {
            units,
            warning: None,
        },
        Err(e) => Known {
            units: HashMap::new(),
            warning: Some(format!(
                "history: {e}; this run goes on without history (no ordering by past durations, no ETA)"
            )),
        },
    }
}

impl Known {
    /// Scheduling hints for the executor and the ordering step.
    pub fn hints(&self, failed_first: bool) -> Hints {
        Hints {
            units: self
                .units
                .iter()
                .map(|(id, h)| {
                    let hint = UnitHint {
                        expected: h.expected(),
                        failed_last: h.failed_last(),
                        peak_memory_mb: h.peak_memory_mb(),
                    };
                    (id.clone(), hint)
                })
                .collect(),
            failed_first,
        }
    }

    /// Expected durations by unit id for a timing-balanced `--partition`: from the
    /// results of runs that were not shards only ([`UnitHistory::unsharded`]).
    pub fn durations(&self) -> HashMap<String, Duration> {
        self.units
            .iter()
            .filter_map(|(id, h)| h.unsharded().expected().map(|d| (id.clone(), d)))
            .collect()
    }
}

/// What `--rerun-failed` made of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// These many of the plan's units failed or did not finish last time; only they stay.
    Selected {
        /// Units kept.
        kept: usize,
        /// Units planned.
        of: usize,
    },
    /// History knows none of the plan's units: the whole plan runs (running nothing
    /// would hide failures, e.g. on a CI machine without the history file).
    Unknown,
    /// Everything passed last time: nothing to run.
    NothingLeft {
        /// Units planned.
        of: usize,
    },
}

/// `--rerun-failed`: keeps the units whose newest result failed or did not finish
/// ([`UnitHistory::left_to_rerun`]).
pub fn rerun_failed(plan: &mut Plan, known: &Known) -> Rerun {
    let of = plan.units().count();
    if !plan.units().any(|u| known.units.contains_key(&u.id)) {
        return Rerun::Unknown;
    }
    let kept = crate::plan::retain_units(plan, |u| {
        known
            .units
            .get(&u.id)
            .is_some_and(UnitHistory::left_to_rerun)
    });
    if kept == 0 {
        Rerun::NothingLeft { of }
    } else {
        Rerun::Selected { kept, of }
    }
}

/// Whether `path` is an SQLite database (a history file given to `--durations-from`).
pub fn is_database(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| &header == b"SQLite format 3\0")
}

/// Expected durations of every unit of the history database at `path`, for a
/// timing-balanced `--partition` (`--durations-from .runner/history.sqlite`).
///
/// Shards must agree, so they read a file given to all of them, and only what no shard
/// changes: each unit's expected duration from its most recent results of runs that
/// were not themselves shards (the durations as of the last run that was not a shard).
/// Shards may run one after the other in one checkout, each recording into this very
/// file: a shard's results are kept apart (`runs.partition`), and recording a shard never
/// prunes the results of other runs, so every shard of a partition reads the same
/// durations. A run that is not a shard, recorded between two shards, does change them.
pub fn durations_from(path: &Path) -> Result<HashMap<String, Duration>, StoreError> {
    let Some(history) = History::open_existing(path)? else {
        return Ok(HashMap::new());
    };
    let known = Known {
        units: history.unsharded_units()?,
        warning: None,
    };
    Ok(known.durations())
}

/// Records a finished (or interrupted) run under `root`; the error says why not.
pub fn save(root: &Path, run: &crate::event::RunState) -> Result<RecordSummary, StoreError> {
    let mut history = History::open(&path(root))?;
    history.record(run)
}

#[cfg(test)]
mod tests;
