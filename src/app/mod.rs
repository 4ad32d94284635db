//! The commands: each mode of the command line to the code that serves it. The only
//! layer that depends on everything.
//!
//! - runs (layers, legacy categories): [`crate::runner::run`], whose dispatcher owns them,
//!   with background layers handed to a detached worker ([`crate::background`]);
//! - [`status`]: `--show-layers`, `--orchestration-status`;
//! - [`list`]: `--list`, the units a run would execute;
//! - [`init`]: `runner init`, a first `layers.yaml` from what the project holds;
//! - [`schema`]: `runner schema`;
//! - background runs, `runner history`, `merge-junit`, `runner watch`, completions:
//!   their own modules.

pub mod init;
pub mod list;
pub mod schema;
pub mod status;

use std::sync::Arc;

use crate::cli::{Cli, Mode};
use crate::error::Error;
use crate::runner::RunRequest;

/// Run the command line; returns the process exit code, or the error `main` prints.
pub async fn run(mut cli: Cli) -> Result<i32, Error> {
    cli.apply_harness_flags();
    let mode = cli.mode();
    Ok(match &mode {
        Mode::Completions(shell) => completions(*shell),
        Mode::Schema => schema::print(),
        Mode::MergeJunit { out, inputs } => crate::report::junit::merge_command(out, inputs),
        Mode::ShowLayers => status::show_layers(&load(&cli)?, &cli),
        Mode::PrintConfig => print_config(&load(&cli)?),
        Mode::OrchestrationStatus => status::orchestration_status(&cli, load(&cli).ok()).await,
        Mode::Layers { .. } | Mode::Legacy { .. } if cli.list => list::run(&cli, &mode).await?,
        Mode::Layers { .. } | Mode::Legacy { .. } => {
            let cfg = load(&cli)?;
            {
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
                crate::runner::run(&cli, request, Arc::new(cfg)).await?
            }
        }
        Mode::Background(command) => {
            let command = command.clone();
            crate::background::run(cli, command).await
        }
        Mode::Watch { url, token } => crate::server::watch::run(url.clone(), token.clone()).await,
        Mode::History { root, request } => crate::store::command::run(root, *request),
        Mode::Init {
            config,
            force,
            dry_run,
        } => init::run(config, *force, *dry_run)?,
    })
}

pub use crate::runner::{load_config as load, slots};

/// `--print-config`: the native `layers.yaml` equivalent on stdout.
fn print_config(config: &crate::config::Config) -> i32 {
    match crate::config::native_yaml(config) {
        Ok(text) => crate::report::out::listing(|| {
            crate::report::out::write_bytes(text.as_bytes()).map(|()| crate::exit_code::PASSED)
        }),
        Err(e) => {
            Error::infrastructure(format!("runner: cannot print the configuration: {e}")).report()
        }
    }
}

/// `runner completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> i32 {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "runner", &mut script);
    crate::report::out::listing(|| {
        crate::report::out::write_bytes(&script).map(|()| crate::exit_code::PASSED)
    })
}
