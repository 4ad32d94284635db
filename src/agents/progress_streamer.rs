//! ProgressStreamerAgent: the run's outputs that follow the event stream live.
//!
//! It subscribes to the bus and feeds the console renderer and the JSON-lines
//! writers (`events.jsonl` in the run directory, `--events PATH`). Each output is
//! its own task with its own subscription, so a slow terminal never delays the
//! event file and neither ever delays the run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AgentHandle, Health, names, spawn_heartbeat};
use crate::bus::EventBus;
use crate::cli::ProgressMode;
use crate::report::{console, jsonl};

/// What the streamer writes.
#[derive(Debug, Clone)]
pub struct StreamerSettings {
    /// Console mode.
    pub mode: ProgressMode,
    /// Colours on the console.
    pub colour: bool,
    /// JSON-lines files.
    pub event_files: Vec<PathBuf>,
}

/// The running outputs; `finish` waits until they have written everything.
pub struct Streamer {
    console: JoinHandle<()>,
    files: JoinHandle<std::io::Result<()>>,
    health: Arc<Health>,
}

impl Streamer {
    /// Wait for the outputs to drain (call after the bus is closed).
    pub async fn finish(self) {
        let _ = self.console.await;
        match self.files.await {
            Ok(Err(e)) => {
                self.health.error(format!("event file: {e}"));
                eprintln!("runner: could not write events: {e}");
            }
            Err(e) => self.health.error(format!("event writer: {e}")),
            Ok(Ok(())) => {}
        }
    }
}

/// Start the agent on `bus`.
pub fn start(bus: &EventBus, settings: StreamerSettings) -> (Streamer, AgentHandle) {
    let health = Health::new(names::STREAMER);
    let shutdown = CancellationToken::new();
    let console = tokio::spawn(console::render(
        bus.subscribe(),
        settings.mode,
        settings.colour,
    ));
    let files = tokio::spawn(jsonl::write_events(bus.subscribe(), settings.event_files));
    let beat = spawn_heartbeat(
        Arc::clone(&health),
        shutdown.clone(),
        Duration::from_millis(500),
    );
    (
        Streamer {
            console,
            files,
            health: Arc::clone(&health),
        },
        AgentHandle {
            health,
            shutdown,
            task: beat,
        },
    )
}
