//! `runner merge-junit OUT IN...`: JUnit reports (the shards of a partitioned run) into one.
//!
//! Suites with the same name become one, every count is recomputed from the testcases.
//! Reading goes through quick-junit for `<testsuites>` files (the runner's own,
//! nextest's) and through the tolerant importer for anything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use quick_junit::{Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::junit::{MAX_TEXT_BYTES, case_kind, message, ms, to_xml, xml_text};
use super::junit_import::{self, ImportedCase};
use crate::event::CaseOutcome;

/// Reads a JUnit file for merging: quick-junit's reader for `<testsuites>` files (the
/// runner's own, nextest's), the tolerant importer for anything else (bare
/// `<testsuite>` roots: pytest with some plugins, go-junit-report...).
pub fn read_report(path: &Path) -> Result<Report, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    if let Ok(report) = Report::deserialize_from_str(&text) {
        return Ok(report);
    }
    let cases = junit_import::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut suites: IndexMap<String, TestSuite> = IndexMap::new();
    for c in cases {
        suites
            .entry(c.suite.clone())
            .or_insert_with(|| TestSuite::new(c.suite.clone()))
            .add_test_case(foreign_case(c));
    }
    let mut report = Report::new("runner");
    report.add_test_suites(suites.into_values());
    Ok(report)
}

fn foreign_case(c: ImportedCase) -> TestCase {
    let status = match c.outcome {
        CaseOutcome::Passed => TestCaseStatus::success(),
        CaseOutcome::Skipped => {
            let mut s = TestCaseStatus::skipped();
            if let Some(m) = &c.message {
                s.set_message(message(m));
            }
            s
        }
        CaseOutcome::Failed | CaseOutcome::Error => {
            let mut s = TestCaseStatus::non_success(case_kind(c.outcome));
            if let Some(m) = &c.message {
                s.set_message(message(m));
            }
            if let Some(t) = &c.failure_type {
                s.set_type(t.as_str());
            }
            if let Some(t) = &c.failure_text {
                s.set_description(xml_text(t, MAX_TEXT_BYTES));
            }
            s
        }
    };
    let mut tc = TestCase::new(c.name.as_str(), status);
    if let Some(cl) = &c.classname {
        tc.set_classname(cl.as_str());
    }
    tc.set_time(ms(c.duration_ms));
    if let Some(o) = &c.system_out {
        tc.set_system_out(xml_text(o, MAX_TEXT_BYTES));
    }
    if let Some(e) = &c.system_err {
        tc.set_system_err(xml_text(e, MAX_TEXT_BYTES));
    }
    if let Some(f) = &c.file {
        tc.extra.insert("file".into(), f.into());
    }
    if let Some(l) = c.line {
        tc.extra.insert("line".into(), l.to_string().into());
    }
    tc.add_properties(c.properties.iter().map(|(k, v)| Property::new(k, v)));
    tc
}

/// Merges reports (the shards of one suite): suites with the same name become one
/// (their testcases in input order, properties without duplicates, times added up),
/// every count is recomputed from the testcases; the merged run's time is the longest
/// input's (shards run side by side) and its timestamp the earliest.
pub fn merge(reports: Vec<Report>) -> Report {
    let mut out = Report::new(
        reports
            .first()
            .and_then(|r| r.name.as_ref())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "runner".into()),
    );
    let mut suites: IndexMap<String, TestSuite> = IndexMap::new();
    let mut time: Option<Duration> = None;
    let mut ts: Option<DateTime<FixedOffset>> = None;
    for report in reports {
        if let Some(t) = report.time {
            time = Some(time.map_or(t, |m| m.max(t)));
        }
        if let Some(t) = report.timestamp {
            ts = Some(ts.map_or(t, |m| m.min(t)));
        }
        for suite in report.test_suites {
            let merged = suites
                .entry(suite.name.as_str().to_string())
                .or_insert_with(|| TestSuite::new(suite.name.clone()));
            for p in suite.properties {
                if !merged.properties.contains(&p) {
                    merged.properties.push(p);
                }
            }
            if let Some(t) = suite.timestamp {
                merged.timestamp = Some(merged.timestamp.map_or(t, |m| m.min(t)));
            }
            if let Some(t) = suite.time {
                merged.time = Some(merged.time.unwrap_or_default() + t);
            }
            for (k, v) in suite.extra {
                merged.extra.entry(k).or_insert(v);
            }
            merged.add_test_cases(suite.test_cases);
        }
    }
    out.add_test_suites(suites.into_values());
    if let Some(t) = time {
        out.set_time(t);
    }
    if let Some(t) = ts {
        out.set_timestamp(t);
    }
    out
}

/// `runner merge-junit OUT IN...`: merge, write atomically, print a one-line summary.
/// Returns the process exit code (2 when an input cannot be read).
pub fn merge_command(out: &Path, inputs: &[PathBuf]) -> i32 {
    let mut reports = Vec::new();
    for input in inputs {
        match read_report(input) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: cannot read JUnit report {e}");
                return crate::exit_code::USAGE;
            }
        }
    }
    let merged = merge(reports);
    if let Err(e) = super::files::write_atomic(out, to_xml(&merged).as_bytes()) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return crate::exit_code::INFRASTRUCTURE;
    }
    // The merged file is written whether or not anyone reads this line.
    super::out::line(&format!(
        "merged {} report(s) into {}: {} tests, {} failures, {} errors, {} skipped",
        inputs.len(),
        out.display(),
        merged.tests,
        merged.failures,
        merged.errors,
        merged.skipped
    ));
    crate::exit_code::PASSED
}
