//! Configuration errors: [`ConfigError`], its [`Diagnostic`]s, their rustc-like rendering,
//! and [`suggest`], the "did you mean" helper shared with the CLI.
//!
//! A diagnostic names a file, and where known a line and column (1-based) plus the source
//! line it points into, so that `Display` can draw a snippet with a caret under the
//! offending key or value.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem has a position.
    pub line: Option<u64>,
    /// 1-based column (in characters), when the problem has a position.
    pub column: Option<u64>,
    /// How many characters the caret underlines (at least 1).
    pub width: usize,
    /// The text of the source line at `line`, for the snippet.
    pub source_line: Option<String>,
    /// `= help:` lines (a suggestion, the valid names).
    pub help: Vec<String>,
    /// `= note:` lines (related locations, context).
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic about a whole file (no position).
    pub fn in_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            file: file.into(),
            line: None,
            column: None,
            width: 1,
            source_line: None,
            help: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a `= help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }

    /// Adds a `= note:` line.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Adds `did you mean `x`?` when one of `candidates` is close to `input`, else
    /// (when `list_all` is set) the list of valid names.
    pub fn with_suggestion<'a>(
        mut self,
        input: &str,
        candidates: impl IntoIterator<Item = &'a str> + Clone,
        what: &str,
        list_all: bool,
    ) -> Self {
        if let Some(s) = suggest(input, candidates.clone()) {
            self.help.push(format!("did you mean `{s}`?"));
        } else if list_all {
            let all: Vec<String> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
            if all.is_empty() {
                self.help.push(format!("no {what} is defined"));
            } else {
                self.help.push(format!("valid {what}: {}", all.join(", ")));
            }
        }
        self
    }

    fn location_text(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file.display()),
            (Some(l), None) => format!("{}:{l}", self.file.display()),
            _ => self.file.display().to_string(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let gutter = self.line.map(|l| l.to_string().len()).unwrap_or(1);
        let pad = " ".repeat(gutter);
        write!(f, "{pad}--> {}", self.location_text())?;
        if let (Some(line), Some(text)) = (self.line, &self.source_line) {
            writeln!(f)?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{line} | {text}")?;
            let col = self.column.unwrap_or(1).max(1) as usize;
            // Keep tabs in the indentation so the caret lines up with the source.
            let indent: String = text
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let rest = text.chars().count().saturating_sub(col - 1).max(1);
            let width = self.width.clamp(1, rest);
            write!(f, "{pad} | {indent}{}", "^".repeat(width))?;
        }
        for help in &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        for note in &self.notes {
            write!(f, "\n{pad} = note: {note}")?;
        }
        Ok(())
    }
}

/// The configuration could not be loaded: one or more [`Diagnostic`]s.
///
/// `Display` renders every diagnostic, rustc style, ready to be printed to stderr.
/// The accessors describe the first (earliest in the file) problem.
#[derive(Debug, Clone)]
pub struct ConfigError {
    diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error made of the given diagnostics (at least one).
    pub fn new(mut diagnostics: Vec<Diagnostic>) -> Self {
        assert!(!diagnostics.is_empty(), "a ConfigError needs a diagnostic");
        diagnostics.dedup();
        Self { diagnostics }
    }

    /// An error with a single diagnostic.
    pub fn single(diagnostic: Diagnostic) -> Self {
        Self {
            diagnostics: vec![diagnostic],
        }
    }

    /// Every problem found, in the order they are displayed.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The file of the first problem.
    pub fn file(&self) -> &Path {
        &self.diagnostics[0].file
    }

    /// The 1-based line of the first problem, when it has one.
    pub fn line(&self) -> Option<u64> {
        self.diagnostics[0].line
    }

    /// The 1-based column of the first problem, when it has one.
    pub fn column(&self) -> Option<u64> {
        self.diagnostics[0].column
    }

    /// The message of the first problem (without location).
    pub fn message(&self) -> &str {
        &self.diagnostics[0].message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.diagnostics.len();
        if n > 1 {
            write!(f, "\n\nerror: aborting due to {n} configuration errors")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The candidate closest to `input`, if it is close enough to be a plausible typo.
///
/// Case-insensitive. Uses Jaro-Winkler similarity (which favours a shared prefix) and
/// accepts a candidate scoring at least 0.8, or one within a small edit distance
/// (a third of the input's length, at least 1). Returns `None` when `input` is itself a
/// candidate or nothing is close.
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let needle = input.to_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for cand in candidates {
        let lower = cand.to_lowercase();
        if lower == needle {
            return if cand == input { None } else { Some(cand) };
        }
        let jw = strsim::jaro_winkler(&needle, &lower);
        let lev = strsim::damerau_levenshtein(&needle, &lower);
        let max_edits = (needle.chars().count() / 3).max(1);
        let close =
            jw >= 0.8 || lev <= max_edits || (needle.len() >= 3 && lower.starts_with(&needle));
        if !close {
            continue;
        }
        // Rank by edit distance first (fewer edits is closer), then by similarity.
        let score = jw - lev as f64;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, cand));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        let names = ["unit", "integration", "lint", "docs"];
        assert_eq!(suggest("unti", names), Some("unit"));
        assert_eq!(suggest("integraton", names), Some("integration"));
        assert_eq!(suggest("UNIT", names), Some("unit"));
        assert_eq!(suggest("unit", names), None);
        assert_eq!(suggest("zzzzzz", names), None);
        let fields = ["timeout_seconds", "slow_seconds", "retries"];
        assert_eq!(suggest("timout_seconds", fields), Some("timeout_seconds"));
        assert_eq!(suggest("timeout", fields), Some("timeout_seconds"));
        let envs = ["development", "production", "test", "dev", "prod"];
        assert_eq!(suggest("prdo", envs), Some("prod"));
        assert_eq!(suggest("staging", envs), None);
    }

    #[test]
    fn renders_like_rustc() {
        let mut d =
            Diagnostic::in_file("/p/layers.yaml", "unknown category `unti` in layer `fast`");
        d.line = Some(12);
        d.column = Some(9);
        d.width = 4;
        d.source_line = Some("      - unti".into());
        let d = d.with_help("did you mean `unit`?");
        let text = d.to_string();
        assert_eq!(
            text,
            "error: unknown category `unti` in layer `fast`\n  --> /p/layers.yaml:12:9\n   |\n12 |       - unti\n   |         ^^^^\n   = help: did you mean `unit`?"
        );
    }
}
