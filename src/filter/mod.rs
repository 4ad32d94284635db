//! Filter expressions (`-E/--filter EXPR`): which planned units a run, `--list` or
//! `--partition` keeps. Pure: parsing, matching and the translation of the Rust-test
//! part into a nextest filterset; nothing here reads files or history.
//!
//! # Language
//!
//! ```text
//! expr    := or
//! or      := and (('|' | 'or') and)*
//! and     := unary (('&' | 'and') unary)*
//! unary   := ('!' | 'not') unary | primary
//! primary := '(' expr ')' | NAME '(' [MATCHER] ')'
//! ```
//!
//! Functions: `layer(M)`, `category(M)`, `test(M)` (the unit's name; for a Rust test its
//! name in its binary, as nextest's `test()`), `kind(M)` (`command`, `nextest`, `pytest`),
//! `tag(M)` (any of the category's tags), `failed()` (failed or did not finish last
//! time, per history), `slow()` (ran longer than its category's `slow_seconds` last
//! time), `all()`, `none()`. A matcher is a glob by default (`*`, `?`, `[...]`),
//! `=exact`, `~substring` or `/regex/`; `\)` puts a `)` in a matcher.
//!
//! - [`parse`]: text to [`Expr`], with errors that point at a column.
//! - [`nextest`]: the part of an expression nextest can evaluate, as its filterset.

mod nextest;
mod parse;

#[cfg(test)]
mod tests;

use std::fmt;

pub use parse::FilterError;

/// The functions of the language, for help and suggestions.
pub const FUNCTIONS: &[&str] = &[
    "layer", "category", "test", "kind", "tag", "failed", "slow", "all", "none",
];

/// The unit kinds `kind()` knows.
pub const KINDS: &[&str] = &["command", "nextest", "pytest"];

/// A parsed filter expression, with its source text.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
    source: String,
}

/// An expression tree.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A function call.
    Pred(Predicate),
    /// `!e`, `not e`.
    Not(Box<Expr>),
    /// `a & b`, `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `a | b`, `a or b`.
    Or(Box<Expr>, Box<Expr>),
}

/// A function call of the language.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// `layer(M)`.
    Layer(Matcher),
    /// `category(M)`.
    Category(Matcher),
    /// `test(M)`.
    Test(Matcher),
    /// `kind(M)`.
    Kind(Matcher),
    /// `tag(M)`.
    Tag(Matcher),
    /// `failed()`.
    Failed,
    /// `slow()`.
    Slow,
    /// `all()`.
    All,
    /// `none()`.
    None,
}

/// How a function's argument matches a name.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A glob (the default).
    Glob(glob::Pattern),
    /// `=text`: the whole name.
    Exact(String),
    /// `~text`: anywhere in the name.
    Contains(String),
    /// `/re/`: a regular expression (unanchored, as nextest's).
    Regex(regex::Regex),
}

impl Matcher {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Glob(p) => p.matches(name),
            Matcher::Exact(s) => s == name,
            Matcher::Contains(s) => name.contains(s.as_str()),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// What a filter can ask about a unit.
#[derive(Debug, Clone, Copy)]
pub struct UnitFacts<'a> {
    /// Layer name.
    pub layer: &'a str,
    /// Category name.
    pub category: &'a str,
    /// The unit's name (for a Rust test: its name in its binary).
    pub test: &'a str,
    /// The category's kind (`command`, `nextest`, ...).
    pub kind: &'a str,
    /// The category's tags.
    pub tags: &'a [String],
    /// Failed or did not finish last time.
    pub failed: bool,
    /// Ran longer than its category's `slow_seconds` last time.
    pub slow: bool,
}

impl Filter {
    /// Parses `source`; the error renders with a caret under the column.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        Ok(Filter {
            expr: parse::parse(source)?,
            source: source.to_string(),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The expression tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether the unit described by `facts` is kept.
    pub fn matches(&self, facts: &UnitFacts<'_>) -> bool {
        self.expr.eval(facts)
    }

    /// Whether the expression asks history (`failed()`, `slow()`).
    pub fn needs_history(&self) -> bool {
        self.expr
            .any(&|p| matches!(p, Predicate::Failed | Predicate::Slow))
    }

    /// For a `nextest:` category, how the filter narrows the listing of its tests (see
    /// the `nextest` module): a superset of what [`Filter::matches`] keeps.
    pub fn nextest_narrowing(&self, category: &CategoryFacts<'_>) -> Narrowing {
        nextest::narrowing(&self.expr, category)
    }
}

/// What is known about a category before its tests are listed.
#[derive(Debug, Clone, Copy)]
pub struct CategoryFacts<'a> {
    /// Category name.
    pub category: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Its tags.
    pub tags: &'a [String],
}

/// How a filter narrows a `nextest:` category's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Narrowing {
    /// Every test may match: list with the category's filter as it is.
    Nothing,
    /// No test can match: do not list the category.
    Everything,
    /// Only tests matching this nextest filterset can match.
    To(String),
}

impl Expr {
    fn eval(&self, f: &UnitFacts<'_>) -> bool {
        match self {
            Expr::Pred(p) => p.eval(f),
            Expr::Not(e) => !e.eval(f),
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
        }
    }

    fn any(&self, want: &dyn Fn(&Predicate) -> bool) -> bool {
        match self {
            Expr::Pred(p) => want(p),
            Expr::Not(e) => e.any(want),
            Expr::And(a, b) | Expr::Or(a, b) => a.any(want) || b.any(want),
        }
    }
}

impl Predicate {
    fn eval(&self, f: &UnitFacts<'_>) -> bool {
        match self {
            Predicate::Layer(m) => m.matches(f.layer),
            Predicate::Category(m) => m.matches(f.category),
            Predicate::Test(m) => m.matches(f.test),
            Predicate::Kind(m) => m.matches(f.kind),
            Predicate::Tag(m) => f.tags.iter().any(|t| m.matches(t)),
            Predicate::Failed => f.failed,
            Predicate::Slow => f.slow,
            Predicate::All => true,
            Predicate::None => false,
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The name `kind()` matches for a category's kind.
pub fn kind_name(kind: &crate::config::UnitKind) -> &'static str {
    match kind {
        crate::config::UnitKind::Command(_) => "command",
        crate::config::UnitKind::Nextest(_) => "nextest",
        crate::config::UnitKind::Pytest(_) => "pytest",
        crate::config::UnitKind::Missing => "none",
    }
}

/// The tags `tag()` matches for a category: its `tags:`.
pub fn category_tags(category: &crate::config::Category) -> &[String] {
    &category.tags
}

/// The name `test()` matches for a unit: a Rust test's name in its binary (the part
/// after nextest's `binary-id$`), as nextest's `test()` does; any other unit's name.
pub fn test_name<'a>(kind: &crate::config::UnitKind, unit_name: &'a str) -> &'a str {
    match kind {
        crate::config::UnitKind::Nextest(_) => unit_name
            .split_once('$')
            .map(|(_, test)| test)
            .unwrap_or(unit_name),
        _ => unit_name,
    }
}
