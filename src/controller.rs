//! MasterController: mode dispatch, agent lifecycle, health supervision, shutdown.
//!
//! A run goes: load the configuration, start the resource manager and the
//! orchestrator, plan, start the streamer, announce the plan (`run_started`), run
//! the foreground stages in order while the background agent runs background
//! layers alongside, then fold the outcome into an exit code, close the bus, let
//! the outputs drain, write `summary.json` atomically and stop every agent.
//! Ctrl-C and SIGTERM stop admission and cancel every unit (a second one kills at
//! once); the partial summary is still written and the exit code is 130.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use is_terminal::IsTerminal;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agents::layer_executor::{LayerResult, RunContext, StopCause};
use crate::agents::resource_manager::{self, ResourceSettings};
use crate::agents::test_orchestrator::{self, PlanRequest};
use crate::agents::{
    AgentHandle, Health, background_e2e, names, progress_streamer, spawn_heartbeat,
};
use crate::bus::EventBus;
use crate::cli::{Cli, Mode};
use crate::config::{self, Config, FailFast, LoadOptions};
use crate::event::{EventKind, HealthStatus, LayerOutcome, PlannedUnit, RunOutcome};
use crate::exit_code;
use crate::plan::{Plan, PlanOptions, PlannedLayer};
use crate::report::{console, files};

/// Run the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let mode = cli.mode();
    match &mode {
        Mode::Completions(shell) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "runner", &mut std::io::stdout());
            exit_code::PASSED
        }
        Mode::MergeJunit { out, inputs } => crate::report::junit::merge_command(out, inputs),
        Mode::ShowLayers => match load(&cli) {
            Ok(cfg) => crate::report::status::show_layers(&cfg, &cli),
            Err(code) => code,
        },
        Mode::OrchestrationStatus => {
            crate::report::status::orchestration_status(&cli, load(&cli).ok()).await
        }
        Mode::Layers { .. } | Mode::Legacy { .. } => match load(&cli) {
            Ok(cfg) => execute(cli, mode, Arc::new(cfg)).await,
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

/// One run (layers or legacy categories) from plan to summary; returns its exit code.
pub(crate) async fn execute(cli: Cli, mode: Mode, config: Arc<Config>) -> i32 {
    let started = Instant::now();
    let streamed = matches!(
        &mode,
        Mode::Layers {
            thread_id: Some(_),
            ..
        }
    );
    let progress_server = match crate::server::ServerSettings::resolve(&cli, &config, streamed) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
    };
    let _log_guard = crate::logging::init(&config.root);
    if let Err(e) = crate::exec::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let slots = slots(cli.jobs, &config);
    let opts = PlanOptions {
        no_dependencies: cli.no_dependencies,
        resume_from: cli.resume_from.clone(),
        fail_fast_override: if cli.fast_fail {
            Some(FailFast::Immediate)
        } else if cli.no_fail_fast {
            Some(FailFast::Disabled)
        } else {
            None
        },
        real_services: cli.real_services || config.execution.real_services,
        run_ignored: cli.run_ignored,
        skip_test_listing: false,
    };

    let (orchestrator, orchestrator_agent) = test_orchestrator::start(Arc::clone(&config), opts);
    let request = match &mode {
        Mode::Layers { selection, .. } => PlanRequest::Layers(selection.clone()),
        Mode::Legacy { categories } => PlanRequest::Legacy(categories.clone()),
        _ => unreachable!("execute is called for runs only"),
    };
    let plan = match orchestrator.plan(request).await {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {}", e.message);
            orchestrator_agent.stop().await;
            return e.exit_code();
        }
    };
    // Background layers go to a detached worker (--background-e2e), or, in a worker, all run as background.
    let plan = match crate::background::launch::prepare_plan(&cli, &config, plan) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            orchestrator_agent.stop().await;
            return exit_code::PASSED;
        }
        Err(code) => {
            orchestrator_agent.stop().await;
            return code;
        }
    };
    // History: --rerun-failed, longest-first order, memory estimates, ETAs.
    let history = crate::store::load(&config.root, plan.units().map(|u| u.id.as_str()));
    let mut plan = plan;
    plan.warnings.extend(history.warning.clone());
    if cli.rerun_failed {
        match crate::store::rerun_failed(&mut plan, &history) {
            crate::store::Rerun::NothingLeft { of } => {
                eprintln!(
                    "runner: --rerun-failed: none of the {of} selected units failed or was left unfinished last time; nothing to run"
                );
                println!("0 passed, 0 failed");
                orchestrator_agent.stop().await;
                return exit_code::PASSED;
            }
            crate::store::Rerun::Unknown => plan.warnings.push(
                "--rerun-failed: history knows none of the selected units; running them all".into(),
            ),
            crate::store::Rerun::Selected { kept, of } => plan.warnings.push(format!(
                "--rerun-failed: running {kept} of {of} units (failed or unfinished last time)"
            )),
        }
    }
    let mut plan = apply_partition(&cli, plan);
    let hints = Arc::new(history.hints(cli.failed_first));
    crate::plan::order_units(&mut plan, &hints);
    if plan.legacy {
        let why = if config.has_layers {
            "no layer requested"
        } else {
            "the configuration defines no layers"
        };
        eprintln!("runner: {why}; running in legacy category mode");
    }

    let (run_id, run_dir) = crate::background::run_location(&cli, &config.root);
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
    let executor_health = Health::new(names::EXECUTOR);
    let executor_shutdown = CancellationToken::new();
    let executor_agent = AgentHandle {
        health: Arc::clone(&executor_health),
        task: spawn_heartbeat(
            Arc::clone(&executor_health),
            executor_shutdown.clone(),
            crate::config::agents::Manifest::common(&config.agents.layer_executor).heartbeat(),
        ),
        shutdown: executor_shutdown,
    };

    let info = files::RunInfo {
        run_id: run_id.clone(),
        pid: std::process::id(),
        mode: mode.name().to_string(),
        config: config.source.display().to_string(),
        started_at: crate::bus::now_rfc3339(),
        progress_url: streamer.progress_url(),
    };
    if let Err(e) = files::write_atomic(
        &run_dir.join("run.json"),
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    ) {
        eprintln!("runner: cannot write to {}: {e}", run_dir.display());
        return exit_code::INFRASTRUCTURE;
    }

    bus.emit(
        names::CONTROLLER,
        EventKind::RunStarted {
            mode: mode.name().to_string(),
            environment: config.environment.clone(),
            config: config.source.display().to_string(),
            layers: plan.layers().map(|l| l.layer.name.clone()).collect(),
            slots,
            units: plan
                .units()
                .map(|u| PlannedUnit {
                    id: u.id.clone(),
                    layer: u.layer.clone(),
                    category: u.category.clone(),
                    name: u.name.clone(),
                    expected_ms: hints.expected(&u.id).map(|d| d.as_millis() as u64),
                })
                .collect(),
            pid: std::process::id(),
        },
    );
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
    let (resources, resource_agent) = resource_manager::start(
        ResourceSettings::from_config(&config, slots, plan.layers().map(|l| &l.layer)),
        &bus,
    );
    let ctx = Arc::new(RunContext {
        bus: bus.clone(),
        config: Arc::clone(&config),
        resources,
        run_dir: run_dir.clone(),
        run_token: CancellationToken::new(),
        kill_now: CancellationToken::new(),
        stop_cause: Mutex::new(None),
        health: Arc::clone(&executor_health),
        hints,
    });
    let signals = tokio::spawn(watch_signals(Arc::clone(&ctx)));
    let global_timeout = config.execution.global_timeout.map(|limit| {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            ctx.stop(StopCause::GlobalTimeout);
        })
    });
    let agents = vec![
        orchestrator_agent,
        resource_agent,
        streamer_agent,
        executor_agent,
    ];
    let healths: Vec<Arc<Health>> = agents.iter().map(|a| Arc::clone(&a.health)).collect();
    for h in &healths {
        h.set_stale_after(stale_after(&config, h.name()));
    }
    let supervisor_stop = CancellationToken::new();
    let supervisor = tokio::spawn(supervise(bus.clone(), healths, supervisor_stop.clone()));

    let Plan {
        stages, background, ..
    } = plan;
    let services = crate::services::Services::new(Arc::clone(&ctx));
    let (background_results, background_agent) =
        background_e2e::start(Arc::clone(&ctx), background, Arc::clone(&services));
    let mut results = run_stages(&ctx, stages, &services).await;
    match background_results.await {
        Ok(r) => results.extend(r),
        Err(e) => tracing::error!("background agent failed: {e}"),
    }
    services.stop_all().await;

    let (outcome, code) = match ctx.cause() {
        Some(StopCause::Interrupted) => (RunOutcome::Interrupted, exit_code::INTERRUPTED),
        Some(StopCause::ServiceFailed { .. }) => (RunOutcome::Error, exit_code::INFRASTRUCTURE),
        _ if results.values().any(|r| r.outcome == LayerOutcome::Failed) => {
            (RunOutcome::Failed, exit_code::FAILED)
        }
        _ => (RunOutcome::Passed, exit_code::PASSED),
    };
    supervisor_stop.cancel();
    let _ = supervisor.await;
    if crate::report::github::enabled() {
        // Before `run_finished`, so the closing line stays the last line.
        let json = cli.progress_mode == Some(crate::cli::ProgressMode::Json);
        crate::report::github::print_annotations(&bus.snapshot(), &config, json);
    }
    bus.emit(
        names::CONTROLLER,
        EventKind::RunFinished {
            outcome,
            exit_code: code,
            duration_ms: started.elapsed().as_millis() as u64,
        },
    );
    bus.close();
    let progress_server = streamer.finish().await;
    for agent in external {
        let _ = agent.await;
    }
    let summary = bus.snapshot();
    if let Err(e) = files::write_atomic(
        &run_dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    ) {
        eprintln!("runner: cannot write summary: {e}");
    }
    if let Some(path) = &cli.junit
        && let Err(e) = crate::report::junit::write(path, &summary)
    {
        eprintln!("runner: cannot write JUnit report {}: {e}", path.display());
    }
    if crate::report::github::enabled()
        && let Err(e) = crate::report::github::append_step_summary(&summary)
    {
        eprintln!("runner: cannot append to $GITHUB_STEP_SUMMARY: {e}");
    }
    // History last: a slow or locked database never delays the run's own reports.
    let root = config.root.clone();
    match tokio::task::spawn_blocking(move || crate::store::save(&root, &summary)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("runner: history: cannot record this run: {e}"),
        Err(e) => eprintln!("runner: history: cannot record this run: {e}"),
    }
    signals.abort();
    if let Some(t) = global_timeout {
        t.abort();
    }
    if let Some(server) = progress_server {
        server.finish().await;
    }
    for agent in agents {
        agent.stop().await;
    }
    background_agent.stop().await;
    crate::exec::reap_adopted_orphans();
    log_own_usage();
    code
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
/// unreadable file is a warning: the shards are then balanced by count).
fn apply_partition(cli: &Cli, mut plan: Plan) -> Plan {
    let Some(p) = cli.partition else {
        return plan;
    };
    let mut durations = HashMap::new();
    if let Some(path) = &cli.durations_from {
        let read = if crate::store::is_database(path) {
            crate::store::durations_from(path).map_err(|e| e.to_string())
        } else {
            crate::report::junit_import::durations_from(path)
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

/// Run the foreground stages in order; returns every layer's result by name.
async fn run_stages(
    ctx: &Arc<RunContext>,
    stages: Vec<Vec<PlannedLayer>>,
    services: &Arc<crate::services::Services>,
) -> HashMap<String, LayerResult> {
    let mut results: HashMap<String, LayerResult> = HashMap::new();
    // Set once a layer fails with a fail_fast that stops later layers.
    let mut stopped_by: Option<String> = None;
    for stage in stages {
        let mut set = JoinSet::new();
        for planned in stage {
            let skip = skip_reason(ctx, &planned, &results, stopped_by.as_deref());
            let name = planned.layer.name.clone();
            if let Some(reason) = skip {
                skip_layer(ctx, &planned, &reason);
                results.insert(
                    name,
                    LayerResult {
                        outcome: LayerOutcome::Skipped,
                        reason: Some(reason),
                    },
                );
                continue;
            }
            let fail_fast = planned.layer.fail_fast;
            let ctx = Arc::clone(ctx);
            let services = Arc::clone(services);
            set.spawn(async move {
                // Its required services are started (once per run) before it runs.
                let r = services.run_layer(ctx, planned, None).await;
                (name, fail_fast, r)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((name, fail_fast, result)) = joined else {
                continue;
            };
            if result.outcome == LayerOutcome::Failed
                && fail_fast != FailFast::Disabled
                && stopped_by.is_none()
            {
                stopped_by = Some(name.clone());
            }
            results.insert(name, result);
        }
    }
    results
}

fn skip_reason(
    ctx: &RunContext,
    planned: &PlannedLayer,
    results: &HashMap<String, LayerResult>,
    stopped_by: Option<&str>,
) -> Option<String> {
    if let Some(cause) = ctx.cause() {
        return Some(cause.describe());
    }
    for dep in &planned.layer.depends_on {
        if let Some(r) = results.get(dep)
            && r.outcome != LayerOutcome::Passed
        {
            let what = match r.outcome {
                LayerOutcome::Failed => "failed",
                LayerOutcome::Cancelled => "was cancelled",
                _ => "was skipped",
            };
            return Some(format!("depends on layer `{dep}`, which {what}"));
        }
    }
    stopped_by.map(|l| format!("fail-fast: layer `{l}` failed"))
}

fn skip_layer(ctx: &RunContext, planned: &PlannedLayer, reason: &str) {
    for unit in planned.units() {
        ctx.bus.emit(
            names::ORCHESTRATOR,
            EventKind::TestSkipped {
                unit: unit.id.clone(),
                reason: reason.to_string(),
            },
        );
    }
    ctx.bus.emit(
        names::ORCHESTRATOR,
        EventKind::LayerFinished {
            layer: planned.layer.name.clone(),
            outcome: LayerOutcome::Skipped,
            reason: Some(reason.to_string()),
            duration_ms: 0,
        },
    );
}

/// First SIGINT/SIGTERM: stop the run gracefully. Second: kill everything at once.
async fn watch_signals(ctx: Arc<RunContext>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        count += 1;
        if count == 1 {
            eprintln!("runner: interrupted; stopping units (press Ctrl-C again to kill at once)");
            ctx.stop(StopCause::Interrupted);
        } else {
            ctx.kill_now.cancel();
        }
    }
}

/// The `stale_after_ms` of agent `name`'s manifest.
fn stale_after(config: &Config, name: &str) -> Duration {
    use crate::config::agents::Manifest;
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

/// Watch agents' heartbeats; emit `agent_health` whenever a status changes.
async fn supervise(bus: EventBus, agents: Vec<Arc<Health>>, stop: CancellationToken) {
    let mut last: HashMap<&'static str, HealthStatus> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        for h in &agents {
            let report = h.check(h.stale_after());
            if last.get(h.name()) != Some(&report.status) {
                last.insert(h.name(), report.status);
                bus.emit(
                    names::CONTROLLER,
                    EventKind::AgentHealth {
                        name: report.name,
                        status: report.status,
                        error_count: report.error_count,
                        last_error: report.last_error,
                    },
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
    }
}
