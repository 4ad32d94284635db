//! Command-line interface: clap definitions and mode detection.
//!
//! [`Cli`] is the raw parse; [`Cli::mode`] is a pure function from the parsed
//! arguments to the [`Mode`] the controller runs, in the priority order of the
//! design: `--master-orchestration`, `--orchestration-status`, `--use-layers` with
//! `--websocket-thread-id` (streamed), `--use-layers` / `--execution-mode`, then
//! legacy categories. `--show-layers` and subcommands are informational and win.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    #[arg(long = "use-layers", visible_alias = "layers", value_name = "LAYER,...", num_args = 0..=1, value_delimiter = ',', default_missing_value = "")]
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

    /// With --orchestration-status or --show-layers: machine-readable JSON.
    #[arg(long)]
    pub json: bool,

    /// Show layers, categories, modes, dependencies, services and estimated durations, then exit.
    #[arg(long)]
    pub show_layers: bool,

    /// Tag every event with this thread id (streamed orchestration with --use-layers).
    #[arg(long, value_name = "ID")]
    pub websocket_thread_id: Option<String>,

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
    #[arg(short = 'j', long, value_name = "N")]
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

    /// Run categories that require real services.
    #[arg(long)]
    pub real_services: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
    /// `--show-layers`.
    ShowLayers,
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
}

impl Mode {
    /// The mode's name as reported in `run_started`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Completions(_) => "completions",
            Mode::ShowLayers => "show_layers",
            Mode::OrchestrationStatus => "status",
            Mode::Layers { master: true, .. } => "master",
            Mode::Layers {
                thread_id: Some(_), ..
            } => "streamed",
            Mode::Layers { .. } => "layers",
            Mode::Legacy { .. } => "legacy",
        }
    }
}

impl Cli {
    /// Mode detection, in the design's priority order. Pure.
    pub fn mode(&self) -> Mode {
        if let Some(Command::Completions { shell }) = &self.command {
            return Mode::Completions(*shell);
        }
        if self.show_layers {
            return Mode::ShowLayers;
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
        let named = self.use_layers.as_ref().map(|names| {
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
    fn fail_fast_flags_conflict() {
        assert!(Cli::try_parse_from(["runner", "--fast-fail", "--no-fail-fast"]).is_err());
    }
}
