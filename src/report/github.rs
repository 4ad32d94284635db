//! GitHub Actions: failure annotations and the job summary.
//!
//! When `GITHUB_ACTIONS=true` the controller prints one `::error` workflow command per
//! failure just before the run ends (so they come before the closing line), and appends
//! a Markdown summary to the file named by `$GITHUB_STEP_SUMMARY` after it ends.
//!
//! An annotation names a file and line where one is known: an imported case's `file`
//! and `line`, else a `path:line` found in the failure text that exists in the project,
//! else the unit's own file (`files:` units), else none (`::error title=…::`). Paths are
//! relative to `$GITHUB_WORKSPACE` (the runner's working directory when unset), as
//! GitHub expects.
//!
//! Everything quoted from units (messages, output tails, test names) goes through
//! [`crate::report::text::clean`], as in the JUnit report: no escape sequences and no
//! control characters reach the workflow commands or the summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::event::{Outcome, RunState, UnitState, UnitStatus};
use crate::ingest::junit as junit_import;

/// At most this many annotations are printed (GitHub shows 10 per step, 50 per job);
/// when there are more, the last place is a notice: `… and N more failures: see the
/// summary`.
pub const MAX_ANNOTATIONS: usize = 50;

/// The step summary stays below GitHub's 1 MiB limit.
pub const MAX_SUMMARY_BYTES: usize = 900 * 1024;

/// True when running under GitHub Actions.
pub fn enabled() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// One `::error` (a failure) or `::warning` (a flaky unit) annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// `error` or `warning`.
    pub level: &'static str,
    /// File relative to the workspace.
    pub file: Option<String>,
    /// Line in `file`.
    pub line: Option<u32>,
    /// Short title.
    pub title: String,
    /// Message (may span lines).
    pub message: String,
}

impl Annotation {
    /// The workflow command line.
    pub fn command(&self) -> String {
        let clean = crate::report::text::clean;
        let mut props = Vec::new();
        if let Some(f) = &self.file {
            props.push(format!("file={}", escape_property(&clean(f))));
            if let Some(l) = self.line {
                props.push(format!("line={l}"));
            }
        }
        props.push(format!("title={}", escape_property(&clean(&self.title))));
        format!(
            "::{} {}::{}",
            self.level,
            props.join(","),
            escape_data(&clean(&self.message))
        )
    }
}

/// Escapes the message of a workflow command.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value of a workflow command.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The workspace paths are made relative to.
pub fn workspace() -> PathBuf {
    std::env::var_os("GITHUB_WORKSPACE")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default()
}

fn relative_to(workspace: &Path, root: &Path, file: &str) -> String {
    let full = root.join(file);
    let ws = workspace.canonicalize().unwrap_or(workspace.to_path_buf());
    let full_c = full.canonicalize().unwrap_or(full.clone());
    match full_c.strip_prefix(&ws) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => full.to_string_lossy().into_owned(),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn category_cwd(config: &Config, category: &str) -> PathBuf {
    match config.categories.get(category).and_then(|c| c.cwd.as_ref()) {
        Some(dir) => config.root.join(dir),
        None => config.root.clone(),
    }
}

/// Where a unit-level failure points: a `path:line` in its text, else its own file.
fn unit_location(config: &Config, u: &UnitState) -> Option<(String, Option<u32>)> {
    let cwd = category_cwd(config, &u.category);
    let text = format!(
        "{}\n{}",
        u.message.as_deref().unwrap_or(""),
        u.details().output_tail.as_deref().unwrap_or("")
    );
    if let Some((f, l)) = junit_import::locate_in_text(&text, &cwd, &config.root) {
        return Some((f, Some(l)));
    }
    let own = cwd.join(&u.name);
    own.is_file().then(|| {
        let rel = own.strip_prefix(&config.root).unwrap_or(&own);
        (rel.to_string_lossy().into_owned(), None)
    })
}

/// Annotations for every failure of a run, then a warning per flaky unit (at most
/// [`MAX_ANNOTATIONS`] in all).
pub fn annotations(state: &RunState, config: &Config, workspace: &Path) -> Vec<Annotation> {
    let mut out = Vec::new();
    for (id, u) in &state.units {
        if u.status != UnitStatus::Finished || !u.outcome.is_some_and(Outcome::is_failure) {
            continue;
        }
        for c in u.details().cases.iter().filter(|c| c.outcome.is_failure()) {
            let name = match &c.classname {
                Some(cl) => format!("{cl}::{}", c.name),
                None => c.name.clone(),
            };
            let mut message = c.message.clone().unwrap_or_else(|| "failed".into());
            if let Some(d) = &c.details {
                message.push_str("\n\n");
                message.push_str(&last_lines(d, 30));
            }
            out.push(Annotation {
                level: "error",
                file: c
                    .file
                    .as_deref()
                    .map(|f| relative_to(workspace, &config.root, f)),
                line: c.line,
                title: format!("{name} ({id})"),
                message,
            });
        }
        if u.details().cases.is_empty() || u.failed_outside_cases() {
            let (file, line) = match unit_location(config, u) {
                Some((f, l)) => (Some(relative_to(workspace, &config.root, &f)), l),
                None => (None, None),
            };
            let outcome = u.outcome.map(|o| format!("{o:?}").to_lowercase());
            let mut message = u
                .message
                .clone()
                .or(outcome.clone())
                .unwrap_or_else(|| "failed".into());
            if let Some(t) = u
                .details()
                .output_tail
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            {
                message.push_str("\n\n");
                message.push_str(&last_lines(t, 30));
            }
            out.push(Annotation {
                level: "error",
                file,
                line,
                title: format!("{id} {}", outcome.unwrap_or_default()),
                message,
            });
        }
    }
    for (id, u) in state.units.iter().filter(|(_, u)| u.flaky) {
        let failures: Vec<String> = u
            .details()
            .attempt_failures
            .iter()
            .map(|a| {
                format!(
                    "attempt {}: {}",
                    a.attempt,
                    a.message.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        let (file, line) = match unit_location(config, u) {
            Some((f, l)) => (Some(relative_to(workspace, &config.root, &f)), l),
            None => (None, None),
        };
        out.push(Annotation {
            level: "warning",
            file,
            line,
            title: format!(
                "{id} is flaky (passed on attempt {})",
                u.attempts
                    .max(u.details().attempt_failures.len() as u32 + 1)
            ),
            message: failures.join("\n"),
        });
    }
    if out.len() > MAX_ANNOTATIONS {
        // The last place says what did not fit.
        let left = out.split_off(MAX_ANNOTATIONS - 1);
        let failures = left.iter().filter(|a| a.level == "error").count();
        let flaky = left.len() - failures;
        let what = match (failures, flaky) {
            (n, 0) => format!("{n} more failures"),
            (0, m) => format!("{m} more flaky units"),
            (n, m) => format!("{n} more failures and {m} more flaky units"),
        };
        out.push(Annotation {
            level: "notice",
            file: None,
            line: None,
            title: "runner".into(),
            message: format!("… and {what}: see the summary"),
        });
    }
    out
}

fn md(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// The Markdown job summary of a run: outcome, layers, counts, failures, slowest units.
pub fn step_summary(state: &RunState) -> String {
    crate::report::text::clean(&raw_step_summary(state))
}

fn raw_step_summary(state: &RunState) -> String {
    let mut s = String::new();
    let outcome = state
        .outcome
        .map(|o| format!("{o:?}").to_lowercase())
        .unwrap_or_else(|| "unfinished".into());
    let icon = match outcome.as_str() {
        "passed" => "✅",
        "interrupted" => "⚠️",
        _ => "❌",
    };
    let _ = writeln!(
        s,
        "## {icon} runner: {outcome}{}\n",
        state
            .duration_ms
            .map(|d| format!(" in {}", secs(d)))
            .unwrap_or_default()
    );
    let c = &state.counts;
    let _ = write!(
        s,
        "**{} passed, {} failed, {} skipped** of {} units",
        c.passed, c.failed, c.skipped, c.total
    );
    if c.flaky > 0 {
        let _ = write!(s, " ({} flaky)", c.flaky);
    }
    if state.units.values().any(|u| !u.details().cases.is_empty()) {
        let t = &state.tests;
        let _ = write!(
            s,
            " · tests: {} passed, {} failed, {} skipped",
            t.passed, t.failed, t.skipped
        );
    }
    let _ = writeln!(
        s,
        " · run `{}` · environment `{}`\n",
        state.run_id, state.environment
    );
    if !state.layers.is_empty() {
        s.push_str("| layer | outcome | passed | failed | skipped | duration |\n");
        s.push_str("|---|---|--:|--:|--:|--:|\n");
        for (name, l) in &state.layers {
            let outcome = l
                .outcome
                .map(|o| format!("{o:?}").to_lowercase())
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {} | {} | {} |",
                md(name),
                outcome,
                l.reason
                    .as_deref()
                    .map(|r| format!(" ({})", md(r)))
                    .unwrap_or_default(),
                l.counts.passed,
                l.counts.failed,
                l.counts.skipped,
                l.duration_ms.map(secs).unwrap_or_default()
            );
        }
        s.push('\n');
    }
    let failed: Vec<_> = state
        .units
        .iter()
        .filter(|(_, u)| u.outcome.is_some_and(Outcome::is_failure))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "### Failures ({})\n", failed.len());
        for (id, u) in failed {
            if s.len() > MAX_SUMMARY_BYTES {
                s.push_str("\n…more failures are in the JUnit report and `summary.json`.\n");
                break;
            }
            let outcome = u.outcome.map(|o| format!("{o:?}").to_lowercase());
            let _ = writeln!(
                s,
                "- **`{}`** {}{}",
                id.replace('`', "'"),
                outcome.unwrap_or_default(),
                u.message
                    .as_deref()
                    .map(|m| format!(": {}", md(m)))
                    .unwrap_or_default()
            );
            for c in u
                .details()
                .cases
                .iter()
                .filter(|c| c.outcome.is_failure())
                .take(20)
            {
                let _ = writeln!(
                    s,
                    "  - `{}{}`{}",
                    c.classname
                        .as_deref()
                        .map(|cl| format!("{cl}::"))
                        .unwrap_or_default()
                        .replace('`', "'"),
                    c.name.replace('`', "'"),
                    c.message
                        .as_deref()
                        .map(|m| format!(": {}", md(m)))
                        .unwrap_or_default()
                );
            }
            if let Some(tail) = u
                .details()
                .output_tail
                .as_deref()
                .filter(|t| !t.trim().is_empty())
            {
                let text = last_lines(tail, 40);
                let f = fence(&text);
                let _ = writeln!(
                    s,
                    "  <details><summary>output</summary>\n\n{f}\n{text}\n{f}\n\n  </details>"
                );
            }
        }
        s.push('\n');
    }
    let mut slow: Vec<_> = state
        .units
        .iter()
        .filter_map(|(id, u)| Some((id, u.duration_ms?, u)))
        .collect();
    slow.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if !slow.is_empty() {
        s.push_str("### Slowest units\n\n| unit | duration | outcome |\n|---|--:|---|\n");
        for (id, d, u) in slow.into_iter().take(10) {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                id.replace('`', "'").replace('|', "\\|"),
                secs(d),
                u.outcome
                    .map(|o| format!("{o:?}").to_lowercase())
                    .unwrap_or_else(|| "-".into())
            );
        }
        s.push('\n');
    }
    s
}

/// Prints the annotations of a run: on stdout, or on stderr when stdout carries JSON lines.
pub fn print_annotations(state: &RunState, config: &Config, to_stderr: bool) {
    use std::io::Write;
    let lines: Vec<String> = annotations(state, config, &workspace())
        .iter()
        .map(Annotation::command)
        .collect();
    if lines.is_empty() {
        return;
    }
    let text = lines.join("\n") + "\n";
    if to_stderr {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Appends the job summary to `$GITHUB_STEP_SUMMARY`, when that names a file.
pub fn append_step_summary(state: &RunState) -> std::io::Result<()> {
    match std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        Some(path) => append_step_summary_to(Path::new(&path), state),
        None => Ok(()),
    }
}

/// Appends the job summary of `state` to `path`.
pub fn append_step_summary_to(path: &Path, state: &RunState) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(step_summary(state).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load};
    use crate::event::{CaseOutcome, Event, EventKind, PlannedUnit};

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            v: 1,
            seq,
            ts: "2026-01-01T00:00:00Z".into(),
            run_id: "r".into(),
            thread_id: None,
            agent: "t".into(),
            kind,
        }
    }

    fn fixture() -> (tempfile::TempDir, Config, RunState) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(root.join("tests/test_a.sh"), "").unwrap();
        std::fs::write(root.join("tests/test_b.py"), "").unwrap();
        std::fs::write(
            root.join("layers.yaml"),
            "categories:\n  unit: { command: \"sh {file}\", files: [\"tests/*.sh\"] }\n  py: { command: \"pytest\" }\n  other: { command: \"false\" }\nlayers:\n  - { name: fast, categories: [unit, py, other] }\n",
        )
        .unwrap();
        let cfg = load(&LoadOptions::new(root.join("layers.yaml"))).unwrap();
        let mut s = RunState::default();
        let unit = |id: &str, cat: &str, name: &str| PlannedUnit {
            id: id.into(),
            layer: "fast".into(),
            category: cat.into(),
            name: name.into(),
            expected_ms: None,
        };
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into()],
                slots: 1,
                units: vec![
                    unit("fast/unit/tests/test_a.sh", "unit", "tests/test_a.sh"),
                    unit("fast/py/py", "py", "py"),
                    unit("fast/other/other", "other", "other"),
                ],
                pid: 1,
            },
        ));
        let fin = |unit: &str, tail: &str| EventKind::TestFinished {
            unit: unit.into(),
            attempt: 1,
            outcome: Outcome::Failed,
            will_retry: false,
            duration_ms: 2000,
            exit_code: Some(1),
            signal: None,
            peak_memory_mb: None,
            message: Some("exit code 1".into()),
            output_tail: Some(tail.into()),
            log: None,
        };
        s.apply(&ev(
            2,
            fin("fast/unit/tests/test_a.sh", "boom | <b>\n```\n"),
        ));
        s.apply(&ev(3, fin("fast/py/py", "E assert")));
        s.apply(&ev(
            4,
            EventKind::TestCase {
                unit: "fast/py/py".into(),
                attempt: 1,
                suite: "pytest".into(),
                name: "test_x".into(),
                classname: Some("tests.test_b".into()),
                file: Some("tests/test_b.py".into()),
                line: Some(7),
                outcome: CaseOutcome::Failed,
                duration_ms: 5,
                message: Some("assert 1 == 2".into()),
                details: Some("tests/test_b.py:7: AssertionError".into()),
            },
        ));
        s.apply(&ev(5, fin("fast/other/other", "at tests/test_b.py:3 oops")));
        (dir, cfg, s)
    }

    #[test]
    fn annotations_locate_failures() {
        let (dir, cfg, s) = fixture();
        let a = annotations(&s, &cfg, dir.path());
        assert_eq!(a.len(), 3, "{a:#?}");
        assert_eq!(
            (a[0].file.as_deref(), a[0].line),
            (Some("tests/test_a.sh"), None),
            "a files: unit points at its file"
        );
        assert_eq!(
            (a[1].file.as_deref(), a[1].line),
            (Some("tests/test_b.py"), Some(7))
        );
        assert_eq!(a[1].title, "tests.test_b::test_x (fast/py/py)");
        assert_eq!(
            (a[2].file.as_deref(), a[2].line),
            (Some("tests/test_b.py"), Some(3)),
            "path:line from the output tail"
        );
        let cmd = a[1].command();
        assert!(
            cmd.starts_with("::error file=tests/test_b.py,line=7,title=tests.test_b%3A%3Atest_x (fast/py/py)::assert 1 == 2%0A%0A"),
            "{cmd}"
        );
        assert!(!cmd.contains('\n'));
        let bare = Annotation {
            level: "error",
            file: None,
            line: Some(3),
            title: "t".into(),
            message: "100% done\r\n".into(),
        };
        assert_eq!(bare.command(), "::error title=t::100%25 done%0A");
    }

    #[test]
    fn a_flaky_unit_is_a_warning() {
        let (dir, cfg, _) = fixture();
        let mut s = RunState::default();
        s.apply(&ev(
            1,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "layers.yaml".into(),
                layers: vec!["fast".into()],
                slots: 1,
                units: vec![PlannedUnit {
                    id: "fast/unit/tests/test_a.sh".into(),
                    layer: "fast".into(),
                    category: "unit".into(),
                    name: "tests/test_a.sh".into(),
                    expected_ms: None,
                }],
                pid: 1,
            },
        ));
        for (seq, outcome, will_retry) in [(2, Outcome::Failed, true), (3, Outcome::Passed, false)]
        {
            s.apply(&ev(
                seq,
                EventKind::TestFinished {
                    unit: "fast/unit/tests/test_a.sh".into(),
                    attempt: seq as u32 - 1,
                    outcome,
                    will_retry,
                    duration_ms: 1,
                    exit_code: None,
                    signal: None,
                    peak_memory_mb: None,
                    message: will_retry.then(|| "exit code 1".into()),
                    output_tail: None,
                    log: None,
                },
            ));
        }
        let a = annotations(&s, &cfg, dir.path());
        assert_eq!(a.len(), 1, "{a:#?}");
        assert_eq!(
            a[0].command(),
            "::warning file=tests/test_a.sh,title=fast/unit/tests/test_a.sh is flaky (passed on attempt 2)::attempt 1: exit code 1"
        );
    }

    #[test]
    fn summary_lists_layers_failures_and_slowest() {
        let (_dir, _cfg, s) = fixture();
        let md = step_summary(&s);
        assert!(md.contains("| fast |"), "{md}");
        assert!(md.contains("### Failures (3)"), "{md}");
        assert!(md.contains("`tests.test_b::test_x`: assert 1 == 2"), "{md}");
        assert!(md.contains("### Slowest units"), "{md}");
        assert!(
            md.contains("````\nboom | <b>\n```\n````"),
            "a longer fence: {md}"
        );
        assert!(md.contains("tests: 0 passed, 3 failed"), "{md}");
    }

    #[test]
    fn step_summary_is_appended_to_the_file() {
        let (dir, _cfg, s) = fixture();
        let path = dir.path().join("summary.md");
        std::fs::write(&path, "before\n").unwrap();
        append_step_summary_to(&path, &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("before\n## "), "{text}");
    }

    #[test]
    fn terminal_junk_is_cleaned_and_the_cap_says_what_is_left() {
        let (dir, cfg, mut s) = fixture();
        let planned: Vec<String> = (0..60).map(|i| format!("fast/other/x{i}")).collect();
        let template = s.units["fast/other/other"].clone();
        for (i, id) in planned.iter().enumerate() {
            let u = s
                .units
                .entry(id.clone())
                .or_insert_with(|| template.clone());
            u.details_mut().output_tail = Some(format!(
                "\u{1b}[31mred {i}\u{1b}[0m\u{1b}]0;title\u{7}\0nul"
            ));
        }
        let a = annotations(&s, &cfg, dir.path());
        assert_eq!(a.len(), MAX_ANNOTATIONS);
        let last = a.last().unwrap();
        assert_eq!(last.level, "notice");
        assert_eq!(last.message, "… and 14 more failures: see the summary");
        for line in a.iter().map(Annotation::command) {
            assert!(!line.contains(['\u{1b}', '\0', '\u{7}']), "{line:?}");
        }
        let summary = step_summary(&s);
        assert!(!summary.contains(['\u{1b}', '\0', '\u{7}']), "{summary:?}");
        assert!(summary.contains("red 3nul"), "{summary}");
    }
}
