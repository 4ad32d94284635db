//! Validated configuration: the domain types every other module reads.
//!
//! These are produced by [`crate::config::load`] after the raw YAML has been parsed,
//! environment overlays merged and every cross-reference checked. Nothing downstream
//! ever sees an unvalidated value: a `Config` always has known category names in its
//! layers, acyclic dependencies and positive timeouts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;

/// A fully loaded, merged and validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The layers file that was read (absolute).
    pub source: PathBuf,
    /// The project root: the directory holding the layers file. Commands run here.
    pub root: PathBuf,
    /// The environment overlay applied (`test`, `development`, ...), if its file exists.
    pub environment: String,
    /// Environment overlay files that were merged, in order.
    pub overlays: Vec<PathBuf>,
    /// Names of every environment found in `config/environments/`.
    pub environments_available: Vec<String>,
    /// Schema version (`version:`), 1 when absent.
    pub version: u32,
    /// Global execution settings.
    pub execution: Execution,
    /// Services by name, in file order.
    pub services: IndexMap<String, Service>,
    /// Categories by name, in file order.
    pub categories: IndexMap<String, Category>,
    /// Layers in file order. Empty when the file has no `layers:` key.
    pub layers: Vec<Layer>,
    /// True when the file has a `layers:` key at all (false selects legacy mode).
    pub has_layers: bool,
    /// Agent manifests from `agents/` next to the layers file.
    pub agents: super::agents::AgentManifests,
    /// `metadata:` of a file in the format of the harness `runner` replaces (kept as data).
    pub metadata: Option<Metadata>,
    /// True when the file is written in that format (`layers` keyed by id,
    /// `execution_config`, `service_dependencies`, legacy category fields...).
    pub harness_format: bool,
    /// What the file's top-level fields of the old format became (`execution_config.*`,
    /// `service_dependencies`...), in file order.
    pub mappings: Vec<Mapping>,
}

/// `metadata:` (old format): descriptive, shown by `--show-layers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The file's own version string.
    pub version: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// When the file was created.
    pub created_at: Option<String>,
    /// The schema version the file was written for.
    pub config_schema_version: Option<String>,
}

/// How a field of the old format was taken: `from` (its key path as written) became
/// `to` (the native field, or what the runner does with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The old field (`background_execution`, `execution_config.max_global_parallel_tests`).
    pub from: String,
    /// What it became (`background: true`, `kept as information`...).
    pub to: String,
}

impl Mapping {
    /// `from` became `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }
}

/// How layers follow one another (`execution.layer_execution_mode`; the old
/// `execution_config.layer_execution_mode`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LayerExecutionMode {
    /// Every layer in its own stage, one after another; background layers too, in
    /// their order (nothing runs alongside).
    Sequential,
    /// Stages in order (layers of equal `execution_order` together); background layers
    /// run in their place in the order, in the foreground.
    Waterfall,
    /// Stages in order, background layers alongside (the default).
    #[default]
    WaterfallWithBackground,
    /// Every foreground layer in one stage when neither depends on nor conflicts with
    /// another; background layers alongside.
    Parallel,
}

/// Which waiting unit the resource manager admits first (`resource_conflict_resolution`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    /// Start order by priority (failed first, longest first), first come first served
    /// with a bounded bypass: the resource manager's order (the default).
    #[default]
    PriorityBased,
    /// Accepted; runs as `priority_based` (the admission queue is already first come,
    /// first served among units of equal rank).
    FirstComeFirstServe,
    /// Accepted; runs as `priority_based`.
    RoundRobin,
}

/// Global execution settings (`execution:`).
#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    /// Global slots; `--jobs` overrides; default: the CPU count.
    pub max_parallel_tests: Option<usize>,
    /// Global memory budget for admitted units, in MiB.
    pub max_memory_mb: Option<u64>,
    /// Share of all cores the run may use, in percent (turns into slots).
    pub max_cpu_percent: Option<u32>,
    /// The whole run's deadline.
    pub global_timeout: Option<Duration>,
    /// Layers that run in the background (in addition to layers with `background: true`).
    pub background_layers: Vec<String>,
    /// At most this many background units at once; default: all slots but one (at
    /// least one). Background units only take slots the foreground leaves idle.
    pub background_max_slots: Option<usize>,
    /// Time between SIGTERM and SIGKILL when a unit is stopped. Default 5 s.
    pub kill_grace: Duration,
    /// Base delay before a retry; doubles on every further attempt. Default 200 ms.
    pub retry_backoff: Duration,
    /// Bytes of a unit's output kept in memory from the start. Default 16 KiB.
    pub output_head_bytes: usize,
    /// Bytes of a unit's output kept in memory from the end. Default 64 KiB.
    pub output_tail_bytes: usize,
    /// Cap on a unit's log file under `.runner/runs/<id>/logs/`. Default 8 MiB.
    pub log_file_max_bytes: u64,
    /// Runs kept under `.runner/runs/` (the newest). Default 50.
    pub keep_runs: usize,
    /// Cap on the size of `.runner/runs/`, bytes. Default 1 GiB.
    pub runs_max_bytes: u64,
    /// Run categories with `requires_real_services` without `--real-services`
    /// (typically set by an environment overlay). Default false.
    pub real_services: bool,
    /// Command template for categories without a command of their own:
    /// `{category}`, `{filter_expr}`, `{junit}`, `{file}` are substituted.
    pub default_command: Option<String>,
    /// How layers follow one another.
    pub layer_execution_mode: LayerExecutionMode,
    /// Wait this long between one foreground stage and the next.
    pub inter_layer_delay: Option<Duration>,
    /// Startup timeout of services that set none of their own.
    pub layer_startup_timeout: Option<Duration>,
    /// Admission order among waiting units.
    pub resource_conflict_resolution: ConflictResolution,
    /// At most this many background layers at once (old `background_execution.max_background_layers`).
    pub max_background_layers: Option<usize>,
}

/// A service a layer may require (`services:`).
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Shell command that starts the service (run in its own process group).
    pub start: Option<String>,
    /// Readiness probe.
    pub ready: Option<ReadyProbe>,
    /// How long to wait for readiness after starting.
    pub startup_timeout: Duration,
    /// Services that must be ready first.
    pub depends_on: Vec<String>,
    /// Optional shell command that stops the service (else its group is signalled).
    pub stop: Option<String>,
    /// Extra environment for `start`/`stop`.
    pub env: BTreeMap<String, String>,
}

/// How to tell that a service is ready.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReadyProbe {
    /// A TCP connect to `host:port` succeeds.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// An HTTP GET returns 2xx.
    Http {
        /// `http://host:port/path`.
        url: String,
    },
    /// A shell command exits 0.
    Command {
        /// Shell command.
        command: String,
    },
}

/// A category: a named set of units with shared settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Category {
    /// Category name (its key under `categories:`).
    pub name: String,
    /// Free text.
    pub description: String,
    /// What the units are.
    pub kind: UnitKind,
    /// Per-unit timeout.
    pub timeout: Option<Duration>,
    /// Warn (a `test_slow` event) when a unit runs longer than this.
    pub slow_after: Option<Duration>,
    /// At most this many units of the category at once.
    pub max_parallel_instances: Option<usize>,
    /// In `hybrid` layers, categories with equal `priority_order` run together, lower first.
    pub priority_order: i64,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Admission estimate in MiB.
    pub min_memory_mb: Option<u64>,
    /// Hard memory limit of one unit's process tree in MiB.
    pub max_memory_mb: Option<u64>,
    /// `RLIMIT_AS` (address space) of each unit process in MiB: a backstop the kernel enforces.
    pub rlimit_as_mb: Option<u64>,
    /// A failure here fails the layer whatever the success criteria say.
    pub critical: bool,
    /// Extra environment variables for the units.
    pub env: BTreeMap<String, String>,
    /// Categories that must finish (and pass) before this one starts.
    pub depends_on: Vec<String>,
    /// Runs only with `--real-services` (or an environment that allows it).
    pub requires_real_services: bool,
    /// Working directory, relative to the project root.
    pub cwd: Option<PathBuf>,
    /// Free classification (`category_type`), shown.
    pub category_type: Option<String>,
    /// Free labels, shown; `-E 'tag(…)'` selects by them.
    pub tags: Vec<String>,
    /// Expected duration of the whole category before history knows it
    /// (`estimated_duration_minutes`): split evenly over its units for ordering and ETAs.
    pub estimated_duration: Option<Duration>,
    /// Categories whose units never run at the same time as this one's.
    pub conflicts: Vec<String>,
    /// Its units run with nothing else running (`parallel_safe: false`,
    /// `dedicated_resources: true`).
    pub exclusive: bool,
    /// Heavy in these ways (`memory`, `cpu`, `database`, `network`): units of two
    /// categories heavy in the same way never overlap.
    pub heavy: Vec<String>,
    /// Runs only with `--real-llm` (or a layer whose `llm_requirements.mode` is `real`).
    pub requires_real_llm: bool,
    /// Runs only in these environments (empty: any).
    pub requires_environment: Vec<String>,
    /// Services the category needs (from `requires_<service>` flags that name a
    /// defined service); added to the required services of the layers that run it.
    pub required_services: Vec<String>,
    /// pytest `-k` filters (`filters:`); `{filter_expr}` in a command template.
    pub filters: Filters,
    /// pytest markers, kept as data.
    pub markers: Vec<String>,
    /// Parent category (kept as data).
    pub parent: Option<String>,
    /// Child categories (kept as data).
    pub children: Vec<String>,
    /// Minimum pass rate of the category in percent (kept as data, shown).
    pub success_rate_threshold: Option<f64>,
    /// Where the category applies (`environment_scope`, kept as data).
    pub environment_scope: Vec<String>,
    /// Where the command came from and what old fields became.
    pub mappings: Vec<Mapping>,
}

/// `filters:` of a category: pytest `-k` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    /// Tests matching any of these run.
    pub include_patterns: Vec<String>,
    /// Tests matching any of these do not.
    pub exclude_patterns: Vec<String>,
}

impl Filters {
    /// The pytest `-k` expression: `(a or b) and not (c or d)`; empty when there is no
    /// pattern.
    pub fn expression(&self) -> String {
        filter_expression(&self.include_patterns, &self.exclude_patterns)
    }
}

/// The pytest `-k` expression for include and exclude patterns:
/// `(a or b) and not (c or d)`, `(a or b)`, `not (c or d)`, or empty.
pub fn filter_expression(include: &[String], exclude: &[String]) -> String {
    let group = |items: &[String]| format!("({})", items.join(" or "));
    match (include.is_empty(), exclude.is_empty()) {
        (true, true) => String::new(),
        (false, true) => group(include),
        (true, false) => format!("not {}", group(exclude)),
        (false, false) => format!("{} and not {}", group(include), group(exclude)),
    }
}

/// What a category's units are.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitKind {
    /// A shell command: one unit, or one per matching file.
    Command(CommandSpec),
    /// Rust tests listed by nextest, one unit per test.
    Nextest(NextestSpec),
    /// Python tests collected by pytest, one unit per test id, run in batches.
    Pytest(PytestSpec),
    /// No command yet (a category migrated from a file that carries none): it loads
    /// and is shown, but a run that selects it stops with exit code 2 before anything runs.
    #[default]
    Missing,
}

/// `pytest:` categories (every field optional).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PytestSpec {
    /// Files or directories to collect from (relative to the category's `cwd`); empty:
    /// pytest's own default (`testpaths`, else the working directory).
    pub paths: Vec<String>,
    /// A marker expression (`-m`).
    pub markers: Option<String>,
    /// A keyword expression (`-k`).
    pub k: Option<String>,
    /// Extra pytest arguments, for collection and every batch.
    pub args: Vec<String>,
    /// The interpreter (`python3`, or a virtualenv's `.venv/bin/python`).
    pub python: String,
}

/// Why a `files:` pattern is refused at load, or `None` when it stays inside the
/// directory it is relative to: absolute patterns, and patterns whose `..` components
/// climb above their start, would run units on files outside the project (and `/**`
/// walks the whole filesystem).
pub fn pattern_escapes(pattern: &str) -> Option<&'static str> {
    if std::path::Path::new(pattern).is_absolute() || pattern.starts_with('~') {
        return Some("an absolute path");
    }
    let mut depth = 0i64;
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Some("a path that leaves the configuration's directory (`..`)");
                }
            }
            _ => depth += 1,
        }
    }
    None
}

/// `command:` categories.
#[derive(Debug, Clone, Serialize)]
pub struct CommandSpec {
    /// Shell command line (`sh -c`); may contain `{file}` and `{junit}`.
    pub command: String,
    /// Globs, relative to the project root; one unit per matching file when non-empty.
    pub files: Vec<String>,
    /// Globs of files `files` must not yield (`exclude:`).
    pub exclude: Vec<String>,
}

/// `nextest:` categories.
#[derive(Debug, Clone, Serialize)]
pub struct NextestSpec {
    /// A nextest filterset (`-E`).
    pub filter: String,
    /// Cargo features to enable.
    pub features: Vec<String>,
    /// Packages to select (`-p`); empty means the default members.
    pub packages: Vec<String>,
    /// Select the whole workspace.
    pub workspace: bool,
    /// Extra arguments passed to each test binary.
    pub test_args: Vec<String>,
    /// What to do with a process a test leaves behind.
    pub leak: LeakPolicy,
}

/// What a leaked process means for a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakPolicy {
    /// The test fails.
    Fail,
    /// A warning event; the test keeps its outcome.
    Warn,
}

/// A layer: an ordered stage of categories.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layer {
    /// Layer name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Layers run in ascending `execution_order`; equal values may share a stage.
    pub execution_order: i64,
    /// Tie-break between layers of equal order (higher first).
    pub priority: i64,
    /// The layer's deadline.
    pub max_duration: Option<Duration>,
    /// How the layer's categories run.
    pub execution_mode: LayerMode,
    /// What a failure stops.
    pub fail_fast: FailFast,
    /// Runs in the background (BackgroundE2EAgent).
    pub background: bool,
    /// Category names, in order.
    pub categories: Vec<String>,
    /// Layers that must pass first.
    pub depends_on: Vec<String>,
    /// Layers that must never run at the same time as this one.
    pub conflicts: Vec<String>,
    /// Services that must be ready before the layer starts.
    pub required_services: Vec<String>,
    /// The layer's own budgets.
    pub resource_limits: ResourceLimits,
    /// When the layer counts as passed.
    pub success_criteria: SuccessCriteria,
    /// Display name (`name:` of a layer in the mapping form), shown beside the id.
    pub display_name: Option<String>,
    /// Categories whose units never run at the same time as this layer's.
    pub conflicting_categories: Vec<String>,
    /// `llm_requirements:`: passed to the units as environment variables.
    pub llm: Option<LlmRequirements>,
    /// The layer's own settings of categories listed as objects (`- name: unit` with
    /// fields): the category as this layer runs it. Absent names use `categories:`.
    pub category_overrides: IndexMap<String, Category>,
    /// What old fields of the layer became.
    pub mappings: Vec<Mapping>,
}

/// `llm_requirements:` of a layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmRequirements {
    /// `real`, `mock` or `hybrid`.
    pub mode: LlmMode,
    /// Timeout of one LLM call, seconds.
    pub timeout_seconds: Option<f64>,
    /// Fall back to the mock when the real LLM fails.
    pub fallback_to_mock: Option<bool>,
}

/// How the units of a layer talk to LLMs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LlmMode {
    /// The real LLM.
    Real,
    /// A mock.
    Mock,
    /// Real where available, mock otherwise.
    Hybrid,
}

impl LlmMode {
    /// The value of `RUNNER_LLM_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Real => "real",
            LlmMode::Mock => "mock",
            LlmMode::Hybrid => "hybrid",
        }
    }
}

/// How the categories of a layer run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LayerMode {
    /// One unit at a time, categories in order.
    Sequential,
    /// All categories at once, within the slots (the default).
    #[default]
    Parallel,
    /// Groups of equal `priority_order` one after another, each group in parallel.
    Hybrid,
}

/// What a failure stops.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailFast {
    /// Stop the whole run at the first failed unit: cancel running units, skip the rest.
    Immediate,
    /// Stop the failing category; the layer's other categories go on; later layers are skipped.
    Category,
    /// The layer completes; later layers are skipped (the default).
    #[default]
    Layer,
    /// Everything runs; only layers that depend on a failed layer are skipped.
    Disabled,
}

/// A layer's budgets (`resource_limits:`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceLimits {
    /// Memory budget for the layer's admitted units, in MiB.
    pub max_memory_mb: Option<u64>,
    /// Share of all cores, in percent.
    pub max_cpu_percent: Option<u32>,
    /// At most this many units of the layer at once.
    pub max_parallel_instances: Option<usize>,
}

/// When a layer counts as passed (`success_criteria:`).
#[derive(Debug, Clone, Serialize)]
pub struct SuccessCriteria {
    /// Minimum share of passed units, in percent (0-100).
    pub min_pass_rate: Option<f64>,
    /// At most this many failed units.
    pub max_failures: Option<u64>,
    /// A failed unit of a `critical` category fails the layer.
    pub critical_tests_must_pass: bool,
    /// A layer that misses its criteria is `partial` rather than failed: its dependents
    /// still run (the run still fails when a unit failed).
    pub allow_partial_success: bool,
}

impl Default for SuccessCriteria {
    fn default() -> Self {
        Self {
            min_pass_rate: None,
            max_failures: None,
            critical_tests_must_pass: true,
            allow_partial_success: false,
        }
    }
}

impl Config {
    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// True when the layer runs in the background (its flag or `execution.background_layers`).
    pub fn is_background(&self, layer: &Layer) -> bool {
        layer.background || self.execution.background_layers.contains(&layer.name)
    }

    /// The category `name` as `layer` runs it (its own settings of the category when it
    /// lists it as an object, else the `categories:` entry).
    pub fn category_in<'a>(&'a self, layer: &'a Layer, name: &str) -> &'a Category {
        layer
            .category_overrides
            .get(name)
            .unwrap_or_else(|| &self.categories[name])
    }
}
