//! Command dispatch: each mode of the command line to the code that serves it.
//!
//! Runs (layers, legacy categories) go to [`crate::runner::run`], whose dispatcher
//! owns them; every other command is served here or by its module.

use std::sync::Arc;

use crate::cli::{Cli, Mode};
use crate::runner::RunRequest;

/// Run the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let mode = cli.mode();
    match &mode {
        Mode::Completions(shell) => crate::report::out::completions(*shell),
        Mode::MergeJunit { out, inputs } => crate::report::junit::merge_command(out, inputs),
        Mode::ShowLayers => match load(&cli) {
            Ok(cfg) => crate::report::status::show_layers(&cfg, &cli),
            Err(code) => code,
        },
        Mode::OrchestrationStatus => {
            crate::report::status::orchestration_status(&cli, load(&cli).ok()).await
        }
        Mode::Layers { .. } | Mode::Legacy { .. } => match load(&cli) {
            Ok(cfg) => {
                let (run_id, run_dir) = crate::background::run_location(&cli, &cfg.root);
                let request = RunRequest {
                    mode,
                    no_dependencies: cli.no_dependencies,
                    global_timeout: None,
                    run_id,
                    run_dir,
                    // Background layers may go to a detached worker (--background-e2e).
                    plan_hook: Some(crate::background::launch::prepare_plan),
                };
                crate::runner::run(&cli, request, Arc::new(cfg)).await
            }
            Err(code) => code,
        },
        Mode::Background(command) => {
            let command = command.clone();
            crate::background::run(cli, command).await
        }
        Mode::Watch { url, token } => crate::server::watch::run(url.clone(), token.clone()).await,
        Mode::History { root, request } => crate::store::command::run(root, *request),
    }
}

pub use crate::runner::{load_config as load, slots};
