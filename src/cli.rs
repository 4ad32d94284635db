//! Command-line interface: clap definitions and mode detection.
//!
//! [`Cli`] is the raw parse; [`Cli::mode`] is a pure function from the parsed
//! arguments to the [`Mode`] the controller runs, in the priority order of the
//! design: `--master-orchestration`, `--orchestration-status`, `--use-layers` with
//! `--websocket-thread-id` (streamed), `--use-layers` / `--execution-mode`, then
//! legacy categories. `--show-layers` and subcommands are informational and win.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::bounds;

/// The `--help` heading of the flags kept from the harness `runner` replaces.
pub const HARNESS_HEADING: &str = "Options of the replaced Python harness";

/// Layered test orchestration.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Subcommands (shell completions).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The layers file.
    #[arg(
        long,
        value_name = "PATH",
        env = "RUNNER_CONFIG",
        default_value = "layers.yaml"
    )]
    pub config: PathBuf,

    /// Environment overlay from config/environments/ (test, dev, staging, prod, ...).
    #[arg(long = "env", value_name = "NAME", env = "RUNNER_ENV")]
    pub environment: Option<String>,

    /// Run these layers (comma-separated; no value: every foreground layer), with their dependencies.
    #[arg(long = "use-layers", value_name = "LAYER,...", num_args = 0..=1, value_delimiter = ',', default_missing_value = "")]
    pub use_layers: Option<Vec<String>>,

    /// Select layers by execution mode.
    #[arg(long, value_enum, value_name = "MODE")]
    pub execution_mode: Option<ExecutionMode>,

    /// Run every layer under the master controller: foreground layers in order, background layers alongside.
    #[arg(long)]
    pub master_orchestration: bool,

    /// Show the agents' health, the configuration, the system and the last runs, then exit.
    #[arg(long)]
    pub orchestration_status: bool,

    /// With --orchestration-status, --show-layers or --list: machine-readable JSON.
    #[arg(long)]
    pub json: bool,

    /// Show layers, categories, modes, dependencies, services and estimated durations, then exit.
    #[arg(long)]
    pub show_layers: bool,

    /// Print the configuration as a native layers.yaml (for the --env environment, with
    /// its overrides applied), then exit: the migration of a file in the old format.
    #[arg(long)]
    pub print_config: bool,

    /// Tag every event with this thread id (streamed orchestration with --use-layers).
    #[arg(long, value_name = "ID")]
    pub websocket_thread_id: Option<String>,

    /// Serve live progress (viewer page, WebSocket, /status, /metrics) on ADDR
    /// (`127.0.0.1:0`: a free port; `off`: never). Non-loopback needs --websocket-token.
    #[arg(long, value_name = "ADDR")]
    pub websocket_addr: Option<String>,

    /// Token required by the progress server on /ws, /status and /metrics.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RUNNER_WS_TOKEN",
        hide_env_values = true
    )]
    pub websocket_token: Option<String>,

    /// Keep the progress server up this many seconds after the run ends.
    #[arg(long, value_name = "SECONDS", value_parser = linger_seconds)]
    pub websocket_linger: Option<u64>,

    /// Legacy mode: run these categories (comma-separated), with their dependencies.
    #[arg(long, value_name = "CAT,...", value_delimiter = ',')]
    pub categories: Vec<String>,

    /// Legacy mode: run this category (repeatable).
    #[arg(long = "category", value_name = "CAT")]
    pub category: Vec<String>,

    /// Do not add the dependencies of the selected categories or layers.
    #[arg(long)]
    pub no_dependencies: bool,

    /// Skip the layers (or, in legacy mode, categories) before this one.
    #[arg(long, value_name = "NAME")]
    pub resume_from: Option<String>,

    /// Global slots: at most this many units at once (default: CPU count).
    #[arg(short = 'j', long, value_name = "N", value_parser = jobs)]
    pub jobs: Option<usize>,

    /// Stop the whole run at the first failure (fail_fast: immediate everywhere).
    #[arg(long, conflicts_with = "no_fail_fast")]
    pub fast_fail: bool,

    /// Run everything whatever fails (fail_fast: disabled everywhere).
    #[arg(long)]
    pub no_fail_fast: bool,

    /// Console output.
    #[arg(long, value_enum, value_name = "MODE")]
    pub progress_mode: Option<ProgressMode>,

    /// Also write every event as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Write a JUnit XML report to this file at the end of the run (also on Ctrl-C).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Run only shard K of N (e.g. 2/4) of the selected units, balanced by expected duration.
    #[arg(long, value_name = "K/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,

    /// With --partition: balance shards by the durations in this JUnit report (a previous run's).
    #[arg(long, value_name = "PATH", requires = "partition")]
    pub durations_from: Option<PathBuf>,

    /// Run categories that require real services (also: RUNNER_REAL_SERVICES=1, or
    /// `execution.real_services: true` in the configuration or an environment overlay).
    #[arg(long, env = "RUNNER_REAL_SERVICES", value_parser = clap::builder::BoolishValueParser::new(), help_heading = HARNESS_HEADING)]
    pub real_services: bool,

    /// Run the background layers as a detached process that outlives this command
    /// (with --use-layers or --execution-mode; the foreground layers run here as usual).
    #[arg(long)]
    pub background_e2e: bool,

    /// Queue a detached background run (the background layers, the layers named by
    /// --use-layers, or --background-category categories), print its id and return.
    #[arg(long)]
    pub queue_e2e: bool,

    /// Queue a detached background run of these categories (comma-separated,
    /// repeatable) instead of layers, as --queue-e2e does, print its id and return.
    #[arg(long, value_name = "CAT,...", value_delimiter = ',', help_heading = HARNESS_HEADING)]
    pub background_category: Vec<String>,

    /// Same as --use-layers; also space-separated (`--layers fast_feedback core_integration`).
    #[arg(long, value_name = "LAYER", num_args = 1.., value_delimiter = ',', help_heading = HARNESS_HEADING)]
    pub layers: Option<Vec<String>>,

    /// Use a real LLM: every unit gets RUNNER_LLM_MODE=real and RUNNER_REAL_LLM=1, and
    /// categories with `requires_real_llm` run (also: RUNNER_REAL_LLM=1).
    #[arg(long, env = "RUNNER_REAL_LLM", value_parser = clap::builder::BoolishValueParser::new(), help_heading = HARNESS_HEADING)]
    pub real_llm: bool,

    /// At most N layers of one stage run at once (a stage's layers are split into groups of N).
    #[arg(long, value_name = "N", value_parser = jobs, help_heading = HARNESS_HEADING)]
    pub max_parallel_layers: Option<usize>,

    /// Serve no live progress (the same as --websocket-addr off); the console and
    /// events.jsonl are unchanged.
    #[arg(long, help_heading = HARNESS_HEADING)]
    pub no_progress_streaming: bool,

    /// Accepted for compatibility: resource monitoring is always on here (samples in
    /// the event stream, --orchestration-status, /metrics); this flag changes nothing.
    #[arg(long, help_heading = HARNESS_HEADING)]
    pub enable_monitoring: bool,

    /// Deadline of a detached background run, in minutes.
    #[arg(long, value_name = "MIN", value_parser = timeout_minutes)]
    pub background_timeout: Option<f64>,

    /// Show background runs: queued, running with progress, recently finished.
    #[arg(long)]
    pub background_status: bool,

    /// Show the last N finished background runs (default 10).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10", value_parser = listed)]
    pub background_results: Option<usize>,

    /// Stop background run ID (its whole process tree) and mark it cancelled.
    #[arg(long, value_name = "ID")]
    pub kill_background: Option<String>,

    /// Internal: be the detached worker of background run ID.
    #[arg(long, value_name = "ID", hide = true)]
    pub background_worker: Option<String>,

    /// Run `#[ignore]`d Rust tests of nextest categories too (default: reported skipped).
    #[arg(long)]
    pub run_ignored: bool,

    /// Start the units that failed last time (per history) before the others.
    #[arg(long)]
    pub failed_first: bool,

    /// Run only the units that failed or did not finish last time (per history); exits 0
    /// when nothing is left.
    #[arg(long)]
    pub rerun_failed: bool,

    // Everyday use: selecting, listing, repeating, reporting (docs/usage.md).
    /// Keep only the units this expression selects, e.g. `-E 'layer(fast) & test(~parse)'`
    /// (functions: layer, category, test, kind, tag, failed, slow; `&`, `|`, `!`, parentheses).
    #[arg(short = 'E', long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// Print the units the run would execute (with the same selection flags) and exit; with --json as JSON.
    #[arg(long)]
    pub list: bool,

    /// Run every selected unit N times (each iteration a unit of its own); report per unit
    /// how many passed and failed, and which are flaky.
    #[arg(long, value_name = "N", value_parser = listed)]
    pub stress_count: Option<usize>,

    /// Repeat every selected unit until this much time has passed since the first unit
    /// started (`90s`, `10m`, `1h`; plain numbers are seconds); every unit runs at least
    /// once. With --stress-count N, at most N iterations; else at most 1000.
    #[arg(long, value_name = "DURATION", value_parser = stress_duration)]
    pub stress_duration: Option<std::time::Duration>,

    /// Write a self-contained HTML report (totals, failures, slowest units, a timeline per slot) to this file.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
}

/// `--partition K/N`: shard `k` (from 1) of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// This shard, 1..=n.
    pub k: usize,
    /// Number of shards.
    pub n: usize,
}

/// Parses `K/N` with 1 <= K <= N <= [`bounds::MAX_PARALLEL`] shards.
pub fn parse_partition(s: &str) -> Result<Partition, String> {
    let err = || {
        format!(
            "expected K/N with 1 <= K <= N <= {} (e.g. 2/4), got `{s}`",
            bounds::SHARDS.max
        )
    };
    let (k, n) = s.split_once('/').ok_or_else(err)?;
    let k = bounds::SHARDS.parse_int(k).map_err(|_| err())? as usize;
    let n = bounds::SHARDS.parse_int(n).map_err(|_| err())? as usize;
    if k > n {
        return Err(err());
    }
    Ok(Partition { k, n })
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Merge JUnit reports (e.g. the shards of a partitioned run) into one.
    MergeJunit {
        /// The merged report to write.
        out: PathBuf,
        /// The reports to merge.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Follow a run served elsewhere (its progress URL) in this terminal; exits with the run's exit code.
    Watch {
        /// The run's progress URL (`http://HOST:PORT/` or `ws://HOST:PORT/ws`); default:
        /// the newest run in progress under ./.runner that serves progress.
        url: Option<String>,
        /// Token, if the run's server requires one.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "RUNNER_WS_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
    },
    /// Show the slowest and the flakiest units from history (.runner/history.sqlite).
    History {
        /// Show the slowest N units (by median duration).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10", value_parser = listed)]
        slowest: Option<usize>,
        /// Show the flakiest units (passed on a retry, or both passed and failed).
        #[arg(long)]
        flaky: bool,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// The layers file whose project's history to show (default: --config's).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Write a first layers.yaml for the project here (or at --config), from what it finds.
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Print the file instead of writing it.
        #[arg(long)]
        dry_run: bool,
        /// The file to write (default: --config's, `layers.yaml` here).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema (draft 2020-12) of the layers file, for editors and validators.
    Schema,
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

// Value parsers: numbers within the ranges of `config::bounds`, the same as the
// configuration keys they stand for. clap prints "invalid value 'X' for '--flag'"
// followed by the range, and exits with status 2 before anything runs.

/// `--jobs N`: global slots, like `execution.max_parallel_tests`.
fn jobs(s: &str) -> Result<usize, String> {
    bounds::PARALLEL.parse_int(s).map(|n| n as usize)
}

/// `--background-timeout MIN`: a deadline, like `execution.global_timeout_minutes`.
fn timeout_minutes(s: &str) -> Result<f64, String> {
    bounds::TIMEOUT_MINUTES.parse(s)
}

/// `--websocket-linger SECONDS`.
fn linger_seconds(s: &str) -> Result<u64, String> {
    bounds::LINGER_SECONDS.parse_int(s).map(|n| n as u64)
}

/// `--stress-duration 90s|10m|1h|SECONDS`.
fn stress_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1.0),
        Some((i, 'm')) => (&s[..i], 60.0),
        Some((i, 'h')) => (&s[..i], 3600.0),
        _ => (s, 1.0),
    };
    let seconds = bounds::TIMEOUT_SECONDS
        .parse(number)
        .map_err(|e| format!("{e} (a number of seconds, or with `s`, `m` or `h`)"))?
        * unit;
    bounds::TIMEOUT_SECONDS
        .check_duration(bounds::Number::Float(seconds))
        .map_err(|e| e.for_cli())
}

/// `--background-results N`, `history --slowest N`.
fn listed(s: &str) -> Result<usize, String> {
    bounds::LISTED.parse_int(s).map(|n| n as usize)
}

/// Background-run commands (`--queue-e2e`, `--background-status`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackgroundCommand {
    /// Queue a detached run and return (`--queue-e2e`, or `--background-e2e` alone).
    Queue,
    /// `--background-status`.
    Status,
    /// `--background-results N`.
    Results(usize),
    /// `--kill-background ID`.
    Kill(String),
    /// The hidden `--background-worker ID`: be the detached worker.
    Worker(String),
}

/// `--execution-mode`: which layers a run selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutionMode {
    /// The first foreground layer only: the quickest signal (alias: commit).
    #[value(name = "fast_feedback", alias = "commit", alias = "fast-feedback")]
    FastFeedback,
    /// Every layer, background ones included, one after another; waits for all (alias: weekend).
    #[value(alias = "weekend")]
    Nightly,
    /// Only the background layers.
    Background,
    /// Foreground layers in order with background layers alongside at lower priority; waits for both (alias: ci).
    #[value(alias = "ci")]
    Hybrid,
    /// Every foreground layer in order, no background layer: a developer's full local check.
    Development,
}

/// `--progress-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Plain lines, one per finished unit.
    Simple,
    /// Live bars (a TTY only; falls back to simple elsewhere).
    Rich,
    /// Every event as a JSON line on stdout; the closing line goes to stderr.
    Json,
    /// Only the closing line.
    Silent,
}

/// Which layers to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// Named layers (plus their dependencies); empty = every foreground layer.
    Names(Vec<String>),
    /// Layers chosen by an execution mode.
    Mode(ExecutionMode),
    /// Everything (master orchestration).
    All,
}

/// What this invocation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Print completions.
    Completions(clap_complete::Shell),
    /// `runner schema`.
    Schema,
    /// `merge-junit OUT IN...`.
    MergeJunit {
        /// Output file.
        out: PathBuf,
        /// Input reports.
        inputs: Vec<PathBuf>,
    },
    /// `--show-layers`.
    ShowLayers,
    /// `--print-config`.
    PrintConfig,
    /// `--orchestration-status`.
    OrchestrationStatus,
    /// A layered run.
    Layers {
        /// Which layers.
        selection: LayerSelection,
        /// Streamed orchestration: events carry this thread id.
        thread_id: Option<String>,
        /// `--master-orchestration`.
        master: bool,
    },
    /// Legacy category mode.
    Legacy {
        /// Named categories; empty = every category not used only by background layers.
        categories: Vec<String>,
    },
    /// Detached background runs.
    Background(BackgroundCommand),
    /// `runner watch [URL]`.
    Watch {
        /// Progress URL, if given.
        url: Option<String>,
        /// Token, if given.
        token: Option<String>,
    },
    /// `runner init`.
    Init {
        /// The file to write (`--config`).
        config: PathBuf,
        /// `--force`.
        force: bool,
        /// `--dry-run`.
        dry_run: bool,
    },
    /// `runner history`.
    History {
        /// The project root (the directory of the layers file).
        root: PathBuf,
        /// What to show.
        request: crate::store::command::Request,
    },
}

impl Mode {
    /// The mode's name as reported in `run_started`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Completions(_) => "completions",
            Mode::Schema => "schema",
            Mode::MergeJunit { .. } => "merge_junit",
            Mode::ShowLayers => "show_layers",
            Mode::PrintConfig => "print_config",
            Mode::OrchestrationStatus => "status",
            Mode::Layers { master: true, .. } => "master",
            Mode::Layers {
                thread_id: Some(_), ..
            } => "streamed",
            Mode::Layers { .. } => "layers",
            Mode::Legacy { .. } => "legacy",
            Mode::Background(_) => "background",
            Mode::Watch { .. } => "watch",
            Mode::History { .. } => "history",
            Mode::Init { .. } => "init",
        }
    }
}

impl Cli {
    /// Folds the old harness's flags that stand for native ones into them
    /// (`--no-progress-streaming` is `--websocket-addr off`). Called once, first.
    pub fn apply_harness_flags(&mut self) {
        if self.no_progress_streaming {
            self.websocket_addr = Some("off".to_string());
        }
    }

    /// Mode detection, in the design's priority order. Pure.
    pub fn mode(&self) -> Mode {
        if let Some(Command::Completions { shell }) = &self.command {
            return Mode::Completions(*shell);
        }
        if let Some(Command::Schema) = &self.command {
            return Mode::Schema;
        }
        if let Some(Command::MergeJunit { out, inputs }) = &self.command {
            return Mode::MergeJunit {
                out: out.clone(),
                inputs: inputs.clone(),
            };
        }
        if let Some(Command::Init {
            force,
            dry_run,
            config,
        }) = &self.command
        {
            return Mode::Init {
                config: config.clone().unwrap_or_else(|| self.config.clone()),
                force: *force,
                dry_run: *dry_run,
            };
        }
        if let Some(Command::Watch { url, token }) = &self.command {
            return Mode::Watch {
                url: url.clone(),
                token: token.clone(),
            };
        }
        if let Some(Command::History {
            slowest,
            flaky,
            json,
            config,
        }) = &self.command
        {
            let config = config.as_ref().unwrap_or(&self.config);
            let config = std::path::absolute(config).unwrap_or_else(|_| config.clone());
            return Mode::History {
                root: config
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(".")),
                request: crate::store::command::Request {
                    slowest: *slowest,
                    flaky: *flaky,
                    json: *json,
                },
            };
        }
        if let Some(id) = &self.background_worker {
            return Mode::Background(BackgroundCommand::Worker(id.clone()));
        }
        if self.show_layers {
            return Mode::ShowLayers;
        }
        if self.print_config {
            return Mode::PrintConfig;
        }
        if let Some(id) = &self.kill_background {
            return Mode::Background(BackgroundCommand::Kill(id.clone()));
        }
        if self.background_status {
            return Mode::Background(BackgroundCommand::Status);
        }
        if let Some(n) = self.background_results {
            return Mode::Background(BackgroundCommand::Results(n));
        }
        if self.master_orchestration {
            return Mode::Layers {
                selection: LayerSelection::All,
                thread_id: self.websocket_thread_id.clone(),
                master: true,
            };
        }
        if self.orchestration_status {
            return Mode::OrchestrationStatus;
        }
        let requested = match (&self.use_layers, &self.layers) {
            (None, None) => None,
            (a, b) => Some(
                a.iter()
                    .chain(b.iter())
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
        };
        let named = requested.as_ref().map(|names| {
            names
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        });
        let selection = match (named, self.execution_mode) {
            (Some(names), _) if !names.is_empty() => Some(LayerSelection::Names(names)),
            (_, Some(mode)) => Some(LayerSelection::Mode(mode)),
            (Some(_), None) => Some(LayerSelection::Names(Vec::new())),
            (None, None) => None,
        };
        let selects_layers =
            selection.is_some() || !self.categories.is_empty() || !self.category.is_empty();
        if self.queue_e2e
            || !self.background_category.is_empty()
            || (self.background_e2e && !selects_layers)
        {
            return Mode::Background(BackgroundCommand::Queue);
        }
        match selection {
            Some(selection) => Mode::Layers {
                selection,
                thread_id: self.websocket_thread_id.clone(),
                master: false,
            },
            None => {
                let mut categories = self.categories.clone();
                categories.extend(self.category.iter().cloned());
                categories.retain(|c| !c.trim().is_empty());
                Mode::Legacy { categories }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(args: &[&str]) -> Mode {
        let mut argv = vec!["runner"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").mode()
    }

    #[test]
    fn mode_detection_follows_priority_order() {
        let layers =
            |names: &[&str]| LayerSelection::Names(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            mode(&["--use-layers", "fast_feedback"]),
            Mode::Layers {
                selection: layers(&["fast_feedback"]),
                thread_id: None,
                master: false
            }
        );
        assert_eq!(
            mode(&["--layers", "a,b"]),
            Mode::Layers {
                selection: layers(&["a", "b"]),
                thread_id: None,
                master: false
            }
        );
        assert_eq!(
            mode(&["--use-layers"]),
            Mode::Layers {
                selection: layers(&[]),
                thread_id: None,
                master: false
            }
        );
        assert_eq!(
            mode(&["--use-layers", "a", "--websocket-thread-id", "t"]).name(),
            "streamed"
        );
        assert_eq!(
            mode(&["--orchestration-status", "--use-layers", "a"]),
            Mode::OrchestrationStatus
        );
        assert_eq!(
            mode(&["--master-orchestration", "--orchestration-status"]).name(),
            "master"
        );
        assert_eq!(
            mode(&["--show-layers", "--master-orchestration"]),
            Mode::ShowLayers
        );
        assert_eq!(
            mode(&["--execution-mode", "ci"]),
            Mode::Layers {
                selection: LayerSelection::Mode(ExecutionMode::Hybrid),
                thread_id: None,
                master: false
            }
        );
        assert_eq!(
            mode(&["--categories", "unit,lint", "--category", "e2e"]),
            Mode::Legacy {
                categories: vec!["unit".into(), "lint".into(), "e2e".into()]
            }
        );
        assert_eq!(mode(&[]), Mode::Legacy { categories: vec![] });
    }

    #[test]
    fn execution_mode_aliases() {
        for (alias, want) in [
            ("commit", ExecutionMode::FastFeedback),
            ("weekend", ExecutionMode::Nightly),
            ("ci", ExecutionMode::Hybrid),
            ("background", ExecutionMode::Background),
        ] {
            assert_eq!(
                mode(&["--execution-mode", alias]),
                Mode::Layers {
                    selection: LayerSelection::Mode(want),
                    thread_id: None,
                    master: false
                }
            );
        }
    }

    #[test]
    fn flags_of_the_replaced_harness() {
        let names = |v: &[&str]| LayerSelection::Names(v.iter().map(|s| s.to_string()).collect());
        let layers = |m: Mode| match m {
            Mode::Layers { selection, .. } => selection,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            layers(mode(&["--layers", "fast_feedback", "core_integration"])),
            names(&["fast_feedback", "core_integration"])
        );
        assert_eq!(layers(mode(&["--layers", "a,b"])), names(&["a", "b"]));
        assert_eq!(
            layers(mode(&["--use-layers", "a", "--layers", "b", "c"])),
            names(&["a", "b", "c"])
        );
        assert_eq!(
            layers(mode(&["--execution-mode", "development"])),
            LayerSelection::Mode(ExecutionMode::Development)
        );
        assert_eq!(
            mode(&["--background-category", "e2e"]),
            Mode::Background(BackgroundCommand::Queue)
        );
        let mut cli = Cli::try_parse_from([
            "runner",
            "--real-llm",
            "--max-parallel-layers",
            "2",
            "--no-progress-streaming",
            "--enable-monitoring",
        ])
        .unwrap();
        assert!(cli.real_llm && cli.enable_monitoring);
        assert_eq!(cli.max_parallel_layers, Some(2));
        cli.apply_harness_flags();
        assert_eq!(cli.websocket_addr.as_deref(), Some("off"));
        assert!(Cli::try_parse_from(["runner", "--max-parallel-layers", "0"]).is_err());

        // `--help` groups them under their own heading.
        let help = <Cli as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        let heading = help.find(HARNESS_HEADING).expect("the heading");
        for flag in [
            "--layers",
            "--real-llm",
            "--real-services",
            "--background-category",
            "--max-parallel-layers",
            "--no-progress-streaming",
            "--enable-monitoring",
        ] {
            let option_line = format!("\n      {flag}");
            assert!(
                help[heading..].contains(&option_line) && !help[..heading].contains(&option_line),
                "{flag} under the heading:\n{help}"
            );
        }
    }

    #[test]
    fn partition_and_merge_junit() {
        assert_eq!(parse_partition("2/4"), Ok(Partition { k: 2, n: 4 }));
        assert_eq!(parse_partition(" 1 / 1 "), Ok(Partition { k: 1, n: 1 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0", "-1/2", "1/100001", "1.5/2"] {
            assert!(parse_partition(bad).is_err(), "{bad}");
        }
        let cli =
            Cli::try_parse_from(["runner", "--use-layers", "a", "--partition", "3/4"]).unwrap();
        assert_eq!(cli.partition, Some(Partition { k: 3, n: 4 }));
        assert!(Cli::try_parse_from(["runner", "--durations-from", "x.xml"]).is_err());
        assert_eq!(
            mode(&["merge-junit", "out.xml", "a.xml", "b.xml"]),
            Mode::MergeJunit {
                out: "out.xml".into(),
                inputs: vec!["a.xml".into(), "b.xml".into()]
            }
        );
        assert!(Cli::try_parse_from(["runner", "merge-junit", "out.xml"]).is_err());
    }

    #[test]
    fn watch_subcommand() {
        assert_eq!(
            mode(&["watch", "http://127.0.0.1:1/", "--token", "t"]),
            Mode::Watch {
                url: Some("http://127.0.0.1:1/".into()),
                token: Some("t".into())
            }
        );
        assert_eq!(mode(&["watch"]).name(), "watch");
        assert!(Cli::try_parse_from(["runner", "watch", "--use-layers", "a"]).is_err());
    }

    #[test]
    fn history_subcommand_and_flags() {
        let Mode::History { root, request } = mode(&[
            "history",
            "--slowest",
            "5",
            "--flaky",
            "--config",
            "/p/layers.yaml",
        ]) else {
            panic!("history mode");
        };
        assert_eq!(root, PathBuf::from("/p"));
        assert_eq!(request.slowest, Some(5));
        assert!(request.flaky && !request.json);
        let Mode::History { request, .. } = mode(&["history", "--slowest"]) else {
            panic!("history mode");
        };
        assert_eq!(request.slowest, Some(10));
        assert!(!request.flaky);
        let cli = Cli::try_parse_from(["runner", "--failed-first", "--rerun-failed"]).unwrap();
        assert!(cli.failed_first && cli.rerun_failed);
    }

    #[test]
    fn init_subcommand() {
        assert_eq!(
            mode(&["init", "--dry-run"]),
            Mode::Init {
                config: "layers.yaml".into(),
                force: false,
                dry_run: true
            }
        );
        let Mode::Init { config, force, .. } = mode(&["init", "--force", "--config", "x.yaml"])
        else {
            panic!("init mode");
        };
        assert_eq!(config, PathBuf::from("x.yaml"));
        assert!(force);
    }

    #[test]
    fn fail_fast_flags_conflict() {
        assert!(Cli::try_parse_from(["runner", "--fast-fail", "--no-fail-fast"]).is_err());
    }

    #[test]
    fn background_commands() {
        use BackgroundCommand::*;
        let bg = |c| Mode::Background(c);
        assert_eq!(mode(&["--queue-e2e"]), bg(Queue));
        assert_eq!(mode(&["--queue-e2e", "--use-layers", "e2e"]), bg(Queue));
        assert_eq!(mode(&["--background-e2e"]), bg(Queue));
        assert_eq!(
            mode(&["--background-e2e", "--use-layers", "fast"]).name(),
            "layers",
            "with a selection the foreground runs here"
        );
        assert_eq!(mode(&["--background-status"]), bg(Status));
        assert_eq!(mode(&["--background-results"]), bg(Results(10)));
        assert_eq!(mode(&["--background-results", "3"]), bg(Results(3)));
        assert_eq!(mode(&["--kill-background", "abc"]), bg(Kill("abc".into())));
        assert_eq!(
            mode(&["--background-worker", "id", "--use-layers", "x"]),
            bg(Worker("id".into()))
        );
        assert!(Cli::try_parse_from(["runner", "--background-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["runner", "--background-timeout", "1.5"]).is_ok());
    }

    #[test]
    fn numeric_values_are_bounded() {
        let err = |args: &[&str]| {
            let mut argv = vec!["runner"];
            argv.extend_from_slice(args);
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        };
        let e = err(&["--jobs", "0"]);
        assert!(e.contains("'--jobs <N>'"), "{e}");
        assert!(e.contains("expected an integer from 1 to 100000"), "{e}");
        let e = err(&["--jobs", "4611686018427387904"]);
        assert!(e.contains("expected an integer from 1 to 100000"), "{e}");
        let e = err(&["--jobs=-3"]);
        assert!(e.contains("from 1 to 100000"), "{e}");
        for bad in ["1e300", "525601", "-1", "NaN", "inf"] {
            let e = err(&[&format!("--background-timeout={bad}")]);
            assert!(
                e.contains("at most 525600 minutes (365 days)"),
                "{bad}: {e}"
            );
        }
        let e = err(&["--websocket-linger", "99999999999"]);
        assert!(e.contains("from 0 to 31536000"), "{e}");
        let e = err(&["--background-results", "0"]);
        assert!(e.contains("from 1 to 100000"), "{e}");
        let e = err(&["history", "--slowest", "18446744073709551616"]);
        assert!(e.contains("from 1 to 100000"), "{e}");
        let e = err(&["--use-layers", "a", "--partition", "1/100001"]);
        assert!(e.contains("1 <= K <= N <= 100000"), "{e}");

        let ok = |args: &[&str]| {
            let mut argv = vec!["runner"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap()
        };
        assert_eq!(ok(&["--jobs", "100000"]).jobs, Some(100_000));
        assert_eq!(
            ok(&["--background-timeout", "525600"]).background_timeout,
            Some(525_600.0)
        );
        assert_eq!(ok(&["--websocket-linger", "0"]).websocket_linger, Some(0));
        assert_eq!(
            ok(&["--use-layers", "a", "--partition", "100000/100000"]).partition,
            Some(Partition {
                k: 100_000,
                n: 100_000
            })
        );
    }
}
