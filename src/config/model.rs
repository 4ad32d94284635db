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
    /// Run categories with `requires_real_services` without `--real-services`
    /// (typically set by an environment overlay). Default false.
    pub real_services: bool,
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
#[derive(Debug, Clone, Serialize)]
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
}

/// What a category's units are.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitKind {
    /// A shell command: one unit, or one per matching file.
    Command(CommandSpec),
    /// Rust tests listed by nextest, one unit per test.
    Nextest(NextestSpec),
    /// Python tests collected by pytest, one unit per test id, run in batches.
    Pytest(PytestSpec),
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

/// `command:` categories.
#[derive(Debug, Clone, Serialize)]
pub struct CommandSpec {
    /// Shell command line (`sh -c`); may contain `{file}` and `{junit}`.
    pub command: String,
    /// Globs, relative to the project root; one unit per matching file when non-empty.
    pub files: Vec<String>,
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
#[derive(Debug, Clone, Serialize)]
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
}

/// How the categories of a layer run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerMode {
    /// One unit at a time, categories in order.
    Sequential,
    /// All categories at once, within the slots.
    Parallel,
    /// Groups of equal `priority_order` one after another, each group in parallel.
    Hybrid,
}

/// What a failure stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailFast {
    /// Stop the whole run at the first failed unit: cancel running units, skip the rest.
    Immediate,
    /// Stop the failing category; the layer's other categories go on; later layers are skipped.
    Category,
    /// The layer completes; later layers are skipped.
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
}

impl Default for SuccessCriteria {
    fn default() -> Self {
        Self {
            min_pass_rate: None,
            max_failures: None,
            critical_tests_must_pass: true,
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
}
