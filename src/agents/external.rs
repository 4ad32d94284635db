//! External agents: `agents/<name>.yaml` manifests with a `command:`.
//!
//! Each is started with the run (`/bin/sh -c`, in its own process group, in the project
//! root) and receives the events it subscribes to as JSON lines on its stdin, in `seq`
//! order. Its stdin closes when the run ends; it then has a few seconds to finish
//! before its group is killed. An agent that cannot be started, exits early or stops
//! reading costs the run nothing: its events are dropped and a warning says so.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::bus::EventBus;
use crate::config::agents::ExternalAgent;
use crate::event::EventKind;

/// Between SIGTERM and SIGKILL for an external agent that does not exit by itself.
const AGENT_KILL_GRACE: Duration = Duration::from_secs(1);

/// How long an external agent may take to finish after its stdin closed.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// Start every external agent on `bus`; each task ends after the bus closes.
pub fn start(bus: &EventBus, agents: &[ExternalAgent], root: &Path) -> Vec<JoinHandle<()>> {
    agents
        .iter()
        .map(|agent| {
            let rx = bus.subscribe();
            let bus = bus.clone();
            let agent = agent.clone();
            let root = root.to_path_buf();
            tokio::spawn(async move { feed(bus, rx, agent, root).await })
        })
        .collect()
}

async fn feed(
    bus: EventBus,
    mut rx: crate::bus::Subscription,
    agent: ExternalAgent,
    root: std::path::PathBuf,
) {
    let warn = |message: String| {
        bus.emit(
            super::names::CONTROLLER,
            EventKind::Warning {
                message,
                unit: None,
            },
        );
    };
    // Marked like a unit, so the terminate sequence finds what it leaves behind.
    let token = format!("{}:agent:{}", bus.run_id(), agent.name);
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(&agent.command)
        .current_dir(&root)
        .env("RUNNER_UNIT_TOKEN", &token)
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            warn(format!(
                "external agent `{}` did not start: {e}",
                agent.name
            ));
            return;
        }
    };
    let mut stdin = child.stdin.take();
    while let Some(event) = rx.recv().await {
        let wanted = agent.subscribe.is_empty()
            || agent.subscribe.iter().any(|t| t == event.kind.type_name());
        let Some(pipe) = stdin.as_mut().filter(|_| wanted) else {
            continue;
        };
        let mut line = serde_json::to_vec(&*event).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = pipe.write_all(&line).await {
            // The agent stopped reading: stop feeding it, keep draining the bus.
            warn(format!(
                "external agent `{}` stopped reading: {e}",
                agent.name
            ));
            stdin = None;
        }
    }
    drop(stdin);
    if tokio::time::timeout(FINISH_GRACE, child.wait())
        .await
        .is_err()
    {
        // Still running after its stdin closed: the one terminate sequence (SIGTERM,
        // a short grace, SIGKILL), whatever it started included.
        if let Some(pid) = child.id() {
            crate::exec::terminate(pid, &token, AGENT_KILL_GRACE, std::future::pending()).await;
        }
        let _ = child.wait().await;
    }
}
