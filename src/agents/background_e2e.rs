//! BackgroundE2EAgent: runs background layers alongside the foreground.
//!
//! In a hybrid run the background layers start with the first foreground stage and
//! run at a lower scheduling priority (`nice` from `agents/background_e2e.yaml`),
//! through the same executor; the run waits for both. Each background layer is one
//! background task with its own `background_task_started`/`finished` events. A
//! background layer that `depends_on` another layer of the run (foreground or
//! background) waits for it to finish, reading the run's fold, and is skipped when it
//! did not pass. Its `required_services` are started first ([`Services`]).
//!
//! Detached background runs (`--background-e2e`, `--queue-e2e`) are this same agent
//! inside a worker process: see [`crate::background`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layer_executor::{LayerResult, RunContext};
use super::{AgentHandle, Health, names, spawn_heartbeat};
use crate::event::{EventKind, LayerOutcome, RunOutcome};
use crate::plan::PlannedLayer;
use crate::services::Services;

/// How often a waiting layer looks at its dependencies' outcomes.
const DEPENDENCY_POLL: Duration = Duration::from_millis(50);

/// Start the agent: it runs `layers` (each after the layers of the run it depends
/// on) and returns their results through the join handle.
pub fn start(
    ctx: Arc<RunContext>,
    layers: Vec<PlannedLayer>,
    services: Arc<Services>,
) -> (
    tokio::task::JoinHandle<Vec<(String, LayerResult)>>,
    AgentHandle,
) {
    let manifest = &ctx.config.agents.background_e2e;
    let nice = manifest.nice;
    let health = Health::new(names::BACKGROUND);
    let shutdown = CancellationToken::new();
    let beat = spawn_heartbeat(
        Arc::clone(&health),
        shutdown.clone(),
        Duration::from_millis(manifest.heartbeat_ms.max(10)),
    );
    let results = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut set = JoinSet::new();
        for planned in layers {
            let ctx = Arc::clone(&ctx);
            let services = Arc::clone(&services);
            set.spawn(async move {
                let name = planned.layer.name.clone();
                let task = format!("{}:{name}", ctx.bus.run_id());
                if let Some(reason) = wait_for_dependencies(&ctx, &planned).await {
                    return (name, skip(&ctx, &planned, reason));
                }
                ctx.bus.emit(
                    names::BACKGROUND,
                    EventKind::BackgroundTaskStarted {
                        task: task.clone(),
                        layers: vec![name.clone()],
                    },
                );
                let result = services
                    .run_layer(Arc::clone(&ctx), planned, (nice != 0).then_some(nice))
                    .await;
                let outcome = match result.outcome {
                    LayerOutcome::Passed => RunOutcome::Passed,
                    LayerOutcome::Cancelled => RunOutcome::Interrupted,
                    LayerOutcome::Failed | LayerOutcome::Skipped => RunOutcome::Failed,
                };
                ctx.bus.emit(
                    names::BACKGROUND,
                    EventKind::BackgroundTaskFinished { task, outcome },
                );
                (name, result)
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out
    });
    (
        results,
        AgentHandle {
            health,
            shutdown,
            task: beat,
        },
    )
}

/// Waits until every layer `planned` depends on that is part of this run has
/// finished. Returns why the layer must be skipped (a dependency did not pass, or
/// the run is stopping), None when it may run.
async fn wait_for_dependencies(ctx: &RunContext, planned: &PlannedLayer) -> Option<String> {
    loop {
        if let Some(cause) = ctx.cause() {
            return Some(cause.describe());
        }
        let verdict = ctx.bus.with_state(|s| {
            let mut pending = false;
            for dep in &planned.layer.depends_on {
                // Layers outside this run (not selected, resumed past) are not waited for.
                let Some(layer) = s.layers.get(dep) else {
                    continue;
                };
                match layer.outcome {
                    None => pending = true,
                    Some(LayerOutcome::Passed) => {}
                    Some(other) => {
                        let what = match other {
                            LayerOutcome::Failed => "failed",
                            LayerOutcome::Cancelled => "was cancelled",
                            _ => "was skipped",
                        };
                        return Err(format!("depends on layer `{dep}`, which {what}"));
                    }
                }
            }
            Ok(pending)
        });
        match verdict {
            Err(reason) => return Some(reason),
            Ok(false) => return None,
            Ok(true) => {}
        }
        tokio::select! {
            _ = ctx.run_token.cancelled() => {}
            _ = tokio::time::sleep(DEPENDENCY_POLL) => {}
        }
    }
}

/// Reports a layer that will not run.
fn skip(ctx: &RunContext, planned: &PlannedLayer, reason: String) -> LayerResult {
    for unit in planned.units() {
        ctx.bus.emit(
            names::BACKGROUND,
            EventKind::TestSkipped {
                unit: unit.id.clone(),
                reason: reason.clone(),
            },
        );
    }
    ctx.bus.emit(
        names::BACKGROUND,
        EventKind::LayerFinished {
            layer: planned.layer.name.clone(),
            outcome: LayerOutcome::Skipped,
            reason: Some(reason.clone()),
            duration_ms: 0,
        },
    );
    LayerResult {
        outcome: LayerOutcome::Skipped,
        reason: Some(reason),
    }
}
