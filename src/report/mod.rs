//! Reports: sinks of the event stream.
//!
//! - [`console`]: the terminal view (live bars, plain lines, JSON, silent).
//! - [`jsonl`]: events as JSON lines (`events.jsonl`, `--events PATH`).
//! - [`out`]: stdout for listings and the console: a closed reader ends output quietly.
//! - [`files`]: atomic file writes and the run directory (`summary.json`, `run.json`).
//! - [`agents_file`]: a run's agents' health beside its `run.json` (`agents.json`).
//! - [`junit`]: JUnit XML out (`--junit PATH`).
//! - [`junit_merge`]: `runner merge-junit`, and what it checks of the shards it merges.
//! - [`github`]: GitHub Actions annotations and job summary.
//! - [`text`]: unit output and messages cleaned for reports (escapes, control characters).
//! - [`html`]: the self-contained HTML report (`--html PATH`).
//! - [`excerpt`]: the lines of a failure's output that matter (console, HTML).

pub mod agents_file;
pub mod console;
pub mod excerpt;
pub mod files;
pub mod github;
pub mod html;
pub mod jsonl;
pub mod junit;
pub mod junit_merge;
pub mod out;
pub mod text;
