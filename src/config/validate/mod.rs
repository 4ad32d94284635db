//! Validation: raw structs ([`super::raw`]) -> domain types ([`super::model`]).
//!
//! Checks values (positive timeouts, sane memory limits, exactly one of `command` /
//! `nextest`, ...), cross references (categories, layers and services named elsewhere
//! must exist; the closest valid name is suggested) and dependency cycles. Every
//! problem is collected with its location; a `Config` is returned only when none is found.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use super::de::{Entries, Located};
use super::error::Diagnostic;
use super::graph::{GraphNode, find_cycles};
use super::model::*;
use super::node::{Loc, Sources};
use super::raw::*;

mod categories;
mod layers;
mod services;

/// What `load` knows besides the file's content.
pub(crate) struct Meta {
    pub source: PathBuf,
    pub root: PathBuf,
    pub environment: String,
    pub overlays: Vec<PathBuf>,
    pub environments_available: Vec<String>,
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
    };
    let category_locs = raw.categories_locs();
    let service_locs = raw.services_locs();
    let version = match raw.version {
        None => 1,
        Some(Located { value: 1, .. }) => 1,
        Some(Located { value, loc }) => {
            v.err(loc, format!("unsupported `version` {value}: expected `1`"));
            1
        }
    };
    let raw_exec = raw.execution.unwrap_or_default();
    let execution = v.execution(&raw_exec);
    let services = v.services(raw.services.unwrap_or_default());
    let categories = v.categories(raw.categories.unwrap_or_default(), execution.max_memory_mb);
    let has_layers = raw.layers.is_some();
    let raw_layers = raw.layers.map(|l| l.value).unwrap_or_default();

    let names = Names {
        categories: NameSet::new(categories.keys().cloned().collect()),
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
        layers.push(v.layer(&layer.value, i, &names));
    }
    for variant in &variants {
        let i = raw_layers
            .iter()
            .position(|l| l.value.name.value == variant.name.value)
            .unwrap_or(0);
        v.layer(variant, i, &names);
    }
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
    categories: NameSet,
    layers: NameSet,
    services: NameSet,
    global_memory: Option<u64>,
}

struct Validator<'a> {
    sources: &'a Sources,
    diags: Vec<Diagnostic>,
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

impl Validator<'_> {
    fn err(&mut self, loc: Loc, message: impl Into<String>) {
        let d = self.sources.diag(loc, message);
        self.diags.push(d);
    }

    /// A duration given in `unit_secs` seconds per unit; must be > 0 (or >= 0 with `allow_zero`).
    fn duration(
        &mut self,
        v: &Option<Located<f64>>,
        unit_secs: f64,
        allow_zero: bool,
        what: &str,
    ) -> Option<Duration> {
        let l = v.as_ref()?;
        let ok = l.value.is_finite() && (l.value > 0.0 || (allow_zero && l.value == 0.0));
        let d = ok
            .then(|| Duration::try_from_secs_f64(l.value * unit_secs).ok())
            .flatten();
        if d.is_none() {
            let bound = if allow_zero {
                "0 or more"
            } else {
                "greater than 0"
            };
            self.err(
                l.loc,
                format!(
                    "invalid {what}: expected a duration {bound}, found `{}`",
                    fmt_num(l.value)
                ),
            );
        }
        d
    }

    /// An integer that must be > 0 (or >= 0 with `allow_zero`) and fit `max`.
    fn int(
        &mut self,
        v: &Option<Located<i64>>,
        allow_zero: bool,
        max: u64,
        what: &str,
    ) -> Option<u64> {
        let l = v.as_ref()?;
        let min = if allow_zero { 0 } else { 1 };
        if l.value < min || l.value as u64 > max {
            let bound = if allow_zero {
                "a number 0 or more"
            } else {
                "a number greater than 0"
            };
            self.err(
                l.loc,
                format!("invalid {what}: expected {bound}, found `{}`", l.value),
            );
            return None;
        }
        Some(l.value as u64)
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
                &format!("{kind}s"),
                true,
            );
        self.diags.push(d);
        false
    }

    fn execution(&mut self, r: &RawExecution) -> Execution {
        let max = u64::MAX >> 1;
        Execution {
            max_parallel_tests: self
                .int(
                    &r.max_parallel_tests,
                    false,
                    max,
                    "`execution.max_parallel_tests`",
                )
                .map(|n| n as usize),
            max_memory_mb: self.int(&r.max_memory_mb, false, max, "`execution.max_memory_mb`"),
            max_cpu_percent: self
                .int(
                    &r.max_cpu_percent,
                    false,
                    u64::from(u32::MAX),
                    "`execution.max_cpu_percent`",
                )
                .map(|n| n as u32),
            global_timeout: self.duration(
                &r.global_timeout_minutes,
                60.0,
                false,
                "`execution.global_timeout_minutes`",
            ),
            background_layers: r
                .background_layers
                .iter()
                .flatten()
                .map(|n| n.value.clone())
                .collect(),
            background_max_slots: self
                .int(
                    &r.background_max_slots,
                    false,
                    max,
                    "`execution.background_max_slots`",
                )
                .map(|n| n as usize),
            kill_grace: self
                .duration(
                    &r.kill_grace_seconds,
                    1.0,
                    true,
                    "`execution.kill_grace_seconds`",
                )
                .unwrap_or(Duration::from_secs(5)),
            retry_backoff: Duration::from_millis(
                self.int(
                    &r.retry_backoff_ms,
                    true,
                    max,
                    "`execution.retry_backoff_ms`",
                )
                .unwrap_or(200),
            ),
            output_head_bytes: self
                .int(
                    &r.output_head_bytes,
                    true,
                    max,
                    "`execution.output_head_bytes`",
                )
                .unwrap_or(16 * 1024) as usize,
            output_tail_bytes: self
                .int(
                    &r.output_tail_bytes,
                    true,
                    max,
                    "`execution.output_tail_bytes`",
                )
                .unwrap_or(64 * 1024) as usize,
            log_file_max_bytes: self
                .int(
                    &r.log_file_max_mb,
                    true,
                    max >> 20,
                    "`execution.log_file_max_mb`",
                )
                .unwrap_or(8)
                << 20,
            real_services: r.real_services.unwrap_or(false),
        }
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
