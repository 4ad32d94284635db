//! Command dispatch: each mode of the command line to the code that serves it.
//!
//! Runs (layers, legacy categories) go to [`crate::runner::run`], whose dispatcher
//! owns them; every other command is served here or by its module.

use std::sync::Arc;

use crate::cli::{Cli, Mode};
use crate::config::{self, Config, LoadOptions};
use crate::exit_code;
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
                let request = RunRequest::from_cli(&cli, mode);
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

/// Load and validate the configuration, printing the error (exit code 2) on failure.
pub fn load(cli: &Cli) -> Result<Config, i32> {
    config::load(&LoadOptions {
        path: cli.config.clone(),
        environment: cli.environment.clone(),
    })
    .map_err(|e| {
        eprintln!("{e}");
        exit_code::USAGE
    })
}

pub use crate::runner::slots;
