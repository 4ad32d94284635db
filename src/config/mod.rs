//! Configuration: `layers.yaml`, environment overlays, validation into domain types.
//!
//! Loading happens in passes ([`load`]):
//!
//! 1. [`node`]: the layers file is parsed into a location-carrying tree (every node knows
//!    its file, line and column); YAML syntax errors stop here.
//!    The old format's shapes (`layers` keyed by id, category objects in layers) are
//!    rewritten into today's on the tree ([`harness`]).
//! 2. [`env`]: the environment overlay `config/environments/<env>.yaml` is deep-merged
//!    onto the tree, then each layer's `environment_overrides` entry for the active
//!    environment.
//! 3. [`de`] + [`raw`]: the merged tree is deserialized into raw serde structs; unknown
//!    keys and values are rejected with a "did you mean" suggestion.
//! 4. [`validate`] (with [`graph`]): cross references, dependency cycles and value
//!    ranges (every numeric setting's, from [`bounds`]) are checked and the domain
//!    types of [`model`] are built.
//!
//! Every problem becomes a [`Diagnostic`] with file, line and column; [`ConfigError`]
//! carries them all and renders them rustc style ([`error`]).

pub mod agents;
pub mod bounds;
mod de;
mod env;
mod error;
mod graph;
mod harness;
pub mod model;
mod native;
mod node;
mod raw;
mod schema;
mod validate;

#[cfg(test)]
mod harness_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use env::{DEFAULT_ENVIRONMENT, canonical_environment, environments_dir, environments_in};
pub use error::{ConfigError, Diagnostic, suggest};
pub use model::*;
pub use native::native_yaml;
pub use schema::config_schema;

use node::{Node, Sources, Value};

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The layers file (`--config`, default `layers.yaml`).
    pub path: PathBuf,
    /// The environment (`--env`); `None` means `test`, whose file is optional.
    pub environment: Option<String>,
}

impl LoadOptions {
    /// Options for `path` in the default environment.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            environment: None,
        }
    }
}

/// Loads, merges and validates the configuration. Nothing should run when this fails:
/// print the error (its `Display` is a complete diagnostic) and exit with status 2.
pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
    let path = opts.path.as_path();
    let text = read(path, "configuration file", true)?;
    let mut sources = Sources::default();
    let mut tree = top_level(
        node::parse(&mut sources, path, text)?,
        &sources,
        "layers file",
    )?;

    // Where overlays live, as the user would write it (relative paths stay relative).
    let root_display = path.parent().unwrap_or(Path::new(""));
    let root_fs = if root_display.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root_display
    };
    let harness_layers = harness::normalize_layers(&mut tree);
    let declared = harness::override_environments(&tree);
    let available = environments_in(root_fs);
    let selected = env::select(
        root_display,
        opts.environment.as_deref(),
        &available,
        &declared,
    )?;
    let mut overlays = Vec::new();
    if let Some(file) = &selected.file {
        let text = read(file, "environment file", false)?;
        let mut overlay = top_level(
            node::parse(&mut sources, file, text)?,
            &sources,
            "environment file",
        )?;
        harness::normalize_layers(&mut overlay);
        node::merge(&mut tree, overlay);
        overlays.push(absolute(file));
    }

    drop_extension_keys(&mut tree);
    let (mut diags, mut variants) =
        env::apply_overrides(&mut tree, &selected.name, &available, &sources);
    harness::expand_category_objects(&mut tree);
    for variant in &mut variants {
        harness::expand_in_layer(&mut variant.layer, tree.get("categories"));
    }
    let raw = de::from_node::<raw::RawConfig>(&tree, &sources);
    // Problems the other environments' layers share with the file itself are reported
    // once, as the file's own (they come after them, and `finish` keeps the first).
    let mut raw_variants = Vec::new();
    let mut variant_diags = Vec::new();
    for variant in variants {
        match de::from_node_at::<raw::RawLayer>(&variant.layer, &variant.path, &sources) {
            Ok(layer) => raw_variants.push(layer),
            Err(d) => variant_diags.extend(d),
        }
    }
    let raw = match raw {
        Ok(raw) if diags.is_empty() && variant_diags.is_empty() => raw,
        Ok(_) => {
            diags.extend(variant_diags);
            return Err(finish(diags, &sources));
        }
        Err(d) => {
            diags.extend(d);
            diags.extend(variant_diags);
            return Err(finish(diags, &sources));
        }
    };
    let source = absolute(path);
    let meta = validate::Meta {
        root: source
            .parent()
            .map_or_else(|| absolute(Path::new(".")), Path::to_path_buf),
        source,
        environment: selected.name,
        overlays,
        environments_available: available,
        harness_layers,
    };
    let mut config =
        validate::validate(raw, raw_variants, meta, &sources).map_err(|d| finish(d, &sources))?;
    config.agents = agents::load_agents(&config.root)?;
    Ok(config)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read(path: &Path, what: &str, is_main: bool) -> Result<String, ConfigError> {
    read_utf8(path, what).map_err(|e| {
        if let Some(d) = utf8_diagnostic(&e) {
            return ConfigError::single(d);
        }
        let d = if e.kind() == std::io::ErrorKind::NotFound {
            Diagnostic::in_file(path, format!("{what} not found: `{}`", path.display()))
        } else {
            Diagnostic::in_file(
                path,
                format!("cannot read {what} `{}`: {e}", path.display()),
            )
        };
        let d = if is_main {
            d.with_help("pass the layers file with `--config PATH`")
        } else {
            d
        };
        ConfigError::single(d)
    })
}

/// A YAML file's text; one that is not UTF-8 is an error at the first bad byte.
pub(crate) fn read_utf8(path: &Path, what: &str) -> Result<String, std::io::Error> {
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes).map_err(|e| {
        let d = not_utf8(path, what, e.as_bytes(), e.utf8_error().valid_up_to());
        std::io::Error::new(std::io::ErrorKind::InvalidData, Utf8Diagnostic(d))
    })
}

/// The diagnostic of a file that is not UTF-8 at byte `offset`.
fn not_utf8(path: &Path, what: &str, bytes: &[u8], offset: usize) -> Diagnostic {
    let before = &bytes[..offset];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line_end = bytes[offset..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| offset + i);
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u64
        + 1;
    let mut d = Diagnostic::in_file(
        path,
        format!(
            "{what} `{}` is not valid UTF-8: byte 0x{:02x} at offset {offset} (line {line}, column {column})",
            path.display(),
            bytes[offset]
        ),
    );
    d.line = Some(line);
    d.column = Some(column);
    d.source_line = Some(String::from_utf8_lossy(&bytes[line_start..line_end]).into_owned());
    d.with_help("save the file as UTF-8")
}

/// Carries a located UTF-8 diagnostic through an `io::Error`.
#[derive(Debug)]
struct Utf8Diagnostic(Diagnostic);

impl std::fmt::Display for Utf8Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Utf8Diagnostic {}

/// The located diagnostic inside an error from [`read_utf8`], if it is one.
pub(crate) fn utf8_diagnostic(e: &std::io::Error) -> Option<Diagnostic> {
    e.get_ref()?
        .downcast_ref::<Utf8Diagnostic>()
        .map(|d| d.0.clone())
}

/// Top-level keys starting with `x-` are ignored: a place for YAML anchors shared by
/// several entries (`x-python: &py {timeout_seconds: 60}` then `<<: *py`).
fn drop_extension_keys(tree: &mut Node) {
    if let Value::Map(entries) = &mut tree.value {
        entries.retain(|(k, _)| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    }
}

/// An empty document is an empty mapping; anything but a mapping is an error.
fn top_level(tree: Node, sources: &Sources, what: &str) -> Result<Node, ConfigError> {
    match tree.value {
        Value::Map(_) => Ok(tree),
        Value::Null => Ok(Node {
            loc: tree.loc,
            value: Value::Map(Vec::new()),
        }),
        _ => Err(ConfigError::single(sources.diag(
            tree.loc,
            format!(
                "invalid {what}: expected a mapping at the top level, found {}",
                tree.kind()
            ),
        ))),
    }
}

/// Orders diagnostics by file (in reading order), line and column; keeps one per place.
fn finish(mut diags: Vec<Diagnostic>, sources: &Sources) -> ConfigError {
    let order = |d: &Diagnostic| {
        let file = (0..sources.len() as u32)
            .position(|i| sources.path(i) == d.file)
            .unwrap_or(usize::MAX);
        (file, d.line.unwrap_or(0), d.column.unwrap_or(0))
    };
    diags.sort_by_key(order);
    diags.dedup_by(|a, b| a.file == b.file && a.line == b.line && a.column == b.column);
    ConfigError::new(diags)
}
