//! Validation: raw structs ([`super::raw`]) -> domain types ([`super::model`]).
//!
//! Checks values (every number within its range from [`super::bounds`], memory limits
//! against each other, at most one of `command` / `nextest`, ...), cross references
//! (categories, layers and services named elsewhere must exist; the closest valid name
//! is suggested) and dependency cycles. Every problem is collected with its location; a
//! `Config` is returned only when none is found. The old format's fields are mapped on
//! the way (`harness.rs`, `execution.rs`), each mapping recorded for `--show-layers`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use super::bounds::{self, Number, OutOfRange, Range};
use super::de::{Entries, Located};
use super::error::Diagnostic;
use super::graph::{GraphNode, find_cycles};
use super::model::*;
use super::node::{Loc, Sources};
use super::raw::*;

mod categories;
mod execution;
mod harness;
mod layers;
mod services;

/// What `load` knows besides the file's content.
pub(crate) struct Meta {
    pub source: PathBuf,
    pub root: PathBuf,
    pub environment: String,
    pub overlays: Vec<PathBuf>,
    pub environments_available: Vec<String>,
    /// `layers:` was written as a mapping keyed by layer id (the old format).
    pub harness_layers: bool,
}

/// Validates the main configuration, plus the layers as other environments' overrides
/// would make them (checked, not returned).
pub(crate) fn validate(
    raw: RawConfig,
    variants: Vec<RawLayer>,
    meta: Meta,
    sources: &Sources,
) -> Result<Config, Vec<Diagnostic>> {
    let mut v = Validator {
        sources,
        diags: Vec::new(),
        harness_layers: meta.harness_layers,
    };
    let mut mappings: Vec<Mapping> = Vec::new();
    let harness_format = meta.harness_layers
        || raw.metadata.is_some()
        || raw.execution_config.is_some()
        || raw.service_dependencies.is_some();
    let metadata = raw.metadata.as_ref().map(|m| {
        let text = |v: &Option<EnvValue>| v.as_ref().map(|v| v.0.clone());
        Metadata {
            version: text(&m.version),
            description: text(&m.description),
            created_at: text(&m.created_at),
            config_schema_version: text(&m.config_schema_version),
        }
    });
    if metadata.is_some() {
        mappings.push(Mapping::new("metadata", "kept as information (shown)"));
    }
    if meta.harness_layers {
        mappings.push(Mapping::new(
            "layers (a mapping keyed by id)",
            "layers (a list; each key is the layer's `name`, its `name` the `display_name`)",
        ));
    }
    let mut raw = raw;
    // `service_dependencies:` are services with a probe at `health_check_endpoint`.
    if let Some(deps) = raw.service_dependencies.take() {
        let mut services = raw.services.take().unwrap_or_default();
        for (name, svc) in harness::services_from_dependencies(deps, &mut mappings) {
            if let Some((first, _)) = services.0.iter().find(|(k, _)| k.value == name.value) {
                let d = sources
                    .diag(
                        name.loc,
                        format!(
                            "service `{}` is defined in both `services` and `service_dependencies`",
                            name.value
                        ),
                    )
                    .with_note(format!(
                        "first defined at {}:{}:{}",
                        sources.path(first.loc.src).display(),
                        first.loc.line,
                        first.loc.col
                    ));
                v.diags.push(d);
            } else {
                services.0.push((name, svc));
            }
        }
        raw.services = Some(services);
    }
    let category_locs = raw.categories_locs();
    let service_locs = raw.services_locs();
    let version = match raw.version {
        None
        | Some(Located {
            value: Number::Int(1),
            ..
        }) => 1,
        Some(Located { value, loc }) => {
            v.err(loc, format!("unsupported `version` {value}: expected `1`"));
            1
        }
    };
    let raw_exec = raw.execution.unwrap_or_default();
    let mut execution = v.execution(&raw_exec);
    if let Some(ec) = &raw.execution_config {
        let m = v.map_execution_config(ec, &mut execution, &raw_exec);
        mappings.extend(m);
    }
    let services = v.services(
        raw.services.unwrap_or_default(),
        execution.layer_startup_timeout,
    );
    let has_layers = raw.layers.is_some();
    let raw_layers = raw.layers.map(|l| l.value).unwrap_or_default();
    let raw_categories = raw.categories.unwrap_or_default();
    // Category names: `categories:` entries, then names defined only by layer objects.
    let mut category_names: Vec<String> = raw_categories
        .0
        .iter()
        .map(|(k, _)| k.value.clone())
        .collect();
    for layer in &raw_layers {
        for item in &layer.value.categories.value {
            if let RawLayerCategory::Object(obj) = &item.value
                && let Some(n) = &obj.name
                && !category_names.contains(&n.value)
            {
                category_names.push(n.value.clone());
            }
        }
    }
    let service_names: Vec<String> = services.keys().cloned().collect();
    let mut categories = v.categories(
        &raw_categories,
        &categories::CategoryCtx {
            known: &category_names,
            global_memory: execution.max_memory_mb,
            default_command: execution.default_command.as_deref(),
            services: &service_names,
            base: None,
        },
    );

    let names = Names {
        default_command: execution.default_command.clone(),
        categories: NameSet::new(category_names.clone()),
        layers: NameSet::new(
            raw_layers
                .iter()
                .map(|l| l.value.name.value.clone())
                .collect(),
        ),
        services: NameSet::new(services.keys().cloned().collect()),
        global_memory: execution.max_memory_mb,
    };
    let mut layers = Vec::new();
    let mut seen: HashMap<&str, Loc> = HashMap::new();
    for (i, layer) in raw_layers.iter().enumerate() {
        let name = &layer.value.name;
        if let Some(first) = seen.get(name.value.as_str()) {
            let d = sources
                .diag(name.loc, format!("duplicate layer name `{}`", name.value))
                .with_note(format!(
                    "first defined at {}:{}:{}",
                    sources.path(first.src).display(),
                    first.line,
                    first.col
                ));
            v.diags.push(d);
        } else {
            seen.insert(&name.value, name.loc);
        }
        layers.push(v.layer(&layer.value, i, &names, &mut categories));
    }
    for variant in &variants {
        let i = raw_layers
            .iter()
            .position(|l| l.value.name.value == variant.name.value)
            .unwrap_or(0);
        v.layer(variant, i, &names, &mut categories.clone());
    }
    if let Some(ec) = &raw.execution_config {
        for (layer_id, strategy) in ec.fail_fast_strategy.iter().flat_map(|e| e.0.iter()) {
            if v.reference(
                layer_id,
                &names.layers,
                "layer",
                "in `execution_config.fail_fast_strategy`",
            ) && let Some(layer) = layers.iter_mut().find(|l| l.name == layer_id.value)
            {
                layer.fail_fast = strategy.value.0;
                layer.mappings.push(Mapping::new(
                    "execution_config.fail_fast_strategy",
                    format!(
                        "fail_fast: {}",
                        serde_json::to_value(strategy.value.0)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        let listed = ec
            .background_execution
            .iter()
            .flat_map(|b| b.background_layers.iter().flatten());
        for name in listed {
            if v.reference(
                name,
                &names.layers,
                "layer",
                "in `execution_config.background_execution.background_layers`",
            ) && let Some(raw_layer) =
                raw_layers.iter().find(|l| l.value.name.value == name.value)
                && raw_layer.value.background.is_none()
                && raw_layer.value.background_execution.is_none()
                && let Some(layer) = layers.iter_mut().find(|l| l.name == name.value)
            {
                layer.background = true;
            }
        }
        if ec
            .background_execution
            .as_ref()
            .is_some_and(|b| b.enabled == Some(false))
        {
            execution.background_layers.clear();
            for layer in &mut layers {
                layer.background = false;
            }
        }
    }
    let harness_format =
        harness_format
            || raw_categories
                .0
                .iter()
                .any(|(_, c)| c.value.uses_old_keys())
            || raw_layers.iter().any(|l| {
                l.value.background_execution.is_some()
                    || l.value.dependencies.is_some()
                    || l.value.categories.value.iter().any(
                        |c| matches!(&c.value, RawLayerCategory::Object(o) if o.uses_old_keys()),
                    )
            });
    for bg in raw_exec.background_layers.iter().flatten() {
        v.reference(
            bg,
            &names.layers,
            "layer",
            "in `execution.background_layers`",
        );
    }
    v.layer_cycles(&raw_layers);
    v.category_cycles(&categories, category_locs);
    v.service_cycles(&services, service_locs);

    if !v.diags.is_empty() {
        return Err(v.diags);
    }
    Ok(Config {
        source: meta.source,
        root: meta.root,
        environment: meta.environment,
        overlays: meta.overlays,
        environments_available: meta.environments_available,
        version,
        execution,
        services,
        categories,
        layers,
        has_layers,
        agents: Default::default(),
        metadata,
        harness_format,
        mappings,
    })
}

/// Names a reference may name: the list (for suggestions, in order) and a set (so
/// checking a reference costs no pass over the list).
pub(super) struct NameSet {
    list: Vec<String>,
    set: std::collections::HashSet<String>,
}

impl NameSet {
    fn new(list: Vec<String>) -> Self {
        let set = list.iter().cloned().collect();
        Self { list, set }
    }
}

/// What `Validator::reference` checks a name against.
pub(super) trait Known {
    fn has(&self, name: &str) -> bool;
    fn names(&self) -> &[String];
}

impl Known for NameSet {
    fn has(&self, name: &str) -> bool {
        self.set.contains(name)
    }
    fn names(&self) -> &[String] {
        &self.list
    }
}

impl Known for Vec<String> {
    fn has(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
    fn names(&self) -> &[String] {
        self
    }
}

/// The names other sections may refer to.
struct Names {
    default_command: Option<String>,
    categories: NameSet,
    layers: NameSet,
    services: NameSet,
    global_memory: Option<u64>,
}

struct Validator<'a> {
    sources: &'a Sources,
    diags: Vec<Diagnostic>,
    /// `layers:` is in the old mapping form (pass rates there are fractions).
    harness_layers: bool,
}

impl Validator<'_> {
    fn err(&mut self, loc: Loc, message: impl Into<String>) {
        let d = self.sources.diag(loc, message);
        self.diags.push(d);
    }

    /// Reports `e` (a value of `what` outside its range) at `loc`.
    fn out_of_range(&mut self, loc: Loc, what: &str, e: &OutOfRange) {
        let d = bounds::diagnostic(self.sources, loc, what, e);
        self.diags.push(d);
    }

    /// A duration in the unit of `range` (seconds, minutes, ...), within it.
    fn duration(
        &mut self,
        v: &Option<Located<f64>>,
        range: &Range,
        what: &str,
    ) -> Option<Duration> {
        let l = v.as_ref()?;
        range
            .check_duration(Number::Float(l.value))
            .map_err(|e| self.out_of_range(l.loc, what, &e))
            .ok()
    }

    /// A duration given as whole milliseconds (or days, ...), within `range`.
    fn int_duration(
        &mut self,
        v: &Option<Located<Number>>,
        range: &Range,
        what: &str,
    ) -> Option<Duration> {
        let l = v.as_ref()?;
        range
            .check_duration(l.value)
            .map_err(|e| self.out_of_range(l.loc, what, &e))
            .ok()
    }

    /// An integer within `range`.
    fn int(&mut self, v: &Option<Located<Number>>, range: &Range, what: &str) -> Option<i64> {
        let l = v.as_ref()?;
        range
            .check_int(l.value)
            .map_err(|e| self.out_of_range(l.loc, what, &e))
            .ok()
    }

    /// A number (fractions allowed) within `range`.
    fn number(&mut self, v: &Option<Located<f64>>, range: &Range, what: &str) -> Option<f64> {
        let l = v.as_ref()?;
        range
            .check(Number::Float(l.value))
            .map_err(|e| self.out_of_range(l.loc, what, &e))
            .ok()
    }

    /// An integer within `range` that cannot be negative (counts, sizes).
    fn count(&mut self, v: &Option<Located<Number>>, range: &Range, what: &str) -> Option<u64> {
        debug_assert!(range.min >= 0, "{what}: a count cannot be negative");
        self.int(v, range, what).map(|n| n as u64)
    }

    /// A non-empty string.
    fn non_empty(&mut self, v: &Option<Located<String>>, what: &str) -> Option<String> {
        let l = v.as_ref()?;
        if l.value.trim().is_empty() {
            self.err(l.loc, format!("empty {what}: expected a non-empty string"));
            return None;
        }
        Some(l.value.clone())
    }

    /// Checks that `name` is one of `known`; suggests the closest otherwise.
    fn reference(
        &mut self,
        name: &Located<String>,
        known: &impl Known,
        kind: &str,
        context: &str,
    ) -> bool {
        if known.has(&name.value) {
            return true;
        }
        let d = self
            .sources
            .diag(
                name.loc,
                format!("unknown {kind} `{}` {context}", name.value),
            )
            .with_suggestion(
                &name.value,
                known.names().iter().map(String::as_str),
                &plural(kind),
                true,
            );
        self.diags.push(d);
        false
    }

    fn report_cycles(&mut self, kind: &str, nodes: &[GraphNode<'_>]) {
        for cycle in find_cycles(nodes) {
            self.err(
                cycle.loc,
                format!("dependency cycle among {kind}: {}", cycle.describe()),
            );
        }
    }

    fn layer_cycles(&mut self, layers: &[Located<RawLayer>]) {
        let nodes: Vec<GraphNode<'_>> = layers
            .iter()
            .map(|l| GraphNode {
                name: &l.value.name.value,
                edges: l
                    .value
                    .depends_on
                    .iter()
                    .flatten()
                    .map(|d| (d.value.as_str(), d.loc))
                    .collect(),
            })
            .collect();
        self.report_cycles("layers", &nodes);
    }

    fn category_cycles(
        &mut self,
        cats: &IndexMap<String, Category>,
        locs: HashMap<(String, String), Loc>,
    ) {
        let nodes = graph_of(cats.iter().map(|(n, c)| (n.as_str(), &c.depends_on)), &locs);
        self.report_cycles("categories", &nodes);
    }

    fn service_cycles(
        &mut self,
        svcs: &IndexMap<String, Service>,
        locs: HashMap<(String, String), Loc>,
    ) {
        let nodes = graph_of(svcs.iter().map(|(n, s)| (n.as_str(), &s.depends_on)), &locs);
        self.report_cycles("services", &nodes);
    }
}

fn graph_of<'a>(
    items: impl Iterator<Item = (&'a str, &'a Vec<String>)>,
    locs: &HashMap<(String, String), Loc>,
) -> Vec<GraphNode<'a>> {
    items
        .map(|(name, deps)| GraphNode {
            name,
            edges: deps
                .iter()
                .map(|d| {
                    let loc = locs
                        .get(&(name.to_string(), d.clone()))
                        .copied()
                        .unwrap_or_default();
                    (d.as_str(), loc)
                })
                .collect(),
        })
        .collect()
}

fn env_map(env: &Option<Entries<EnvValue>>) -> BTreeMap<String, String> {
    env.iter()
        .flat_map(|e| e.0.iter())
        .map(|(k, v)| (k.value.clone(), v.0.clone()))
        .collect()
}

impl RawConfig {
    /// (category, dependency) -> location of the `depends_on` entry.
    fn categories_locs(&self) -> HashMap<(String, String), Loc> {
        let mut out = HashMap::new();
        for (name, c) in self.categories.iter().flat_map(|e| e.0.iter()) {
            for d in c.value.depends_on.iter().flatten() {
                out.entry((name.value.clone(), d.value.clone()))
                    .or_insert(d.loc);
            }
        }
        out
    }

    /// (service, dependency) -> location of the `depends_on` entry.
    fn services_locs(&self) -> HashMap<(String, String), Loc> {
        let mut out = HashMap::new();
        for (name, s) in self.services.iter().flat_map(|e| e.0.iter()) {
            for d in s.value.depends_on.iter().flatten() {
                out.entry((name.value.clone(), d.value.clone()))
                    .or_insert(d.loc);
            }
        }
        out
    }
}

/// `category` → `categories`, `layer` → `layers`.
fn plural(word: &str) -> String {
    match word.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{word}s"),
    }
}
