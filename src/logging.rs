//! Diagnostic logs: `logs/orchestration/`, daily rolling JSON files.
//!
//! These are the runner's own logs (what the controller and agents did), not test
//! output. Writing is non-blocking; the returned guard flushes on drop, so the
//! controller holds it until the end of the run. `RUNNER_LOG` sets the filter
//! (default `info`).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Start logging under `<root>/logs/orchestration/`. None when the directory cannot be made.
pub fn init(root: &Path) -> Option<WorkerGuard> {
    let dir = root.join("logs").join("orchestration");
    std::fs::create_dir_all(&dir).ok()?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("runner")
        .filename_suffix("log")
        .max_log_files(14)
        .build(&dir)
        .ok()?;
    // The default queue preallocates 128,000 lines (4 MB of the runner's RSS); the log
    // gets a few lines per run, and lines past a full queue are dropped, never waited on.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .lossy(true)
        .finish(appender);
    let filter = EnvFilter::try_from_env("RUNNER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init()
        .ok()?;
    Some(guard)
}
