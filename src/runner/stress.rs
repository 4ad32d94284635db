//! `--stress-count N`: every selected unit runs N times, and the run says per unit how
//! many times it passed and failed, marking the units that did both as flaky.
//!
//! Iterations are units of their own, `<name> [k/N]` (ids `layer/category/<name> [k/N]`),
//! planned one after another in each category: the executor, the slots, the events, the
//! console and JUnit treat them as any unit (so JUnit records every iteration, and a
//! failing iteration fails the run as a failing unit does). Retries still apply per
//! iteration. The per-unit tally is printed on stderr once the run is over (the
//! closing `N passed, N failed` line stays the last line of stdout). A stress run is not
//! recorded in history: its iterations are not units of the project.

use std::collections::BTreeMap;

use crate::event::{Outcome, RunState};
use crate::plan::Plan;

/// Iterations per unit that `--stress-count` and `--stress-duration` ask for: the count,
/// or with a duration at most the count (else [`DURATION_MAX_ITERATIONS`]); `None` when
/// no stress run was asked for.
pub fn iterations(cli: &crate::cli::Cli) -> Option<usize> {
    match (cli.stress_count, cli.stress_duration) {
        (count, Some(_)) => Some(count.unwrap_or(DURATION_MAX_ITERATIONS).max(1)),
        (Some(n), None) if n > 1 => Some(n),
        _ => None,
    }
}

/// Iterations planned per unit for `--stress-duration` without `--stress-count`: those
/// not started when the duration has passed are skipped.
pub const DURATION_MAX_ITERATIONS: usize = 1000;

/// Replaces every unit of `plan` by `count` iterations of it.
pub fn expand(plan: &mut Plan, count: usize) {
    for layer in plan
        .stages
        .iter_mut()
        .flatten()
        .chain(plan.background.iter_mut())
    {
        for cat in &mut layer.categories {
            // pytest runs its test ids in batches, by their own ids: not repeated.
            if matches!(cat.category.kind, crate::config::UnitKind::Pytest(_)) {
                continue;
            }
            let mut out = Vec::with_capacity(cat.units.len() * count);
            for k in 1..=count {
                for u in &cat.units {
                    let mut it = u.clone();
                    it.name = format!("{} [{k}/{count}]", u.name);
                    it.id = crate::discover::Unit::make_id(&u.layer, &u.category, &it.name);
                    out.push(it);
                }
            }
            cat.units = out;
        }
    }
}

/// The unit id an iteration's id stands for (`a/b/c [3/10]` -> `a/b/c`).
pub fn base_id(id: &str) -> &str {
    crate::discover::stress_iteration(id).map_or(id, |(base, _)| base)
}

/// Passes and failures of one unit over its iterations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Iterations that passed (on a retry included).
    pub passed: usize,
    /// Iterations that failed.
    pub failed: usize,
    /// Iterations that passed on a retry only.
    pub retried: usize,
    /// Iterations that did not run (skipped, cancelled).
    pub not_run: usize,
}

impl Tally {
    /// Both passed and failed, or passed on a retry.
    pub fn flaky(&self) -> bool {
        (self.passed > 0 && self.failed > 0) || self.retried > 0
    }
}

/// The tally of every unit of a stress run, by unit id.
pub fn tally(state: &RunState) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for (id, u) in &state.units {
        let t = out.entry(base_id(id).to_string()).or_default();
        match u.outcome {
            Some(Outcome::Passed) => {
                t.passed += 1;
                t.retried += usize::from(u.flaky);
            }
            Some(o) if o.is_failure() => t.failed += 1,
            _ => t.not_run += 1,
        }
    }
    out
}

/// The lines printed after a stress run of `count` iterations.
pub fn report(state: &RunState, count: usize) -> Vec<String> {
    let tallies = tally(state);
    let flaky = tallies.values().filter(|t| t.flaky()).count();
    let failing = tallies
        .values()
        .filter(|t| t.passed == 0 && t.failed > 0)
        .count();
    let mut lines = vec![format!(
        "stress: {count} iterations of {} units: {} always passed, {flaky} flaky, {failing} always failed",
        tallies.len(),
        tallies
            .values()
            .filter(|t| t.failed == 0 && t.retried == 0 && t.not_run == 0)
            .count(),
    )];
    for (id, t) in &tallies {
        let label = if t.flaky() {
            "FLAKY"
        } else if t.failed > 0 {
            "FAILING"
        } else {
            continue;
        };
        let mut line = format!(
            "  {label:>7} {id}: {} passed, {} failed",
            t.passed, t.failed
        );
        if t.retried > 0 {
            line.push_str(&format!(" ({} passed on a retry)", t.retried));
        }
        if t.not_run > 0 {
            line.push_str(&format!(", {} not run", t.not_run));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_ids_map_back_to_their_unit() {
        assert_eq!(base_id("l/c/t.sh [3/10]"), "l/c/t.sh");
        assert_eq!(base_id("l/c/t.sh"), "l/c/t.sh");
        assert_eq!(base_id("l/c/weird [x]"), "l/c/weird [x]");
        assert_eq!(base_id("l/c/a [1/2] [2/2]"), "l/c/a [1/2]");
        assert_eq!(
            crate::discover::stress_iteration("l/c/t [3/10]"),
            Some(("l/c/t", 3))
        );
        assert_eq!(crate::discover::stress_iteration("l/c/t [x/10]"), None);
    }
}
