//! Planning: requested layers -> ordered stages -> units.
//!
//! This is the TestOrchestratorAgent's output. Selection adds dependencies (unless
//! `--no-dependencies`), orders layers topologically with `execution_order`, then
//! `priority` (higher first), then file order as tie-breaks, and groups consecutive
//! layers of equal `execution_order` into one stage when they neither conflict nor
//! depend on each other. Background layers are set apart: the BackgroundE2EAgent
//! runs them alongside the foreground stages. Legacy mode is one synthetic layer.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use crate::cli::{ExecutionMode, LayerSelection};
use crate::config::{
    Category, Config, FailFast, Layer, LayerExecutionMode, LayerMode, LlmMode, ResourceLimits,
    SuccessCriteria, UnitKind, suggest,
};
use crate::discover::{Unit, commands, nextest, pytest};
use crate::event::Shard;

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
    /// `--real-llm`: every layer's units get `RUNNER_LLM_MODE=real`, and categories
    /// with `requires_real_llm` run.
    pub real_llm: bool,
    /// `--max-parallel-layers N`: a stage's layers run in groups of at most N.
    pub max_parallel_layers: Option<usize>,
    /// Plan categories that have no command yet (for views such as `--show-layers`);
    /// a run refuses them (exit 2).
    pub allow_missing_commands: bool,
    /// `--run-ignored`: run `#[ignore]`d Rust tests instead of reporting them skipped.
    pub run_ignored: bool,
    /// Do not list Rust tests (nextest categories get no units): for views such as
    /// `--show-layers`, which must answer at once instead of building test binaries.
    pub skip_test_listing: bool,
    /// `-E/--filter`: narrows the listing of `nextest:` categories (the runner applies
    /// the whole expression to the planned units afterwards, see `runner::select`).
    pub filter: Option<std::sync::Arc<crate::filter::Filter>>,
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
    /// Set by [`partition`]: the shard this plan is (announced as the `partition` event).
    pub partition: Option<Shard>,
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

/// A request that cannot be planned.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    /// Lowercase message with hint.
    pub message: String,
    /// Whose fault: the request (exit code 2) or the tools (exit code 3).
    pub kind: PlanErrorKind,
}

/// What kind of failure a [`PlanError`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// Usage or configuration error (unknown layer, overlapping nextest filters...).
    #[default]
    Usage,
    /// Infrastructure error: `cargo-nextest` missing, the tests do not build...
    Infrastructure,
}

impl PlanError {
    /// A usage or configuration error.
    pub fn usage(message: impl Into<String>) -> Self {
        PlanError {
            message: message.into(),
            kind: PlanErrorKind::Usage,
        }
    }

    /// The exit code this error ends the run with.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            PlanErrorKind::Usage => crate::exit_code::USAGE,
            PlanErrorKind::Infrastructure => crate::exit_code::INFRASTRUCTURE,
        }
    }
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
    PlanError::usage(message)
}

/// Plan a layered run.
pub fn plan_layers(
    config: &Config,
    selection: &LayerSelection,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    if !config.has_layers || config.layers.is_empty() {
        return Err(PlanError::usage(format!(
            "{} defines no layers\n  help: run without --use-layers for legacy category mode",
            config.source.display()
        )));
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
        LayerSelection::Mode(ExecutionMode::Development) => (foreground.clone(), false),
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
    if !opts.allow_missing_commands {
        check_commands(config, &ordered)?;
    }
    let mut warnings = Vec::new();
    let discovery = discover_nextest(config, ordered.iter().flat_map(|l| &l.categories), opts)?;
    let mode = config.execution.layer_execution_mode;
    let background_in_foreground = background_in_foreground
        || matches!(
            mode,
            LayerExecutionMode::Sequential | LayerExecutionMode::Waterfall
        );
    let collected = discover_pytest(config, ordered.iter().flat_map(|l| &l.categories), opts)?;
    let mut stages: Vec<Vec<PlannedLayer>> = Vec::new();
    let mut background = Vec::new();
    let mut stage_of: HashMap<&str, usize> = HashMap::new();
    for layer in ordered {
        let planned = plan_layer(config, layer, opts, &discovery, &collected, &mut warnings)?;
        if config.is_background(layer) && !background_in_foreground {
            let mut planned = planned;
            planned.background = true;
            background.push(planned);
            continue;
        }
        let joins_last = stages.last().is_some_and(|stage| {
            let first = &stage[0].layer;
            let same_step = match mode {
                LayerExecutionMode::Sequential => false,
                LayerExecutionMode::Parallel => true,
                _ => first.execution_order == layer.execution_order,
            };
            same_step
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
    if let Some(n) = opts.max_parallel_layers {
        stages = stages
            .into_iter()
            .flat_map(|stage| {
                let mut groups = Vec::new();
                let mut stage = stage;
                while stage.len() > n {
                    let rest = stage.split_off(n);
                    groups.push(stage);
                    stage = rest;
                }
                groups.push(stage);
                groups
            })
            .collect();
    }
    warnings.extend(assign_nextest_tests(&mut stages, &mut background)?);
    Ok(Plan {
        stages,
        background,
        resumed_past,
        legacy: false,
        warnings,
        partition: None,
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
    if !opts.allow_missing_commands {
        let missing: Vec<&String> = ordered
            .iter()
            .filter(|c| matches!(config.categories[*c].kind, UnitKind::Missing))
            .collect();
        if !missing.is_empty() {
            return Err(missing_commands(&missing));
        }
    }
    let mut required_services: Vec<String> = Vec::new();
    for c in &ordered {
        for s in &config.categories[c].required_services {
            if !required_services.contains(s) {
                required_services.push(s.clone());
            }
        }
    }
    let layer = Layer {
        display_name: None,
        conflicting_categories: vec![],
        llm: None,
        category_overrides: Default::default(),
        mappings: vec![],
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
        required_services,
        resource_limits: ResourceLimits::default(),
        success_criteria: SuccessCriteria::default(),
    };
    let mut warnings = Vec::new();
    let discovery = discover_nextest(config, &layer.categories, opts)?;
    let collected = discover_pytest(config, &layer.categories, opts)?;
    let planned = plan_layer(config, &layer, opts, &discovery, &collected, &mut warnings)?;
    let mut stages = vec![vec![planned]];
    warnings.extend(assign_nextest_tests(&mut stages, &mut [])?);
    Ok(Plan {
        stages,
        background: vec![],
        resumed_past,
        legacy: true,
        warnings,
        partition: None,
    })
}

/// Keeps shard `k` of `n` (1-based) of a plan's units (`--partition K/N`).
///
/// Deterministic and balanced by expected duration (LPT): units sorted by duration,
/// longest first, then by id, each going to the shard with the least total so far
/// (then the fewest units, then the lowest index). Known durations come from
/// `durations` (by unit id: a previous JUnit report, or history); a unit without one
/// counts as the median of the known ones, or, when nothing is known, as 1 s, which
/// balances by count. Units of other shards are simply left out of the plan (they are
/// not skipped); layers and categories stay, possibly empty, so dependencies and
/// success criteria behave the same in every shard.
///
/// The assignment is a function of the plan's unit ids and of `durations` only (not of
/// the plan's order, nor of anything else): every shard must be given the same plan and
/// durations. [`Plan::partition`] records the shard, the size of the whole plan and a
/// digest of that input, so shards that disagree can be told apart afterwards.
pub fn partition(
    mut plan: Plan,
    k: usize,
    n: usize,
    durations: &HashMap<String, Duration>,
) -> Plan {
    assert!(n >= 1 && (1..=n).contains(&k), "partition {k}/{n}");
    let mut ids: Vec<&str> = plan.units().map(|u| u.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut known: Vec<Duration> = ids
        .iter()
        .filter_map(|id| durations.get(*id).copied())
        .collect();
    known.sort();
    let known_durations = known.len();
    let default = known
        .get(known.len() / 2)
        .copied()
        .unwrap_or(Duration::from_secs(1));
    let mut weighted: Vec<(Duration, &str)> = ids
        .iter()
        .map(|id| (durations.get(*id).copied().unwrap_or(default), *id))
        .collect();
    let digest = partition_digest(&weighted);
    // Ids are unique: a total order, so ties never depend on the plan's order.
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    // (load, units, index) of every shard; the least goes next (a heap: N may be large).
    let mut loads: BinaryHeap<Reverse<(Duration, usize, usize)>> =
        (0..n).map(|i| Reverse((Duration::ZERO, 0, i))).collect();
    let mut mine: HashSet<String> = HashSet::new();
    for (d, id) in weighted {
        let Reverse((load, count, shard)) = loads.pop().expect("n >= 1");
        if shard == k - 1 {
            mine.insert(id.to_string());
        }
        loads.push(Reverse((load + d, count + 1, shard)));
    }
    let shard = Shard {
        k,
        n,
        planned: ids.len(),
        known_durations,
        digest,
    };
    for layer in plan
        .stages
        .iter_mut()
        .flatten()
        .chain(plan.background.iter_mut())
    {
        for cat in &mut layer.categories {
            cat.units.retain(|u| mine.contains(&u.id));
        }
    }
    plan.partition = Some(shard);
    plan
}

/// A digest of a partition's input, `(weight, id)` sorted by id: 64-bit FNV-1a in hex,
/// stable across runs, machines and builds (unlike `std`'s hasher).
fn partition_digest(weighted: &[(Duration, &str)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (d, id) in weighted {
        let line = format!("{id}\t{}\n", d.as_millis());
        for b in line.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// What past runs say about a unit, as scheduling uses it (from history).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitHint {
    /// Expected duration (history: median of the recent passing runs).
    pub expected: Option<Duration>,
    /// Its newest recorded result is a failure.
    pub failed_last: bool,
    /// Largest peak memory of its recent runs, MiB (an admission estimate).
    pub peak_memory_mb: Option<u64>,
}

/// The scheduling hints of a run: per unit, and whether last time's failures go first.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// By unit id; a unit without history is absent.
    pub units: HashMap<String, UnitHint>,
    /// `--failed-first`.
    pub failed_first: bool,
}

/// Where a unit stands in the start order; the greater starts first. Order of the
/// fields: last time's failures (with `--failed-first`), then units without history
/// (treated as the longest, so that an unknown long unit never starts last), then the
/// expected duration, longest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StartRank {
    failed_first: bool,
    unknown: bool,
    expected: Duration,
}

impl Hints {
    /// The start rank of `unit`.
    pub fn rank(&self, unit: &str) -> StartRank {
        let hint = self.units.get(unit);
        let expected = hint.and_then(|h| h.expected);
        StartRank {
            failed_first: self.failed_first && hint.is_some_and(|h| h.failed_last),
            unknown: expected.is_none(),
            expected: expected.unwrap_or_default(),
        }
    }

    /// The expected duration of `unit`.
    pub fn expected(&self, unit: &str) -> Option<Duration> {
        self.units.get(unit).and_then(|h| h.expected)
    }

    /// The peak memory `unit` reached in recent runs, MiB.
    pub fn peak_memory_mb(&self, unit: &str) -> Option<u64> {
        self.units.get(unit).and_then(|h| h.peak_memory_mb)
    }
}

/// Orders each category's units by [`StartRank`], greatest first: longest-first from
/// history (last time's failures before everything with `--failed-first`), units
/// without history before known ones. Stable: equal ranks keep the plan's order (so
/// without history nothing moves). Layers, stages and categories keep their order;
/// the executor follows this order within a category and across the categories that
/// run together (see `layer_executor`).
pub fn order_units(plan: &mut Plan, hints: &Hints) {
    for layer in plan
        .stages
        .iter_mut()
        .flatten()
        .chain(plan.background.iter_mut())
    {
        for cat in &mut layer.categories {
            cat.units
                .sort_by_key(|u| std::cmp::Reverse(hints.rank(&u.id)));
        }
    }
}

/// Units history does not know yet get their category's `estimated_duration` (split
/// evenly over the category's units) as their expected duration: the estimate before
/// history exists, for ordering and ETAs.
pub fn apply_estimates(plan: &Plan, hints: &mut Hints) {
    for layer in plan.layers() {
        for cat in &layer.categories {
            let Some(total) = cat.category.estimated_duration else {
                continue;
            };
            let each = total / cat.units.len().max(1) as u32;
            for unit in &cat.units {
                let hint = hints.units.entry(unit.id.clone()).or_default();
                if hint.expected.is_none() {
                    hint.expected = Some(each);
                }
            }
        }
    }
}

/// Keeps only the units `keep` accepts (layers and categories stay, possibly empty, as
/// with [`partition`]); returns how many remain.
pub fn retain_units(plan: &mut Plan, keep: impl Fn(&Unit) -> bool) -> usize {
    let mut left = 0;
    for layer in plan
        .stages
        .iter_mut()
        .flatten()
        .chain(plan.background.iter_mut())
    {
        for cat in &mut layer.categories {
            cat.units.retain(|u| keep(u));
            left += cat.units.len();
        }
    }
    left
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
    let by_name: HashMap<&str, &Layer> =
        config.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut seen: HashSet<&str> = selected.iter().map(|l| l.name.as_str()).collect();
    let mut out = selected;
    let mut i = 0;
    while i < out.len() {
        for dep in &out[i].depends_on {
            if let Some(layer) = by_name.get(dep.as_str())
                && seen.insert(layer.name.as_str())
            {
                out.push(layer);
            }
        }
        i += 1;
    }
    out
}

/// Topological order (dependencies first), ties broken by execution_order, priority, file
/// order: of the layers whose dependencies are placed, the one with the smallest key goes
/// next (Kahn's algorithm with a heap: linear in layers and dependencies, up to the log).
fn order_layers<'a>(config: &'a Config, selected: &[&'a Layer]) -> Vec<&'a Layer> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let file_index: HashMap<&str, usize> = config
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let key = |l: &Layer| {
        (
            l.execution_order,
            -l.priority,
            file_index.get(l.name.as_str()).copied().unwrap_or(0),
        )
    };
    let at: HashMap<&str, usize> = selected
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let mut waiting_on = vec![0usize; selected.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); selected.len()];
    for (i, l) in selected.iter().enumerate() {
        let deps: HashSet<&str> = l.depends_on.iter().map(String::as_str).collect();
        for d in deps {
            if let Some(&j) = at.get(d)
                && j != i
            {
                waiting_on[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<(_, usize)>> = (0..selected.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(|i| Reverse((key(selected[i]), i)))
        .collect();
    let mut placed = vec![false; selected.len()];
    let mut out = Vec::with_capacity(selected.len());
    while out.len() < selected.len() {
        let next = match ready.pop() {
            Some(Reverse((_, i))) => i,
            // A cycle (rejected by validation): take the smallest remaining key.
            None => (0..selected.len())
                .filter(|&i| !placed[i])
                .min_by_key(|&i| key(selected[i]))
                .expect("a remaining layer"),
        };
        if placed[next] {
            continue;
        }
        placed[next] = true;
        out.push(selected[next]);
        for &d in &dependents[next] {
            waiting_on[d] = waiting_on[d].saturating_sub(1);
            if waiting_on[d] == 0 && !placed[d] {
                ready.push(Reverse((key(selected[d]), d)));
            }
        }
    }
    out
}

/// Lists the tests of every `nextest:` category among `categories`, together
/// (one build per group of categories that build alike; see [`nextest::discover`]).
fn discover_nextest<'a>(
    config: &Config,
    categories: impl IntoIterator<Item = &'a String>,
    opts: &PlanOptions,
) -> Result<nextest::Discovery, PlanError> {
    if opts.skip_test_listing {
        return Ok(nextest::Discovery::default());
    }
    let mut seen = HashSet::new();
    // Each category's spec, its filterset narrowed by `-E` (a category the filter
    // rejects whole is not listed at all).
    let mut specs = Vec::new();
    for name in categories {
        let category = &config.categories[name];
        if let UnitKind::Nextest(spec) = &category.kind
            && seen.insert(name.as_str())
        {
            let mut spec = spec.clone();
            if let Some(filter) = &opts.filter {
                match filter.nextest_narrowing(&crate::filter::CategoryFacts {
                    category: name,
                    kind: crate::filter::kind_name(&category.kind),
                    tags: crate::filter::category_tags(category),
                }) {
                    crate::filter::Narrowing::Nothing => {}
                    crate::filter::Narrowing::Everything => continue,
                    crate::filter::Narrowing::To(set) => {
                        spec.filter = format!("({}) and ({set})", spec.filter);
                    }
                }
            }
            specs.push((category, spec));
        }
    }
    let requests: Vec<nextest::Request<'_>> = specs
        .iter()
        .map(|(category, spec)| nextest::Request {
            category,
            spec,
            cwd: category_cwd(config, category),
        })
        .collect();
    if requests.is_empty() {
        return Ok(nextest::Discovery::default());
    }
    nextest::discover(&requests).map_err(|e| match e {
        nextest::DiscoveryError::Config(message) => PlanError::usage(message),
        nextest::DiscoveryError::Infrastructure(message) => PlanError {
            message,
            kind: PlanErrorKind::Infrastructure,
        },
    })
}

/// Collects the tests of every `pytest:` category among `categories` (one pytest call
/// each, see [`pytest::discover`]); a failure is an infrastructure error (exit 3).
fn discover_pytest<'a>(
    config: &Config,
    categories: impl IntoIterator<Item = &'a String>,
    opts: &PlanOptions,
) -> Result<pytest::Discovery, PlanError> {
    if opts.skip_test_listing {
        return Ok(pytest::Discovery::default());
    }
    let mut seen = HashSet::new();
    let mut requests = Vec::new();
    for name in categories {
        let category = &config.categories[name];
        if let UnitKind::Pytest(spec) = &category.kind
            && seen.insert(name.as_str())
        {
            let cache = crate::report::files::state_dir(&config.root)
                .join("pytest")
                .join(format!("{}.json", name.replace(['/', '\\'], "_")));
            requests.push(pytest::Request {
                category,
                spec,
                cwd: category_cwd(config, category),
                cache: Some(cache),
            });
        }
    }
    if requests.is_empty() {
        return Ok(pytest::Discovery::default());
    }
    pytest::discover(&requests).map_err(|message| PlanError {
        message,
        kind: PlanErrorKind::Infrastructure,
    })
}

/// Gives each Rust test to one nextest category of the plan ([`nextest::assign`]).
fn assign_nextest_tests(
    stages: &mut [Vec<PlannedLayer>],
    background: &mut [PlannedLayer],
) -> Result<Vec<String>, PlanError> {
    let mut placements = Vec::new();
    let foreground = stages
        .iter_mut()
        .enumerate()
        .flat_map(|(i, stage)| stage.iter_mut().map(move |l| (Some(i), l)));
    for (stage, planned) in foreground.chain(background.iter_mut().map(|l| (None, l))) {
        for pc in &mut planned.categories {
            if let UnitKind::Nextest(spec) = &pc.category.kind {
                placements.push(nextest::Placement {
                    layer: &planned.layer.name,
                    stage,
                    category: &pc.category.name,
                    filter: &spec.filter,
                    units: &mut pc.units,
                });
            }
        }
    }
    nextest::assign(&mut placements).map_err(PlanError::usage)
}

/// Why a category of `layer` is skipped before it runs, if it is.
fn skip_reason(
    config: &Config,
    layer: &Layer,
    category: &Category,
    opts: &PlanOptions,
) -> Option<String> {
    if category.requires_real_services && !opts.real_services {
        return Some(
            "requires real services (run with --real-services or RUNNER_REAL_SERVICES=1)".into(),
        );
    }
    let real_llm = opts.real_llm
        || layer
            .llm
            .as_ref()
            .is_some_and(|l| matches!(l.mode, LlmMode::Real | LlmMode::Hybrid));
    if category.requires_real_llm && !real_llm {
        return Some("requires a real LLM (run with --real-llm)".into());
    }
    let env = &config.environment;
    if !category.requires_environment.is_empty()
        && !category
            .requires_environment
            .iter()
            .any(|e| crate::config::canonical_environment(e) == env)
    {
        return Some(format!(
            "requires environment {} (this run: {env})",
            category.requires_environment.join(" or ")
        ));
    }
    None
}

/// The layer's `llm_requirements` (and `--real-llm`) as environment variables of the
/// category's units: `RUNNER_LLM_MODE`, `RUNNER_LLM_TIMEOUT_SECONDS`,
/// `RUNNER_LLM_FALLBACK_TO_MOCK`. A category's own `env` wins.
fn llm_environment(layer: &Layer, category: &mut Category, real_llm: bool) {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if let Some(llm) = &layer.llm {
        vars.push(("RUNNER_LLM_MODE", llm.mode.as_str().to_string()));
        if let Some(t) = llm.timeout_seconds {
            vars.push(("RUNNER_LLM_TIMEOUT_SECONDS", t.to_string()));
        }
        if let Some(f) = llm.fallback_to_mock {
            vars.push(("RUNNER_LLM_FALLBACK_TO_MOCK", f.to_string()));
        }
    }
    if real_llm {
        vars.retain(|(k, _)| *k != "RUNNER_LLM_MODE");
        vars.push(("RUNNER_LLM_MODE", "real".into()));
        vars.push(("RUNNER_REAL_LLM", "1".into()));
    }
    for (k, v) in vars {
        category.env.entry(k.to_string()).or_insert(v);
    }
}

/// Every category of `layers` must have a command (or another unit kind) to run.
fn check_commands(config: &Config, layers: &[&Layer]) -> Result<(), PlanError> {
    let mut missing: Vec<&String> = Vec::new();
    for layer in layers {
        for name in &layer.categories {
            if matches!(config.category_in(layer, name).kind, UnitKind::Missing)
                && !missing.contains(&name)
            {
                missing.push(name);
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_commands(&missing))
    }
}

fn missing_commands(names: &[&String]) -> PlanError {
    let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    PlanError::usage(format!(
        "no command for categor{} {}: nothing can run {}\n  help: give each one a `command:` (or `nextest:`) in its entry or its layer object, a top-level `categories:` entry of the same name with one, or a template `execution.default_command` such as `pytest -k \"{{filter_expr}}\" --junitxml={{junit}}` ({{category}}, {{filter_expr}}, {{junit}} and {{file}} are substituted)",
        if names.len() == 1 { "y" } else { "ies" },
        list.join(", "),
        if names.len() == 1 { "it" } else { "them" },
    ))
}

fn category_cwd(config: &Config, category: &Category) -> std::path::PathBuf {
    match &category.cwd {
        Some(dir) => config.root.join(dir),
        None => config.root.clone(),
    }
}

fn plan_layer(
    config: &Config,
    layer: &Layer,
    opts: &PlanOptions,
    discovery: &nextest::Discovery,
    collected: &pytest::Discovery,
    warnings: &mut Vec<String>,
) -> Result<PlannedLayer, PlanError> {
    let mut layer = layer.clone();
    if let Some(ff) = opts.fail_fast_override {
        layer.fail_fast = ff;
    }
    let mut categories = Vec::new();
    for name in &layer.categories {
        let mut category = config.category_in(&layer, name).clone();
        llm_environment(&layer, &mut category, opts.real_llm);
        let cwd = category_cwd(config, &category);
        let units = match &category.kind {
            UnitKind::Command(spec) => commands::command_units(&layer.name, &category, spec, &cwd)
                .map_err(|message| PlanError::usage(format!("category `{name}`: {message}")))?,
            UnitKind::Missing => Vec::new(),
            UnitKind::Nextest(spec) => {
                let tests = discovery.tests(name);
                if tests.is_empty() && !opts.skip_test_listing && opts.filter.is_none() {
                    warnings.push(format!(
                        "category `{name}` in layer `{}`: nextest filter `{}` selects no test",
                        layer.name, spec.filter
                    ));
                }
                nextest::units(&layer.name, &category, spec, tests, opts.run_ignored)
            }
            UnitKind::Pytest(_) => {
                let c = collected.collected(name);
                if c.tests.is_empty() && !opts.skip_test_listing {
                    warnings.push(format!(
                        "category `{name}` in layer `{}`: pytest collected no test",
                        layer.name
                    ));
                }
                pytest::units(&layer.name, &category, &c, &cwd)
            }
        };
        if units.is_empty() && matches!(category.kind, UnitKind::Command(_)) {
            warnings.push(format!(
                "category `{name}` in layer `{}`: no file matches its `files` globs",
                layer.name
            ));
        }
        let skip_reason = skip_reason(config, &layer, &category, opts);
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

    fn sharded_config() -> (tempfile::TempDir, Config) {
        let (dir, _) = config("categories: { a: { command: \"true\" } }\n");
        for i in 0..23 {
            std::fs::write(dir.path().join(format!("t{i:02}.sh")), "").unwrap();
        }
        let path = dir.path().join("layers.yaml");
        std::fs::write(
            &path,
            r#"
categories:
  unit: { command: "sh {file}", files: ["t0*.sh", "t1*.sh"] }
  int: { command: "sh {file}", files: ["t2*.sh"] }
  e2e: { command: "true" }
layers:
  - { name: fast, categories: [unit] }
  - { name: slow, depends_on: [fast], categories: [int] }
  - { name: bg, background: true, categories: [e2e] }
"#,
        )
        .unwrap();
        let cfg = load(&LoadOptions::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        (dir, cfg)
    }

    fn ids(plan: &Plan) -> Vec<String> {
        plan.units().map(|u| u.id.clone()).collect()
    }

    #[test]
    fn partition_is_disjoint_complete_and_deterministic() {
        let (_d, cfg) = sharded_config();
        let plan = plan_layers(
            &cfg,
            &LayerSelection::Mode(ExecutionMode::Hybrid),
            &PlanOptions::default(),
        )
        .unwrap();
        let all: BTreeSet<String> = ids(&plan).into_iter().collect();
        assert_eq!(all.len(), 24);
        for n in [1, 2, 3, 4, 7, 30] {
            let mut union = BTreeSet::new();
            let mut sizes = Vec::new();
            for k in 1..=n {
                let shard = ids(&partition(plan.clone(), k, n, &HashMap::new()));
                assert_eq!(
                    shard,
                    ids(&partition(plan.clone(), k, n, &HashMap::new())),
                    "deterministic"
                );
                sizes.push(shard.len());
                for id in shard {
                    assert!(union.insert(id.clone()), "{id} in two shards of {n}");
                }
            }
            assert_eq!(union, all, "shards of {n} cover the plan");
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "by count when nothing is known: {sizes:?}");
        }
        let shard = |k| partition(plan.clone(), k, 3, &HashMap::new()).partition;
        let (one, two) = (shard(1).unwrap(), shard(2).unwrap());
        assert_eq!(
            (one.k, one.n, one.planned, one.known_durations),
            (1, 3, 24, 0)
        );
        assert_eq!(one.digest, two.digest, "one partition, one input");
        assert_eq!(one.digest.len(), 16);
        assert!(plan.partition.is_none());
        // Many shards: one unit each, then empty shards.
        assert_eq!(
            partition(plan.clone(), 1, 100_000, &HashMap::new())
                .units()
                .count(),
            1
        );
        assert_eq!(
            partition(plan.clone(), 100_000, 100_000, &HashMap::new())
                .units()
                .count(),
            0
        );
        // The structure stays: every layer and category is still planned.
        let shard = partition(plan.clone(), 2, 30, &HashMap::new());
        assert_eq!(stage_names(&shard), stage_names(&plan));
        assert_eq!(shard.background.len(), 1);
    }

    #[test]
    fn partition_depends_on_ids_and_durations_only() {
        let (_d, cfg) = sharded_config();
        let plan = plan_layers(
            &cfg,
            &LayerSelection::Mode(ExecutionMode::Hybrid),
            &PlanOptions::default(),
        )
        .unwrap();
        let units = ids(&plan);
        // Ties (equal durations) and units without a duration (the median) everywhere.
        let durations: HashMap<String, Duration> = units
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, id)| (id.clone(), Duration::from_millis(100 * (i as u64 % 4))))
            .collect();
        let mut reversed = plan.clone();
        for layer in reversed
            .stages
            .iter_mut()
            .flatten()
            .chain(reversed.background.iter_mut())
        {
            layer.categories.reverse();
            for cat in &mut layer.categories {
                cat.units.reverse();
            }
        }
        let sorted = |p: &Plan| -> BTreeSet<String> { ids(p).into_iter().collect() };
        for k in 1..=4 {
            let a = partition(plan.clone(), k, 4, &durations);
            let b = partition(reversed.clone(), k, 4, &durations);
            assert_eq!(sorted(&a), sorted(&b), "shard {k}/4 follows ids, not order");
            assert_eq!(a.partition, b.partition);
        }
        // Other durations: another input, another digest.
        let mut other = durations.clone();
        other.insert(units[1].clone(), Duration::from_secs(9));
        assert_ne!(
            partition(plan.clone(), 1, 4, &durations)
                .partition
                .unwrap()
                .digest,
            partition(plan.clone(), 1, 4, &other)
                .partition
                .unwrap()
                .digest
        );
        // Durations of units outside the plan play no part.
        let mut extra = durations.clone();
        extra.insert("elsewhere/x/y".into(), Duration::from_secs(99));
        assert_eq!(
            partition(plan.clone(), 1, 4, &durations).partition,
            partition(plan.clone(), 1, 4, &extra).partition
        );
    }

    #[test]
    fn partition_balances_known_durations() {
        let (_d, cfg) = sharded_config();
        let plan = plan_layers(
            &cfg,
            &LayerSelection::Names(vec![]),
            &PlanOptions::default(),
        )
        .unwrap();
        let units = ids(&plan);
        // One long unit, the rest short and unequal; one unit unknown.
        let mut durations: HashMap<String, Duration> = units
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), Duration::from_millis(100 + 37 * i as u64)))
            .collect();
        durations.insert(units[5].clone(), Duration::from_secs(10));
        durations.remove(&units[0]);
        let load = |shard: &Plan| -> Duration {
            ids(shard)
                .iter()
                .map(|id| {
                    durations
                        .get(id)
                        .copied()
                        .unwrap_or(Duration::from_millis(500))
                })
                .sum()
        };
        let shards: Vec<Plan> = (1..=3)
            .map(|k| partition(plan.clone(), k, 3, &durations))
            .collect();
        let long = shards
            .iter()
            .position(|s| ids(s).contains(&units[5]))
            .unwrap();
        assert_eq!(
            ids(&shards[long]),
            vec![units[5].clone()],
            "the 10 s unit gets a shard to itself"
        );
        let others: Vec<Duration> = shards
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != long)
            .map(|(_, s)| load(s))
            .collect();
        let diff = others[0].abs_diff(others[1]);
        assert!(diff <= Duration::from_millis(1000), "balanced: {others:?}");
    }

    #[test]
    fn units_start_longest_first_unknown_first_and_failures_first_when_asked() {
        let (_d, cfg) = sharded_config();
        let mut plan = plan_layers(
            &cfg,
            &LayerSelection::Names(vec!["fast".into()]),
            &PlanOptions::default(),
        )
        .unwrap();
        let names = |plan: &Plan| -> Vec<String> {
            plan.stages[0][0].categories[0]
                .units
                .iter()
                .map(|u| u.name.clone())
                .collect()
        };
        let before = names(&plan);
        assert_eq!(before.len(), 20);
        // Nothing known: nothing moves.
        order_units(&mut plan, &Hints::default());
        assert_eq!(names(&plan), before);
        let id = |name: &str| format!("fast/unit/{name}");
        let ms = |ms: u64| Some(Duration::from_millis(ms));
        let mut hints = Hints::default();
        // Every unit known and short except t05 (long), t13 (longer) and t19 (failed
        // last time, short); t07 and t11 unknown.
        for name in &before {
            hints.units.insert(
                id(name),
                UnitHint {
                    expected: ms(10),
                    ..Default::default()
                },
            );
        }
        hints.units.get_mut(&id("t05.sh")).unwrap().expected = ms(2000);
        hints.units.get_mut(&id("t13.sh")).unwrap().expected = ms(3000);
        hints.units.get_mut(&id("t19.sh")).unwrap().failed_last = true;
        hints.units.remove(&id("t07.sh"));
        hints.units.remove(&id("t11.sh"));
        order_units(&mut plan, &hints);
        let got = names(&plan);
        assert_eq!(
            &got[..4],
            ["t07.sh", "t11.sh", "t13.sh", "t05.sh"],
            "{got:?}"
        );
        let rest: Vec<&String> = before
            .iter()
            .filter(|n| !["t07.sh", "t11.sh", "t13.sh", "t05.sh"].contains(&n.as_str()))
            .collect();
        assert_eq!(
            got[4..].iter().collect::<Vec<_>>(),
            rest,
            "ties keep plan order"
        );

        hints.failed_first = true;
        order_units(&mut plan, &hints);
        let got = names(&plan);
        assert_eq!(
            &got[..5],
            ["t19.sh", "t07.sh", "t11.sh", "t13.sh", "t05.sh"],
            "{got:?}"
        );
        assert!(hints.rank(&id("t19.sh")) > hints.rank(&id("t07.sh")));
        assert!(hints.rank(&id("t07.sh")) > hints.rank(&id("t13.sh")));
        assert!(hints.rank(&id("t13.sh")) > hints.rank(&id("t05.sh")));
        assert_eq!(hints.rank(&id("t00.sh")), hints.rank(&id("t01.sh")));
    }

    #[test]
    fn retain_units_keeps_the_structure() {
        let (_d, cfg) = sharded_config();
        let mut plan = plan_layers(
            &cfg,
            &LayerSelection::Mode(ExecutionMode::Hybrid),
            &PlanOptions::default(),
        )
        .unwrap();
        let stages: Vec<Vec<String>> = stage_names(&plan)
            .into_iter()
            .map(|s| s.into_iter().map(String::from).collect())
            .collect();
        let left = retain_units(&mut plan, |u| u.name == "t21.sh");
        assert_eq!(left, 1);
        assert_eq!(ids(&plan), vec!["slow/int/t21.sh"]);
        assert_eq!(stage_names(&plan), stages);
        assert_eq!(plan.background.len(), 1);
        assert_eq!(retain_units(&mut plan, |_| false), 0);
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

    #[test]
    fn layer_execution_mode_and_max_parallel_layers_shape_the_stages() {
        let with_mode = |mode: &str| {
            config(&LAYERS.replace(
                "categories:\n",
                &format!("execution: {{ layer_execution_mode: {mode} }}\ncategories:\n"),
            ))
        };
        let all = LayerSelection::Names(vec![]);
        let opts = PlanOptions::default();
        let (_d, cfg) = config(LAYERS);
        let plan = plan_layers(&cfg, &all, &opts).unwrap();
        assert_eq!(
            stage_names(&plan),
            vec![vec!["lint", "fast"], vec!["db"], vec!["integ"]]
        );
        let (_d, cfg) = with_mode("sequential");
        let plan = plan_layers(&cfg, &LayerSelection::All, &opts).unwrap();
        assert_eq!(
            stage_names(&plan),
            vec![
                vec!["lint"],
                vec!["fast"],
                vec!["db"],
                vec!["integ"],
                vec!["e2e"]
            ],
            "one layer per stage, the background layer in its place"
        );
        assert!(plan.background.is_empty());
        let (_d, cfg) = with_mode("parallel");
        let plan = plan_layers(&cfg, &all, &opts).unwrap();
        assert_eq!(
            stage_names(&plan),
            vec![vec!["lint", "fast"], vec!["db", "integ"]],
            "execution_order no longer splits stages; conflicts and dependencies still do"
        );
        let (_d, cfg) = config(LAYERS);
        let opts = PlanOptions {
            max_parallel_layers: Some(1),
            ..PlanOptions::default()
        };
        let plan = plan_layers(&cfg, &all, &opts).unwrap();
        assert_eq!(
            stage_names(&plan),
            vec![vec!["lint"], vec!["fast"], vec!["db"], vec!["integ"]]
        );
    }

    #[test]
    fn a_category_without_a_command_stops_planning_unless_shown() {
        let (_d, cfg) = config(
            "categories:\n  a: { command: \"true\" }\n  b: {}\n  c: {}\nlayers:\n  - { name: l, categories: [a, b, c] }\n",
        );
        let all = LayerSelection::Names(vec![]);
        let err = plan_layers(&cfg, &all, &PlanOptions::default()).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit_code::USAGE);
        assert!(
            err.message.contains("no command for categories `b`, `c`"),
            "{}",
            err.message
        );
        let err = plan_legacy(&cfg, &["b".into()], &PlanOptions::default()).unwrap_err();
        assert!(
            err.message.contains("no command for category `b`"),
            "{}",
            err.message
        );
        let shown = PlanOptions {
            allow_missing_commands: true,
            ..PlanOptions::default()
        };
        assert!(plan_layers(&cfg, &all, &shown).is_ok());
    }
}
