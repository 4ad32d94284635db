//! Reports: sinks of the event stream.
//!
//! - [`console`]: the terminal view (live bars, plain lines, JSON, silent).
//! - [`jsonl`]: events as JSON lines (`events.jsonl`, `--events PATH`).
//! - [`files`]: atomic file writes and the run directory (`summary.json`, `run.json`).
//! - [`status`]: `--show-layers` and `--orchestration-status`.

pub mod console;
pub mod files;
pub mod jsonl;
pub mod status;
