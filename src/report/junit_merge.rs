//! `runner merge-junit OUT IN...`: JUnit reports (the shards of a partitioned run) into one.
//!
//! Suites with the same name become one, every count is recomputed from the testcases.
//! Reading goes through quick-junit for `<testsuites>` files (the runner's own,
//! nextest's) and through the tolerant importer for anything else.
//!
//! Before writing anything, [`check`] looks at the inputs as shards of one suite:
//!
//! - a test in two inputs (same suite, classname and name, and for a case the runner
//!   imported, the same unit) means the shards overlapped: the merge fails (exit 2)
//!   naming the tests and the files, and OUT is not written;
//! - the runner's own shard reports carry their partition, the size of the whole plan
//!   and a digest of the partition's input (suite properties, see
//!   [`super::junit::PARTITION_PROPERTY`]): shards that disagree on them, and units of
//!   the plan that no report holds (a missing shard, units that never finished), are
//!   warnings on stderr; the exit code stays 0. Reports without these properties
//!   (foreign ones, runs that were not shards) are checked for duplicates only.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use quick_junit::{Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::junit::{
    DIGEST_PROPERTY, MAX_TEXT_BYTES, PARTITION_PROPERTY, PLANNED_PROPERTY, case_kind, message, ms,
    to_xml, xml_text,
};
use crate::event::CaseOutcome;
use crate::ingest::junit::{self as junit_import, ImportedCase, UNIT_PROPERTY};

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

fn is_partition_property(p: &Property) -> bool {
    [PARTITION_PROPERTY, PLANNED_PROPERTY, DIGEST_PROPERTY].contains(&p.name.as_str())
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
                // The merged report is no longer one shard.
                if is_partition_property(&p) {
                    continue;
                }
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

/// How merge-junit tells tests apart: the suite, the runner unit a case was imported
/// from (the `runner.unit` property, when present), the classname and the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TestKey {
    /// `<testsuite name>`.
    pub suite: String,
    /// The unit of an imported case.
    pub unit: Option<String>,
    /// `classname`.
    pub classname: Option<String>,
    /// `name`.
    pub name: String,
}

impl fmt::Display for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.suite)?;
        if let Some(c) = self.classname.as_deref().filter(|c| *c != self.suite) {
            write!(f, " :: {c}")?;
        }
        write!(f, " :: {}", self.name)?;
        if let Some(u) = &self.unit {
            write!(f, " (unit {u})")?;
        }
        Ok(())
    }
}

/// A test that more than one input holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The test.
    pub test: TestKey,
    /// The inputs holding it, in command-line order.
    pub files: Vec<PathBuf>,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Tests in more than one input (the merge fails), in order of first appearance.
    pub duplicates: Vec<Duplicate>,
    /// What the shards' partition properties say is wrong (the merge goes on).
    pub warnings: Vec<String>,
}

/// The partition a shard report carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ShardProps {
    n: usize,
    planned: usize,
    digest: String,
    k: usize,
}

fn shard_props(suite: &TestSuite) -> Option<ShardProps> {
    let get = |name: &str| {
        suite
            .properties
            .iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.value.as_str().to_string())
    };
    let label = get(PARTITION_PROPERTY)?;
    let (k, n) = label.split_once('/')?;
    Some(ShardProps {
        k: k.trim().parse().ok()?,
        n: n.trim().parse().ok()?,
        planned: get(PLANNED_PROPERTY)?.trim().parse().ok()?,
        digest: get(DIGEST_PROPERTY).unwrap_or_default(),
    })
}

fn case_property<'a>(case: &'a TestCase, name: &str) -> Option<&'a str> {
    case.properties
        .iter()
        .find(|p| p.name.as_str() == name)
        .map(|p| p.value.as_str())
}

/// Checks `inputs` (path and report, in command-line order) as the shards of one suite:
/// tests held by more than one input, and, from the partition properties of the
/// runner's shard reports, shards that disagree and planned units no report holds.
pub fn check(inputs: &[(&Path, &Report)]) -> Findings {
    let mut seen: IndexMap<TestKey, Vec<usize>> = IndexMap::new();
    // Per input: the partitions it says it is; the units its shard suites hold.
    let mut shards: Vec<(usize, ShardProps)> = Vec::new();
    let mut units: BTreeSet<String> = BTreeSet::new();
    for (i, (_, report)) in inputs.iter().enumerate() {
        let mut mine: BTreeSet<ShardProps> = BTreeSet::new();
        for suite in &report.test_suites {
            let props = shard_props(suite);
            for case in &suite.test_cases {
                let unit = case_property(case, UNIT_PROPERTY).map(str::to_string);
                if props.is_some() {
                    units.insert(unit.clone().unwrap_or_else(|| {
                        format!("{}/{}", suite.name.as_str(), case.name.as_str())
                    }));
                }
                let key = TestKey {
                    suite: suite.name.as_str().to_string(),
                    unit,
                    classname: case.classname.as_ref().map(|c| c.as_str().to_string()),
                    name: case.name.as_str().to_string(),
                };
                let files = seen.entry(key).or_default();
                if files.last() != Some(&i) {
                    files.push(i);
                }
            }
            mine.extend(props);
        }
        shards.extend(mine.into_iter().map(|p| (i, p)));
    }
    let name = |i: usize| inputs[i].0.display().to_string();
    let duplicates = seen
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(test, files)| Duplicate {
            test,
            files: files.iter().map(|&i| inputs[i].0.to_path_buf()).collect(),
        })
        .collect();
    let mut warnings = Vec::new();
    // One partition: the same number of shards, plan size and digest everywhere.
    let mut inputs_of: IndexMap<(usize, usize, &str), Vec<String>> = IndexMap::new();
    for (i, p) in &shards {
        inputs_of
            .entry((p.n, p.planned, p.digest.as_str()))
            .or_default()
            .push(format!("{} (shard {}/{})", name(*i), p.k, p.n));
    }
    if inputs_of.len() > 1 {
        let groups: Vec<String> = inputs_of
            .iter()
            .map(|((n, planned, digest), files)| {
                format!(
                    "{} of {n} shards over {planned} units, input {digest}",
                    files.join(", ")
                )
            })
            .collect();
        warnings.push(format!(
            "the shards were not partitioned from the same plan and durations ({}): together they may run some tests twice and others never",
            groups.join("; ")
        ));
    } else if let Some((&(n, planned, _), _)) = inputs_of.first() {
        let found = units.len();
        if found < planned {
            let seen_k: BTreeSet<usize> = shards.iter().map(|(_, p)| p.k).collect();
            let absent: Vec<String> = (1..=n)
                .filter(|k| !seen_k.contains(k))
                .map(|k| format!("{k}/{n}"))
                .collect();
            let hint = if absent.is_empty() {
                String::new()
            } else {
                format!("; no report from shard {}", absent.join(", "))
            };
            warnings.push(format!(
                "the shards planned {planned} units, the reports hold {found}: {} unit(s) missing from all shards (a shard not merged, or units that never finished){hint}",
                planned - found
            ));
        }
    }
    Findings {
        duplicates,
        warnings,
    }
}

/// Duplicates listed in full before "and N more".
const MAX_DUPLICATES_SHOWN: usize = 20;

/// `runner merge-junit OUT IN...`: check, merge, write atomically, print a one-line
/// summary. Returns the process exit code: 2 when an input cannot be read or a test is
/// in more than one input (OUT is then not written), 3 when OUT cannot be written.
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
    let findings = {
        let pairs: Vec<(&Path, &Report)> = inputs
            .iter()
            .map(PathBuf::as_path)
            .zip(reports.iter())
            .collect();
        check(&pairs)
    };
    for w in &findings.warnings {
        eprintln!("warning: merge-junit: {w}");
    }
    if !findings.duplicates.is_empty() {
        let d = &findings.duplicates;
        eprintln!(
            "error: merge-junit: {} test(s) in more than one report: the shards overlap; {} not written",
            d.len(),
            out.display()
        );
        for dup in d.iter().take(MAX_DUPLICATES_SHOWN) {
            let files: Vec<String> = dup.files.iter().map(|f| f.display().to_string()).collect();
            eprintln!("  {} in {}", dup.test, files.join(" and "));
        }
        if d.len() > MAX_DUPLICATES_SHOWN {
            eprintln!("  ... and {} more", d.len() - MAX_DUPLICATES_SHOWN);
        }
        return crate::exit_code::USAGE;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with one suite `name` (with `props`) holding `cases`: (classname, name,
    /// runner unit).
    fn report(suite: &str, props: &[(&str, &str)], cases: &[(&str, &str, Option<&str>)]) -> Report {
        let mut xml = format!(
            "<testsuites><testsuite name=\"{suite}\" tests=\"{}\">",
            cases.len()
        );
        if !props.is_empty() {
            xml.push_str("<properties>");
            for (k, v) in props {
                xml.push_str(&format!("<property name=\"{k}\" value=\"{v}\"/>"));
            }
            xml.push_str("</properties>");
        }
        for (classname, name, unit) in cases {
            xml.push_str(&format!(
                "<testcase classname=\"{classname}\" name=\"{name}\">"
            ));
            if let Some(u) = unit {
                xml.push_str(&format!(
                    "<properties><property name=\"{UNIT_PROPERTY}\" value=\"{u}\"/></properties>"
                ));
            }
            xml.push_str("</testcase>");
        }
        xml.push_str("</testsuite></testsuites>");
        Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
    }

    fn shard(k: usize, n: usize, planned: usize, digest: &str, units: &[&str]) -> Report {
        let label = format!("{k}/{n}");
        let planned = planned.to_string();
        let cases: Vec<(&str, &str, Option<&str>)> =
            units.iter().map(|u| ("l/c", *u, None)).collect();
        report(
            "l/c",
            &[
                ("run_id", &format!("run-{k}")),
                (PARTITION_PROPERTY, &label),
                (PLANNED_PROPERTY, &planned),
                (DIGEST_PROPERTY, digest),
            ],
            &cases,
        )
    }

    fn check_of(reports: &[(&str, &Report)]) -> Findings {
        let pairs: Vec<(&Path, &Report)> =
            reports.iter().map(|(p, r)| (Path::new(*p), *r)).collect();
        check(&pairs)
    }

    #[test]
    fn a_test_in_two_inputs_is_a_duplicate_within_one_it_is_not() {
        let a = report(
            "l/c",
            &[],
            &[
                ("l/c", "x", None),
                ("l/c", "y", None),
                ("l/c", "w", None),
                ("l/c", "w", None),
            ],
        );
        let b = report("l/c", &[], &[("l/c", "y", None), ("l/c", "z", None)]);
        let other_suite = report("l/d", &[], &[("l/c", "x", None)]);
        let f = check_of(&[("a.xml", &a), ("b.xml", &b), ("d.xml", &other_suite)]);
        assert_eq!(f.duplicates.len(), 1, "{f:?}");
        assert_eq!(f.duplicates[0].test.to_string(), "l/c :: y");
        assert_eq!(
            f.duplicates[0].files,
            [PathBuf::from("a.xml"), PathBuf::from("b.xml")]
        );
        assert!(f.warnings.is_empty(), "no shard properties, no warnings");
        // The same file twice.
        assert_eq!(
            check_of(&[("a.xml", &a), ("a.xml", &a)]).duplicates.len(),
            3
        );
        // Cases imported by two different units are two tests; by the same unit, one.
        let one = report("l/py", &[], &[("t.m", "test_ok", Some("l/py/a.py"))]);
        let two = report("l/py", &[], &[("t.m", "test_ok", Some("l/py/b.py"))]);
        assert!(
            check_of(&[("1.xml", &one), ("2.xml", &two)])
                .duplicates
                .is_empty()
        );
        let f = check_of(&[("1.xml", &one), ("3.xml", &one)]);
        assert_eq!(
            f.duplicates[0].test.to_string(),
            "l/py :: t.m :: test_ok (unit l/py/a.py)"
        );
    }

    #[test]
    fn shards_say_what_is_missing_and_when_they_disagree() {
        let s1 = shard(1, 3, 5, "d1", &["a", "b"]);
        let s2 = shard(2, 3, 5, "d1", &["c", "d"]);
        let s3 = shard(3, 3, 5, "d1", &["e"]);
        let all = check_of(&[("1.xml", &s1), ("2.xml", &s2), ("3.xml", &s3)]);
        assert_eq!(all, Findings::default(), "a complete partition");

        let f = check_of(&[("1.xml", &s1), ("3.xml", &s3)]);
        assert!(f.duplicates.is_empty());
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        let w = &f.warnings[0];
        assert!(w.contains("planned 5 units"), "{w}");
        assert!(w.contains("hold 3"), "{w}");
        assert!(w.contains("2 unit(s) missing"), "{w}");
        assert!(w.contains("no report from shard 2/3"), "{w}");

        // A shard balanced from other durations: another digest.
        let other = shard(2, 3, 5, "d2", &["c", "d"]);
        let f = check_of(&[("1.xml", &s1), ("2.xml", &other), ("3.xml", &s3)]);
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        let w = &f.warnings[0];
        assert!(w.contains("not partitioned from the same"), "{w}");
        assert!(w.contains("2.xml (shard 2/3)"), "{w}");
        assert!(w.contains("input d2"), "{w}");

        // Foreign reports next to the shards are merged, not counted.
        let foreign = report("pytest", &[], &[("t", "x", None)]);
        let f = check_of(&[
            ("1.xml", &s1),
            ("2.xml", &s2),
            ("3.xml", &s3),
            ("f.xml", &foreign),
        ]);
        assert_eq!(f, Findings::default());
    }

    #[test]
    fn the_merged_report_is_no_longer_a_shard() {
        let m = merge(vec![
            shard(1, 2, 2, "d", &["a"]),
            shard(2, 2, 2, "d", &["b"]),
        ]);
        let names: Vec<&str> = m.test_suites[0]
            .properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["run_id", "run_id"], "run ids stay, partitions go");
        assert_eq!(m.tests, 2);
    }
}
