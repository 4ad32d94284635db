//! The actor behind the LayerExecutorAgent and the BackgroundE2EAgent: a task that owns
//! the layers it is running, takes `run this layer` commands from the dispatcher and
//! answers each with the layer's [`LayerRunReport`], or with the error that ended it.
//!
//! Its loop writes its own health: a heartbeat on every tick while its task is
//! scheduled, an error count for every layer task that failed. A layer task that panics
//! is reported to the dispatcher as an error (never dropped), and dropping the handle
//! (or `shutdown`) aborts every layer still running, which kills their units.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::layer_executor::{LayerRunReport, RunContext, run_layer};
use super::{AgentHandle, Health};
use crate::plan::PlannedLayer;

/// What a layer's run ended with: its report, or why the worker could not run it.
pub type LayerReply = Result<LayerRunReport, String>;

struct Command {
    planned: PlannedLayer,
    reply: oneshot::Sender<LayerReply>,
}

/// Handle to a layer worker.
#[derive(Clone)]
pub struct LayerWorker {
    name: &'static str,
    tx: mpsc::UnboundedSender<Command>,
}

impl LayerWorker {
    /// The agent's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Run `planned`; resolves when its units are all done.
    pub async fn run(&self, planned: PlannedLayer) -> LayerReply {
        let (reply, rx) = oneshot::channel();
        let layer = planned.layer.name.clone();
        self.tx
            .send(Command { planned, reply })
            .map_err(|_| format!("{} has stopped; layer `{layer}` not run", self.name))?;
        rx.await
            .map_err(|_| format!("{} dropped layer `{layer}`", self.name))?
    }
}

/// How a worker runs its layers.
pub struct WorkerSettings {
    /// Agent name (`layer_executor` or `background_e2e`).
    pub name: &'static str,
    /// Scheduling priority of the units (background: lower).
    pub nice: Option<i32>,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// The health record to write (shared with the run context for the executor).
    pub health: Option<Arc<Health>>,
}

/// Start a worker for the run `ctx`.
pub fn start(ctx: Arc<RunContext>, settings: WorkerSettings) -> (LayerWorker, AgentHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
    let health = settings
        .health
        .clone()
        .unwrap_or_else(|| Health::new(settings.name));
    let shutdown = CancellationToken::new();
    let (loop_health, loop_shutdown) = (Arc::clone(&health), shutdown.clone());
    let task = tokio::spawn(async move {
        let mut running: JoinSet<LayerRunReport> = JoinSet::new();
        let mut replies: HashMap<tokio::task::Id, oneshot::Sender<LayerReply>> = HashMap::new();
        let mut tick = tokio::time::interval(settings.heartbeat.max(Duration::from_millis(10)));
        let mut accepting = true;
        loop {
            tokio::select! {
                _ = loop_shutdown.cancelled() => break,
                _ = tick.tick() => loop_health.heartbeat(),
                cmd = rx.recv(), if accepting => {
                    let Some(Command { planned, reply }) = cmd else {
                        accepting = false;
                        continue;
                    };
                    let ctx = Arc::clone(&ctx);
                    let handle = running.spawn(run_layer(ctx, planned, settings.nice));
                    replies.insert(handle.id(), reply);
                }
                Some(done) = running.join_next_with_id() => {
                    let (id, reply) = match done {
                        Ok((id, report)) => (id, Ok(report)),
                        Err(e) => {
                            loop_health.error(format!("a layer task failed: {e}"));
                            (e.id(), Err(format!("the layer's task failed: {e}")))
                        }
                    };
                    if let Some(tx) = replies.remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
            }
            if !accepting && running.is_empty() {
                break;
            }
        }
        // Aborting a layer drops its units' futures, which kills their processes.
        running.shutdown().await;
    });
    (
        LayerWorker {
            name: settings.name,
            tx,
        },
        AgentHandle {
            health,
            shutdown,
            task,
        },
    )
}
