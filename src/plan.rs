//! Planning: requested layers -> ordered stages -> units.
//!
//! This is the TestOrchestratorAgent's output. Selection adds dependencies (unless
//! `--no-dependencies`), orders layers topologically with `execution_order`, then
//! `priority` (higher first), then file order as tie-breaks, and groups consecutive
//! layers of equal `execution_order` into one stage when they neither conflict nor
//! depend on each other. Background layers are set apart: the BackgroundE2EAgent
//! runs them alongside the foreground stages. Legacy mode is one synthetic layer.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::cli::{ExecutionMode, LayerSelection};
use crate::config::{
    Category, Config, FailFast, Layer, LayerMode, ResourceLimits, SuccessCriteria, UnitKind,
    suggest,
};
use crate::discover::{Unit, commands};

/// The name of the synthetic layer of legacy category mode.
pub const LEGACY_LAYER: &str = "legacy";

/// What the user asked for, beyond the selection.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Do not add dependencies.
    pub no_dependencies: bool,
    /// Skip layers (or legacy categories) ordered before this one.
    pub resume_from: Option<String>,
    /// `--fast-fail` / `--no-fail-fast`.
    pub fail_fast_override: Option<FailFast>,
    /// `--real-services`.
    pub real_services: bool,
}

/// A category of a planned layer with its units.
#[derive(Debug, Clone)]
pub struct PlannedCategory {
    /// The category.
    pub category: Category,
    /// Its units, in order.
    pub units: Vec<Unit>,
    /// Set when the whole category will be skipped, with the reason.
    pub skip_reason: Option<String>,
}

/// A layer ready to run.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    /// The layer (with CLI overrides applied).
    pub layer: Layer,
    /// Its categories with units.
    pub categories: Vec<PlannedCategory>,
    /// Runs in the background (lower priority, alongside the foreground).
    pub background: bool,
}

impl PlannedLayer {
    /// Every unit of the layer.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.categories.iter().flat_map(|c| c.units.iter())
    }
}

/// The whole plan of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Foreground stages, in order; layers of one stage run at once.
    pub stages: Vec<Vec<PlannedLayer>>,
    /// Background layers, run alongside the foreground.
    pub background: Vec<PlannedLayer>,
    /// Layers skipped before the run by `--resume-from`.
    pub resumed_past: Vec<String>,
    /// Legacy category mode.
    pub legacy: bool,
    /// Things the user should know (empty globs...).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Every planned layer: stages in order, then background layers.
    pub fn layers(&self) -> impl Iterator<Item = &PlannedLayer> {
        self.stages.iter().flatten().chain(self.background.iter())
    }

    /// Every planned unit.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.layers().flat_map(|l| l.units())
    }
}

/// A request that cannot be planned (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    /// Lowercase message with hint.
    pub message: String,
}

fn unknown(what: &str, name: &str, candidates: Vec<&str>) -> PlanError {
    let mut message = format!("unknown {what} `{name}`");
    if let Some(s) = suggest(name, candidates.iter().copied()) {
        message.push_str(&format!("\n  help: did you mean `{s}`?"));
    } else if !candidates.is_empty() {
        message.push_str(&format!(
            "\n  help: valid {what}s: {}",
            candidates.join(", ")
        ));
    }
    PlanError { message }
}

/// Plan a layered run.
pub fn plan_layers(
    config: &Config,
    selection: &LayerSelection,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    if !config.has_layers || config.layers.is_empty() {
        return Err(PlanError {
            message: format!(
                "{} defines no layers\n  help: run without --use-layers for legacy category mode",
                config.source.display()
            ),
        });
    }
    let names: Vec<&str> = config.layers.iter().map(|l| l.name.as_str()).collect();
    let foreground: Vec<&Layer> = config
        .layers
        .iter()
        .filter(|l| !config.is_background(l))
        .collect();
    let (mut selected, background_in_foreground): (Vec<&Layer>, bool) = match selection {
        LayerSelection::Names(requested) if requested.is_empty() => (foreground.clone(), false),
        LayerSelection::Names(requested) => {
            let mut out = Vec::new();
            for name in requested {
                let layer = config
                    .layer(name)
                    .ok_or_else(|| unknown("layer", name, names.clone()))?;
                out.push(layer);
            }
            (out, false)
        }
        LayerSelection::Mode(ExecutionMode::FastFeedback) => {
            let first = foreground
                .iter()
                .min_by_key(|l| (l.execution_order, -l.priority))
                .copied();
            (first.into_iter().collect(), false)
        }
        LayerSelection::Mode(ExecutionMode::Nightly) => (config.layers.iter().collect(), true),
        LayerSelection::Mode(ExecutionMode::Background) => (
            config
                .layers
                .iter()
                .filter(|l| config.is_background(l))
                .collect(),
            false,
        ),
        LayerSelection::Mode(ExecutionMode::Hybrid) | LayerSelection::All => {
            (config.layers.iter().collect(), false)
        }
    };
    if !opts.no_dependencies {
        selected = with_dependencies(config, selected);
    }
    let ordered = order_layers(config, &selected);
    let mut resumed_past = Vec::new();
    let ordered = match &opts.resume_from {
        Some(from) => {
            let pos = ordered
                .iter()
                .position(|l| &l.name == from)
                .ok_or_else(|| {
                    unknown(
                        "layer",
                        from,
                        ordered.iter().map(|l| l.name.as_str()).collect(),
                    )
                })?;
            resumed_past = ordered[..pos].iter().map(|l| l.name.clone()).collect();
            ordered[pos..].to_vec()
        }
        None => ordered,
    };
    let mut warnings = Vec::new();
    let mut stages: Vec<Vec<PlannedLayer>> = Vec::new();
    let mut background = Vec::new();
    let mut stage_of: HashMap<&str, usize> = HashMap::new();
    for layer in ordered {
        let planned = plan_layer(config, layer, opts, &mut warnings)?;
        if config.is_background(layer) && !background_in_foreground {
            let mut planned = planned;
            planned.background = true;
            background.push(planned);
            continue;
        }
        let joins_last = stages.last().is_some_and(|stage| {
            let first = &stage[0].layer;
            first.execution_order == layer.execution_order
                && stage.iter().all(|p| {
                    !p.layer.conflicts.contains(&layer.name)
                        && !layer.conflicts.contains(&p.layer.name)
                        && !layer.depends_on.contains(&p.layer.name)
                })
        });
        if !joins_last {
            stages.push(Vec::new());
        }
        stage_of.insert(&layer.name, stages.len() - 1);
        stages.last_mut().expect("a stage").push(planned);
    }
    Ok(Plan {
        stages,
        background,
        resumed_past,
        legacy: false,
        warnings,
    })
}

/// Plan legacy category mode: the named categories (or all but background-only ones).
pub fn plan_legacy(
    config: &Config,
    requested: &[String],
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let names: Vec<&str> = config.categories.keys().map(String::as_str).collect();
    let mut selected: Vec<String> = if requested.is_empty() {
        let background_only = background_only_categories(config);
        names
            .iter()
            .filter(|n| !background_only.contains(**n))
            .map(|n| n.to_string())
            .collect()
    } else {
        for name in requested {
            if !config.categories.contains_key(name) {
                return Err(unknown("category", name, names.clone()));
            }
        }
        requested.to_vec()
    };
    if !opts.no_dependencies {
        let mut i = 0;
        while i < selected.len() {
            for dep in &config.categories[&selected[i]].depends_on {
                if !selected.contains(dep) {
                    selected.push(dep.clone());
                }
            }
            i += 1;
        }
    }
    // Dependencies first, then priority_order, then file order.
    let index = |n: &str| config.categories.get_index_of(n).unwrap_or(usize::MAX);
    let mut ordered: Vec<String> = Vec::new();
    let mut remaining: BTreeSet<(i64, usize, String)> = selected
        .iter()
        .map(|n| (config.categories[n].priority_order, index(n), n.clone()))
        .collect();
    while !remaining.is_empty() {
        let next = remaining
            .iter()
            .find(|(_, _, n)| {
                config.categories[n]
                    .depends_on
                    .iter()
                    .all(|d| ordered.contains(d) || !selected.contains(d))
            })
            .cloned()
            .unwrap_or_else(|| remaining.iter().next().expect("non-empty").clone());
        remaining.remove(&next);
        ordered.push(next.2);
    }
    let mut resumed_past = Vec::new();
    if let Some(from) = &opts.resume_from {
        let pos = ordered.iter().position(|c| c == from).ok_or_else(|| {
            unknown(
                "category",
                from,
                ordered.iter().map(String::as_str).collect(),
            )
        })?;
        resumed_past = ordered.drain(..pos).collect();
    }
    let layer = Layer {
        name: LEGACY_LAYER.into(),
        description: "legacy category mode".into(),
        execution_order: 0,
        priority: 0,
        max_duration: None,
        execution_mode: LayerMode::Hybrid,
        fail_fast: FailFast::Disabled,
        background: false,
        categories: ordered,
        depends_on: vec![],
        conflicts: vec![],
        required_services: vec![],
        resource_limits: ResourceLimits::default(),
        success_criteria: SuccessCriteria::default(),
    };
    let mut warnings = Vec::new();
    let planned = plan_layer(config, &layer, opts, &mut warnings)?;
    Ok(Plan {
        stages: vec![vec![planned]],
        background: vec![],
        resumed_past,
        legacy: true,
        warnings,
    })
}

/// Categories used by background layers and by no foreground layer.
fn background_only_categories(config: &Config) -> HashSet<&str> {
    let mut background = HashSet::new();
    let mut foreground = HashSet::new();
    for layer in &config.layers {
        let set = if config.is_background(layer) {
            &mut background
        } else {
            &mut foreground
        };
        set.extend(layer.categories.iter().map(String::as_str));
    }
    background.difference(&foreground).copied().collect()
}

/// `selected` plus every layer they depend on, transitively.
fn with_dependencies<'a>(config: &'a Config, selected: Vec<&'a Layer>) -> Vec<&'a Layer> {
    let mut out = selected;
    let mut i = 0;
    while i < out.len() {
        for dep in &out[i].depends_on {
            if let Some(layer) = config.layer(dep)
                && !out.iter().any(|l| l.name == layer.name)
            {
                out.push(layer);
            }
        }
        i += 1;
    }
    out
}

/// Topological order (dependencies first), ties broken by execution_order, priority, file order.
fn order_layers<'a>(config: &'a Config, selected: &[&'a Layer]) -> Vec<&'a Layer> {
    let index = |name: &str| {
        config
            .layers
            .iter()
            .position(|l| l.name == name)
            .unwrap_or(0)
    };
    let key = |l: &Layer| (l.execution_order, -l.priority, index(&l.name));
    let mut remaining: Vec<&Layer> = selected.to_vec();
    remaining.sort_by_key(|l| key(l));
    let names: HashSet<&str> = selected.iter().map(|l| l.name.as_str()).collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let pos = remaining
            .iter()
            .position(|l| {
                l.depends_on
                    .iter()
                    .all(|d| done.contains(d.as_str()) || !names.contains(d.as_str()))
            })
            .unwrap_or(0); // cycles are rejected by validation
        let layer = remaining.remove(pos);
        done.insert(&layer.name);
        out.push(layer);
    }
    out
}

fn plan_layer(
    config: &Config,
    layer: &Layer,
    opts: &PlanOptions,
    warnings: &mut Vec<String>,
) -> Result<PlannedLayer, PlanError> {
    let mut layer = layer.clone();
    if let Some(ff) = opts.fail_fast_override {
        layer.fail_fast = ff;
    }
    let mut categories = Vec::new();
    for name in &layer.categories {
        let category = config.categories[name].clone();
        let cwd = match &category.cwd {
            Some(dir) => config.root.join(dir),
            None => config.root.clone(),
        };
        let units = match &category.kind {
            UnitKind::Command(spec) => commands::command_units(&layer.name, &category, spec, &cwd)
                .map_err(|message| PlanError {
                    message: format!("category `{name}`: {message}"),
                })?,
            UnitKind::Nextest(_) => {
                warnings.push(format!(
                    "category `{name}`: nextest categories are not supported yet; skipped"
                ));
                Vec::new()
            }
        };
        if units.is_empty() && matches!(category.kind, UnitKind::Command(_)) {
            warnings.push(format!(
                "category `{name}` in layer `{}`: no file matches its `files` globs",
                layer.name
            ));
        }
        let skip_reason = (category.requires_real_services && !opts.real_services)
            .then(|| "requires real services (run with --real-services)".to_string());
        categories.push(PlannedCategory {
            category,
            units,
            skip_reason,
        });
    }
    Ok(PlannedLayer {
        background: config.is_background(&layer),
        layer,
        categories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load};

    fn config(yaml: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layers.yaml");
        std::fs::write(&path, yaml).unwrap();
        let cfg = load(&LoadOptions::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        (dir, cfg)
    }

    const LAYERS: &str = r#"
categories:
  a: { command: "true" }
  b: { command: "true" }
  c: { command: "true" }
  e: { command: "true" }
layers:
  - { name: fast, execution_order: 1, categories: [a] }
  - { name: lint, execution_order: 1, priority: 5, categories: [b] }
  - { name: db, execution_order: 1, conflicts: [lint], categories: [c] }
  - { name: integ, execution_order: 2, depends_on: [fast], categories: [c] }
  - { name: e2e, execution_order: 3, background: true, categories: [e] }
"#;

    fn stage_names(plan: &Plan) -> Vec<Vec<&str>> {
        plan.stages
            .iter()
            .map(|s| s.iter().map(|l| l.layer.name.as_str()).collect())
            .collect()
    }

    #[test]
    fn stages_group_equal_order_but_split_conflicts() {
        let (_d, cfg) = config(LAYERS);
        let plan = plan_layers(
            &cfg,
            &LayerSelection::Names(vec![]),
            &PlanOptions::default(),
        )
        .unwrap();
        // Priority puts lint first; db conflicts with lint, so it opens a new stage.
        assert_eq!(
            stage_names(&plan),
            vec![vec!["lint", "fast"], vec!["db"], vec!["integ"]]
        );
        assert!(
            plan.background.is_empty(),
            "background layers only when asked"
        );
    }

    #[test]
    fn dependencies_are_added_unless_disabled() {
        let (_d, cfg) = config(LAYERS);
        let sel = LayerSelection::Names(vec!["integ".into()]);
        let plan = plan_layers(&cfg, &sel, &PlanOptions::default()).unwrap();
        assert_eq!(stage_names(&plan), vec![vec!["fast"], vec!["integ"]]);
        let opts = PlanOptions {
            no_dependencies: true,
            ..Default::default()
        };
        let plan = plan_layers(&cfg, &sel, &opts).unwrap();
        assert_eq!(stage_names(&plan), vec![vec!["integ"]]);
    }

    #[test]
    fn unknown_layer_suggests_closest() {
        let (_d, cfg) = config(LAYERS);
        let err = plan_layers(
            &cfg,
            &LayerSelection::Names(vec!["fsat".into()]),
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown layer `fsat`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("did you mean `fast`?"),
            "{}",
            err.message
        );
    }

    #[test]
    fn execution_modes_select_layers() {
        let (_d, cfg) = config(LAYERS);
        let opts = PlanOptions::default();
        let fast = plan_layers(
            &cfg,
            &LayerSelection::Mode(ExecutionMode::FastFeedback),
            &opts,
        )
        .unwrap();
        assert_eq!(stage_names(&fast), vec![vec!["lint"]]);
        let hybrid =
            plan_layers(&cfg, &LayerSelection::Mode(ExecutionMode::Hybrid), &opts).unwrap();
        assert_eq!(hybrid.background.len(), 1);
        assert!(hybrid.background[0].background);
        let nightly =
            plan_layers(&cfg, &LayerSelection::Mode(ExecutionMode::Nightly), &opts).unwrap();
        assert!(nightly.background.is_empty());
        assert_eq!(nightly.stages.last().unwrap()[0].layer.name, "e2e");
        let bg = plan_layers(
            &cfg,
            &LayerSelection::Mode(ExecutionMode::Background),
            &opts,
        )
        .unwrap();
        assert!(bg.stages.is_empty());
        assert_eq!(bg.background[0].layer.name, "e2e");
    }

    #[test]
    fn resume_from_drops_earlier_layers() {
        let (_d, cfg) = config(LAYERS);
        let opts = PlanOptions {
            resume_from: Some("db".into()),
            ..Default::default()
        };
        let plan = plan_layers(&cfg, &LayerSelection::Names(vec![]), &opts).unwrap();
        assert_eq!(plan.resumed_past, vec!["lint", "fast"]);
        assert_eq!(stage_names(&plan), vec![vec!["db"], vec!["integ"]]);
    }

    #[test]
    fn legacy_orders_dependencies_first_and_skips_background_only() {
        let (_d, cfg) = config(
            r#"
categories:
  api: { command: "true", depends_on: [db] }
  db: { command: "true", priority_order: 9 }
  unit: { command: "true" }
  e2e: { command: "true" }
layers:
  - { name: bg, background: true, categories: [e2e] }
"#,
        );
        let plan = plan_legacy(&cfg, &["api".into()], &PlanOptions::default()).unwrap();
        assert!(plan.legacy);
        assert_eq!(plan.stages[0][0].layer.categories, vec!["db", "api"]);
        let all = plan_legacy(&cfg, &[], &PlanOptions::default()).unwrap();
        assert_eq!(all.stages[0][0].layer.categories, vec!["unit", "db", "api"]);
        let err = plan_legacy(&cfg, &["uint".into()], &PlanOptions::default()).unwrap_err();
        assert!(
            err.message.contains("did you mean `unit`?"),
            "{}",
            err.message
        );
    }
}
