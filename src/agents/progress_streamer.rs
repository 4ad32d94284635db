//! ProgressStreamerAgent: the run's outputs that follow the event stream live.
//!
//! It subscribes to the bus and feeds the console renderer and the JSON-lines
//! writers (`events.jsonl` in the run directory, `--events PATH`), and starts the
//! progress server ([`crate::server`]: viewer page, WebSocket stream, `/status`,
//! `/metrics`) when one is asked for. Each output is its own task with its own
//! subscription, so a slow terminal never delays the event file, a slow viewer
//! never delays anything, and none of them ever delays the run. When the server's
//! address cannot be bound the agent degrades to console-only and the run goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AgentHandle, Health, names};
use crate::bus::EventBus;
use crate::cli::ProgressMode;
use crate::event::EventKind;
use crate::report::{console, jsonl};
use crate::server::{self, ProgressServer, ServerSettings};

/// What the streamer writes.
#[derive(Debug, Clone)]
pub struct StreamerSettings {
    /// Console mode.
    pub mode: ProgressMode,
    /// Colours on the console.
    pub colour: bool,
    /// JSON-lines files.
    pub event_files: Vec<PathBuf>,
    /// The progress server, when one is asked for.
    pub server: Option<ServerSettings>,
}

/// The running outputs; `finish` waits until they have written everything.
pub struct Streamer {
    console: JoinHandle<()>,
    files: JoinHandle<std::io::Result<()>>,
    server: Option<ProgressServer>,
    health: Arc<Health>,
}

impl Streamer {
    /// The viewer URL of the progress server, when it is serving.
    pub fn progress_url(&self) -> Option<String> {
        self.server.as_ref().map(ProgressServer::url)
    }

    /// Wait for the outputs to drain (call after the bus is closed): the console and
    /// the event files are complete, and every viewer got the run's last event
    /// (bounded). Returns the progress server, still serving the final state: stop
    /// it with [`ProgressServer::finish`] (which lingers if `--websocket-linger` asks).
    pub async fn finish(self) -> Option<ProgressServer> {
        let flush = async {
            if let Some(s) = &self.server {
                s.flush().await;
            }
        };
        let outputs = async {
            let _ = self.console.await;
            match self.files.await {
                Ok(Err(e)) => {
                    self.health.error(format!("event file: {e}"));
                    eprintln!("runner: could not write events: {e}");
                }
                Err(e) => self.health.error(format!("event writer: {e}")),
                Ok(Ok(())) => {}
            }
        };
        tokio::join!(flush, outputs);
        self.server
    }
}

/// Start the progress server, or degrade to console-only when it cannot bind.
fn start_server(
    bus: &EventBus,
    settings: &ServerSettings,
    health: &Health,
) -> Option<ProgressServer> {
    match server::start(bus, settings) {
        Ok(s) => {
            eprintln!("runner: progress at {} ({})", s.url(), s.ws_url());
            Some(s)
        }
        Err(e) => {
            let why = format!(
                "cannot serve live progress on {}: {e}; continuing console-only",
                settings.addr
            );
            eprintln!("runner: {why}");
            health.degrade(why.clone());
            // Events start with `run_started`: warn right after it.
            let mut rx = bus.subscribe();
            let bus = bus.clone();
            tokio::spawn(async move {
                if rx.recv().await.is_some() {
                    bus.emit(
                        names::STREAMER,
                        EventKind::Warning {
                            message: why,
                            unit: None,
                        },
                    );
                }
            });
            None
        }
    }
}

/// Start the agent on `bus`.
pub fn start(bus: &EventBus, settings: StreamerSettings) -> (Streamer, AgentHandle) {
    let health = Health::new(names::STREAMER);
    let shutdown = CancellationToken::new();
    let console = tokio::spawn(console::render(
        bus.subscribe(),
        bus.clone(),
        settings.mode,
        settings.colour,
    ));
    let files = tokio::spawn(jsonl::write_events(bus.subscribe(), settings.event_files));
    let server = settings
        .server
        .as_ref()
        .and_then(|s| start_server(bus, s, &health));
    // Its own loop writes its health: it beats while its outputs run, and records an
    // output that ended before the run closed the bus (a crashed console or event file).
    let outputs = [
        ("console", console.abort_handle()),
        ("event files", files.abort_handle()),
    ];
    let beat = {
        let (health, shutdown) = (Arc::clone(&health), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut reported = [false; 2];
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                for (i, (name, output)) in outputs.iter().enumerate() {
                    if output.is_finished() && !reported[i] {
                        reported[i] = true;
                        health.error(format!("the {name} output ended"));
                    }
                }
                health.heartbeat();
            }
        })
    };
    (
        Streamer {
            console,
            files,
            server,
            health: Arc::clone(&health),
        },
        AgentHandle {
            health,
            shutdown,
            task: beat,
        },
    )
}
