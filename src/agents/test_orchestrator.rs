//! TestOrchestratorAgent: plans the run and judges layers.
//!
//! Planning itself lives in [`crate::plan`]; this agent serves plan requests as a
//! supervised task and owns the two decisions taken between units and layers:
//! whether a layer has met its success criteria ([`evaluate`]), and what a failure
//! stops ([`FailFast`] semantics, applied by the executor through [`evaluate`]).

use std::sync::Arc;

use indexmap::IndexMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AgentHandle, Health, names};
use crate::cli::LayerSelection;
use crate::config::{Category, Config, Layer};
use crate::event::{Outcome, RunState, UnitStatus};
use crate::plan::{self, Plan, PlanError, PlanOptions};

/// What to plan.
#[derive(Debug, Clone)]
pub enum PlanRequest {
    /// A layered run.
    Layers(LayerSelection),
    /// Legacy category mode with these categories (empty: the default set).
    Legacy(Vec<String>),
}

type Reply = oneshot::Sender<Result<Plan, PlanError>>;

/// Handle to the orchestrator.
#[derive(Clone)]
pub struct OrchestratorHandle {
    tx: mpsc::UnboundedSender<(PlanRequest, Reply)>,
}

impl OrchestratorHandle {
    /// Plan a run.
    pub async fn plan(&self, req: PlanRequest) -> Result<Plan, PlanError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || PlanError {
            message: "the test orchestrator has stopped".into(),
            kind: plan::PlanErrorKind::Infrastructure,
        };
        self.tx.send((req, reply)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Start the agent for `config`.
pub fn start(config: Arc<Config>, opts: PlanOptions) -> (OrchestratorHandle, AgentHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(PlanRequest, Reply)>();
    let health = Health::new(names::ORCHESTRATOR);
    let shutdown = CancellationToken::new();
    let every = {
        use crate::config::agents::Manifest;
        config.agents.test_orchestrator.common().heartbeat()
    };
    let task_shutdown = shutdown.clone();
    let task_health = Arc::clone(&health);
    let task = tokio::spawn(async move {
        // Its own loop writes its health: a heartbeat on every tick while it is
        // scheduled; a plan is made on the blocking pool while the loop goes on beating.
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
        // The plan being made (one at a time), and where its answer goes.
        let mut planning: Option<(tokio::task::JoinHandle<Result<Plan, PlanError>>, Reply)> = None;
        loop {
            tokio::select! {
                _ = task_shutdown.cancelled() => break,
                _ = tick.tick() => task_health.heartbeat(),
                msg = rx.recv(), if planning.is_none() => {
                    let Some((req, reply)) = msg else { break };
                    // Planning may build Rust tests (nextest discovery): off the async workers.
                    let (config, opts) = (Arc::clone(&config), opts.clone());
                    let job = tokio::task::spawn_blocking(move || match &req {
                        PlanRequest::Layers(sel) => plan::plan_layers(&config, sel, &opts),
                        PlanRequest::Legacy(cats) => plan::plan_legacy(&config, cats, &opts),
                    });
                    planning = Some((job, reply));
                }
                done = async { (&mut planning.as_mut().expect("planning").0).await }, if planning.is_some() => {
                    let (_, reply) = planning.take().expect("planning");
                    let result = done.unwrap_or_else(|e| Err(PlanError {
                        message: format!("planning failed: {e}"),
                        kind: plan::PlanErrorKind::Infrastructure,
                    }));
                    if let Err(e) = &result {
                        task_health.error(e.message.clone());
                    }
                    let _ = reply.send(result);
                }
            }
        }
    });
    (
        OrchestratorHandle { tx },
        AgentHandle {
            health,
            shutdown,
            task,
        },
    )
}

/// A layer's standing against its success criteria.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The layer has failed (or, while running, can no longer pass).
    pub failed: bool,
    /// Why.
    pub reason: Option<String>,
}

/// Judge `layer` from the folded state. While units are still pending the verdict
/// says whether the layer can no longer pass; once all are done it is final.
/// With no criteria, any failure fails the layer.
pub fn evaluate(
    layer: &Layer,
    categories: &IndexMap<String, Category>,
    state: &RunState,
) -> Verdict {
    let mut passed = 0u64;
    let mut failed = 0u64;
    let mut pending = 0u64;
    let mut critical_failed: Option<String> = None;
    for (_, unit) in state.layer_units(&layer.name) {
        match (unit.status, unit.outcome) {
            (UnitStatus::Finished, Some(Outcome::Passed)) => passed += 1,
            (UnitStatus::Finished, Some(Outcome::Cancelled)) | (UnitStatus::Skipped, _) => {}
            (UnitStatus::Finished, Some(_)) => {
                failed += 1;
                if critical_failed.is_none()
                    && categories.get(&unit.category).is_some_and(|c| c.critical)
                {
                    critical_failed = Some(unit.category.clone());
                }
            }
            _ => pending += 1,
        }
    }
    let criteria = &layer.success_criteria;
    let fail = |reason: String| Verdict {
        failed: true,
        reason: Some(reason),
    };
    if criteria.critical_tests_must_pass
        && let Some(cat) = critical_failed
    {
        return fail(format!("critical category `{cat}` failed"));
    }
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    match (criteria.max_failures, criteria.min_pass_rate) {
        (None, None) if failed > 0 => {
            return fail(format!("{failed} unit{} failed", plural(failed)));
        }
        (Some(max), _) if failed > max => {
            return fail(format!(
                "{failed} failure{} exceed max_failures {max}",
                plural(failed)
            ));
        }
        _ => {}
    }
    if let Some(min) = criteria.min_pass_rate {
        let considered = passed + failed + pending;
        // Best case: every pending unit passes.
        let best = if considered == 0 {
            100.0
        } else {
            (passed + pending) as f64 * 100.0 / considered as f64
        };
        if best + 1e-9 < min {
            return fail(format!(
                "pass rate {:.1}% is below min_pass_rate {min}%",
                if pending == 0 {
                    best
                } else {
                    passed as f64 * 100.0 / (passed + failed).max(1) as f64
                }
            ));
        }
    }
    Verdict {
        failed: false,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailFast, LayerMode, ResourceLimits, SuccessCriteria};
    use crate::event::{Event, EventKind, PlannedUnit};

    fn layer(criteria: SuccessCriteria) -> Layer {
        Layer {
            name: "l".into(),
            description: String::new(),
            execution_order: 0,
            priority: 0,
            max_duration: None,
            execution_mode: LayerMode::Parallel,
            fail_fast: FailFast::Layer,
            background: false,
            categories: vec!["c".into()],
            depends_on: vec![],
            conflicts: vec![],
            required_services: vec![],
            resource_limits: ResourceLimits::default(),
            success_criteria: criteria,
            ..Default::default()
        }
    }

    /// A state with `outcomes` finished and `pending` units not yet run.
    fn state(outcomes: &[Outcome], pending: usize, category: &str) -> RunState {
        let mut s = RunState::default();
        let n = outcomes.len() + pending;
        let units = (0..n)
            .map(|i| PlannedUnit {
                id: format!("l/{category}/{i}"),
                layer: "l".into(),
                category: category.into(),
                name: i.to_string(),
                expected_ms: None,
            })
            .collect();
        let mut seq = 0;
        let mut apply = |s: &mut RunState, kind| {
            seq += 1;
            s.apply(&Event {
                v: 1,
                seq,
                ts: "t".into(),
                run_id: "r".into(),
                thread_id: None,
                agent: "a".into(),
                kind,
            })
        };
        apply(
            &mut s,
            EventKind::RunStarted {
                mode: "layers".into(),
                environment: "test".into(),
                config: "c".into(),
                layers: vec!["l".into()],
                slots: 1,
                units,
                pid: 0,
            },
        );
        for (i, o) in outcomes.iter().enumerate() {
            apply(
                &mut s,
                EventKind::TestFinished {
                    unit: format!("l/{category}/{i}"),
                    attempt: 1,
                    outcome: *o,
                    will_retry: false,
                    duration_ms: 1,
                    exit_code: None,
                    signal: None,
                    peak_memory_mb: None,
                    message: None,
                    output_tail: None,
                    log: None,
                },
            );
        }
        s
    }

    fn categories(critical: bool) -> IndexMap<String, Category> {
        let mut m = IndexMap::new();
        m.insert(
            "c".to_string(),
            Category {
                name: "c".into(),
                description: String::new(),
                kind: crate::config::UnitKind::Command(crate::config::CommandSpec {
                    command: "true".into(),
                    files: vec![],
                    exclude: Vec::new(),
                }),
                timeout: None,
                slow_after: None,
                max_parallel_instances: None,
                priority_order: 0,
                retries: 0,
                min_memory_mb: None,
                max_memory_mb: None,
                rlimit_as_mb: None,
                critical,
                env: Default::default(),
                depends_on: vec![],
                requires_real_services: false,
                cwd: None,
                ..Default::default()
            },
        );
        m
    }

    use Outcome::*;

    #[test]
    fn default_criteria_fail_on_any_failure() {
        let l = layer(SuccessCriteria::default());
        assert!(!evaluate(&l, &categories(false), &state(&[Passed, Passed], 0, "c")).failed);
        let v = evaluate(&l, &categories(false), &state(&[Passed, Timeout], 3, "c"));
        assert_eq!(v.reason.as_deref(), Some("1 unit failed"));
        assert!(!evaluate(&l, &categories(false), &state(&[Passed, Cancelled], 0, "c")).failed);
    }

    #[test]
    fn max_failures_and_pass_rate() {
        let crit = |max_failures, min_pass_rate| SuccessCriteria {
            max_failures,
            min_pass_rate,
            critical_tests_must_pass: false,
            allow_partial_success: false,
        };
        let c = categories(false);
        assert!(
            !evaluate(
                &layer(crit(Some(1), None)),
                &c,
                &state(&[Failed, Passed], 0, "c")
            )
            .failed
        );
        assert!(
            evaluate(
                &layer(crit(Some(1), None)),
                &c,
                &state(&[Failed, Failed], 0, "c")
            )
            .failed
        );
        // 8 of 10 passed: 80% meets 80, not 90.
        let mut outcomes = vec![Passed; 8];
        outcomes.extend([Failed, Failed]);
        assert!(
            !evaluate(
                &layer(crit(None, Some(80.0))),
                &c,
                &state(&outcomes, 0, "c")
            )
            .failed
        );
        let v = evaluate(
            &layer(crit(None, Some(90.0))),
            &c,
            &state(&outcomes, 0, "c"),
        );
        assert!(v.failed, "{v:?}");
        // While running: 2 failed of 10 with 8 pending can still reach 80%, not 90%.
        assert!(
            !evaluate(
                &layer(crit(None, Some(80.0))),
                &c,
                &state(&[Failed, Failed], 8, "c")
            )
            .failed
        );
        assert!(
            evaluate(
                &layer(crit(None, Some(90.0))),
                &c,
                &state(&[Failed, Failed], 8, "c")
            )
            .failed
        );
    }

    #[test]
    fn critical_failure_fails_whatever_the_rate() {
        let l = layer(SuccessCriteria {
            min_pass_rate: Some(10.0),
            max_failures: Some(5),
            critical_tests_must_pass: true,
            allow_partial_success: false,
        });
        let v = evaluate(&l, &categories(true), &state(&[Failed, Passed], 0, "c"));
        assert_eq!(v.reason.as_deref(), Some("critical category `c` failed"));
        assert!(!evaluate(&l, &categories(false), &state(&[Failed, Passed], 0, "c")).failed);
    }
}
