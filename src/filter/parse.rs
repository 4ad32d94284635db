//! Parsing filter expressions: a recursive-descent parser over the text, which keeps
//! the byte offset of everything it reads so that an error points at its column.

use std::fmt;

use super::{Expr, FUNCTIONS, KINDS, Matcher, Predicate};

/// A filter expression that does not parse: where, what, and the closest valid name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The expression.
    pub source: String,
    /// Byte offset of the problem in `source`.
    pub offset: usize,
    /// Bytes underlined (at least one caret is shown).
    pub len: usize,
    /// What was wrong or expected, lowercase.
    pub message: String,
    /// A hint (`did you mean `test`?`).
    pub help: Option<String>,
}

impl FilterError {
    /// The 1-based column (in characters) of the problem.
    pub fn column(&self) -> usize {
        self.source[..self.offset.min(self.source.len())]
            .chars()
            .count()
            + 1
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = (self.offset + self.len).min(self.source.len());
        let width = self.source[self.offset.min(end)..end]
            .chars()
            .count()
            .max(1);
        writeln!(
            f,
            "error: invalid filter expression: {} (column {})",
            self.message,
            self.column()
        )?;
        writeln!(f, "  --> -E/--filter")?;
        writeln!(f, "   |")?;
        writeln!(f, "   | {}", self.source)?;
        write!(
            f,
            "   | {}{}",
            " ".repeat(self.column() - 1),
            "^".repeat(width)
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FilterError {}

/// Parses a whole expression.
pub fn parse(source: &str) -> Result<Expr, FilterError> {
    let mut p = Parser {
        src: source,
        pos: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(0, source.len(), "the expression is empty", None));
    }
    let expr = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        let rest = p.word_len().max(1);
        return Err(p.error(
            p.pos,
            rest,
            "expected `&`, `|`, `and`, `or` or the end of the expression",
            None,
        ));
    }
    Ok(expr)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// Length of the identifier at the cursor (ASCII letters, digits, `_`).
    fn word_len(&self) -> usize {
        self.rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len())
    }

    fn error(&self, offset: usize, len: usize, message: &str, help: Option<String>) -> FilterError {
        FilterError {
            source: self.src.to_string(),
            offset,
            len,
            message: message.to_string(),
            help,
        }
    }

    /// Consumes keyword `kw` when it stands alone (not the start of a longer name).
    fn keyword(&mut self, kw: &str) -> bool {
        if self.rest().starts_with(kw) && self.word_len() == kw.len() {
            // `not(...)` is a function call of an unknown function only if followed by
            // `(` directly; `not (a)` and `not(a)` both read as negation.
            self.pos += kw.len();
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        loop {
            self.skip_ws();
            if self.rest().starts_with('|') {
                self.pos += 1;
                // `||` reads as `|`.
                if self.rest().starts_with('|') {
                    self.pos += 1;
                }
            } else if !self.keyword("or") {
                return Ok(left);
            }
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            self.skip_ws();
            if self.rest().starts_with('&') {
                self.pos += 1;
                if self.rest().starts_with('&') {
                    self.pos += 1;
                }
            } else if !self.keyword("and") {
                return Ok(left);
            }
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        if self.rest().starts_with('!') {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.error(
                start,
                1,
                "expected a function such as `test(...)`, `!` or `(`",
                None,
            )),
            Some('(') => {
                self.pos += 1;
                let inner = self.or()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(self.error(
                        self.pos,
                        1,
                        "expected `)` to close the `(`",
                        Some(format!("the `(` is at column {}", column(self.src, start))),
                    ));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_alphabetic() => self.call(),
            Some(c) => Err(self.error(
                start,
                c.len_utf8(),
                &format!("unexpected `{c}`; expected a function such as `test(...)`, `!` or `(`"),
                None,
            )),
        }
    }

    fn call(&mut self) -> Result<Expr, FilterError> {
        let start = self.pos;
        let len = self.word_len();
        let name = &self.src[start..start + len];
        if !FUNCTIONS.contains(&name) {
            let help = suggest(name, FUNCTIONS)
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| Some(format!("functions: {}", FUNCTIONS.join(", "))));
            return Err(self.error(start, len, &format!("unknown function `{name}`"), help));
        }
        self.pos += len;
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(
                self.pos,
                1,
                &format!("expected `(` after `{name}`"),
                Some(format!("write `{name}(...)`")),
            ));
        }
        self.pos += 1;
        let arg_start = self.pos;
        let arg = self.argument()?;
        let no_arg = |p: Predicate, this: &Self| {
            if arg.trim().is_empty() {
                Ok(Expr::Pred(p))
            } else {
                Err(this.error(
                    arg_start,
                    arg.len(),
                    &format!("`{name}()` takes no argument"),
                    None,
                ))
            }
        };
        let predicate = match name {
            "failed" => return no_arg(Predicate::Failed, self),
            "slow" => return no_arg(Predicate::Slow, self),
            "all" => return no_arg(Predicate::All, self),
            "none" => return no_arg(Predicate::None, self),
            _ => {
                let matcher = self.matcher(&arg, arg_start, name)?;
                match name {
                    "layer" => Predicate::Layer(matcher),
                    "category" => Predicate::Category(matcher),
                    "test" => Predicate::Test(matcher),
                    "tag" => Predicate::Tag(matcher),
                    _ => {
                        self.check_kind(&matcher, &arg, arg_start)?;
                        Predicate::Kind(matcher)
                    }
                }
            }
        };
        Ok(Expr::Pred(predicate))
    }

    /// Reads a function's argument up to its closing `)` (consumed); `\)` and `\\`
    /// escape, and a `/regex/` may hold `)` freely.
    fn argument(&mut self) -> Result<String, FilterError> {
        let open = self.pos - 1;
        let mut out = String::new();
        let trimmed = self.rest().trim_start();
        let regex = trimmed.starts_with('/');
        let mut in_regex = false;
        let mut chars = self.rest().char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&(_, n @ (')' | '\\'))) if !in_regex => {
                        out.push(n);
                        chars.next();
                    }
                    Some(&(_, n)) if in_regex => {
                        // Keep the escape for the regex engine (`\/` becomes `/`).
                        if n != '/' {
                            out.push('\\');
                        }
                        out.push(n);
                        chars.next();
                    }
                    _ => out.push('\\'),
                },
                '/' if regex => {
                    in_regex = !in_regex;
                    out.push(c);
                }
                ')' if !in_regex => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                _ => out.push(c),
            }
        }
        if in_regex {
            let at = self.src.len() - trimmed.len();
            return Err(self.error(
                at,
                self.src.len() - at,
                "a regular expression must end with `/` before the `)`",
                Some("write `\\/` for a `/` inside it".into()),
            ));
        }
        Err(self.error(
            open,
            1,
            "this `(` is never closed",
            Some("add `)`; write `\\)` for a `)` inside a name".into()),
        ))
    }

    fn matcher(&self, raw: &str, at: usize, name: &str) -> Result<Matcher, FilterError> {
        let lead = raw.len() - raw.trim_start().len();
        let text = raw.trim();
        let at = at + lead;
        if text.is_empty() {
            return Err(self.error(
                at,
                1,
                &format!("`{name}()` needs a name or pattern"),
                Some(format!(
                    "e.g. `{name}(unit*)`, `{name}(=exact)`, `{name}(~part)`, `{name}(/re/)`"
                )),
            ));
        }
        if let Some(exact) = text.strip_prefix('=') {
            return Ok(Matcher::Exact(exact.to_string()));
        }
        if let Some(part) = text.strip_prefix('~') {
            return Ok(Matcher::Contains(part.to_string()));
        }
        if let Some(body) = text.strip_prefix('/') {
            let Some(body) = body.strip_suffix('/') else {
                return Err(self.error(
                    at,
                    text.len(),
                    "a regular expression must end with `/`",
                    None,
                ));
            };
            return regex::Regex::new(body).map(Matcher::Regex).map_err(|e| {
                let first = e.to_string();
                let last = first.lines().last().unwrap_or("invalid").to_string();
                self.error(
                    at,
                    text.len(),
                    &format!("invalid regular expression: {}", last.trim()),
                    None,
                )
            });
        }
        let text = text.strip_prefix('#').unwrap_or(text);
        glob::Pattern::new(text).map(Matcher::Glob).map_err(|e| {
            self.error(
                at + e.pos.min(text.len().saturating_sub(1)),
                1,
                &format!("invalid glob: {}", e.msg),
                Some("prefix with `=` to match the text exactly".into()),
            )
        })
    }

    /// `kind(x)` with a plain name must name a known kind (a typo would select nothing).
    fn check_kind(&self, m: &Matcher, raw: &str, at: usize) -> Result<(), FilterError> {
        let name = match m {
            Matcher::Exact(s) => s.as_str(),
            Matcher::Glob(p) if !p.as_str().contains(['*', '?', '[']) => p.as_str(),
            _ => return Ok(()),
        };
        if KINDS.contains(&name) {
            return Ok(());
        }
        let lead = raw.len() - raw.trim_start().len();
        let help = suggest(name, KINDS)
            .map(|s| format!("did you mean `{s}`?"))
            .or_else(|| Some(format!("kinds: {}", KINDS.join(", "))));
        Err(self.error(
            at + lead,
            raw.trim().len(),
            &format!("unknown kind `{name}`"),
            help,
        ))
    }
}

fn column(src: &str, offset: usize) -> usize {
    src[..offset].chars().count() + 1
}

/// The closest of `candidates` to `input`, if any is close.
fn suggest(input: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let needle = input.to_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&needle, c), *c))
        .filter(|(d, c)| {
            *d <= (needle.chars().count() / 3).max(1)
                || strsim::jaro_winkler(&needle, c) >= 0.8
                || (needle.len() >= 2 && c.starts_with(&needle))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
