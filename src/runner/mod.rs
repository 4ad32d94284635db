//! A run, from request to exit code: plan it, start its outputs and agents, hand it to
//! the [`dispatcher`], write its reports from the final fold.
//!
//! - [`RunRequest`]: what to run, typed (the command line's run flags, or a detached
//!   background worker's request): nothing here mutates the parsed command line.
//! - [`signals`]: the injectable interrupt source, installed before planning so that an
//!   interrupt during discovery or a build stops it too.
//! - [`dispatcher`]: the master controller's loop, the one owner of the run's decisions.
//!
//! Phases and interrupts: planning (discovery, builds) races the interrupt source: on
//! an interrupt the discovery process groups are terminated and the run goes on with an
//! empty plan that is already stopping, so its reports are written and it exits 130.
//! During the run the dispatcher handles interrupts. Once the verdict is known it
//! stands: an interrupt while reports are written lets them finish, a second one exits
//! at once.

pub mod dispatcher;
pub mod select;
pub mod signals;
pub mod stress;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use self::dispatcher::{Dispatch, HealthSink};
use self::signals::SignalSource;
use crate::agents::layer_executor::RunContext;
use crate::agents::layer_worker::{self, WorkerSettings};
use crate::agents::resource_manager::{self, ResourceSettings};
use crate::agents::test_orchestrator::{self, PlanRequest};
use crate::agents::{AgentHandle, Health, names, progress_streamer};
use crate::bus::EventBus;
use crate::cli::{Cli, Mode};
use crate::config::agents::Manifest;
use crate::config::{Config, FailFast};
use crate::error::Error;
use crate::event::{EventKind, PlannedUnit, StopCause};
use crate::exit_code;
use crate::plan::{Plan, PlanOptions};
use crate::report::{console, files};

/// What the caller does with the plan before it runs (hand background layers to a
/// detached worker, or run everything as background in a worker): the plan to run,
/// `None` when nothing is left to run here, or an exit code.
pub type PlanHook = fn(&Cli, &Config, Plan) -> Result<Option<Plan>, i32>;

/// What to run: a layered or legacy selection and the options that shape the plan.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Layers (with the streamed/master variants) or legacy categories.
    pub mode: Mode,
    /// Do not add the layers or categories the selection depends on.
    pub no_dependencies: bool,
    /// Overrides `execution.global_timeout_minutes` (a background run's timeout).
    pub global_timeout: Option<Duration>,
    /// The run's id and directory.
    pub run_id: String,
    /// `.runner/runs/<run_id>/` (or a background run's directory).
    pub run_dir: PathBuf,
    /// Applied to the plan before it runs.
    pub plan_hook: Option<PlanHook>,
}

/// Load and validate the configuration the command line names (a usage error, exit 2,
/// with file, line and column, when it is invalid).
pub fn load_config(cli: &Cli) -> Result<Config, Error> {
    Ok(crate::config::load(&crate::config::LoadOptions {
        path: cli.config.clone(),
        environment: cli.environment.clone(),
    })?)
}

/// The options that shape a plan, from the command line (the same for a run and `--list`).
pub fn plan_options(
    cli: &Cli,
    config: &Config,
    no_dependencies: bool,
    filter: Option<Arc<crate::filter::Filter>>,
) -> PlanOptions {
    PlanOptions {
        no_dependencies,
        resume_from: cli.resume_from.clone(),
        fail_fast_override: if cli.fast_fail {
            Some(FailFast::Immediate)
        } else if cli.no_fail_fast {
            Some(FailFast::Disabled)
        } else {
            None
        },
        real_services: cli.real_services || config.execution.real_services,
        real_llm: cli.real_llm,
        allow_missing_commands: false,
        max_parallel_layers: cli.max_parallel_layers,
        run_ignored: cli.run_ignored,
        skip_test_listing: false,
        filter,
    }
}

/// Global slots: `--jobs`, else `execution.max_parallel_tests`, else the CPU count;
/// capped by `max_cpu_percent` of the cores.
pub fn slots(cli_jobs: Option<usize>, config: &Config) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut slots = cli_jobs
        .or(config.execution.max_parallel_tests)
        .unwrap_or(cores);
    if let Some(pct) = config.execution.max_cpu_percent {
        slots = slots.min(resource_manager::cpu_slots(cores, pct));
    }
    slots.max(1)
}

/// One run (layers or legacy categories) from plan to summary; returns its exit code,
/// or the error that kept it from running (nothing ran, nothing is reported as run).
pub async fn run(cli: &Cli, request: RunRequest, config: Arc<Config>) -> Result<i32, Error> {
    let started = Instant::now();
    // First, so that no phase runs without an owner for Ctrl-C and SIGTERM.
    let mut signals = match SignalSource::os() {
        Ok(s) => s,
        Err(e) => {
            return Err(Error::infrastructure(format!(
                "runner: cannot install signal handlers: {e}"
            )));
        }
    };
    let mode = request.mode.clone();
    let streamed = matches!(
        &mode,
        Mode::Layers {
            thread_id: Some(_),
            ..
        }
    );
    let progress_server = match crate::server::ServerSettings::resolve(cli, &config, streamed) {
        Ok(settings) => settings,
        Err(e) => return Err(Error::usage(format!("error: {e}"))),
    };
    let filter = select::filter_of(cli)?;
    let _log_guard = crate::logging::init(&config.root);
    // Descriptors for the units, with the progress server's share bounded within them.
    crate::server::listener::raise_descriptor_limit();
    if let Err(e) = crate::exec::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let slots = slots(cli.jobs, &config);
    let opts = plan_options(cli, &config, request.no_dependencies, filter.clone());

    let (orchestrator, orchestrator_agent) = test_orchestrator::start(Arc::clone(&config), opts);
    let plan_request = match &mode {
        Mode::Layers { selection, .. } => PlanRequest::Layers(selection.clone()),
        Mode::Legacy { categories } => PlanRequest::Legacy(categories.clone()),
        _ => unreachable!("runner::run is called for runs only"),
    };
    // Planning may build and list Rust tests: an interrupt stops the builds.
    let planned = {
        let planning = orchestrator.plan(plan_request);
        tokio::pin!(planning);
        tokio::select! {
            r = &mut planning => Some(r),
            _ = signals.next() => {
                eprintln!("runner: interrupted while planning; stopping discovery");
                tokio::task::spawn_blocking(|| crate::exec::terminate_tracked_groups(Duration::from_secs(2)))
                    .await
                    .ok();
                // Discovery ends once its processes are gone; its error is not the run's.
                let _ = tokio::time::timeout(Duration::from_secs(5), planning).await;
                None
            }
        }
    };
    let interrupted_while_planning = planned.is_none();
    let mut plan = match planned {
        Some(Ok(plan)) => plan,
        Some(Err(e)) => {
            orchestrator_agent.stop().await;
            return Err(e.into());
        }
        None => Plan {
            stages: Vec::new(),
            background: Vec::new(),
            resumed_past: Vec::new(),
            legacy: matches!(mode, Mode::Legacy { .. }),
            warnings: Vec::new(),
            partition: None,
        },
    };
    if !interrupted_while_planning {
        // Background layers go to a detached worker (--background-e2e), or, in a worker,
        // all run as background.
        let hook = request.plan_hook.unwrap_or(|_, _, plan| Ok(Some(plan)));
        plan = match hook(cli, &config, plan) {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                orchestrator_agent.stop().await;
                return Ok(exit_code::PASSED);
            }
            Err(code) => {
                orchestrator_agent.stop().await;
                return Ok(code);
            }
        };
    }
    // Runs whose runner died: their leftovers ended, their results recorded first.
    crate::watchdog::dead_runs::sweep(&config.root).await;
    // -E, --partition, --rerun-failed; history read once for them and for ordering.
    let history = if interrupted_while_planning {
        plan = apply_partition(cli, plan);
        let history = crate::store::load(&config.root, plan.units().map(|u| u.id.as_str()));
        plan.warnings.extend(history.warning.clone());
        history
    } else {
        let selected = select::select(cli, &config, plan, filter.as_deref());
        if let Some(why) = selected.nothing_left {
            eprintln!("runner: {why}");
            crate::report::out::line("0 passed, 0 failed");
            orchestrator_agent.stop().await;
            return Ok(exit_code::PASSED);
        }
        plan = selected.plan;
        selected.history
    };
    // Services nobody can start must be up before anything runs (exit 3 otherwise).
    if !interrupted_while_planning {
        let needs: Vec<(&str, &[String])> = plan
            .layers()
            .filter(|l| l.units().next().is_some())
            .map(|l| (l.layer.name.as_str(), l.layer.required_services.as_slice()))
            .collect();
        if let Err(message) = crate::services::preflight(&config, &needs).await {
            orchestrator_agent.stop().await;
            return Err(Error::infrastructure(message));
        }
    }
    let mut hints = history.hints(cli.failed_first);
    crate::plan::apply_estimates(&plan, &mut hints);
    let hints = Arc::new(hints);
    crate::plan::order_units(&mut plan, &hints);
    if plan.legacy {
        let why = if config.has_layers {
            "no layer requested"
        } else {
            "the configuration defines no layers"
        };
        eprintln!("runner: {why}; running in legacy category mode");
    }

    let (run_id, run_dir) = (request.run_id.clone(), request.run_dir.clone());
    let thread_id = match &mode {
        Mode::Layers { thread_id, .. } => thread_id.clone(),
        _ => None,
    };
    let bus = EventBus::new(&run_id, thread_id.as_deref());
    let stdout_tty = std::io::stdout().is_terminal();
    let colour = stdout_tty && std::env::var_os("NO_COLOR").is_none();
    let ci = std::env::var_os("CI").is_some();
    let mut event_files = vec![run_dir.join("events.jsonl")];
    event_files.extend(cli.events.clone());
    let (streamer, streamer_agent) = progress_streamer::start(
        &bus,
        progress_streamer::StreamerSettings {
            mode: console::resolve_mode(cli.progress_mode, stdout_tty, ci),
            colour,
            event_files,
            server: progress_server,
        },
    );
    let external = crate::agents::external::start(&bus, &config.agents.external, &config.root);

    let info = files::RunInfo {
        run_id: run_id.clone(),
        pid: std::process::id(),
        start_time: crate::exec::procfs::read_stat(std::process::id()).map(|s| s.start_time),
        mode: mode.name().to_string(),
        config: config.source.display().to_string(),
        started_at: crate::bus::now_rfc3339(),
        progress_url: streamer.progress_url(),
    };
    if let Err(e) = files::write_atomic(
        &run_dir.join("run.json"),
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    ) {
        return Err(Error::infrastructure(format!(
            "runner: cannot write to {}: {e}",
            run_dir.display()
        )));
    }
    // Ends the units if this process dies without ending them; disarmed on drop.
    let _watchdog = crate::watchdog::start(&run_id, &run_dir, &config.root);

    bus.emit(
        names::CONTROLLER,
        EventKind::RunStarted {
            mode: mode.name().to_string(),
            environment: config.environment.clone(),
            config: config.source.display().to_string(),
            layers: plan.layers().map(|l| l.layer.name.clone()).collect(),
            slots,
            units: planned_units(&plan, &hints),
            pid: std::process::id(),
        },
    );
    if let Some(shard) = plan.partition.clone() {
        bus.emit(names::CONTROLLER, EventKind::Partition(shard));
    }
    for w in &plan.warnings {
        bus.emit(
            names::ORCHESTRATOR,
            EventKind::Warning {
                message: w.clone(),
                unit: None,
            },
        );
    }
    if !plan.resumed_past.is_empty() {
        bus.emit(
            names::ORCHESTRATOR,
            EventKind::Warning {
                message: format!(
                    "--resume-from: not running {}",
                    plan.resumed_past.join(", ")
                ),
                unit: None,
            },
        );
    }

    // Started after `run_started`, so its samples never precede it.
    let mut resource_settings =
        ResourceSettings::from_config(&config, slots, plan.layers().map(|l| &l.layer));
    if cli.background_worker.is_some() {
        // A detached background run has no foreground to keep a slot free for.
        resource_settings.background_slots = None;
    }
    let (resources, resource_agent) = resource_manager::start(resource_settings, &bus);
    let executor_health = Health::new(names::EXECUTOR);
    let (decisions_tx, decisions) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(RunContext {
        bus: bus.clone(),
        config: Arc::clone(&config),
        resources,
        run_dir: run_dir.clone(),
        run_token: CancellationToken::new(),
        kill_now: CancellationToken::new(),
        decisions: decisions_tx,
        launcher: Arc::new(crate::exec::Processes),
        health: Arc::clone(&executor_health),
        hints,
        stress_deadline: cli.stress_duration.map(|d| tokio::time::Instant::now() + d),
    });
    if interrupted_while_planning {
        ctx.stop(StopCause::Interrupted);
    }
    let (executor, executor_agent) = layer_worker::start(
        Arc::clone(&ctx),
        WorkerSettings {
            name: names::EXECUTOR,
            nice: None,
            heartbeat: config.agents.layer_executor.common().heartbeat(),
            health: Some(executor_health),
        },
    );
    let nice = config.agents.background_e2e.nice;
    let (background_worker, background_agent) = layer_worker::start(
        Arc::clone(&ctx),
        WorkerSettings {
            name: names::BACKGROUND,
            nice: (nice != 0).then_some(nice),
            heartbeat: config.agents.background_e2e.common().heartbeat(),
            health: None,
        },
    );
    let agents: Vec<AgentHandle> = vec![
        resource_agent,
        streamer_agent,
        orchestrator_agent,
        executor_agent,
        background_agent,
    ];
    let healths: Vec<Arc<Health>> = agents.iter().map(|a| Arc::clone(&a.health)).collect();
    for h in &healths {
        h.set_stale_after(stale_after(&config, h.name()));
    }
    let health_sink: HealthSink = {
        let run_dir = run_dir.clone();
        Box::new(move |reports| {
            if let Err(e) = crate::report::agents_file::write_agent_health(&run_dir, reports) {
                tracing::warn!("cannot persist agents' health: {e}");
            }
        })
    };
    let Plan {
        stages, background, ..
    } = plan;
    let services = crate::services::Services::new(Arc::clone(&ctx));
    let verdict = dispatcher::dispatch(
        Dispatch {
            ctx: Arc::clone(&ctx),
            stages,
            background,
            services,
            executor,
            background_worker,
            decisions,
            global_timeout: request.global_timeout.or(config.execution.global_timeout),
            agents: healths,
            health_sink: Some(health_sink),
        },
        &mut signals,
    )
    .await;
    if let Some(why) = &verdict.reason
        && verdict.exit_code == exit_code::INFRASTRUCTURE
    {
        eprintln!("runner: {why}");
    }

    // Reports: the run is over and its verdict stands. A first interrupt from here on
    // lets the reports finish (and ends a `--websocket-linger`); a second exits at once.
    let late = tokio::spawn(async move {
        signals.next().await;
        signals.next().await;
        std::process::exit(exit_code::INTERRUPTED);
    });
    if crate::report::github::enabled() {
        // Before `run_finished`, so the closing line stays the last line.
        let json = cli.progress_mode == Some(crate::cli::ProgressMode::Json);
        crate::report::github::print_annotations(&bus.snapshot(), &config, json);
    }
    bus.emit(
        names::CONTROLLER,
        EventKind::RunFinished {
            outcome: verdict.outcome,
            exit_code: verdict.exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
        },
    );
    bus.close();
    let progress_server = streamer.finish().await;
    for agent in external {
        let _ = agent.await;
    }
    let summary = bus.final_state(|s| s.runner_cost = crate::event::RunnerCost::measure());
    if let Err(e) = files::write_json_atomic(&run_dir.join("summary.json"), &*summary) {
        eprintln!("runner: cannot write summary: {e}");
    }
    if let Some(path) = &cli.junit
        && let Err(e) = crate::report::junit::write(path, &summary)
    {
        eprintln!("runner: cannot write JUnit report {}: {e}", path.display());
    }
    if let Some(path) = &cli.html
        && let Err(e) = crate::report::html::write(path, &summary, &run_dir.join("events.jsonl"))
    {
        eprintln!("runner: cannot write HTML report {}: {e}", path.display());
    }
    if crate::report::github::enabled()
        && let Err(e) = crate::report::github::append_step_summary(&summary)
    {
        eprintln!("runner: cannot append to $GITHUB_STEP_SUMMARY: {e}");
    }
    // History last: a slow or locked database never delays the run's own reports.
    // A store that could not be read at the start was reported then (a warning: the run
    // did not depend on it); one that was readable and now fails loses this run's
    // results: that is the run's failure (exit 3), and the summary says so.
    let root = config.root.clone();
    let store_was_readable = history.warning.is_none();
    let stress = stress::iterations(cli);
    if let Some(count) = stress {
        for line in stress::report(&summary, count) {
            eprintln!("{line}");
        }
    }
    let saved = {
        let summary = std::sync::Arc::clone(&summary);
        tokio::task::spawn_blocking(move || match stress {
            // Iterations are not units of the project.
            Some(_) => Ok(()),
            None => crate::store::save(&root, &summary).map(|_| ()),
        })
        .await
    };
    let history_error = match saved {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(format!("the history task failed: {e}")),
    };
    let mut exit = verdict.exit_code;
    if let Some(e) = history_error {
        eprintln!("runner: history: cannot record this run: {e}");
        if store_was_readable {
            exit = record_late_fault(&run_dir, (*summary).clone(), "history", &e);
        }
    }
    // Old run directories go once this run's own are written.
    let pruned = crate::store::prune::prune_runs(
        &config.root,
        config.execution.keep_runs,
        config.execution.runs_max_bytes,
    );
    if !pruned.deleted.is_empty() {
        tracing::info!(
            runs = pruned.deleted.len(),
            freed_bytes = pruned.freed_bytes,
            "pruned old run directories"
        );
    }
    if let Some(server) = progress_server {
        server.finish().await;
    }
    for agent in agents {
        agent.stop().await;
    }
    // Nothing the run started outlives it, hidden daemons included.
    crate::exec::sweep_adopted(crate::exec::LEAK_GRACE).await;
    log_own_usage();
    late.abort();
    Ok(exit)
}

/// A fault found after `run_finished` (the history could not be written): recorded in
/// the summary, which is rewritten with the verdict that follows (exit 3), so that no
/// report of the run stays green. Returns that exit code.
fn record_late_fault(
    run_dir: &std::path::Path,
    mut summary: crate::event::RunState,
    task: &str,
    message: &str,
) -> i32 {
    summary.record_internal_error(task, message, None);
    let verdict = summary.verdict();
    summary.outcome = Some(verdict.outcome);
    summary.exit_code = Some(verdict.exit_code);
    if let Err(e) = files::write_json_atomic(&run_dir.join("summary.json"), &summary) {
        eprintln!("runner: cannot write summary: {e}");
    }
    verdict.exit_code
}

/// Every unit of `plan` as `run_started` announces it, with its expected duration.
pub(crate) fn planned_units(plan: &Plan, hints: &crate::plan::Hints) -> Vec<PlannedUnit> {
    plan.units()
        .map(|u| PlannedUnit {
            id: u.id.clone(),
            layer: u.layer.to_string(),
            category: u.category.to_string(),
            name: u.name.clone(),
            expected_ms: hints.expected(&u.id).map(|d| d.as_millis() as u64),
        })
        .collect()
}

/// Log the runner's own CPU time and peak memory (children excluded): the figure the
/// overhead benchmarks read.
fn log_own_usage() {
    if let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let ms =
            |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
        tracing::info!(
            user_ms = ms(u.user_time()),
            system_ms = ms(u.system_time()),
            max_rss_kb = u.max_rss(),
            "runner resource usage"
        );
    }
}

/// `--partition K/N`: keep this shard's units, balanced by `--durations-from` when given
/// (a JUnit report, or a history database: every shard must read the same file; an
/// unreadable file is a warning: the shards are then balanced by count). Applied before
/// `--rerun-failed`, which reads what earlier shards just recorded: the assignment
/// depends on the whole plan and the durations only, then each shard keeps its failures.
pub(crate) fn apply_partition(cli: &Cli, mut plan: Plan) -> Plan {
    let Some(p) = cli.partition else {
        return plan;
    };
    let mut durations = std::collections::HashMap::new();
    if let Some(path) = &cli.durations_from {
        let read = if crate::store::is_database(path) {
            crate::store::durations_from(path).map_err(|e| e.to_string())
        } else {
            crate::ingest::junit::durations_from(path)
        };
        match read {
            Ok(d) => durations = d,
            Err(e) => plan.warnings.push(format!(
                "--durations-from: cannot read {e}; shards are balanced by count"
            )),
        }
    }
    crate::plan::partition(plan, p.k, p.n, &durations)
}

/// The `stale_after_ms` of agent `name`'s manifest.
fn stale_after(config: &Config, name: &str) -> Duration {
    let a = &config.agents;
    let common = match name {
        names::ORCHESTRATOR => a.test_orchestrator.common(),
        names::EXECUTOR => a.layer_executor.common(),
        names::BACKGROUND => a.background_e2e.common(),
        names::STREAMER => a.progress_streamer.common(),
        names::RESOURCES => a.resource_manager.common(),
        _ => a.layer_executor.common(),
    };
    common.stale_after()
}
