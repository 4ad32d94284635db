//! layered-runner: test orchestration in layers.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions and mode detection (`args -> Mode`).
//! - [`config`]: `layers.yaml`, environment overlays, validation into domain types.
//! - [`plan`]: requested layers -> ordered stages -> units.
//! - [`event`]: the event envelope (wire protocol) and `RunState`, the fold of events.
//! - [`controller`]: the master controller: agents, health, modes, shutdown.
//! - [`agents`]: the five agents.
//! - [`exec`]: process spawning, process groups, timeouts, kill tree, output capture.
//! - [`discover`]: units from commands (and nextest).
//! - [`report`]: console, JSON lines, summary.
#![warn(missing_docs)]

pub mod config;
