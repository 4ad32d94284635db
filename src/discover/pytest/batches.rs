//! Packing test ids into batches, one pytest process each (pure).
//!
//! pytest's start-up (interpreter, imports, plugins, conftest) is paid once per batch,
//! so batches are few; and they must be balanced, or one slot works alone at the end.
//!
//! - **With history** (at least one test has a known duration; the others count as
//!   the median of the known ones): the number of batches is the larger of the slots
//!   and `total / TARGET_BATCH`, and pieces are packed longest-first into the least
//!   loaded batch (LPT). The batches are returned longest first.
//! - **Without history**: tests are cut in collection (file) order into batches of
//!   equal size: one per slot for a small suite (start-up dominates), two per slot from
//!   [`SPLIT_FROM_TESTS`] tests on, so that a slot that finishes early takes another.
//!
//! **Modules stay together.** A piece is a whole module (file), so its module-scoped
//! fixtures are set up once, unless the module alone is longer than half a batch's share:
//! then it is cut into consecutive pieces, each paying the module's fixtures once more
//! (pytest-xdist's `--dist load` splits modules freely too). Session-scoped fixtures run
//! once per batch, as once per xdist worker. Within a batch, tests keep collection
//! order, so a module's tests run one after another.

use std::path::PathBuf;
use std::time::Duration;

/// The duration a batch is aimed at when history allows more batches than slots.
pub const TARGET_BATCH: Duration = Duration::from_secs(30);

/// Batches per slot without history, for a suite of at least [`SPLIT_FROM_TESTS`] tests.
pub const NO_HISTORY_BATCHES_PER_SLOT: usize = 2;

/// Without history, suites smaller than this get one batch per slot.
pub const SPLIT_FROM_TESTS: usize = 400;

/// One test to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTest {
    /// Its file (tests of one file form one module).
    pub module: PathBuf,
    /// Its duration from history.
    pub expected: Option<Duration>,
}

/// Indices into the tests given to [`plan_batches`], in collection order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// The tests.
    pub tests: Vec<usize>,
    /// Expected duration (zero without history).
    pub expected: Duration,
}

/// Packs `tests` (in collection order) into batches for `slots` parallel processes.
pub fn plan_batches(tests: &[BatchTest], slots: usize) -> Vec<Batch> {
    if tests.is_empty() {
        return Vec::new();
    }
    let slots = slots.max(1);
    let mut known: Vec<Duration> = tests.iter().filter_map(|t| t.expected).collect();
    if known.is_empty() {
        let per_slot = if tests.len() >= SPLIT_FROM_TESTS {
            NO_HISTORY_BATCHES_PER_SLOT
        } else {
            1
        };
        return by_count(tests, slots * per_slot);
    }
    known.sort_unstable();
    let median = known[known.len() / 2];
    let cost: Vec<Duration> = tests.iter().map(|t| t.expected.unwrap_or(median)).collect();
    let total: Duration = cost.iter().sum();
    let by_target = (total.as_secs_f64() / TARGET_BATCH.as_secs_f64()).ceil() as usize;
    let count = slots.max(by_target).min(tests.len());
    let piece_max = total / (2 * count as u32);

    // Pieces: whole modules, or consecutive runs of a long module.
    let mut pieces: Vec<(Vec<usize>, Duration)> = Vec::new();
    for module in modules(tests) {
        let sum: Duration = module.iter().map(|&i| cost[i]).sum();
        if sum <= piece_max {
            pieces.push((module, sum));
            continue;
        }
        let mut current = (Vec::new(), Duration::ZERO);
        for i in module {
            if !current.0.is_empty() && current.1 + cost[i] > piece_max {
                pieces.push(std::mem::take(&mut current));
            }
            current.0.push(i);
            current.1 += cost[i];
        }
        if !current.0.is_empty() {
            pieces.push(current);
        }
    }
    // Longest first, ties in collection order; each into the least loaded batch.
    pieces.sort_by(|a, b| b.1.cmp(&a.1).then(a.0[0].cmp(&b.0[0])));
    let mut batches: Vec<Batch> = vec![Batch::default(); count];
    for (piece, d) in pieces {
        let lightest = (0..count)
            .min_by_key(|&b| (batches[b].expected, b))
            .expect("at least one batch");
        batches[lightest].tests.extend(piece);
        batches[lightest].expected += d;
    }
    batches.retain(|b| !b.tests.is_empty());
    for b in &mut batches {
        b.tests.sort_unstable();
    }
    batches.sort_by(|a, b| {
        b.expected
            .cmp(&a.expected)
            .then(a.tests[0].cmp(&b.tests[0]))
    });
    batches
}

/// The tests of each file, files in order of first appearance.
fn modules(tests: &[BatchTest]) -> Vec<Vec<usize>> {
    let mut at: std::collections::HashMap<&PathBuf, usize> = Default::default();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        let m = *at.entry(&t.module).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[m].push(i);
    }
    out
}

/// Tests in file order, cut into about `count` consecutive batches of about equal
/// size, at module boundaries unless a module alone is larger than a batch's share.
fn by_count(tests: &[BatchTest], count: usize) -> Vec<Batch> {
    let share = tests.len().div_ceil(count.clamp(1, tests.len()));
    let mut out: Vec<Batch> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for module in modules(tests) {
        if !current.is_empty() && current.len() + module.len() > share {
            out.push(Batch {
                tests: std::mem::take(&mut current),
                expected: Duration::ZERO,
            });
        }
        for i in module {
            if current.len() == share {
                out.push(Batch {
                    tests: std::mem::take(&mut current),
                    expected: Duration::ZERO,
                });
            }
            current.push(i);
        }
    }
    if !current.is_empty() {
        out.push(Batch {
            tests: current,
            expected: Duration::ZERO,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(module: &str, ms: Option<u64>) -> BatchTest {
        BatchTest {
            module: module.into(),
            expected: ms.map(Duration::from_millis),
        }
    }

    fn all(batches: &[Batch]) -> Vec<usize> {
        let mut v: Vec<usize> = batches.iter().flat_map(|b| b.tests.clone()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn without_history_equal_cuts_in_file_order() {
        // Modules of 3, 3, 3 and 1 tests; 4 batches of at most 3.
        let tests: Vec<BatchTest> = (0..10).map(|i| t(&format!("m{}", i / 3), None)).collect();
        let b = plan_batches(&tests, 4);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].tests, vec![0, 1, 2]);
        assert_eq!(b[3].tests, vec![9]);
        assert_eq!(all(&b), (0..10).collect::<Vec<_>>());
        // A module larger than the share is cut.
        let big: Vec<BatchTest> = (0..8).map(|_| t("one", None)).collect();
        let b = plan_batches(&big, 4);
        assert_eq!(
            b.iter().map(|x| x.tests.len()).collect::<Vec<_>>(),
            [2, 2, 2, 2]
        );
        // Fewer tests than batches: one test each.
        assert_eq!(plan_batches(&tests[..3], 8).len(), 3);
        assert!(plan_batches(&[], 2).is_empty());
    }

    #[test]
    fn with_history_modules_stay_together_and_batches_balance() {
        // Four modules: 400, 300, 200, 100 ms over two slots.
        let mut tests = Vec::new();
        for (m, n, ms) in [("a", 4, 100), ("b", 3, 100), ("c", 2, 100), ("d", 1, 100)] {
            for _ in 0..n {
                tests.push(t(m, Some(ms)));
            }
        }
        let b = plan_batches(&tests, 2);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].expected, Duration::from_millis(500));
        assert_eq!(b[1].expected, Duration::from_millis(500));
        for batch in &b {
            // A module's tests are in one batch, in order.
            let mods: Vec<&PathBuf> = batch.tests.iter().map(|&i| &tests[i].module).collect();
            let mut dedup = mods.clone();
            dedup.dedup();
            let mut uniq = dedup.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(dedup.len(), uniq.len(), "{mods:?}");
            assert!(batch.tests.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(all(&b), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_module_is_split_and_unknown_tests_count_as_the_median() {
        let mut tests: Vec<BatchTest> = (0..8).map(|_| t("big", Some(1000))).collect();
        tests.push(t("small", None));
        let b = plan_batches(&tests, 2);
        assert_eq!(b.len(), 2);
        let diff = b[0].expected.abs_diff(b[1].expected);
        assert!(diff <= Duration::from_millis(1000), "{b:?}");
        assert_eq!(all(&b), (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn long_suites_get_batches_of_about_the_target() {
        let tests: Vec<BatchTest> = (0..100).map(|i| t(&format!("m{i}"), Some(3000))).collect();
        // 300 s over 2 slots: 10 batches of 30 s.
        let b = plan_batches(&tests, 2);
        assert_eq!(b.len(), 10);
        assert!(b.iter().all(|x| x.expected == Duration::from_secs(30)));
    }
}
