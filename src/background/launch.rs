//! Starting a detached worker, and taking background layers out of a foreground plan.
//!
//! The worker is this binary (`std::env::current_exe`) run with the hidden
//! `--background-worker ID`, the options that shape a run (`--config`, `--env`,
//! `--jobs`, `--real-services`, `--fast-fail`/`--no-fail-fast`,
//! `--background-timeout`; its own progress server on a free port and a JUnit
//! report in its directory), in a new session (`setsid` between fork and exec), stdin
//! from `/dev/null`, stdout and stderr appended to `worker.log`, and
//! `RUNNER_BACKGROUND_ID=ID` in its environment. What it runs (layers or categories)
//! is in its `state.json`, written before it starts. Before queueing, finished runs
//! older than `retention_days` are deleted.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::state::{BackgroundRun, Status, Store};
use crate::cli::{Cli, LayerSelection};
use crate::config::Config;
use crate::exit_code;
use crate::plan::{self, Plan, PlanOptions, PlannedLayer};
use crate::report::files;

/// What a background run runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Layers (run without their dependencies outside the set).
    pub layers: Vec<String>,
    /// Or categories (`--background-category`), as in legacy mode.
    pub categories: Vec<String>,
}

/// `--queue-e2e` (or `--background-e2e` without a layer selection): queue a detached
/// run, print its id on stdout and return.
pub fn queue(cli: &Cli) -> i32 {
    let config = match crate::runner::load_config(cli) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let request = match request_for(cli, &config) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("error: {message}");
            return exit_code::USAGE;
        }
    };
    match launch(cli, &config, request) {
        Ok(run) => {
            announce(&run);
            crate::report::out::line(&run.id);
            exit_code::PASSED
        }
        Err(e) => {
            eprintln!("runner: cannot start a background run: {e}");
            exit_code::INFRASTRUCTURE
        }
    }
}

/// What `--queue-e2e` asks for: `--background-category` categories, else the layers
/// named by `--use-layers`, else every background layer. Checked by planning it.
pub fn request_for(cli: &Cli, config: &Config) -> Result<Request, String> {
    let opts = PlanOptions {
        no_dependencies: true,
        ..PlanOptions::default()
    };
    let categories: Vec<String> = cli
        .background_category
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if !categories.is_empty() {
        plan::plan_legacy(config, &categories, &opts).map_err(|e| e.message)?;
        return Ok(Request {
            layers: Vec::new(),
            categories,
        });
    }
    let named: Vec<String> = cli
        .use_layers
        .iter()
        .flatten()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let layers = if named.is_empty() {
        background_layers(config)
    } else {
        named
    };
    if layers.is_empty() {
        return Err(format!(
            "{} has no background layers to queue\n  help: mark slow layers with `background: true` (or list them in `execution.background_layers`), name layers with --use-layers, or categories with --background-category",
            config.source.display()
        ));
    }
    plan::plan_layers(config, &LayerSelection::Names(layers.clone()), &opts)
        .map_err(|e| e.message)?;
    Ok(Request {
        layers,
        categories: Vec::new(),
    })
}

fn background_layers(config: &Config) -> Vec<String> {
    config
        .layers
        .iter()
        .filter(|l| config.is_background(l))
        .map(|l| l.name.clone())
        .collect()
}

/// Records a queued run and starts its worker; returns the run as recorded.
pub fn launch(cli: &Cli, config: &Config, request: Request) -> io::Result<BackgroundRun> {
    let store = Store::new(&config.root);
    let days = config.agents.background_e2e.retention_days;
    let pruned = store.prune(Duration::from_secs(days.saturating_mul(86_400)));
    if pruned > 0 {
        tracing::info!(pruned, "deleted background runs older than {days} days");
    }
    let id = files::new_run_id();
    let mut run = BackgroundRun::queued(&id, &store.dir(&id), &config.source);
    run.environment = cli.environment.clone();
    run.layers = request.layers;
    run.categories = request.categories;
    run.timeout_minutes = cli.background_timeout;
    run.junit = Some(run.dir.join("junit.xml"));
    store.create(&run)?;

    let log = File::options().create(true).append(true).open(&run.log)?;
    let mut cmd = worker_command()?;
    cmd.arg("--config").arg(&config.source);
    if let Some(env) = &cli.environment {
        cmd.arg("--env").arg(env);
    }
    if let Some(jobs) = cli.jobs {
        cmd.arg("--jobs").arg(jobs.to_string());
    }
    if cli.real_services {
        cmd.arg("--real-services");
    }
    if cli.fast_fail {
        cmd.arg("--fast-fail");
    }
    if cli.no_fail_fast {
        cmd.arg("--no-fail-fast");
    }
    if let Some(minutes) = cli.background_timeout {
        cmd.arg("--background-timeout").arg(minutes.to_string());
    }
    // Its own progress server on a free port (`runner watch URL`; the URL lands in
    // run.json and the worker copies it into state.json), and a JUnit report.
    cmd.args(["--websocket-addr", "127.0.0.1:0"]);
    if let Some(token) = &cli.websocket_token {
        cmd.env("RUNNER_WS_TOKEN", token);
    }
    if let Some(junit) = &run.junit {
        cmd.arg("--junit").arg(junit);
    }
    cmd.args(["--progress-mode", "simple", "--background-worker", &id])
        .current_dir(&config.root)
        .env(super::WORKER_ENV, &id)
        .env_remove("RUNNER_CONFIG")
        .env_remove("RUNNER_ENV")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: runs in the child between fork and exec; setsid(2) is async-signal-safe
    // and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = store.update(&id, |r| {
                r.status = Status::Failed;
                r.finished_at = Some(crate::bus::now_rfc3339());
                r.message = Some(format!("cannot start the worker: {e}"));
            });
            return Err(e);
        }
    };
    let pid = child.id();
    let run = store.update(&id, |r| {
        if r.pid.is_none() {
            r.set_worker(pid);
        }
    })?;
    // Reap the worker if it ends while this command still runs (a foreground run);
    // otherwise it is adopted by init when this process exits.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(run)
}

/// This very binary. When its file was replaced since it started (a rebuild, an
/// upgrade), `current_exe` names a deleted path; `/proc/self/exe` still executes the
/// running version.
fn worker_command() -> io::Result<Command> {
    let exe = std::env::current_exe()?;
    if exe.is_file() {
        return Ok(Command::new(exe));
    }
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(exe.file_name().unwrap_or(std::ffi::OsStr::new("runner")));
    Ok(cmd)
}

/// Tells the user where the background run went (stderr: stdout belongs to the run).
pub fn announce(run: &BackgroundRun) {
    eprintln!(
        "runner: background run {} queued ({}); follow it with `runner --background-status`, stop it with `runner --kill-background {}`",
        run.id,
        run.what(),
        run.id
    );
}

/// Applies the background options to a planned run before it starts. Returns the
/// plan to run in this process, `Ok(None)` when nothing is left to run here.
///
/// - In a worker, every layer runs through the BackgroundE2EAgent (lower priority,
///   `background_task_*` events, dependencies among them honoured).
/// - With `--background-e2e`, the background layers of the plan (or, when the plan
///   has none, every background layer of the configuration) go to a detached worker
///   and are taken out of the plan.
pub fn prepare_plan(cli: &Cli, config: &Config, mut plan: Plan) -> Result<Option<Plan>, i32> {
    if cli.background_worker.is_some() {
        let mut layers: Vec<PlannedLayer> = std::mem::take(&mut plan.stages)
            .into_iter()
            .flatten()
            .map(|mut l| {
                l.background = true;
                l
            })
            .collect();
        layers.append(&mut plan.background);
        plan.background = layers;
        return Ok(Some(plan));
    }
    if !cli.background_e2e {
        return Ok(Some(plan));
    }
    let mut names: Vec<String> = plan
        .layers()
        .filter(|l| l.background || config.is_background(&l.layer))
        .map(|l| l.layer.name.clone())
        .collect();
    if names.is_empty() {
        names = background_layers(config);
    }
    if names.is_empty() {
        eprintln!(
            "error: --background-e2e: {} has no background layers\n  help: mark slow layers with `background: true` or list them in `execution.background_layers`",
            config.source.display()
        );
        return Err(exit_code::USAGE);
    }
    let request = Request {
        layers: names.clone(),
        categories: Vec::new(),
    };
    let run = match launch(cli, config, request) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("runner: cannot start a background run: {e}");
            return Err(exit_code::INFRASTRUCTURE);
        }
    };
    announce(&run);
    plan.background.clear();
    for stage in &mut plan.stages {
        stage.retain(|l| !names.contains(&l.layer.name));
    }
    plan.stages.retain(|s| !s.is_empty());
    if plan.stages.is_empty() {
        // Nothing runs here: the id is this command's whole output, as with --queue-e2e.
        crate::report::out::line(&run.id);
        return Ok(None);
    }
    Ok(Some(plan))
}
