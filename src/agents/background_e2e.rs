//! BackgroundE2EAgent: runs background layers alongside the foreground.
//!
//! In a hybrid run the background layers start with the first foreground stage and
//! run at a lower scheduling priority (`nice`), through the same executor; the run
//! waits for both. Each background layer is one background task with its own
//! `background_task_started`/`finished` events.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layer_executor::{LayerResult, RunContext, run_layer};
use super::{AgentHandle, Health, names, spawn_heartbeat};
use crate::event::{EventKind, LayerOutcome, RunOutcome};
use crate::plan::PlannedLayer;

/// Niceness increment of background units.
pub const BACKGROUND_NICE: i32 = 10;

/// Start the agent: it runs `layers` (in order of the plan, each after the layers it
/// depends on among them) and returns their results through the join handle.
pub fn start(
    ctx: Arc<RunContext>,
    layers: Vec<PlannedLayer>,
) -> (
    tokio::task::JoinHandle<Vec<(String, LayerResult)>>,
    AgentHandle,
) {
    let health = Health::new(names::BACKGROUND);
    let shutdown = CancellationToken::new();
    let beat = spawn_heartbeat(
        Arc::clone(&health),
        shutdown.clone(),
        Duration::from_millis(500),
    );
    let results = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut set = JoinSet::new();
        for planned in layers {
            let ctx = Arc::clone(&ctx);
            set.spawn(async move {
                let name = planned.layer.name.clone();
                let task = format!("{}:{name}", ctx.bus.run_id());
                ctx.bus.emit(
                    names::BACKGROUND,
                    EventKind::BackgroundTaskStarted {
                        task: task.clone(),
                        layers: vec![name.clone()],
                    },
                );
                let result = run_layer(Arc::clone(&ctx), planned, Some(BACKGROUND_NICE)).await;
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
