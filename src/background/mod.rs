//! Detached background runs: slow layers off the developer's critical path.
//!
//! `--background-e2e` (with a layer selection) and `--queue-e2e` hand background
//! layers, or `--background-category` categories, to a **worker**: the `runner`
//! binary itself re-executed with the hidden `--background-worker ID`, in a new
//! session (so in its own process group, without a controlling terminal), stdin from
//! `/dev/null`, stdout and stderr to `worker.log`. The command prints the id and
//! returns; the worker waits for a slot (`max_concurrent` in
//! `agents/background_e2e.yaml`), runs the layers through the ordinary controller at
//! lower priority (`nice`), and records how it ended. Later commands inspect and
//! cancel it: `--background-status`, `--background-results [N]`,
//! `--kill-background ID`, and `--orchestration-status`.
//!
//! # Layout
//!
//! - [`state`]: the store under `.runner/background/`, `state.json`, slots, dead
//!   worker detection, retention.
//! - [`launch`]: starting a worker (and taking background layers out of a
//!   foreground plan).
//! - [`worker`]: the worker's life: queue, slot, run, final state.
//! - [`commands`]: `--background-status`, `--background-results`, `--kill-background`.
//! - `sweep`: finding and killing whatever is left of a run (its marker).

pub mod commands;
pub mod launch;
pub mod state;
pub(crate) mod sweep;
pub mod worker;

use std::path::{Path, PathBuf};

pub use state::{BackgroundRun, Status, Store};

use crate::cli::{BackgroundCommand, Cli};

/// Set in the worker's environment (and so in every process it starts) to its run
/// id: how `--kill-background` finds everything that belongs to a run.
pub const WORKER_ENV: &str = "RUNNER_BACKGROUND_ID";

/// Runs a background command; returns the exit code.
pub async fn run(cli: Cli, command: BackgroundCommand) -> i32 {
    match command {
        BackgroundCommand::Worker(id) => worker::run(cli, id).await,
        BackgroundCommand::Queue => launch::queue(&cli),
        BackgroundCommand::Status => commands::status(&cli),
        BackgroundCommand::Results(n) => commands::results(&cli, n),
        BackgroundCommand::Kill(id) => commands::kill(&cli, &id).await,
    }
}

/// The run id and run directory of a run: a worker's are its background id and
/// directory; anyone else's a new id under `.runner/runs/`.
pub fn run_location(cli: &Cli, root: &Path) -> (String, PathBuf) {
    match &cli.background_worker {
        Some(id) => (id.clone(), Store::new(root).dir(id)),
        None => {
            let id = crate::report::files::new_run_id();
            let dir = crate::report::files::run_dir(root, &id);
            (id, dir)
        }
    }
}

/// The project root for commands that work without a valid configuration.
pub(crate) fn project_root(cli: &Cli) -> PathBuf {
    let config = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
    config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
