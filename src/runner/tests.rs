//! In-process tests of the dispatcher: a real configuration, plan, bus, resource manager
//! and workers, with units started by a scripted [`Launcher`] on paused tokio time, and
//! interrupts injected through a manual [`SignalSource`].
//!
//! A unit's command is its script: `ok MS` (exit 0 after MS ms), `fail MS` (exit 1),
//! `flaky MS` (fails its first attempt), `panic` (the attempt's task panics),
//! `nospawn` (the spawn fails). Every started attempt is recorded with its start time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dispatcher::{Dispatch, dispatch};
use super::signals::{Interrupt, SignalSource};
use crate::agents::layer_executor::RunContext;
use crate::agents::layer_worker::{self, WorkerSettings};
use crate::agents::resource_manager::{self, ResourceSettings};
use crate::agents::{Health, names};
use crate::bus::EventBus;
use crate::cli::LayerSelection;
use crate::config::{self, LoadOptions};
use crate::event::{EventKind, Outcome, RunOutcome, RunState, UnitStatus, Verdict};
use crate::exec::{
    CapturedOutput, ExecLimits, ExecResult, Launcher, StopHandle, Termination, UnitCommand,
};
use crate::exit_code;
use crate::plan::{self, Hints, PlanOptions};

/// Starts of attempts: (unit id, attempt, when, after the run's start).
type Starts = Arc<Mutex<Vec<(String, u32, Duration)>>>;

struct Scripted {
    t0: Instant,
    starts: Starts,
}

impl Launcher for Scripted {
    fn launch<'a>(
        &'a self,
        cmd: &'a UnitCommand,
        limits: &'a ExecLimits,
        stop: &'a StopHandle,
        on_spawn: Box<dyn FnOnce(u32) + Send + 'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<ExecResult>> + Send + 'a>>
    {
        Box::pin(async move {
            let script = cmd.shell_command.clone().unwrap_or_default();
            let mut words = script.split_whitespace();
            let verb = words.next().unwrap_or("ok").to_string();
            let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let env: HashMap<&str, &str> = cmd
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let attempt: u32 = env["RUNNER_ATTEMPT"].parse().unwrap();
            match verb.as_str() {
                "nospawn" => return Err(std::io::Error::other("injected: spawn failed")),
                "panic" => panic!("injected: the unit's task panics"),
                _ => {}
            }
            self.starts.lock().unwrap().push((
                env["RUNNER_UNIT_ID"].to_string(),
                attempt,
                self.t0.elapsed(),
            ));
            on_spawn(std::process::id());
            let started = Instant::now();
            let timeout = async {
                match limits.timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            let termination = tokio::select! {
                reason = stop.stopped() => Termination::Stopped(reason),
                _ = timeout => Termination::TimedOut,
                _ = tokio::time::sleep(Duration::from_millis(ms)) => match verb.as_str() {
                    "ok" => Termination::Exited(0),
                    "flaky" if attempt > 1 => Termination::Exited(0),
                    _ => Termination::Exited(1),
                },
            };
            Ok(ExecResult {
                termination,
                duration: started.elapsed(),
                output: CapturedOutput::default(),
                pid: std::process::id(),
                leaked: Vec::new(),
                log: None,
            })
        })
    }
}

struct Outcome_ {
    verdict: Verdict,
    state: RunState,
    starts: Vec<(String, u32, Duration)>,
}

/// Plans `yaml` (all foreground layers, or the hybrid mode with `hybrid`) and
/// dispatches it with `slots` slots; `interrupt_at` injects an interrupt then.
async fn run(yaml: &str, slots: usize, hybrid: bool, interrupt_at: &[u64]) -> Outcome_ {
    run_with(yaml, slots, hybrid, interrupt_at, |_| {}).await
}

async fn run_with(
    yaml: &str,
    slots: usize,
    hybrid: bool,
    interrupt_at: &[u64],
    tamper: impl FnOnce(&mut Vec<crate::agents::AgentHandle>),
) -> Outcome_ {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layers.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = Arc::new(config::load(&LoadOptions::new(&path)).unwrap());
    let selection = if hybrid {
        LayerSelection::Mode(crate::cli::ExecutionMode::Hybrid)
    } else {
        LayerSelection::Names(Vec::new())
    };
    let plan = plan::plan_layers(&config, &selection, &PlanOptions::default()).unwrap();
    let bus = EventBus::new("test-run", None);
    bus.emit(
        names::CONTROLLER,
        EventKind::RunStarted {
            mode: "layers".into(),
            environment: "test".into(),
            config: path.display().to_string(),
            layers: plan.layers().map(|l| l.layer.name.clone()).collect(),
            slots,
            units: super::planned_units(&plan, &Hints::default()),
            pid: 1,
        },
    );
    let mut settings =
        ResourceSettings::from_config(&config, slots, plan.layers().map(|l| &l.layer));
    settings.sample_interval = Duration::from_secs(3600);
    let (resources, resource_agent) = resource_manager::start(settings, &bus);
    let starts: Starts = Arc::default();
    let (decisions_tx, decisions) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(RunContext {
        bus: bus.clone(),
        config: Arc::clone(&config),
        resources,
        run_dir: dir.path().join("run"),
        run_token: CancellationToken::new(),
        kill_now: CancellationToken::new(),
        decisions: decisions_tx,
        health: Health::new(names::EXECUTOR),
        hints: Arc::new(Hints::default()),
        stress_deadline: None,
        launcher: Arc::new(Scripted {
            t0: Instant::now(),
            starts: Arc::clone(&starts),
        }),
    });
    let worker = |name, nice| WorkerSettings {
        name,
        nice,
        heartbeat: Duration::from_millis(100),
        health: None,
    };
    let (executor, executor_agent) =
        layer_worker::start(Arc::clone(&ctx), worker(names::EXECUTOR, None));
    let (background_worker, background_agent) =
        layer_worker::start(Arc::clone(&ctx), worker(names::BACKGROUND, Some(10)));
    let mut agents = vec![resource_agent, executor_agent, background_agent];
    tamper(&mut agents);
    let (inject, mut signals) = SignalSource::manual();
    for at in interrupt_at {
        let (inject, at) = (inject.clone(), *at);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at)).await;
            let _ = inject.send(Interrupt);
        });
    }
    let plan::Plan {
        stages, background, ..
    } = plan;
    let verdict = dispatch(
        Dispatch {
            services: crate::services::Services::new(Arc::clone(&ctx)),
            ctx: Arc::clone(&ctx),
            stages,
            background,
            executor,
            background_worker,
            decisions,
            global_timeout: config.execution.global_timeout,
            agents: agents.iter().map(|a| Arc::clone(&a.health)).collect(),
            health_sink: None,
        },
        &mut signals,
    )
    .await;
    for a in agents {
        a.stop().await;
    }
    let starts = starts.lock().unwrap().clone();
    Outcome_ {
        verdict,
        state: bus.snapshot(),
        starts,
    }
}

/// A unit by its full id or its category's name.
fn is(id: &str, unit: &str) -> bool {
    id == unit || id.split('/').nth(1) == Some(unit)
}

fn start_of(o: &Outcome_, unit: &str, attempt: u32) -> Duration {
    o.starts
        .iter()
        .find(|(u, a, _)| is(u, unit) && *a == attempt)
        .unwrap_or_else(|| panic!("{unit} attempt {attempt} never started: {:?}", o.starts))
        .2
}

fn outcome(o: &Outcome_, unit: &str) -> (UnitStatus, Option<Outcome>) {
    let (_, u) = o.state.units.iter().find(|(id, _)| is(id, unit)).unwrap();
    (u.status, u.outcome)
}

/// Every planned unit has exactly one outcome, and the counts add up.
fn assert_invariant(o: &Outcome_) {
    assert_eq!(
        o.state.units_without_outcome().count(),
        0,
        "{:?}",
        o.state.units
    );
    let c = o.state.counts;
    assert_eq!(c.passed + c.failed + c.skipped, c.total, "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn foreground_starts_first_even_when_background_has_more_units_than_slots() {
    let yaml = r#"
version: 1
categories:
  quick: { command: "ok 2" }
  e2e_a: { command: "ok 2000" }
  e2e_b: { command: "ok 2000" }
  e2e_c: { command: "ok 2000" }
  e2e_d: { command: "ok 2000" }
layers:
  - name: fast
    categories: [quick]
  - name: slow
    background: true
    categories: [e2e_a, e2e_b, e2e_c, e2e_d]
"#;
    let o = run(yaml, 2, true, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::PASSED, "{:?}", o.verdict);
    assert!(
        start_of(&o, "quick", 1) < Duration::from_millis(50),
        "the fast unit waited: {:?}",
        o.starts
    );
    // One background unit at a time (2 slots: all but one).
    let mut bg: Vec<Duration> = o
        .starts
        .iter()
        .filter(|(u, _, _)| u.starts_with("slow/"))
        .map(|s| s.2)
        .collect();
    bg.sort();
    assert_eq!(bg.len(), 4);
    assert!(bg[1] >= Duration::from_millis(2000), "{bg:?}");
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_immediate_stops_the_layer_and_skips_later_layers() {
    let yaml = r#"
version: 1
categories:
  broken: { command: "fail 10" }
  long: { command: "ok 5000" }
  later: { command: "ok 1" }
layers:
  - name: first
    execution_mode: parallel
    fail_fast: immediate
    categories: [broken, long]
  - name: second
    depends_on: [first]
    categories: [later]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::FAILED, "{:?}", o.verdict);
    assert_eq!(
        outcome(&o, "long"),
        (UnitStatus::Finished, Some(Outcome::Cancelled))
    );
    assert_eq!(outcome(&o, "later").0, UnitStatus::Skipped);
    assert!(matches!(
        o.state.stop_cause,
        Some(crate::event::StopCause::FailFast { .. })
    ));
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_doubling_and_a_flaky_unit_passes() {
    let yaml = r#"
version: 1
execution: { retry_backoff_ms: 100 }
categories:
  wobbly: { command: "flaky 10", retries: 2 }
  bad: { command: "fail 10", retries: 2 }
layers:
  - name: only
    execution_mode: parallel
    fail_fast: disabled
    categories: [wobbly, bad]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::FAILED);
    let (a1, a2, a3) = (
        start_of(&o, "bad", 1),
        start_of(&o, "bad", 2),
        start_of(&o, "bad", 3),
    );
    // 10 ms of work, then 100 ms, then 200 ms of backoff.
    assert_eq!(a2 - a1, Duration::from_millis(110));
    assert_eq!(a3 - a2, Duration::from_millis(210));
    let wobbly = o
        .state
        .units
        .values()
        .find(|u| u.category == "wobbly")
        .unwrap();
    assert!(wobbly.flaky && wobbly.outcome == Some(Outcome::Passed));
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_cancels_running_units_and_skips_the_rest_with_exit_130() {
    let yaml = r#"
version: 1
categories:
  slow: { command: "ok 10000" }
  next: { command: "ok 1" }
layers:
  - name: first
    categories: [slow]
  - name: second
    categories: [next]
"#;
    let o = run(yaml, 2, false, &[1000]).await;
    assert_eq!(
        o.verdict.exit_code,
        exit_code::INTERRUPTED,
        "{:?}",
        o.verdict
    );
    assert_eq!(o.verdict.outcome, RunOutcome::Interrupted);
    assert_eq!(
        outcome(&o, "slow"),
        (UnitStatus::Finished, Some(Outcome::Cancelled))
    );
    assert_eq!(outcome(&o, "next").0, UnitStatus::Skipped);
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn the_global_timeout_stops_the_run_once_and_every_unit_ends() {
    let yaml = r#"
version: 1
execution: { global_timeout_minutes: 0.01 }
categories:
  slow: { command: "ok 60000" }
  next: { command: "ok 1" }
layers:
  - name: first
    categories: [slow]
  - name: second
    categories: [next]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::FAILED, "{:?}", o.verdict);
    assert_eq!(
        o.state.stop_cause,
        Some(crate::event::StopCause::GlobalTimeout)
    );
    assert_eq!(
        outcome(&o, "slow"),
        (UnitStatus::Finished, Some(Outcome::Timeout))
    );
    assert_eq!(outcome(&o, "next").0, UnitStatus::Skipped);
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_unit_task_fails_the_run_with_exit_3_naming_the_unit() {
    let yaml = r#"
version: 1
categories:
  boom: { command: "panic" }
  fine: { command: "ok 1" }
layers:
  - name: only
    execution_mode: parallel
    categories: [boom, fine]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(
        o.verdict.exit_code,
        exit_code::INFRASTRUCTURE,
        "{:?}",
        o.verdict
    );
    let why = o.verdict.reason.unwrap();
    assert!(why.contains("only/boom/boom"), "{why}");
}

#[tokio::test(start_paused = true)]
async fn a_spawn_that_fails_is_an_infrastructure_error() {
    let yaml = r#"
version: 1
categories:
  gone: { command: "nospawn" }
layers:
  - name: only
    categories: [gone]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(
        o.verdict.exit_code,
        exit_code::INFRASTRUCTURE,
        "{:?}",
        o.verdict
    );
    assert!(o.verdict.reason.clone().unwrap().contains("spawn failed"));
    assert_eq!(
        outcome(&o, "gone"),
        (UnitStatus::Finished, Some(Outcome::Error))
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_admission_channel_is_an_infrastructure_error_not_a_pass() {
    let yaml = r#"
version: 1
categories:
  unit: { command: "ok 1" }
layers:
  - name: only
    categories: [unit]
"#;
    // The resource manager stops before the run starts: nothing can be admitted.
    let o = run_with(yaml, 2, false, &[], |agents| {
        agents[0].shutdown.cancel();
        agents[0].task.abort();
    })
    .await;
    assert_eq!(
        o.verdict.exit_code,
        exit_code::INFRASTRUCTURE,
        "{:?}",
        o.verdict
    );
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_chained_layers_run_in_order() {
    let mut yaml = String::from("version: 1\ncategories:\n  c: { command: \"ok 1\" }\nlayers:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - name: l{i}\n    categories: [c]\n    execution_order: {i}\n"
        ));
        if i > 0 {
            yaml.push_str(&format!("    depends_on: [l{}]\n", i - 1));
        }
    }
    let o = run(&yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::PASSED, "{:?}", o.verdict);
    assert_eq!(o.state.counts.passed, 1000);
    let mut last = Duration::ZERO;
    for i in 0..1000 {
        let at = start_of(&o, &format!("l{i}/c/c"), 1);
        assert!(at >= last, "l{i} started before its predecessor");
        last = at;
    }
}

/// Generated plans: layers with dependencies, modes, fail-fast strategies, criteria,
/// background layers, retries, timeouts and random unit outcomes, sometimes interrupted.
/// Whatever happens, every planned unit ends with exactly one outcome, the counts add up
/// to the planned units, no unit runs more attempts than it may, and the verdict follows
/// from the fold (never an internal error, never green with a failed layer).
mod generated {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Cat {
        script: &'static str,
        ms: u64,
        retries: u32,
        timeout_ms: Option<u64>,
    }

    #[derive(Debug, Clone)]
    struct Lay {
        cats: Vec<Cat>,
        mode: &'static str,
        fail_fast: &'static str,
        background: bool,
        deps: Vec<usize>,
        max_failures: Option<u32>,
        order: u32,
    }

    fn cat() -> impl Strategy<Value = Cat> {
        (
            prop::sample::select(vec!["ok", "ok", "fail", "flaky"]),
            0u64..300,
            0u32..3,
            prop::option::weighted(0.3, 50u64..400),
        )
            .prop_map(|(script, ms, retries, timeout_ms)| Cat {
                script,
                ms,
                retries,
                timeout_ms,
            })
    }

    fn layer() -> impl Strategy<Value = Lay> {
        (
            prop::collection::vec(cat(), 1..4),
            prop::sample::select(vec!["sequential", "parallel", "hybrid"]),
            prop::sample::select(vec!["immediate", "category", "layer", "disabled"]),
            prop::bool::weighted(0.25),
            prop::collection::vec(0usize..5, 0..3),
            prop::option::weighted(0.3, 0u32..3),
            0u32..3,
        )
            .prop_map(
                |(cats, mode, fail_fast, background, deps, max_failures, order)| Lay {
                    cats,
                    mode,
                    fail_fast,
                    background,
                    deps,
                    max_failures,
                    order,
                },
            )
    }

    fn yaml(layers: &[Lay]) -> String {
        let mut y = String::from("version: 1\nexecution: { retry_backoff_ms: 20 }\ncategories:\n");
        for (i, l) in layers.iter().enumerate() {
            for (j, c) in l.cats.iter().enumerate() {
                y.push_str(&format!(
                    "  c{i}_{j}: {{ command: \"{} {}\", retries: {}, priority_order: {j}",
                    c.script, c.ms, c.retries
                ));
                if let Some(t) = c.timeout_ms {
                    y.push_str(&format!(", timeout_seconds: {}", t as f64 / 1000.0));
                }
                y.push_str(" }\n");
            }
        }
        y.push_str("layers:\n");
        for (i, l) in layers.iter().enumerate() {
            let cats: Vec<String> = (0..l.cats.len()).map(|j| format!("c{i}_{j}")).collect();
            y.push_str(&format!(
                "  - name: l{i}\n    execution_mode: {}\n    fail_fast: {}\n    execution_order: {}\n    categories: [{}]\n",
                l.mode,
                l.fail_fast,
                l.order,
                cats.join(", ")
            ));
            if l.background {
                y.push_str("    background: true\n");
            }
            // Dependencies on earlier layers only (no cycles); a foreground layer
            // depends on foreground layers only.
            let mut deps: Vec<String> = l
                .deps
                .iter()
                .filter(|&&d| d < i && (l.background || !layers[d].background))
                .map(|d| format!("l{d}"))
                .collect();
            deps.sort();
            deps.dedup();
            if !deps.is_empty() {
                y.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
            }
            if let Some(m) = l.max_failures {
                y.push_str(&format!("    success_criteria: {{ max_failures: {m} }}\n"));
            }
        }
        y
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn every_planned_unit_ends_with_exactly_one_outcome(
            layers in prop::collection::vec(layer(), 1..6),
            slots in 1usize..4,
            interrupt in prop::option::weighted(0.25, 0u64..800),
        ) {
            let yaml = yaml(&layers);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let at: Vec<u64> = interrupt.into_iter().collect();
            let o = rt.block_on(run(&yaml, slots, true, &at));
            prop_assert!(o.state.internal_errors.is_empty(), "{:?}\n{}", o.state.internal_errors, yaml);
            prop_assert_eq!(o.state.units_without_outcome().count(), 0, "{}", yaml);
            let planned: usize = layers.iter().map(|l| l.cats.len()).sum();
            let c = o.state.counts;
            prop_assert_eq!(c.total, planned);
            prop_assert_eq!(c.passed + c.failed + c.skipped, planned, "{:?}\n{}", c, yaml);
            prop_assert_eq!(c.running, 0);
            for (i, l) in layers.iter().enumerate() {
                for (j, cat) in l.cats.iter().enumerate() {
                    let id = format!("l{i}/c{i}_{j}/c{i}_{j}");
                    let attempts = o.starts.iter().filter(|(u, _, _)| *u == id).count() as u32;
                    prop_assert!(attempts <= cat.retries + 1, "{} ran {} times\n{}", id, attempts, yaml);
                }
                let name = format!("l{i}");
                prop_assert!(o.state.layers[&name].outcome.is_some(), "{} never finished", name);
            }
            let failed_layer = o
                .state
                .layers
                .values()
                .any(|l| l.outcome == Some(crate::event::LayerOutcome::Failed));
            match o.verdict.exit_code {
                0 => prop_assert!(!failed_layer && o.state.stop_cause.is_none()),
                1 => prop_assert!(failed_layer),
                130 => prop_assert_eq!(
                    o.state.stop_cause.clone(),
                    Some(crate::event::StopCause::Interrupted)
                ),
                other => prop_assert!(false, "exit {}: {:?}\n{}", other, o.verdict, yaml),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn inter_layer_delay_waits_between_stages() {
    let yaml = r#"
execution: { inter_layer_delay_seconds: 10 }
categories:
  a: { command: "ok 100" }
  b: { command: "ok 1" }
layers:
  - name: first
    categories: [a]
  - name: second
    categories: [b]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::PASSED, "{:?}", o.verdict);
    assert!(
        start_of(&o, "b", 1) >= Duration::from_millis(10_100),
        "{:?}",
        o.starts
    );
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn a_partial_layer_lets_its_dependents_run_and_the_run_fails() {
    let yaml = r#"
categories:
  good: { command: "ok 1" }
  bad: { command: "fail 1" }
  after: { command: "ok 1" }
layers:
  - name: first
    categories: [good, bad]
    fail_fast: layer
    success_criteria: { min_pass_rate: 90, allow_partial_success: true }
  - name: second
    depends_on: [first]
    categories: [after]
"#;
    let o = run(yaml, 2, false, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::FAILED, "{:?}", o.verdict);
    assert_eq!(
        o.state.layers["first"].outcome,
        Some(crate::event::LayerOutcome::Partial)
    );
    assert_eq!(
        outcome(&o, "after"),
        (UnitStatus::Finished, Some(Outcome::Passed))
    );
    assert_invariant(&o);
}

#[tokio::test(start_paused = true)]
async fn max_background_layers_runs_background_layers_one_at_a_time() {
    let yaml = r#"
execution: { max_background_layers: 1 }
categories:
  fg: { command: "ok 1" }
  e1: { command: "ok 1000" }
  e2: { command: "ok 1000" }
layers:
  - name: fast
    categories: [fg]
  - name: bg1
    background: true
    categories: [e1]
  - name: bg2
    background: true
    categories: [e2]
"#;
    let o = run(yaml, 4, true, &[]).await;
    assert_eq!(o.verdict.exit_code, exit_code::PASSED, "{:?}", o.verdict);
    let (first, second) = (start_of(&o, "e1", 1), start_of(&o, "e2", 1));
    assert!(
        first.max(second) >= first.min(second) + Duration::from_millis(1000),
        "{:?}",
        o.starts
    );
    assert_invariant(&o);
}
