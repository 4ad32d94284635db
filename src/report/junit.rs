//! JUnit output (`--junit PATH`); `runner merge-junit` is in [`super::junit_merge`].
//!
//! [`build`] is a pure function of the run's fold ([`RunState`]): one `<testsuite>`
//! per category of a layer, named `layer/category`, with `run_id`, `environment`,
//! `layer` and `category` properties (and, in a shard of a partitioned run, its
//! partition, the size of the whole plan and the partition's digest, which
//! `merge-junit` checks); one `<testcase>` per settled unit, or, for a unit
//! that imported a JUnit file (`{junit}`), one per imported case (plus one failing
//! testcase for the unit itself when it failed while none of its cases did). Counts
//! therefore equal [`RunState::tests`].
//!
//! - passed: no child; a unit (or case) that failed before passing carries one
//!   `<flakyFailure>`/`<flakyError>` per failed attempt;
//! - failed, timeout: `<failure type="failed|timeout" message=…>` with the output tail;
//!   crashed, memory_limit, error: `<error …>`; earlier failed attempts as
//!   `<rerunFailure>`/`<rerunError>`;
//! - skipped or cancelled: `<skipped message="reason">`.
//!
//! Text goes through [`xml_text`]: bounded, and cleaned by [`super::text::clean`]
//! (escape sequences, control characters and the characters XML 1.0 cannot hold
//! removed), so the file is always well-formed.
//! The controller writes it atomically at the end of the run, Ctrl-C included; a
//! runner killed with SIGKILL writes nothing.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use quick_junit::{
    FlakyOrRerun, NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

pub use super::junit_merge::{merge, merge_command, read_report};
use crate::event::{CaseOutcome, CaseRerun, CaseState, Outcome, RunState, UnitState, UnitStatus};
use crate::ingest::junit::{self as junit_import, UNIT_PROPERTY, UNIT_TIME_PROPERTY};

/// Suite property of a shard's report (`--partition K/N`): `K/N`.
pub const PARTITION_PROPERTY: &str = "runner.partition";
/// Suite property of a shard's report: the units of the whole plan (all shards').
pub const PLANNED_PROPERTY: &str = "runner.partition_planned";
/// Suite property of a shard's report: the digest of what the partition was computed
/// from (the same in every shard of one partition).
pub const DIGEST_PROPERTY: &str = "runner.partition_digest";

/// At most this many bytes of text per element (message, failure text, output).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// `text` made fit for an XML document: at most `max` bytes (the end is kept), and
/// without the characters XML 1.0 forbids that `XmlString` leaves in.
pub fn xml_text(text: &str, max: usize) -> String {
    super::text::clean(&junit_import::tail(text, max))
}

pub(super) fn message(text: &str) -> String {
    xml_text(text.lines().next().unwrap_or(""), 1024)
}

fn timestamp(rfc3339: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(rfc3339).ok()
}

pub(super) fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// The non-success kind and `type` of a unit outcome.
fn unit_kind(outcome: Outcome) -> (NonSuccessKind, &'static str) {
    match outcome {
        Outcome::Failed => (NonSuccessKind::Failure, "failed"),
        Outcome::Timeout => (NonSuccessKind::Failure, "timeout"),
        Outcome::Crashed => (NonSuccessKind::Error, "crashed"),
        Outcome::MemoryLimit => (NonSuccessKind::Error, "memory_limit"),
        Outcome::Error => (NonSuccessKind::Error, "error"),
        // Not failures; never asked for.
        Outcome::Passed => (NonSuccessKind::Failure, "passed"),
        Outcome::Cancelled => (NonSuccessKind::Failure, "cancelled"),
    }
}

pub(super) fn case_kind(outcome: CaseOutcome) -> NonSuccessKind {
    match outcome {
        CaseOutcome::Error => NonSuccessKind::Error,
        _ => NonSuccessKind::Failure,
    }
}

/// The JUnit report of a run.
pub fn build(state: &RunState) -> Report {
    let mut report = Report::new("runner");
    if let Some(ts) = timestamp(&state.started_at) {
        report.set_timestamp(ts);
    }
    let mut suites: IndexMap<String, TestSuite> = IndexMap::new();
    // Suite time: the wall time of its units (imported cases time only themselves).
    let mut suite_time: IndexMap<String, Duration> = IndexMap::new();
    for (id, u) in &state.units {
        if !matches!(u.status, UnitStatus::Finished | UnitStatus::Skipped) {
            continue;
        }
        let name = format!("{}/{}", u.layer, u.category);
        let suite = suites.entry(name.clone()).or_insert_with(|| {
            let mut s = TestSuite::new(name.clone());
            if let Some(ts) = timestamp(&state.started_at) {
                s.set_timestamp(ts);
            }
            s.add_properties([
                Property::new("run_id", &state.run_id),
                Property::new("environment", &state.environment),
                Property::new("layer", &u.layer),
                Property::new("category", &u.category),
            ]);
            if let Some(p) = &state.partition {
                s.add_properties([
                    Property::new(PARTITION_PROPERTY, p.label()),
                    Property::new(PLANNED_PROPERTY, p.planned.to_string()),
                    Property::new(DIGEST_PROPERTY, &p.digest),
                ]);
            }
            s
        });
        *suite_time.entry(name.clone()).or_default() += ms(u.duration_ms.unwrap_or(0));
        if u.details().cases.is_empty() {
            suite.add_test_case(unit_case(&name, u));
        } else {
            for (i, c) in u.details().cases.iter().enumerate() {
                let mut tc = imported_case(&name, c);
                tc.add_property(Property::new(UNIT_PROPERTY, id));
                if i == 0
                    && let Some(d) = u.duration_ms
                {
                    let secs = format!("{:.3}", d as f64 / 1000.0);
                    tc.add_property(Property::new(UNIT_TIME_PROPERTY, secs));
                }
                suite.add_test_case(tc);
            }
            if u.failed_outside_cases() {
                let mut tc = unit_case(&name, u);
                tc.time = None;
                tc.add_property(Property::new(UNIT_PROPERTY, id));
                suite.add_test_case(tc);
            }
        }
    }
    for (name, mut suite) in suites {
        suite.set_time(suite_time.get(&name).copied().unwrap_or_default());
        report.add_test_suite(suite);
    }
    match state.duration_ms {
        Some(d) => report.set_time(ms(d)),
        None => {
            let total: Duration = report.test_suites.iter().filter_map(|s| s.time).sum();
            report.set_time(total)
        }
    };
    report
}

fn unit_case(suite: &str, u: &UnitState) -> TestCase {
    let status = match (u.status, u.outcome) {
        (UnitStatus::Finished, Some(Outcome::Passed)) => TestCaseStatus::Success {
            flaky_runs: u
                .details()
                .attempt_failures
                .iter()
                .map(attempt_rerun)
                .collect(),
        },
        (UnitStatus::Finished, Some(outcome)) if outcome.is_failure() => {
            let (kind, ty) = unit_kind(outcome);
            let mut status = TestCaseStatus::non_success(kind);
            status.set_type(ty);
            if let Some(m) = &u.message {
                status.set_message(message(m));
            }
            if let Some(tail) = u
                .details()
                .output_tail
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            {
                status.set_description(xml_text(tail, MAX_TEXT_BYTES));
            }
            status.add_reruns(u.details().attempt_failures.iter().map(attempt_rerun));
            status.set_rerun_kind(FlakyOrRerun::Rerun);
            status
        }
        _ => {
            let mut status = TestCaseStatus::skipped();
            let ty = if u.outcome == Some(Outcome::Cancelled) {
                "cancelled"
            } else {
                "skipped"
            };
            status.set_type(ty);
            if let Some(m) = &u.message {
                status.set_message(message(m));
            }
            status
        }
    };
    let mut tc = TestCase::new(u.name.as_str(), status);
    tc.set_classname(suite);
    if let Some(d) = u.duration_ms {
        tc.set_time(ms(d));
    }
    tc
}

fn attempt_rerun(a: &crate::event::AttemptFailure) -> TestRerun {
    let (kind, ty) = unit_kind(a.outcome);
    let mut r = TestRerun::new(kind);
    r.set_type(ty).set_time(ms(a.duration_ms));
    r.set_message(format!(
        "attempt {}: {}",
        a.attempt,
        a.message
            .as_deref()
            .map(message)
            .unwrap_or_else(|| ty.into())
    ));
    if let Some(tail) = a.output_tail.as_deref().filter(|t| !t.trim().is_empty()) {
        r.set_description(xml_text(tail, MAX_TEXT_BYTES));
    }
    r
}

fn case_rerun(r: &CaseRerun) -> TestRerun {
    let mut out = TestRerun::new(case_kind(r.outcome));
    out.set_time(ms(r.duration_ms));
    out.set_message(format!(
        "attempt {}: {}",
        r.attempt,
        r.message.as_deref().map(message).unwrap_or_default()
    ));
    if let Some(d) = &r.details {
        out.set_description(xml_text(d, MAX_TEXT_BYTES));
    }
    out
}

fn imported_case(suite: &str, c: &CaseState) -> TestCase {
    let status = match c.outcome {
        CaseOutcome::Passed => TestCaseStatus::Success {
            flaky_runs: c.reruns.iter().map(case_rerun).collect(),
        },
        CaseOutcome::Failed | CaseOutcome::Error => {
            let mut status = TestCaseStatus::non_success(case_kind(c.outcome));
            status.set_type(if c.outcome == CaseOutcome::Error {
                "error"
            } else {
                "failed"
            });
            if let Some(m) = &c.message {
                status.set_message(message(m));
            }
            if let Some(d) = &c.details {
                status.set_description(xml_text(d, MAX_TEXT_BYTES));
            }
            status.add_reruns(c.reruns.iter().map(case_rerun));
            status.set_rerun_kind(FlakyOrRerun::Rerun);
            status
        }
        CaseOutcome::Skipped => {
            let mut status = TestCaseStatus::skipped();
            if let Some(m) = &c.message {
                status.set_message(message(m));
            }
            status
        }
    };
    let mut tc = TestCase::new(c.name.as_str(), status);
    tc.set_classname(c.classname.as_deref().unwrap_or(suite));
    tc.set_time(ms(c.duration_ms));
    if let Some(f) = &c.file {
        tc.extra.insert("file".into(), f.into());
    }
    if let Some(l) = c.line {
        tc.extra.insert("line".into(), l.to_string().into());
    }
    tc
}

/// The report as XML text.
pub fn render(state: &RunState) -> String {
    to_xml(&build(state))
}

pub(super) fn to_xml(report: &Report) -> String {
    report
        .to_string()
        .unwrap_or_else(|e| format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"runner\" tests=\"0\" failures=\"0\" errors=\"0\"><!-- serialization failed: {} --></testsuites>\n", xml_text(&e.to_string(), 512).replace("--", "- -")))
}

/// Writes the report of `state` to `path` atomically.
pub fn write(path: &Path, state: &RunState) -> std::io::Result<()> {
    super::files::write_atomic(path, render(state).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind, PlannedUnit};

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            v: 1,
            seq,
            ts: "2026-01-01T00:00:00Z".into(),
            run_id: "run-1".into(),
            thread_id: None,
            agent: "t".into(),
            kind,
        }
    }

    fn finished(
        unit: &str,
        attempt: u32,
        outcome: Outcome,
        will_retry: bool,
        tail: Option<&str>,
    ) -> EventKind {
        EventKind::TestFinished {
            unit: unit.into(),
            attempt,
            outcome,
            will_retry,
            duration_ms: 1500,
            exit_code: None,
            signal: None,
            peak_memory_mb: None,
            message: (!outcome.is_pass()).then(|| format!("{outcome:?} here")),
            output_tail: tail.map(str::to_string),
            log: None,
        }
    }

    fn run(units: &[&str]) -> RunState {
        let mut s = RunState::default();
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "ci".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into()],
                slots: 1,
                units: units
                    .iter()
                    .map(|id| {
                        let p: Vec<&str> = id.splitn(3, '/').collect();
                        PlannedUnit {
                            id: id.to_string(),
                            layer: p[0].into(),
                            category: p[1].into(),
                            name: p[2].into(),
                            expected_ms: None,
                        }
                    })
                    .collect(),
                pid: 1,
            },
        ));
        s
    }

    fn sample() -> RunState {
        let mut s = run(&[
            "fast/unit/pass",
            "fast/unit/fail",
            "fast/unit/flaky",
            "fast/unit/slow",
            "fast/unit/skip",
            "fast/lint/bad_output",
            "fast/unit/never",
        ]);
        let mut seq = 1;
        let mut apply = |s: &mut RunState, k| {
            seq += 1;
            s.apply(&ev(seq, k));
        };
        apply(
            &mut s,
            finished("fast/unit/pass", 1, Outcome::Passed, false, None),
        );
        apply(
            &mut s,
            finished("fast/unit/fail", 1, Outcome::Failed, true, Some("first")),
        );
        apply(
            &mut s,
            finished(
                "fast/unit/fail",
                2,
                Outcome::Failed,
                false,
                Some("AssertionError"),
            ),
        );
        apply(
            &mut s,
            finished("fast/unit/flaky", 1, Outcome::Crashed, true, Some("segv")),
        );
        apply(
            &mut s,
            finished("fast/unit/flaky", 2, Outcome::Passed, false, None),
        );
        apply(
            &mut s,
            finished("fast/unit/slow", 1, Outcome::Timeout, false, Some("zzz")),
        );
        apply(
            &mut s,
            EventKind::TestSkipped {
                unit: "fast/unit/skip".into(),
                reason: "requires real services".into(),
            },
        );
        apply(
            &mut s,
            finished(
                "fast/lint/bad_output",
                1,
                Outcome::Failed,
                false,
                Some("\u{1}\u{1b}[31m\u{fffd}\u{fffe}\u{ffff} bad ]]> <&>\u{0}"),
            ),
        );
        s
    }

    #[test]
    fn report_has_a_suite_per_category_and_a_case_per_settled_unit() {
        let s = sample();
        let r = build(&s);
        let names: Vec<&str> = r.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fast/unit", "fast/lint"]);
        assert_eq!(
            (r.tests, r.failures, r.errors, r.skipped),
            (6, 3, 0, 1),
            "the pending unit is not reported"
        );
        assert_eq!(r.tests, s.tests.total);
        assert_eq!(r.failures + r.errors, s.tests.failed);
        assert_eq!(r.skipped, s.tests.skipped);
        let unit = &r.test_suites[0];
        let props: Vec<(&str, &str)> = unit
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            props,
            [
                ("run_id", "run-1"),
                ("environment", "ci"),
                ("layer", "fast"),
                ("category", "unit")
            ]
        );
        let case = |n: &str| {
            unit.test_cases
                .iter()
                .find(|c| c.name.as_str() == n)
                .unwrap()
        };
        match &case("fail").status {
            TestCaseStatus::NonSuccess {
                kind,
                ty,
                message,
                description,
                reruns,
            } => {
                assert_eq!(*kind, NonSuccessKind::Failure);
                assert_eq!(ty.as_ref().unwrap().as_str(), "failed");
                assert_eq!(message.as_ref().unwrap().as_str(), "Failed here");
                assert_eq!(description.as_ref().unwrap().as_str(), "AssertionError");
                assert_eq!(reruns.kind, FlakyOrRerun::Rerun);
                assert_eq!(reruns.runs.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        match &case("flaky").status {
            TestCaseStatus::Success { flaky_runs } => {
                assert_eq!(flaky_runs.len(), 1);
                assert_eq!(flaky_runs[0].kind, NonSuccessKind::Error);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &case("slow").status,
            TestCaseStatus::NonSuccess { ty: Some(t), .. } if t.as_str() == "timeout"
        ));
        assert!(matches!(
            &case("skip").status,
            TestCaseStatus::Skipped { message: Some(m), .. } if m.as_str() == "requires real services"
        ));
        assert_eq!(case("pass").time, Some(Duration::from_millis(1500)));
        assert_eq!(
            case("pass").classname.as_ref().unwrap().as_str(),
            "fast/unit"
        );
    }

    #[test]
    fn a_shard_report_carries_its_partition() {
        let mut s = sample();
        s.apply(&ev(
            99,
            EventKind::Partition(crate::event::Shard {
                k: 2,
                n: 3,
                planned: 21,
                known_durations: 20,
                digest: "00ff00ff00ff00ff".into(),
            }),
        ));
        let xml = render(&s);
        let back = Report::deserialize_from_str(&xml).unwrap();
        for suite in &back.test_suites {
            let props: Vec<(&str, &str)> = suite
                .properties
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .skip(4)
                .collect();
            assert_eq!(
                props,
                [
                    (PARTITION_PROPERTY, "2/3"),
                    (PLANNED_PROPERTY, "21"),
                    (DIGEST_PROPERTY, "00ff00ff00ff00ff")
                ]
            );
        }
    }

    #[test]
    fn xml_is_well_formed_and_free_of_invalid_characters() {
        let xml = render(&sample());
        for bad in ['\u{0}', '\u{1}', '\u{1b}', '\u{fffe}', '\u{ffff}'] {
            assert!(!xml.contains(bad), "{bad:?} in\n{xml}");
        }
        assert!(xml.contains("\u{fffd} bad ]]&gt; &lt;&amp;&gt;"), "{xml}");
        assert!(xml.contains("<flakyError"), "{xml}");
        assert!(xml.contains("<rerunFailure"), "{xml}");
        // Our own reader and quick-junit's both accept it.
        let back = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.tests, 6);
        assert_eq!(junit_import::parse(&xml).unwrap().len(), 6);
    }

    #[test]
    fn imported_cases_replace_the_unit_testcase() {
        let mut s = run(&["fast/py/tests/test_a.py"]);
        let id = "fast/py/tests/test_a.py";
        s.apply(&ev(
            2,
            finished(id, 1, Outcome::Failed, false, Some("tail")),
        ));
        let case = |seq, name: &str, outcome| {
            ev(
                seq,
                EventKind::TestCase {
                    unit: id.into(),
                    attempt: 1,
                    suite: "pytest".into(),
                    name: name.into(),
                    classname: Some("tests.test_a".into()),
                    file: Some("tests/test_a.py".into()),
                    line: Some(4),
                    outcome,
                    duration_ms: 20,
                    message: Some("m".into()),
                    details: Some("d".into()),
                },
            )
        };
        s.apply(&case(3, "t_ok", CaseOutcome::Passed));
        s.apply(&case(4, "t_bad", CaseOutcome::Failed));
        s.apply(&case(5, "t_skip", CaseOutcome::Skipped));
        let r = build(&s);
        assert_eq!((r.tests, r.failures, r.skipped), (3, 1, 1));
        let bad = &r.test_suites[0].test_cases[1];
        assert_eq!(bad.classname.as_ref().unwrap().as_str(), "tests.test_a");
        assert_eq!(
            bad.extra
                .get(&quick_junit::XmlString::new("file"))
                .unwrap()
                .as_str(),
            "tests/test_a.py"
        );
        assert_eq!(bad.properties[0].value.as_str(), id);
        let xml = render(&s);
        let d = junit_import::durations_from_str(&xml).unwrap();
        assert_eq!(
            d[id],
            Duration::from_millis(1500),
            "the unit's wall time, not its cases'"
        );
        assert_eq!(r.test_suites[0].time, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn merge_joins_suites_and_recounts() {
        let a = sample();
        let mut b = run(&["fast/unit/other", "fast/e2e/x"]);
        b.apply(&ev(
            2,
            finished("fast/unit/other", 1, Outcome::Failed, false, None),
        ));
        b.apply(&ev(
            3,
            finished("fast/e2e/x", 1, Outcome::Passed, false, None),
        ));
        let m = merge(vec![build(&a), build(&b)]);
        let names: Vec<&str> = m.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fast/unit", "fast/lint", "fast/e2e"]);
        assert_eq!((m.tests, m.failures, m.skipped), (8, 4, 1));
        assert_eq!(m.test_suites[0].tests, 6);
        assert_eq!(
            m.test_suites[0]
                .properties
                .iter()
                .filter(|p| p.name.as_str() == "run_id")
                .count(),
            1,
            "identical properties are not repeated"
        );
    }

    #[test]
    fn foreign_bare_testsuite_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("py.xml");
        std::fs::write(
            &p,
            r#"<testsuite name="pytest"><testcase classname="t" name="a" time="1"/><testcase classname="t" name="b"><failure message="x">tb</failure></testcase></testsuite>"#,
        )
        .unwrap();
        let r = read_report(&p).unwrap();
        assert_eq!((r.tests, r.failures), (2, 1));
        assert!(read_report(&dir.path().join("none.xml")).is_err());
    }
}
