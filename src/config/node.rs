//! The location-carrying YAML tree: every node knows the file, line and column it came
//! from. Owns parsing (via serde-saphyr's `Spanned`), the source texts kept for error
//! snippets ([`Sources`]), and the deep merge used by environment overlays.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{ConfigError, Diagnostic};

/// Where a node came from: a source file (index into [`Sources`]), 1-based line and
/// column, and the width of the token in characters. When the value was reached through
/// a YAML alias or merge key (`<<: *defaults`), `def_line`/`def_col` give where it is
/// defined (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Loc {
    pub src: u32,
    pub line: u32,
    pub col: u32,
    pub len: u32,
    pub def_line: u32,
    pub def_col: u32,
}

/// The texts of every file read, so diagnostics can quote the offending line.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    files: Vec<(PathBuf, String)>,
}

impl Sources {
    /// Registers a file and returns its index.
    pub fn add(&mut self, path: PathBuf, text: String) -> u32 {
        self.files.push((path, text));
        (self.files.len() - 1) as u32
    }

    /// How many files were read.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// The path of source `src`.
    pub fn path(&self, src: u32) -> &Path {
        &self.files[src as usize].0
    }

    /// The text of the token at `loc` as written (None when it has no position).
    pub fn text_at(&self, loc: Loc) -> Option<&str> {
        let (_, text) = self.files.get(loc.src as usize)?;
        let line = text.lines().nth((loc.line as usize).checked_sub(1)?)?;
        let start = line
            .char_indices()
            .nth((loc.col as usize).checked_sub(1)?)?
            .0;
        let rest = &line[start..];
        let end = rest
            .char_indices()
            .nth(loc.len as usize)
            .map_or(rest.len(), |(i, _)| i);
        Some(&rest[..end])
    }

    /// A diagnostic pointing at `loc`.
    pub fn diag(&self, loc: Loc, message: impl Into<String>) -> Diagnostic {
        let (path, text) = &self.files[loc.src as usize];
        let mut d = Diagnostic::in_file(path.clone(), message);
        if loc.line > 0 {
            d.line = Some(u64::from(loc.line));
            d.column = Some(u64::from(loc.col.max(1)));
            d.width = loc.len.max(1) as usize;
            d.source_line = text
                .lines()
                .nth(loc.line as usize - 1)
                .map(|l| l.trim_end().to_string());
        }
        if loc.def_line > 0 {
            d = d.with_note(format!(
                "the value is defined at {}:{}:{} (reached through a YAML alias or merge key)",
                path.display(),
                loc.def_line,
                loc.def_col
            ));
        }
        d
    }
}

/// A YAML node with its location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub loc: Loc,
    pub value: Value,
}

/// The value of a node. Mapping keys are nodes too (always strings) so they keep
/// their own location.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A string node (used for mapping keys).
    pub fn str(s: impl Into<String>, loc: Loc) -> Self {
        Node {
            loc,
            value: Value::Str(s.into()),
        }
    }

    /// The string, when the node is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entry `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The `name:` of a mapping node, when it is a string.
    pub fn name(&self) -> Option<&str> {
        self.get("name").and_then(Node::as_str)
    }

    /// What kind of node this is, for messages ("a list", "a string", ...).
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses `text` (registered in `sources` as `path`) into a located tree.
pub(crate) fn parse(sources: &mut Sources, path: &Path, text: String) -> Result<Node, ConfigError> {
    let result = serde_saphyr::from_str::<Spanned<Parsed>>(&text);
    let src = sources.add(path.to_path_buf(), text);
    match result {
        Ok(spanned) => Ok(convert(spanned, src)),
        Err(err) => {
            let inner = err.without_snippet();
            let message = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::UserMessageFormatter,
                inner,
            )
            .replace('\n', " ");
            let diag = match err.location() {
                Some(l) if l.line() > 0 => sources.diag(
                    Loc {
                        src,
                        line: l.line() as u32,
                        col: l.column() as u32,
                        len: 1,
                        ..Loc::default()
                    },
                    format!("invalid YAML: {message}"),
                ),
                _ => Diagnostic::in_file(path, format!("invalid YAML: {message}")),
            };
            Err(ConfigError::single(diag))
        }
    }
}

fn loc_of(referenced: &serde_saphyr::Location, defined: &serde_saphyr::Location, src: u32) -> Loc {
    let (line, col) = (referenced.line() as u32, referenced.column() as u32);
    let (def_line, def_col) = (defined.line() as u32, defined.column() as u32);
    let elsewhere = def_line > 0 && (def_line, def_col) != (line, col);
    Loc {
        src,
        line,
        col,
        len: referenced.span().len() as u32,
        def_line: if elsewhere { def_line } else { 0 },
        def_col: if elsewhere { def_col } else { 0 },
    }
}

fn convert(s: Spanned<Parsed>, src: u32) -> Node {
    let loc = loc_of(&s.referenced, &s.defined, src);
    let value = match s.value {
        Parsed::Null => Value::Null,
        Parsed::Bool(b) => Value::Bool(b),
        Parsed::Int(i) => Value::Int(i),
        Parsed::UInt(u) => Value::UInt(u),
        Parsed::Float(f) => Value::Float(f),
        Parsed::Str(s) => Value::Str(s),
        Parsed::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, src)).collect()),
        Parsed::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Node::str(k.value, loc_of(&k.referenced, &k.defined, src)),
                        convert(v, src),
                    )
                })
                .collect(),
        ),
    };
    // Collections report the width of their first token only; point at one character.
    let loc = match value {
        Value::Seq(_) | Value::Map(_) => Loc { len: 1, ..loc },
        _ => loc,
    };
    Node { loc, value }
}

/// What serde-saphyr hands us: a generic value whose children carry spans.
enum Parsed {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Parsed>>),
    Map(Vec<(Spanned<String>, Spanned<Parsed>)>),
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsedVisitor)
    }
}

struct ParsedVisitor;

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::Null)
    }
    fn visit_none<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        Parsed::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Parsed, E> {
        Ok(Parsed::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Parsed, E> {
        Ok(Parsed::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Parsed, E> {
        Ok(Parsed::UInt(u))
    }
    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Parsed, E> {
        i64::try_from(i)
            .map(Parsed::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Parsed, E> {
        u64::try_from(u)
            .map(Parsed::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Parsed, E> {
        Ok(Parsed::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Parsed, E> {
        Ok(Parsed::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Parsed, E> {
        Ok(Parsed::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Parsed, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Parsed::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Parsed, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = a.next_key()? {
            entries.push((key, a.next_value()?));
        }
        Ok(Parsed::Map(entries))
    }
}

/// Deep-merges `over` onto `base`.
///
/// Mappings merge key by key, recursively. A list whose items are all mappings with a
/// string `name` (such as `layers:`) merges item by item by name; items with a new name
/// are appended. Everything else (other lists, scalars, `null`) replaces the base value.
/// Replaced and added values keep the overlay's locations.
pub(crate) fn merge(base: &mut Node, over: Node) {
    let Node { loc, value } = over;
    match (&mut base.value, value) {
        (Value::Map(base_entries), Value::Map(over_entries)) => {
            for (key, value) in over_entries {
                match base_entries
                    .iter_mut()
                    .find(|(k, _)| k.as_str() == key.as_str())
                {
                    Some((_, slot)) => merge(slot, value),
                    None => base_entries.push((key, value)),
                }
            }
        }
        (Value::Seq(base_items), Value::Seq(over_items)) if is_named_list(&over_items) => {
            for item in over_items {
                let name = item.name().map(str::to_string);
                match base_items
                    .iter_mut()
                    .find(|b| b.name().is_some() && b.name() == name.as_deref())
                {
                    Some(slot) => merge(slot, item),
                    None => base_items.push(item),
                }
            }
        }
        (_, value) => *base = Node { loc, value },
    }
}

fn is_named_list(items: &[Node]) -> bool {
    !items.is_empty() && items.iter().all(|i| i.name().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str, src: &mut Sources) -> Node {
        parse(src, Path::new("t.yaml"), text.to_string()).unwrap()
    }

    #[test]
    fn parse_keeps_locations() {
        let mut s = Sources::default();
        let n = tree("a: 1\nlist:\n  - x\n  - \"y\"\n", &mut s);
        let list = n.get("list").unwrap();
        let Value::Seq(items) = &list.value else {
            panic!()
        };
        assert_eq!(
            (items[1].loc.line, items[1].loc.col, items[1].loc.len),
            (4, 5, 3)
        );
        assert_eq!(n.get("a").unwrap().value, Value::UInt(1));
    }

    #[test]
    fn syntax_error_has_position() {
        let mut s = Sources::default();
        let err = parse(&mut s, Path::new("t.yaml"), "a: [1, 2\nb: 3\n".into()).unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("t.yaml:2:"), "{err}");
    }

    #[test]
    fn merge_maps_named_lists_and_scalars() {
        let mut s = Sources::default();
        let mut base = tree(
            "x: {a: 1, b: 2}\nl: [1, 2]\nlayers:\n  - name: f\n    p: 1\n    q: [a]\n  - name: g\n",
            &mut s,
        );
        let over = tree(
            "x: {b: 3, c: 4}\nl: [9]\nlayers:\n  - name: f\n    q: [b]\n  - name: h\n",
            &mut s,
        );
        merge(&mut base, over);
        let x = base.get("x").unwrap();
        assert_eq!(x.get("a").unwrap().value, Value::UInt(1));
        assert_eq!(x.get("b").unwrap().value, Value::UInt(3));
        assert_eq!(x.get("b").unwrap().loc.src, 1);
        assert_eq!(x.get("c").unwrap().value, Value::UInt(4));
        let Value::Seq(l) = &base.get("l").unwrap().value else {
            panic!()
        };
        assert_eq!(l.len(), 1);
        let Value::Seq(layers) = &base.get("layers").unwrap().value else {
            panic!()
        };
        let names: Vec<_> = layers.iter().map(|l| l.name().unwrap()).collect();
        assert_eq!(names, ["f", "g", "h"]);
        assert_eq!(layers[0].get("p").unwrap().value, Value::UInt(1));
        let Value::Seq(q) = &layers[0].get("q").unwrap().value else {
            panic!()
        };
        assert_eq!(q[0].as_str(), Some("b"));
    }
}
