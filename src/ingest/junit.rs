//! JUnit import: the `{junit}` placeholder of command categories, and reading the JUnit
//! XML other tools write (pytest, jest-junit, go-junit-report, nextest, Maven Surefire...)
//! into `test_case` events.
//!
//! A command containing `{junit}` gets a fresh path there for each attempt
//! (`<run_dir>/junit/<unit>.<attempt>.xml`, shell-quoted). After the attempt ends the
//! executor calls [`import_events`]: every `<testcase>` becomes one
//! [`EventKind::TestCase`]; a missing or unreadable file becomes one `warning` on the unit.
//!
//! The reader is deliberately tolerant: the root may be `<testsuites>` or a bare
//! `<testsuite>`, suites may nest, counts and timestamps are ignored (they are recomputed
//! from the cases), `time` may be missing or written with thousands separators, and
//! `<failure>`, `<error>` and `<skipped>` may be empty elements or carry text.
//!
//! The same reader gives [`durations_from`], the known unit durations of a previous
//! report for `--partition`, and the fallback of `merge-junit` for foreign files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::{CaseOutcome, EventKind, Outcome};

/// The placeholder replaced by the path of the attempt's JUnit file.
pub const PLACEHOLDER: &str = "{junit}";

/// At most this much failure text and output is kept per imported case.
pub const MAX_DETAILS_BYTES: usize = 4096;

/// True when a command asks for a JUnit file.
pub fn uses_junit(command: &str) -> bool {
    command.contains(PLACEHOLDER)
}

/// The JUnit file of attempt `attempt` of the unit whose file-safe name is `safe_name`.
pub fn junit_path(run_dir: &Path, safe_name: &str, attempt: u32) -> PathBuf {
    run_dir
        .join("junit")
        .join(format!("{safe_name}.{attempt}.xml"))
}

/// `command` with every `{junit}` replaced by the shell-quoted `path`.
pub fn substitute(command: &str, path: &Path) -> String {
    let text = path.to_string_lossy();
    let quoted = shlex::try_quote(&text)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", text.replace('\'', r"'\''")));
    command.replace(PLACEHOLDER, &quoted)
}

/// Creates the file's directory (a shell redirect `> {junit}` needs it) and removes a
/// stale file, so what is read afterwards was written by this attempt.
pub fn prepare(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One `<testcase>` of an imported file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedCase {
    /// Innermost `<testsuite>` name.
    pub suite: String,
    /// Test name.
    pub name: String,
    /// `classname` (or `class`).
    pub classname: Option<String>,
    /// `file` attribute of the case or its suite, as written.
    pub file: Option<String>,
    /// `line` attribute.
    pub line: Option<u32>,
    /// Outcome.
    pub outcome: CaseOutcome,
    /// `time`, in milliseconds.
    pub duration_ms: u64,
    /// Failure, error or skip message.
    pub message: Option<String>,
    /// Failure text, then captured output; bounded; non-pass only.
    pub details: Option<String>,
    /// `<properties>` of the case.
    pub properties: Vec<(String, String)>,
    /// `<system-out>` of the case (bounded), any outcome.
    pub system_out: Option<String>,
    /// `<system-err>` of the case (bounded), any outcome.
    pub system_err: Option<String>,
    /// The whole failure text (bounded), for re-export.
    pub failure_text: Option<String>,
    /// `type` of the failure, error or skip.
    pub failure_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct XSuite {
    #[serde(rename = "@name", default)]
    name: Option<String>,
    #[serde(rename = "@file", default)]
    file: Option<String>,
    #[serde(rename = "testsuite", default)]
    suites: Vec<XSuite>,
    #[serde(rename = "testcase", default)]
    cases: Vec<XCase>,
}

#[derive(Debug, Default, Deserialize)]
struct XCase {
    #[serde(rename = "@name", default)]
    name: Option<String>,
    #[serde(rename = "@classname", default)]
    classname: Option<String>,
    #[serde(rename = "@class", default)]
    class: Option<String>,
    #[serde(rename = "@file", default)]
    file: Option<String>,
    #[serde(rename = "@line", default)]
    line: Option<String>,
    #[serde(rename = "@time", default)]
    time: Option<String>,
    #[serde(default)]
    failure: Vec<XProblem>,
    #[serde(default)]
    error: Vec<XProblem>,
    #[serde(default)]
    skipped: Vec<XProblem>,
    #[serde(rename = "system-out", default)]
    system_out: Vec<XText>,
    #[serde(rename = "system-err", default)]
    system_err: Vec<XText>,
    #[serde(default)]
    properties: Vec<XProperties>,
}

#[derive(Debug, Default, Deserialize)]
struct XProblem {
    #[serde(rename = "@message", default)]
    message: Option<String>,
    #[serde(rename = "@type", default)]
    ty: Option<String>,
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct XText {
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct XProperties {
    #[serde(default)]
    property: Vec<XProperty>,
}

#[derive(Debug, Default, Deserialize)]
struct XProperty {
    #[serde(rename = "@name", default)]
    name: Option<String>,
    #[serde(rename = "@value", default)]
    value: Option<String>,
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

/// The name of the root element, or an error for something that is not XML.
fn root_element(xml: &str) -> Result<String, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Ok(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Ok(Event::Eof) => return Err("no root element (empty file?)".into()),
            Ok(_) => {}
            Err(e) => {
                return Err(format!("not XML at byte {}: {e}", reader.error_position()));
            }
        }
    }
}

/// Parses JUnit XML into its test cases, in file order.
pub fn parse(xml: &str) -> Result<Vec<ImportedCase>, String> {
    let root = root_element(xml)?;
    if root != "testsuites" && root != "testsuite" {
        return Err(format!(
            "the root element is <{root}>, not <testsuites> or <testsuite>"
        ));
    }
    let top: XSuite = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    flatten(&top, "", None, &mut out);
    Ok(out)
}

/// Reads and parses a JUnit file.
pub fn read(path: &Path) -> Result<Vec<ImportedCase>, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "was not written".to_string(),
        _ => e.to_string(),
    })?;
    // Be lenient with stray invalid UTF-8 in captured output.
    let text = String::from_utf8_lossy(&bytes);
    parse(&text)
}

fn flatten(suite: &XSuite, parent: &str, parent_file: Option<&str>, out: &mut Vec<ImportedCase>) {
    let name = suite
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(parent);
    let file = suite.file.as_deref().or(parent_file);
    for case in &suite.cases {
        out.push(convert(case, name, file));
    }
    for child in &suite.suites {
        flatten(child, name, file, out);
    }
}

fn text_of(p: &XProblem) -> Option<&str> {
    p.text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn convert(case: &XCase, suite: &str, suite_file: Option<&str>) -> ImportedCase {
    let (outcome, problems) = if !case.failure.is_empty() {
        (CaseOutcome::Failed, &case.failure)
    } else if !case.error.is_empty() {
        (CaseOutcome::Error, &case.error)
    } else if !case.skipped.is_empty() {
        (CaseOutcome::Skipped, &case.skipped)
    } else {
        (CaseOutcome::Passed, &case.failure)
    };
    let message = problems
        .iter()
        .find_map(|p| p.message.clone().filter(|m| !m.trim().is_empty()))
        .or_else(|| {
            problems
                .iter()
                .find_map(text_of)
                .and_then(|t| t.lines().next())
                .map(str::to_string)
        });
    let failure_text: Vec<&str> = case
        .failure
        .iter()
        .chain(&case.error)
        .filter_map(text_of)
        .collect();
    let failure_text = (!failure_text.is_empty()).then(|| failure_text.join("\n"));
    let joined = |parts: &[XText]| {
        let t: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .filter(|t| !t.trim().is_empty())
            .collect();
        (!t.is_empty()).then(|| t.join("\n"))
    };
    let system_out = joined(&case.system_out);
    let system_err = joined(&case.system_err);
    let details = outcome.is_failure().then(|| {
        let mut d = failure_text
            .as_deref()
            .map(|t| tail(t, MAX_DETAILS_BYTES * 3 / 4))
            .unwrap_or_default();
        let room = MAX_DETAILS_BYTES.saturating_sub(d.len());
        for (label, text) in [("stdout", &system_out), ("stderr", &system_err)] {
            if let Some(t) = text
                && room > 64
            {
                d.push_str(&format!("\n--- {label} ---\n"));
                d.push_str(&tail(t, room / 2));
            }
        }
        d
    });
    let properties = case
        .properties
        .iter()
        .flat_map(|p| &p.property)
        .filter_map(|p| {
            let name = p.name.clone()?;
            Some((name, p.value.clone().or(p.text.clone()).unwrap_or_default()))
        })
        .collect();
    ImportedCase {
        suite: suite.to_string(),
        name: case
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "(unnamed)".into()),
        classname: case.classname.clone().or(case.class.clone()),
        file: case.file.clone().or(suite_file.map(str::to_string)),
        line: case.line.as_deref().and_then(|l| l.trim().parse().ok()),
        outcome,
        duration_ms: parse_seconds(case.time.as_deref()).as_millis() as u64,
        message,
        details: details.filter(|d| !d.is_empty()),
        properties,
        system_out: system_out.map(|t| tail(&t, MAX_DETAILS_BYTES)),
        system_err: system_err.map(|t| tail(&t, MAX_DETAILS_BYTES)),
        failure_text: failure_text.map(|t| tail(&t, 16 * 1024)),
        failure_type: problems.iter().find_map(|p| p.ty.clone()),
    }
}

/// `time` in seconds as tools write it: `0.25`, `1,234.5`, ` 3 `; anything else is 0.
pub fn parse_seconds(time: Option<&str>) -> Duration {
    let Some(t) = time else {
        return Duration::ZERO;
    };
    let t: String = t
        .chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect();
    match t.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(1e9)),
        _ => Duration::ZERO,
    }
}

/// The last `max` bytes of `text`, cut at a character (and, when possible, line) boundary.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match cut.find('\n') {
        Some(nl) if nl + 1 < cut.len() && nl < max / 4 => format!("…\n{}", &cut[nl + 1..]),
        _ => format!("…{cut}"),
    }
}

/// Where a test lives, relative to the project root: from the case's `file` attribute,
/// else its `classname` read as a Python module path (`tests.test_a.TestX` →
/// `tests/test_a.py`) or a path; the line from `line`, else from a `file:N` in its
/// failure text.
fn locate(case: &ImportedCase, cwd: &Path, root: &Path) -> (Option<String>, Option<u32>) {
    let from_attr = case.file.as_deref().and_then(|f| existing(f, cwd, root));
    let file = from_attr.or_else(|| {
        let class = case.classname.as_deref()?;
        if class.contains('/') {
            return existing(class, cwd, root);
        }
        let parts: Vec<&str> = class.split('.').collect();
        (1..=parts.len())
            .rev()
            .find_map(|i| existing(&format!("{}.py", parts[..i].join("/")), cwd, root))
    });
    let text = [case.details.as_deref(), case.message.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
    let line = case.line.or_else(|| {
        let f = file.as_deref()?;
        locations_in_text(&text)
            .into_iter()
            .find(|(p, _)| same_file(p, f))
            .map(|(_, l)| l)
    });
    match file {
        Some(f) => (Some(f), line),
        None => match locate_in_text(&text, cwd, root) {
            Some((f, l)) => (Some(f), Some(l)),
            None => (None, None),
        },
    }
}

fn same_file(candidate: &str, known: &str) -> bool {
    let c = candidate.trim_start_matches("./");
    c == known || known.ends_with(&format!("/{c}")) || c.ends_with(&format!("/{known}"))
}

/// `path` (absolute, or relative to `cwd`) relative to `root` when it exists.
fn existing(path: &str, cwd: &Path, root: &Path) -> Option<String> {
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    if !full.is_file() {
        return None;
    }
    let rel = full.strip_prefix(root).unwrap_or(&full);
    let rel = rel.to_string_lossy();
    Some(rel.trim_start_matches("./").to_string())
}

/// Every `path:line` (and Python's `File "path", line N`) mentioned in `text`, in order.
pub fn locations_in_text(text: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._/-+@".contains(c);
    for (i, _) in text.match_indices(':') {
        let digits: String = text[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if digits.is_empty() || digits.len() > 7 {
            continue;
        }
        let before = &text[..i];
        let start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_path_char(*c))
            .last()
            .map(|(j, _)| j)
            .unwrap_or(i);
        let path = &text[start..i];
        let relative = path.starts_with("./") || path.starts_with("../");
        if ((path.contains('.') && !path.starts_with('.')) || relative)
            && let Ok(line) = digits.parse::<u32>()
            && line > 0
        {
            out.push((path.to_string(), line));
        }
    }
    for (i, _) in text.match_indices("File \"") {
        let rest = &text[i + 6..];
        let Some(end) = rest.find("\", line ") else {
            continue;
        };
        let digits: String = rest[end + 8..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(line) = digits.parse::<u32>() {
            out.push((rest[..end].to_string(), line));
        }
    }
    out
}

/// The first `path:line` in `text` whose file exists (relative to `cwd`, or absolute),
/// as a path relative to `root`.
pub fn locate_in_text(text: &str, cwd: &Path, root: &Path) -> Option<(String, u32)> {
    locations_in_text(text)
        .into_iter()
        .find_map(|(p, l)| Some((existing(&p, cwd, root)?, l)))
}

/// The events for the JUnit file of an attempt that ended with `outcome`: one
/// `test_case` per case, or one `warning` when the file is missing or unreadable
/// (no warning for a cancelled attempt, which had no chance to write it).
pub fn import_events(
    unit: &str,
    attempt: u32,
    path: &Path,
    cwd: &Path,
    root: &Path,
    outcome: Outcome,
) -> Vec<EventKind> {
    let cases = match read(path) {
        Ok(cases) => cases,
        Err(_) if outcome == Outcome::Cancelled => return Vec::new(),
        Err(e) => {
            return vec![EventKind::Warning {
                message: format!("JUnit file {} {e}; no test cases imported", path.display()),
                unit: Some(unit.to_string()),
            }];
        }
    };
    if cases.is_empty() {
        return vec![EventKind::Warning {
            message: format!("JUnit file {} has no test cases", path.display()),
            unit: Some(unit.to_string()),
        }];
    }
    cases
        .into_iter()
        .map(|case| {
            let (file, line) = locate(&case, cwd, root);
            EventKind::TestCase {
                unit: unit.to_string(),
                attempt,
                suite: case.suite,
                name: case.name,
                classname: case.classname,
                file,
                line,
                outcome: case.outcome,
                duration_ms: case.duration_ms,
                message: case.message,
                details: case.details,
            }
        })
        .collect()
}

/// The testcase property naming the unit an imported case belongs to, in the runner's
/// own JUnit output (so `--durations-from` can sum a unit's cases).
pub const UNIT_PROPERTY: &str = "runner.unit";

/// The testcase property carrying the wall time (seconds) of the unit an imported case
/// belongs to, on the unit's first case: the process's time, startup included, which
/// the cases' own times do not add up to.
pub const UNIT_TIME_PROPERTY: &str = "runner.unit_time";

/// Known unit durations from a previous JUnit report: a testcase with a
/// [`UNIT_PROPERTY`] counts for that unit (its [`UNIT_TIME_PROPERTY`] when present,
/// else the sum of its cases' times); any other adds its time to the unit id
/// `<suite name>/<testcase name>` (the runner names suites `layer/category` and
/// unit-level testcases after the unit). Only ids present in the plan matter; others
/// are ignored by the partition.
pub fn durations_from(path: &Path) -> Result<HashMap<String, Duration>, String> {
    let cases = read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(durations_of(cases))
}

/// [`durations_from`] on XML text.
pub fn durations_from_str(xml: &str) -> Result<HashMap<String, Duration>, String> {
    Ok(durations_of(parse(xml)?))
}

fn durations_of(cases: Vec<ImportedCase>) -> HashMap<String, Duration> {
    let mut out: HashMap<String, Duration> = HashMap::new();
    let mut wall: HashMap<String, Duration> = HashMap::new();
    for case in cases {
        let property = |name: &str| {
            case.properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let id = property(UNIT_PROPERTY).unwrap_or_else(|| format!("{}/{}", case.suite, case.name));
        if let Some(t) = property(UNIT_TIME_PROPERTY) {
            wall.insert(id.clone(), parse_seconds(Some(&t)));
        }
        *out.entry(id).or_default() += Duration::from_millis(case.duration_ms);
    }
    out.extend(wall);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4" time="0.050" timestamp="2026-01-01T10:00:00.123456" hostname="h"><testcase classname="tests.test_math" name="test_add" time="0.001" /><testcase classname="tests.test_math" name="test_div" time="0.002"><failure message="assert 1 == 2">def test_div():
&gt;       assert 1 == 2
E       assert 1 == 2

tests/test_math.py:7: AssertionError</failure><system-out>printed</system-out></testcase><testcase classname="tests.test_math" name="test_skip" time="0.000"><skipped type="pytest.skip" message="not today">tests/test_math.py:10: not today</skipped></testcase><testcase classname="tests.test_math" name="test_fixture" time="0.000"><error message="failed on setup with &quot;ValueError: boom&quot;">ValueError: boom</error></testcase></testsuite></testsuites>"#;

    #[test]
    fn pytest_shape() {
        let cases = parse(PYTEST).unwrap();
        let outcomes: Vec<_> = cases.iter().map(|c| (c.name.as_str(), c.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("test_add", CaseOutcome::Passed),
                ("test_div", CaseOutcome::Failed),
                ("test_skip", CaseOutcome::Skipped),
                ("test_fixture", CaseOutcome::Error),
            ]
        );
        let div = &cases[1];
        assert_eq!(div.suite, "pytest");
        assert_eq!(div.classname.as_deref(), Some("tests.test_math"));
        assert_eq!(div.duration_ms, 2);
        assert_eq!(div.message.as_deref(), Some("assert 1 == 2"));
        let d = div.details.as_deref().unwrap();
        assert!(
            d.contains("> ") && d.contains("tests/test_math.py:7"),
            "{d}"
        );
        assert!(d.contains("--- stdout ---\nprinted"), "{d}");
        assert_eq!(cases[2].message.as_deref(), Some("not today"));
        assert!(cases[0].details.is_none(), "no details for a pass");
        assert!(cases[3].message.as_deref().unwrap().contains("ValueError"));
    }

    #[test]
    fn bare_testsuite_root_without_counts_and_jest_shape() {
        // jest-junit: file on the suite, failure text without message, no counts.
        let xml = r#"<testsuite name="math.test.js" file="src/math.test.js">
  <testcase classname="math adds" name="math adds" time="0.004"/>
  <testcase classname="math divides" name="math divides" time="1,234.5">
    <failure>Error: expect(received).toBe(expected)
    at Object.&lt;anonymous&gt; (src/math.test.js:9:17)</failure>
  </testcase>
</testsuite>"#;
        let cases = parse(xml).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[1].outcome, CaseOutcome::Failed);
        assert_eq!(cases[1].duration_ms, 1_234_500);
        assert_eq!(
            cases[1].message.as_deref(),
            Some("Error: expect(received).toBe(expected)")
        );
        assert_eq!(cases[0].file.as_deref(), Some("src/math.test.js"));
    }

    #[test]
    fn go_junit_report_and_nested_suites() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3">
	<testsuite name="example.com/pkg" tests="3" failures="1" errors="0" id="0" hostname="h" time="0.010" timestamp="2026-01-01T10:00:00">
		<properties><property name="go.version" value="go1.22"></property></properties>
		<testcase name="TestA" classname="example.com/pkg" time="0.000"></testcase>
		<testcase name="TestB" classname="example.com/pkg" time="0.010">
			<failure message="Failed" type="">    b_test.go:12: nope</failure>
		</testcase>
		<testsuite name="inner"><testcase name="TestC"><skipped/></testcase></testsuite>
		<testcase name="TestD" classname="example.com/pkg"><skipped message="skip d"></skipped></testcase>
	</testsuite>
</testsuites>"#;
        let cases = parse(xml).unwrap();
        let names: Vec<_> = cases
            .iter()
            .map(|c| (c.suite.as_str(), c.name.as_str(), c.outcome))
            .collect();
        assert_eq!(
            names,
            [
                ("example.com/pkg", "TestA", CaseOutcome::Passed),
                ("example.com/pkg", "TestB", CaseOutcome::Failed),
                ("example.com/pkg", "TestD", CaseOutcome::Skipped),
                ("inner", "TestC", CaseOutcome::Skipped),
            ]
        );
        assert_eq!(cases[1].message.as_deref(), Some("Failed"));
    }

    #[test]
    fn nextest_shape_with_flaky_elements_is_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" failures="1" errors="0" uuid="x" timestamp="2026-01-01T10:00:00.000+00:00" time="0.1">
    <testsuite name="my-crate" tests="2" disabled="0" errors="0" failures="1">
        <testcase name="tests::ok" classname="my-crate" timestamp="2026-01-01T10:00:00.000+00:00" time="0.01">
            <flakyFailure type="test failure">first try</flakyFailure>
        </testcase>
        <testcase name="tests::bad" classname="my-crate" time="0.02">
            <failure type="test failure with exit code 101">thread panicked at src/lib.rs:10:5</failure>
            <rerunFailure type="test failure">again</rerunFailure>
            <system-out><![CDATA[out <b>]]></system-out>
            <system-err>err</system-err>
        </testcase>
    </testsuite>
</testsuites>"#;
        let cases = parse(xml).unwrap();
        assert_eq!(cases[0].outcome, CaseOutcome::Passed);
        assert_eq!(cases[1].outcome, CaseOutcome::Failed);
        let d = cases[1].details.as_deref().unwrap();
        assert!(d.contains("out <b>") && d.contains("err"), "{d}");
        assert_eq!(
            cases[1].failure_type.as_deref(),
            Some("test failure with exit code 101")
        );
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors() {
        assert!(parse("").unwrap_err().contains("no root element"));
        assert!(parse("<testsuite><testcase name='a'>").is_err());
        assert!(parse("<html></html>").unwrap_err().contains("<html>"));
        assert!(parse("garbage < >").is_err());
    }

    #[test]
    fn seconds_are_parsed_leniently() {
        assert_eq!(parse_seconds(Some("0.25")), Duration::from_millis(250));
        assert_eq!(parse_seconds(Some("1,000")), Duration::from_secs(1000));
        assert_eq!(parse_seconds(Some("abc")), Duration::ZERO);
        assert_eq!(parse_seconds(Some("-1")), Duration::ZERO);
        assert_eq!(parse_seconds(None), Duration::ZERO);
    }

    #[test]
    fn locations_from_text() {
        let t = "E   assert 1 == 2\n\ntests/test_math.py:7: AssertionError\n  File \"/abs/x.py\", line 3, in f\nsee http://host:80 and 12:30";
        let locs = locations_in_text(t);
        assert!(locs.contains(&("tests/test_math.py".into(), 7)), "{locs:?}");
        assert!(locs.contains(&("/abs/x.py".into(), 3)), "{locs:?}");
        assert!(!locs.iter().any(|(p, _)| p.contains("http") || p == "12"));
        assert!(locations_in_text("at src/lib.rs:10:5").contains(&("src/lib.rs".into(), 10)));
    }

    #[test]
    fn locate_uses_attribute_classname_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("py/tests")).unwrap();
        std::fs::write(root.join("py/tests/test_math.py"), "").unwrap();
        let cwd = root.join("py");
        let mut case = parse(PYTEST).unwrap().remove(1);
        assert_eq!(
            locate(&case, &cwd, root),
            (Some("py/tests/test_math.py".into()), Some(7)),
            "classname as module path, line from the traceback"
        );
        case.classname = Some("tests.test_math.TestClass".into());
        case.line = Some(3);
        assert_eq!(
            locate(&case, &cwd, root),
            (Some("py/tests/test_math.py".into()), Some(3))
        );
        case.classname = Some("nothing.here".into());
        case.line = None;
        assert_eq!(
            locate(&case, &cwd, root),
            (Some("py/tests/test_math.py".into()), Some(7)),
            "a path:line in the text that exists"
        );
        case.details = None;
        assert_eq!(locate(&case, &cwd, root), (None, None));
    }

    #[test]
    fn import_events_and_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit/u.1.xml");
        prepare(&path).unwrap();
        let ev = import_events("l/c/u", 1, &path, dir.path(), dir.path(), Outcome::Failed);
        assert!(
            matches!(&ev[..], [EventKind::Warning { message, unit: Some(u) }] if message.contains("was not written") && u == "l/c/u"),
            "{ev:?}"
        );
        assert!(
            import_events(
                "l/c/u",
                1,
                &path,
                dir.path(),
                dir.path(),
                Outcome::Cancelled
            )
            .is_empty()
        );
        std::fs::write(&path, "<testsuite><testcase name=").unwrap();
        let ev = import_events("l/c/u", 1, &path, dir.path(), dir.path(), Outcome::Passed);
        assert!(matches!(&ev[..], [EventKind::Warning { .. }]), "{ev:?}");
        std::fs::write(&path, PYTEST).unwrap();
        let ev = import_events("l/c/u", 2, &path, dir.path(), dir.path(), Outcome::Failed);
        assert_eq!(ev.len(), 4);
        assert!(
            matches!(&ev[1], EventKind::TestCase { attempt: 2, name, outcome: CaseOutcome::Failed, .. } if name == "test_div")
        );
        prepare(&path).unwrap();
        assert!(!path.exists(), "prepare removes a stale file");
    }

    #[test]
    fn substitution_is_shell_quoted() {
        let p = Path::new("/tmp/run dir/junit/a.1.xml");
        assert_eq!(
            substitute("pytest --junitxml={junit} x", p),
            "pytest --junitxml='/tmp/run dir/junit/a.1.xml' x"
        );
        assert!(uses_junit("x {junit}"));
        assert!(!uses_junit("x {file}"));
    }

    #[test]
    fn durations_by_unit_property_or_suite_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.xml");
        std::fs::write(
            &path,
            r#"<testsuites>
<testsuite name="fast/unit"><testcase name="a.sh" time="2.5"/><testcase name="b.sh" time="0.5"/></testsuite>
<testsuite name="fast/py">
  <testcase name="t1" classname="tests.x" time="1"><properties><property name="runner.unit" value="fast/py/tests/x.py"/></properties></testcase>
  <testcase name="t2" classname="tests.x" time="2"><properties><property name="runner.unit" value="fast/py/tests/x.py"/></properties></testcase>
  <testcase name="t1" classname="tests.y" time="1"><properties><property name="runner.unit" value="fast/py/tests/y.py"/><property name="runner.unit_time" value="4.5"/></properties></testcase>
</testsuite></testsuites>"#,
        )
        .unwrap();
        let d = durations_from(&path).unwrap();
        assert_eq!(d["fast/unit/a.sh"], Duration::from_millis(2500));
        assert_eq!(d["fast/py/tests/x.py"], Duration::from_secs(3));
        assert_eq!(d["fast/py/tests/y.py"], Duration::from_millis(4500));
        assert_eq!(d.len(), 4);
        assert!(durations_from(&dir.path().join("missing.xml")).is_err());
    }
}
