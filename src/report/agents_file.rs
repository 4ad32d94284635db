//! `agents.json` beside a run's `run.json`: the run's five agents as its dispatcher last
//! saw them, rewritten on every supervision tick, read by `--orchestration-status`.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::agents::{HealthReport, unix_ms};
use crate::report::files;

/// The file beside a run's `run.json` that holds its agents' health.
pub const AGENTS_FILE: &str = "agents.json";

/// `agents.json`: a run's agents as its dispatcher last saw them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentHealthFile {
    /// The runner's pid.
    pub pid: u32,
    /// When the file was written, ms since the Unix epoch.
    pub updated_unix_ms: u64,
    /// One report per agent, in the order the dispatcher supervises them.
    pub agents: Vec<HealthReport>,
}

/// Writes `agents.json` in `run_dir` atomically: the run's dispatcher calls it on
/// every supervision tick (500 ms) and once more when the run's layers are over.
pub fn write_agent_health(run_dir: &Path, reports: &[HealthReport]) -> std::io::Result<()> {
    let file = AgentHealthFile {
        pid: std::process::id(),
        updated_unix_ms: unix_ms(SystemTime::now()),
        agents: reports.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    files::write_atomic(&run_dir.join(AGENTS_FILE), &bytes)
}

/// Reads `agents.json` of `run_dir`; `None` when absent (a run that has only just
/// started) or unreadable.
pub fn read_agent_health(run_dir: &Path) -> Option<AgentHealthFile> {
    serde_json::from_slice(&std::fs::read(run_dir.join(AGENTS_FILE)).ok()?).ok()
}
