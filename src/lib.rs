//! layered-runner: test orchestration in layers.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions and mode detection (`args -> Mode`).
//! - [`config`]: `layers.yaml`, environment overlays, validation into domain types.
//! - [`plan`]: requested layers -> ordered stages -> units.
//! - [`filter`]: filter expressions (`-E`): parsing, matching, nextest filtersets.
//! - [`event`]: the event envelope (wire protocol) and `RunState`, the fold of events.
//! - [`bus`]: the one event bus: sequencing, folding, fan-out.
//! - [`app`]: the commands, one module each; the only layer that depends on everything.
//! - [`runner`]: a run from request to exit code; its dispatcher (the master controller) owns it.
//! - [`agents`]: the five agents.
//! - [`background`]: detached background runs: store, worker, status, kill.
//! - [`services`]: services layers require: probe, start, wait, stop.
//! - [`exec`]: process spawning, process groups, timeouts, kill tree, output capture.
//! - [`discover`]: units from commands, nextest and pytest.
//! - [`ingest`]: inputs read during a run (a unit's JUnit file).
//! - [`report`]: console, JSON lines, run directory, status views.
//! - [`server`]: the progress server (WebSocket, viewer page, metrics) and `runner watch`.
//! - [`store`]: history (`.runner/history.sqlite`): past durations, outcomes and memory per unit.
//! - [`error`]: a command's error: kinds mapped to exit codes, printed once by `main`.
//! - [`exit_code`]: the exit codes.
//! - [`logging`]: the runner's own rolling logs.
//! - [`watchdog`]: the process that ends a killed runner's units; dead runs closed.
#![warn(missing_docs)]

pub mod agents;
pub mod app;
pub mod background;
pub mod bus;
pub mod cli;
pub mod config;
pub mod discover;
pub mod error;
pub mod event;
pub mod exec;
pub mod exit_code;
pub mod filter;
pub mod ingest;
pub mod logging;
pub mod plan;
pub mod report;
pub mod runner;
pub mod server;
pub mod services;
pub mod store;
pub mod watchdog;
