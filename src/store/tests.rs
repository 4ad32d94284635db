use std::time::Duration;

use super::*;
use crate::event::{Event, EventKind, Outcome, PlannedUnit, RunOutcome, RunState};

/// How a unit ends in a test run.
#[derive(Clone, Copy)]
enum End {
    /// Finished with this outcome after this many ms (peak MiB).
    Ran(Outcome, u64, Option<u64>),
    /// Passed on its second attempt.
    Flaky(u64),
    /// Skipped.
    Skipped,
    /// Never finished (the run stopped).
    Pending,
}

/// The final state of run `id` whose units end as given.
fn run(id: &str, outcome: RunOutcome, units: &[(&str, End)]) -> RunState {
    run_as(id, None, outcome, units)
}

/// [`run`] as shard `k` of `n` (`--partition K/N`).
fn shard(id: &str, k: usize, n: usize, units: &[(&str, End)]) -> RunState {
    let shard = crate::event::Shard {
        k,
        n,
        planned: units.len() * n,
        known_durations: 0,
        digest: "0000000000000000".into(),
    };
    run_as(id, Some(shard), RunOutcome::Passed, units)
}

fn run_as(
    id: &str,
    partition: Option<crate::event::Shard>,
    outcome: RunOutcome,
    units: &[(&str, End)],
) -> RunState {
    let mut s = RunState::default();
    let mut seq = 0;
    let mut apply = |s: &mut RunState, kind| {
        seq += 1;
        s.apply(&Event {
            v: 1,
            seq,
            ts: format!("2026-01-01T00:00:{:02}Z", seq % 60),
            run_id: id.into(),
            thread_id: None,
            agent: "test".into(),
            kind,
        });
    };
    apply(
        &mut s,
        EventKind::RunStarted {
            mode: "layers".into(),
            environment: "test".into(),
            config: "layers.yaml".into(),
            layers: vec!["l".into()],
            slots: 2,
            units: units
                .iter()
                .map(|(name, _)| PlannedUnit {
                    id: format!("l/c/{name}"),
                    layer: "l".into(),
                    category: "c".into(),
                    name: name.to_string(),
                    expected_ms: None,
                })
                .collect(),
            pid: 1,
        },
    );
    if let Some(p) = partition {
        apply(&mut s, EventKind::Partition(p));
    }
    let finished = |unit: String, attempt, outcome, will_retry, ms, peak| EventKind::TestFinished {
        unit,
        attempt,
        outcome,
        will_retry,
        duration_ms: ms,
        exit_code: None,
        signal: None,
        peak_memory_mb: peak,
        message: None,
        output_tail: None,
        log: None,
    };
    for (name, end) in units {
        let unit = format!("l/c/{name}");
        let attempts = match end {
            End::Ran(..) => 1,
            End::Flaky(_) => 2,
            _ => 0,
        };
        for attempt in 1..=attempts {
            apply(
                &mut s,
                EventKind::TestStarted {
                    unit: unit.clone(),
                    attempt,
                    pid: 1,
                },
            );
        }
        match *end {
            End::Ran(o, ms, peak) => {
                apply(&mut s, finished(unit, 1, o, false, ms, peak));
            }
            End::Flaky(ms) => {
                apply(
                    &mut s,
                    finished(unit.clone(), 1, Outcome::Failed, true, 5, None),
                );
                apply(&mut s, finished(unit, 2, Outcome::Passed, false, ms, None));
            }
            End::Skipped => apply(
                &mut s,
                EventKind::TestSkipped {
                    unit,
                    reason: "fail-fast".into(),
                },
            ),
            End::Pending => {}
        }
    }
    apply(
        &mut s,
        EventKind::RunFinished {
            outcome,
            exit_code: 0,
            duration_ms: 100,
        },
    );
    s
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("l/c/{n}")).collect()
}

fn load_names(root: &std::path::Path, names: &[&str]) -> Known {
    let ids = ids(names);
    load(root, ids.iter().map(String::as_str))
}

#[test]
fn a_recorded_run_reads_back_with_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert!(
        load_names(root, &["a"]).units.is_empty(),
        "no file: no history"
    );
    assert!(!path(root).exists(), "reading creates nothing");
    let first = run(
        "r1",
        RunOutcome::Failed,
        &[
            ("a", End::Ran(Outcome::Passed, 100, Some(40))),
            ("b", End::Ran(Outcome::Failed, 300, None)),
            ("c", End::Flaky(50)),
            ("d", End::Skipped),
            ("e", End::Pending),
        ],
    );
    let saved = save(root, &first).unwrap();
    assert_eq!(saved.results, 5);
    let known = load_names(root, &["a", "b", "c", "d", "e", "unknown"]);
    assert!(known.warning.is_none());
    assert_eq!(known.units.len(), 5, "{:?}", known.units.keys());
    let u = |n: &str| &known.units[&format!("l/c/{n}")];
    assert_eq!(u("a").expected(), Some(Duration::from_millis(100)));
    assert_eq!(u("a").peak_memory_mb(), Some(40));
    assert!(!u("a").failed_last() && !u("a").left_to_rerun());
    // Never passed: its failed attempt's duration is the estimate.
    assert_eq!(u("b").expected(), Some(Duration::from_millis(300)));
    assert!(u("b").failed_last() && u("b").left_to_rerun());
    assert!(u("c").results[0].flaky);
    assert_eq!(u("c").results[0].attempts, 2);
    assert!(!u("c").left_to_rerun());
    assert_eq!(u("d").results[0].outcome, "skipped");
    assert!(
        u("d").left_to_rerun(),
        "skipped in a failed run: unfinished"
    );
    assert_eq!(u("e").results[0].outcome, "not_run");
    assert_eq!(u("e").expected(), None);
    assert!(u("e").left_to_rerun() && !u("e").failed_last());
    let h = History::open_existing(&path(root)).unwrap().unwrap();
    let runs = h.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, "r1");
    assert_eq!(runs[0].outcome.as_deref(), Some("failed"));
    assert_eq!((runs[0].units, runs[0].failed), (5, 1));
    let mode: String = h
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn the_estimate_is_the_median_of_recent_passes_and_each_unit_keeps_its_last_n() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 25 runs: durations 1000..=1024 ms, one outlier, one failure.
    for i in 0..25u64 {
        let end = match i {
            3 => End::Ran(Outcome::Passed, 90_000, Some(900)),
            24 => End::Ran(Outcome::Failed, 7, Some(10)),
            _ => End::Ran(Outcome::Passed, 1000 + i, Some(10)),
        };
        save(
            root,
            &run(&format!("r{i:02}"), RunOutcome::Passed, &[("a", end)]),
        )
        .unwrap();
    }
    let known = load_names(root, &["a"]);
    let a = &known.units["l/c/a"];
    assert_eq!(a.results.len(), KEEP_RESULTS_PER_UNIT);
    assert_eq!(a.results[0].run_id, "r24", "newest first");
    assert_eq!(a.results.last().unwrap().run_id, "r05", "r00..r04 pruned");
    // Passing durations kept: 1005..=1023 (19 of them): median 1014. The outlier of
    // run r03 is gone, and a failure does not count.
    assert_eq!(a.expected(), Some(Duration::from_millis(1014)));
    assert!(a.failed_last());
    assert_eq!(a.peak_memory_mb(), Some(10));
    let h = History::open_existing(&path(root)).unwrap().unwrap();
    assert_eq!(
        h.run_count().unwrap(),
        25,
        "runs are kept longer than results"
    );
    let stats = UnitStats::of("l/c/a", a);
    assert_eq!((stats.runs, stats.passed, stats.failed), (20, 19, 1));
    assert_eq!(stats.median_ms, Some(1014));
    assert_eq!(stats.flakiness(), 1, "it fails and passes");
}

#[test]
fn a_run_recorded_twice_replaces_its_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        "same",
        RunOutcome::Passed,
        &[("a", End::Ran(Outcome::Passed, 10, None))],
    );
    save(dir.path(), &r).unwrap();
    save(dir.path(), &r).unwrap();
    let known = load_names(dir.path(), &["a"]);
    assert_eq!(known.units["l/c/a"].results.len(), 1);
}

#[test]
fn a_corrupt_database_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let garbage = b"this is not a database, just some bytes that happen to be here.\n".repeat(100);
    std::fs::write(&file, &garbage).unwrap();
    let known = load_names(dir.path(), &["a"]);
    assert!(known.units.is_empty());
    let warning = known.warning.expect("a warning");
    assert!(warning.contains("unreadable"), "{warning}");
    assert!(warning.contains("goes on without history"), "{warning}");
    let err = save(
        dir.path(),
        &run(
            "r",
            RunOutcome::Passed,
            &[("a", End::Ran(Outcome::Passed, 1, None))],
        ),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("delete it"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file is not touched"
    );
}

#[test]
fn a_database_of_a_newer_runner_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path());
    save(
        dir.path(),
        &run(
            "r",
            RunOutcome::Passed,
            &[("a", End::Ran(Outcome::Passed, 1, None))],
        ),
    )
    .unwrap();
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let known = load_names(dir.path(), &["a"]);
    assert!(known.warning.unwrap().contains("newer runner"));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let names: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            let names = names.clone();
            std::thread::spawn(move || {
                for r in 0..5 {
                    let units: Vec<(&str, End)> = names
                        .iter()
                        .map(|n| (n.as_str(), End::Ran(Outcome::Passed, 10 + t, None)))
                        .collect();
                    save(
                        &root,
                        &run(&format!("t{t}r{r}"), RunOutcome::Passed, &units),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let h = History::open_existing(&path(&root)).unwrap().unwrap();
    assert_eq!(h.run_count().unwrap(), 20);
    let units = h.all_units().unwrap();
    assert_eq!(units.len(), 200);
    assert!(
        units
            .values()
            .all(|u| u.results.len() == KEEP_RESULTS_PER_UNIT)
    );
}

#[test]
fn rerun_failed_and_hints_follow_the_newest_results() {
    let dir = tempfile::tempdir().unwrap();
    save(
        dir.path(),
        &run(
            "r1",
            RunOutcome::Failed,
            &[
                ("a", End::Ran(Outcome::Failed, 10, None)),
                ("b", End::Ran(Outcome::Passed, 2000, Some(300))),
            ],
        ),
    )
    .unwrap();
    let known = load_names(dir.path(), &["a", "b"]);
    let hints = known.hints(true);
    assert!(hints.units["l/c/a"].failed_last);
    assert_eq!(hints.expected("l/c/b"), Some(Duration::from_secs(2)));
    assert_eq!(hints.peak_memory_mb("l/c/b"), Some(300));
    assert!(hints.rank("l/c/a") > hints.rank("l/c/b"), "failed first");
    assert!(
        known.hints(false).rank("l/c/b") > known.hints(false).rank("l/c/a"),
        "longest first"
    );
    assert_eq!(known.durations().len(), 2);
}

#[test]
fn durations_from_a_history_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path());
    assert!(!is_database(&file));
    save(
        dir.path(),
        &run(
            "r1",
            RunOutcome::Passed,
            &[("a", End::Ran(Outcome::Passed, 1500, None))],
        ),
    )
    .unwrap();
    assert!(is_database(&file));
    let d = durations_from(&file).unwrap();
    assert_eq!(d["l/c/a"], Duration::from_millis(1500));
}

fn passed(ms: u64) -> End {
    End::Ran(Outcome::Passed, ms, None)
}

#[test]
fn shards_are_recorded_as_such_and_balancing_ignores_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = path(root);
    save(
        root,
        &run(
            "full",
            RunOutcome::Passed,
            &[("a", passed(1000)), ("b", passed(2000))],
        ),
    )
    .unwrap();
    let before = durations_from(&file).unwrap();
    assert_eq!(before["l/c/a"], Duration::from_millis(1000));
    // Shard 1/2 ran `a` (much faster, then failing) and a unit no unsharded run knows.
    save(
        root,
        &shard("s1", 1, 2, &[("a", passed(10)), ("new", passed(5))]),
    )
    .unwrap();
    save(
        root,
        &shard("s1b", 1, 2, &[("a", End::Ran(Outcome::Failed, 20, None))]),
    )
    .unwrap();
    assert_eq!(
        durations_from(&file).unwrap(),
        before,
        "what shards record does not move the durations shards balance by"
    );
    let known = load_names(root, &["a", "b", "new"]);
    assert_eq!(known.durations(), before, "Known::durations agrees");
    // Everything else still sees the shards' results: order, ETAs, --rerun-failed.
    let a = &known.units["l/c/a"];
    assert_eq!(a.results.len(), 3);
    assert_eq!(a.results[0].partition.as_deref(), Some("1/2"));
    assert!(a.failed_last() && a.left_to_rerun());
    assert_eq!(a.expected(), Some(Duration::from_millis(505)));
    assert_eq!(a.unsharded().results.len(), 1);
    assert_eq!(
        known.units["l/c/new"].expected(),
        Some(Duration::from_millis(5))
    );
    let h = History::open_existing(&file).unwrap().unwrap();
    let runs = h.runs(10).unwrap();
    let labels: Vec<Option<&str>> = runs.iter().map(|r| r.partition.as_deref()).collect();
    assert_eq!(labels, [Some("1/2"), Some("1/2"), None], "newest first");
    // A run that is not a shard is a new input.
    save(
        root,
        &run("full2", RunOutcome::Passed, &[("a", passed(3000))]),
    )
    .unwrap();
    assert_eq!(
        durations_from(&file).unwrap()["l/c/a"],
        Duration::from_millis(2000),
        "median of 1000 and 3000"
    );
}

#[test]
fn shards_never_prune_the_results_balancing_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save(
        root,
        &run("full", RunOutcome::Passed, &[("a", passed(700))]),
    )
    .unwrap();
    for i in 0..KEEP_RESULTS_PER_UNIT + 5 {
        save(root, &shard(&format!("s{i:02}"), 1, 2, &[("a", passed(5))])).unwrap();
    }
    let known = load_names(root, &["a"]);
    let a = &known.units["l/c/a"];
    assert_eq!(
        a.results.iter().filter(|r| r.partition.is_some()).count(),
        KEEP_RESULTS_PER_UNIT,
        "shards keep their own last N"
    );
    assert_eq!(a.unsharded().results.len(), 1, "the unsharded result stays");
    assert_eq!(
        durations_from(&path(root)).unwrap()["l/c/a"],
        Duration::from_millis(700)
    );
    // Runs that are not shards prune their own kind only.
    for i in 0..KEEP_RESULTS_PER_UNIT {
        save(
            root,
            &run(
                &format!("f{i:02}"),
                RunOutcome::Passed,
                &[("a", passed(900))],
            ),
        )
        .unwrap();
    }
    let a = load_names(root, &["a"]).units.remove("l/c/a").unwrap();
    assert_eq!(a.unsharded().results.len(), KEEP_RESULTS_PER_UNIT);
    assert_eq!(a.results.len(), 2 * KEEP_RESULTS_PER_UNIT);
    assert_eq!(a.unsharded().expected(), Some(Duration::from_millis(900)));
}

#[test]
fn a_version_1_database_is_migrated_and_its_runs_count_as_unsharded() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // What a runner of schema version 1 wrote.
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
        CREATE TABLE runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE,
            started_at TEXT NOT NULL, finished_at TEXT, mode TEXT NOT NULL,
            environment TEXT NOT NULL, outcome TEXT, exit_code INTEGER, duration_ms INTEGER,
            slots INTEGER NOT NULL, units INTEGER NOT NULL, passed INTEGER NOT NULL,
            failed INTEGER NOT NULL, skipped INTEGER NOT NULL, flaky INTEGER NOT NULL);
        CREATE TABLE results (
            run_seq INTEGER NOT NULL, unit_id TEXT NOT NULL, outcome TEXT NOT NULL,
            duration_ms INTEGER, attempts INTEGER NOT NULL, flaky INTEGER NOT NULL,
            peak_memory_mb INTEGER);
        CREATE UNIQUE INDEX results_by_unit ON results (unit_id, run_seq);
        CREATE INDEX results_by_run ON results (run_seq);
        INSERT INTO runs VALUES (1, 'old', '2025-01-01T00:00:00Z', NULL, 'layers', 'test',
            'passed', 0, 10, 1, 1, 1, 0, 0, 0);
        INSERT INTO results VALUES (1, 'l/c/a', 'passed', 1234, 1, 0, NULL);
        PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    assert_eq!(
        durations_from(&file).unwrap()["l/c/a"],
        Duration::from_millis(1234),
        "old runs are read as runs that were not shards"
    );
    save(dir.path(), &shard("s1", 1, 2, &[("a", passed(10))])).unwrap();
    assert_eq!(
        durations_from(&file).unwrap()["l/c/a"],
        Duration::from_millis(1234)
    );
    let h = History::open_existing(&file).unwrap().unwrap();
    let version: i64 = h
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, db::SCHEMA_VERSION);
    assert_eq!(h.run_count().unwrap(), 2);
    // Opening it again (another runner, later) changes nothing.
    drop(h);
    let h = History::open_existing(&file).unwrap().unwrap();
    assert_eq!(h.runs(5).unwrap()[0].partition.as_deref(), Some("1/2"));
}
