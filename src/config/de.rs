//! A serde `Deserializer` over the located tree ([`Node`]), so the raw structs of
//! [`super::raw`] can be derived with `deny_unknown_fields` while every error still
//! knows the line and column (and the key path) it is about.
//!
//! Also owns the location-aware helper types the raw structs use: [`Located`],
//! [`Entries`] (an ordered map with located keys) and [`OneOrMany`].
//!
//! Unknown keys are collected (several typos are reported at once, see [`from_node`]);
//! any other error stops deserialization.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Expected,
    MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};

use super::error::Diagnostic;
use super::node::{Loc, Node, Sources, Value};

const LOCATED: &str = "$layered_runner::Located";
const ONE_OR_MANY: &str = "$layered_runner::OneOrMany";

/// Deserializes `T` from `node`. Returns the value, or every problem found.
///
/// Unknown keys do not stop the search for more: each one is recorded, removed from a
/// working copy of the tree, and deserialization starts over, so several typos are
/// reported at once. Any other error ends the search.
pub(crate) fn from_node<T: DeserializeOwned>(
    node: &Node,
    sources: &Sources,
) -> Result<T, Vec<Diagnostic>> {
    from_node_at(node, "", sources)
}

/// [`from_node`] for a node found at key path `path` (used in messages).
pub(crate) fn from_node_at<T: DeserializeOwned>(
    node: &Node,
    path: &str,
    sources: &Sources,
) -> Result<T, Vec<Diagnostic>> {
    let mut errors: Vec<DeError> = Vec::new();
    let mut work: Option<Node> = None;
    loop {
        let tree = work.as_ref().unwrap_or(node);
        let result = T::deserialize(NodeDe {
            node: tree,
            path: path.to_string(),
        });
        match result {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => {
                let unknown_key = matches!(e.kind, Kind::UnknownField(..)) && errors.len() < 100;
                let loc = e.loc;
                errors.push(e);
                if !unknown_key {
                    break;
                }
                let mut next = tree.clone();
                if !loc.is_some_and(|l| remove_key(&mut next, l)) {
                    break;
                }
                work = Some(next);
            }
        }
    }
    Err(errors.iter().map(|e| e.to_diagnostic(sources)).collect())
}

/// Removes the mapping entry whose key is at `loc`. True when one was found.
fn remove_key(node: &mut Node, loc: Loc) -> bool {
    match &mut node.value {
        Value::Map(entries) => {
            if let Some(i) = entries.iter().position(|(k, _)| k.loc == loc) {
                entries.remove(i);
                return true;
            }
            entries.iter_mut().any(|(_, v)| remove_key(v, loc))
        }
        Value::Seq(items) => items.iter_mut().any(|v| remove_key(v, loc)),
        _ => false,
    }
}

/// A value with the location of the node it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located<T>, A::Error> {
                let missing = || de::Error::custom("internal: located value without location");
                let [src, line, col, len, def_line, def_col]: [u32; 6] =
                    seq.next_element()?.ok_or_else(missing)?;
                let value = seq.next_element()?.ok_or_else(missing)?;
                Ok(Located {
                    value,
                    loc: Loc {
                        src,
                        line,
                        col,
                        len,
                        def_line,
                        def_col,
                    },
                })
            }
        }
        d.deserialize_newtype_struct(LOCATED, V(PhantomData))
    }
}

/// A mapping with located string keys, in file order (`categories:`, `services:`, `env:`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entries<T>(pub Vec<(Located<String>, T)>);

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A list that may also be written as a single value (`files: "a/*.py"`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_newtype_struct(ONE_OR_MANY, V(PhantomData))
    }
}

/// What went wrong while deserializing, before it is placed and rendered.
#[derive(Debug)]
enum Kind {
    Custom(String),
    UnknownField(String, &'static [&'static str]),
    UnknownVariant(String, &'static [&'static str]),
    InvalidType(String, String),
    InvalidValue(String, String),
    MissingField(&'static str),
    DuplicateField(&'static str),
}

/// A deserialization error, with the location and key path it happened at.
#[derive(Debug)]
pub(crate) struct DeError {
    kind: Kind,
    loc: Option<Loc>,
    path: String,
}

impl DeError {
    fn new(kind: Kind) -> Self {
        DeError {
            kind,
            loc: None,
            path: String::new(),
        }
    }

    /// Places the error at `loc`/`path` unless a deeper node already did.
    fn at(mut self, loc: Loc, path: &str) -> Self {
        if self.loc.is_none() {
            self.loc = Some(loc);
            self.path = path.to_string();
        }
        self
    }

    fn where_(&self) -> String {
        if self.path.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{}`", self.path)
        }
    }

    fn to_diagnostic(&self, sources: &Sources) -> Diagnostic {
        let loc = self.loc.unwrap_or_default();
        let mut help = None;
        let message = match &self.kind {
            Kind::Custom(msg) if self.path.is_empty() => msg.clone(),
            Kind::Custom(msg) => format!("{msg} (at `{}`)", self.path),
            Kind::UnknownField(field, expected) => {
                help = Some((field.as_str(), *expected, "keys here"));
                if self.path.is_empty() {
                    format!("unknown top-level key `{field}`")
                } else {
                    format!("unknown key `{field}` in {}", self.where_())
                }
            }
            Kind::UnknownVariant(value, expected) => {
                help = Some((value.as_str(), *expected, "values"));
                let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
                format!(
                    "unknown value `{value}` for {}: expected one of {}",
                    self.where_(),
                    list.join(", ")
                )
            }
            Kind::InvalidType(found, expected) => {
                format!(
                    "invalid type for {}: expected {expected}, found {found}",
                    self.where_()
                )
            }
            Kind::InvalidValue(found, expected) => {
                format!(
                    "invalid value for {}: expected {expected}, found {found}",
                    self.where_()
                )
            }
            Kind::MissingField(field) => format!("missing key `{field}` in {}", self.where_()),
            Kind::DuplicateField(field) => format!("duplicate key `{field}` in {}", self.where_()),
        };
        let d = if loc.line == 0 && self.loc.is_none() {
            Diagnostic::in_file(sources.path(0), message)
        } else {
            sources.diag(loc, message)
        };
        match help {
            Some((input, expected, what)) => {
                d.with_suggestion(input, expected.iter().copied(), what, true)
            }
            None => d,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {}", self.kind, self.path)
    }
}

impl std::error::Error for DeError {}

/// Rewrites serde's Rust-flavoured expectations ("u64", "struct RawLayer") for YAML users.
fn nice_expected(exp: &dyn Expected) -> String {
    let s = exp.to_string();
    match s.as_str() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        _ if s.starts_with("struct ") => "a mapping".into(),
        _ => s,
    }
}

/// For an integer out of the range of the Rust type serde reads it into, the range
/// ("an integer from 0 to 4294967295") rather than just "an integer". Settings with a
/// narrower range of their own are checked against it first (see [`super::bounds`]);
/// this is the fallback.
fn range_expected(exp: &dyn Expected) -> String {
    let s = exp.to_string();
    let range = match s.as_str() {
        "u8" => (0, i128::from(u8::MAX)),
        "u16" => (0, i128::from(u16::MAX)),
        "u32" => (0, i128::from(u32::MAX)),
        "u64" => (0, i128::from(u64::MAX)),
        "usize" => (0, usize::MAX as i128),
        "i8" => (i128::from(i8::MIN), i128::from(i8::MAX)),
        "i16" => (i128::from(i16::MIN), i128::from(i16::MAX)),
        "i32" => (i128::from(i32::MIN), i128::from(i32::MAX)),
        "i64" => (i128::from(i64::MIN), i128::from(i64::MAX)),
        "isize" => (isize::MIN as i128, isize::MAX as i128),
        _ => return nice_expected(exp),
    };
    format!("an integer from {} to {}", range.0, range.1)
}

fn nice_unexpected(u: Unexpected) -> String {
    match u {
        Unexpected::Unit | Unexpected::Option => "null".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a mapping".into(),
        Unexpected::Float(f) => format!("number `{f}`"),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Kind::Custom(msg.to_string()))
    }
    fn invalid_type(unexp: Unexpected, exp: &dyn Expected) -> Self {
        DeError::new(Kind::InvalidType(
            nice_unexpected(unexp),
            nice_expected(exp),
        ))
    }
    fn invalid_value(unexp: Unexpected, exp: &dyn Expected) -> Self {
        let expected = match unexp {
            Unexpected::Signed(_) | Unexpected::Unsigned(_) => range_expected(exp),
            _ => nice_expected(exp),
        };
        DeError::new(Kind::InvalidValue(nice_unexpected(unexp), expected))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Kind::UnknownVariant(variant.to_string(), expected))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(Kind::UnknownField(field.to_string(), expected))
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::new(Kind::MissingField(field))
    }
    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(Kind::DuplicateField(field))
    }
}

/// Path of a list item: its `name:` when it has one, else its index.
fn item_path(path: &str, index: usize, item: &Node) -> String {
    match item.name() {
        Some(name) => format!("{path}[{name}]"),
        None => format!("{path}[{index}]"),
    }
}

fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> Self {
        NodeDe { node, path }
    }

    fn place(&self, e: DeError) -> DeError {
        e.at(self.node.loc, &self.path)
    }
}

impl<'de> Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                de: &self,
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
                de: &self,
            }),
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none().map_err(|e| self.place(e)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == LOCATED {
            let l = self.node.loc;
            return visitor.visit_seq(LocatedSeq {
                de: Some(self),
                loc: Some([l.src, l.line, l.col, l.len, l.def_line, l.def_col]),
            });
        }
        if name == ONE_OR_MANY {
            let items = match &self.node.value {
                Value::Seq(items) => items.as_slice(),
                _ => std::slice::from_ref(self.node),
            };
            let r = visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                de: &self,
            });
            return r.map_err(|e| self.place(e));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(_) => visitor.visit_enum(Enum {
                tag: self.child(self.node, self.path.clone()),
                content: None,
            }),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let tag = self.child(k, self.path.clone());
                let content = self.child(v, key_path(&self.path, k.as_str().unwrap_or_default()));
                visitor.visit_enum(Enum {
                    tag,
                    content: Some(content),
                })
            }
            _ => {
                let list: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
                Err(DeError::new(Kind::InvalidType(
                    self.node.kind().to_string(),
                    format!("one of {}", list.join(", ")),
                )))
            }
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct LocatedSeq<'a> {
    de: Option<NodeDe<'a>>,
    /// The location, handed to `Located` as its first element.
    loc: Option<[u32; 6]>,
}

impl<'de> SeqAccess<'de> for LocatedSeq<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        if let Some(parts) = self.loc.take() {
            let de = de::value::SeqDeserializer::<_, DeError>::new(parts.into_iter());
            return seed.deserialize(de).map(Some);
        }
        match self.de.take() {
            Some(de) => seed.deserialize(de).map(Some),
            None => Ok(None),
        }
    }
}

struct Seq<'a, 'b, I> {
    items: I,
    de: &'b NodeDe<'a>,
}

impl<'de, I: Iterator<Item = (usize, &'de Node)>> SeqAccess<'de> for Seq<'de, '_, I> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, item)) => {
                let path = item_path(&self.de.path, i, item);
                seed.deserialize(self.de.child(item, path)).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct Map<'a, 'b> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a (Node, Node)>,
    de: &'b NodeDe<'a>,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let key_de = self.de.child(&entry.0, self.de.path.clone());
        // An unknown key is reported at the key, in the mapping's path.
        seed.deserialize(key_de)
            .map(Some)
            .map_err(|e| e.at(entry.0.loc, &self.de.path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (k, v) = self.value.take().expect("next_value before next_key");
        let path = key_path(&self.de.path, k.as_str().unwrap_or_default());
        seed.deserialize(self.de.child(v, path))
    }
}

struct Enum<'a> {
    tag: NodeDe<'a>,
    content: Option<NodeDe<'a>>,
}

impl<'de> EnumAccess<'de> for Enum<'de> {
    type Error = DeError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let tag = NodeDe {
            node: self.tag.node,
            path: self.tag.path.clone(),
        };
        let loc = tag.node.loc;
        let path = tag.path.clone();
        let v = seed.deserialize(tag).map_err(|e| e.at(loc, &path))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Enum<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.content {
            None => Ok(()),
            Some(c) => Err(c.place(DeError::new(Kind::InvalidType(
                c.node.kind().into(),
                "no value".into(),
            )))),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.content {
            Some(c) => seed.deserialize(c),
            None => Err(self.tag.place(DeError::new(Kind::InvalidType(
                "a plain value".into(),
                "a mapping with one key".into(),
            )))),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        match self.content {
            Some(c) => c.deserialize_seq(v),
            None => Err(self
                .tag
                .place(DeError::new(Kind::Custom("expected a list".into())))),
        }
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.content {
            Some(c) => c.deserialize_map(v),
            None => Err(self
                .tag
                .place(DeError::new(Kind::Custom("expected a mapping".into())))),
        }
    }
}
