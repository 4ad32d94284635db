//! The part of a filter nextest can evaluate while it lists a category's tests, so that
//! tests the filter rejects are never listed (nor their binaries run to list them).
//!
//! The expression is partially evaluated for one category: `category()`, `kind()`,
//! `tag()`, `all()` and `none()` are known; `test()` becomes nextest's own `test()`;
//! `layer()`, `failed()` and `slow()` are not known while listing (a category may sit in
//! several layers; history is per unit). Negations are pushed down to the predicates
//! first, and an unknown predicate, negated or not, counts as "may match": the result
//! is a filterset that selects every test the full expression may keep (a superset),
//! and the runner evaluates the full expression on the listed tests afterwards.

use super::{CategoryFacts, Expr, Matcher, Narrowing, Predicate};

/// A partially evaluated expression.
enum Partial {
    True,
    False,
    Set(String),
}

pub(super) fn narrowing(expr: &Expr, cat: &CategoryFacts<'_>) -> Narrowing {
    match partial(expr, cat, false) {
        Partial::True => Narrowing::Nothing,
        Partial::False => Narrowing::Everything,
        Partial::Set(s) => Narrowing::To(s),
    }
}

fn partial(expr: &Expr, cat: &CategoryFacts<'_>, negated: bool) -> Partial {
    match expr {
        Expr::Not(e) => partial(e, cat, !negated),
        // De Morgan: under a negation `and` becomes `or` and the other way round.
        Expr::And(a, b) if !negated => and(partial(a, cat, false), partial(b, cat, false)),
        Expr::And(a, b) => or(partial(a, cat, true), partial(b, cat, true)),
        Expr::Or(a, b) if !negated => or(partial(a, cat, false), partial(b, cat, false)),
        Expr::Or(a, b) => and(partial(a, cat, true), partial(b, cat, true)),
        Expr::Pred(p) => {
            let known = |v: bool| {
                if v != negated {
                    Partial::True
                } else {
                    Partial::False
                }
            };
            match p {
                Predicate::Category(m) => known(m.matches(cat.category)),
                Predicate::Kind(m) => known(m.matches(cat.kind)),
                Predicate::Tag(m) => known(cat.tags.iter().any(|t| m.matches(t))),
                Predicate::All => known(true),
                Predicate::None => known(false),
                Predicate::Test(m) => match nextest_matcher(m) {
                    Some(text) if negated => Partial::Set(format!("not test({text})")),
                    Some(text) => Partial::Set(format!("test({text})")),
                    None => Partial::True,
                },
                Predicate::Layer(_) | Predicate::Failed | Predicate::Slow => Partial::True,
            }
        }
    }
}

fn and(a: Partial, b: Partial) -> Partial {
    match (a, b) {
        (Partial::False, _) | (_, Partial::False) => Partial::False,
        (Partial::True, x) | (x, Partial::True) => x,
        (Partial::Set(a), Partial::Set(b)) => Partial::Set(format!("({a}) and ({b})")),
    }
}

fn or(a: Partial, b: Partial) -> Partial {
    match (a, b) {
        (Partial::True, _) | (_, Partial::True) => Partial::True,
        (Partial::False, x) | (x, Partial::False) => x,
        (Partial::Set(a), Partial::Set(b)) => Partial::Set(format!("({a}) or ({b})")),
    }
}

/// The matcher in nextest's spelling, or `None` when its text cannot be written there
/// exactly (a `)`, `,` or `\` in it, or glob syntax the two glob dialects read
/// differently): that predicate then narrows nothing.
fn nextest_matcher(m: &Matcher) -> Option<String> {
    let plain = |s: &str| !s.contains([')', ',', '\\']);
    match m {
        Matcher::Exact(s) if plain(s) => Some(format!("={s}")),
        Matcher::Contains(s) if plain(s) => Some(format!("~{s}")),
        Matcher::Glob(p) if plain(p.as_str()) && !p.as_str().contains(['{', '}', '!']) => {
            Some(format!("#{}", p.as_str()))
        }
        Matcher::Regex(r) if !r.as_str().contains('/') => Some(format!("/{}/", r.as_str())),
        _ => None,
    }
}
