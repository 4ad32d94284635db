//! layered-runner: test orchestration in layers.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions and mode detection (`args -> Mode`).
//! - [`config`]: `layers.yaml`, environment overlays, validation into domain types.
//! - [`plan`]: requested layers -> ordered stages -> units.
//! - [`event`]: the event envelope (wire protocol) and `RunState`, the fold of events.
//! - [`bus`]: the one event bus: sequencing, folding, fan-out.
//! - [`controller`]: the master controller: modes, agents, health, shutdown.
//! - [`agents`]: the five agents.
//! - [`exec`]: process spawning, process groups, timeouts, kill tree, output capture.
//! - [`discover`]: units from commands.
//! - [`report`]: console, JSON lines, run directory, status views.
//! - [`exit_code`]: the exit codes.
//! - [`logging`]: the runner's own rolling logs.
#![warn(missing_docs)]

pub mod agents;
pub mod bus;
pub mod cli;
pub mod config;
pub mod controller;
pub mod discover;
pub mod event;
pub mod exec;
pub mod exit_code;
pub mod logging;
pub mod plan;
pub mod report;
