//! `--orchestration-status` shows a live run's own agents (its `agents.json`), and the
//! last finished run as its fold recorded it.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const AGENTS: [&str; 5] = [
    "resource_manager",
    "progress_streamer",
    "test_orchestrator",
    "layer_executor",
    "background_e2e",
];

fn status(project: &Project) -> Value {
    let out = project
        .runner()
        .args(["--orchestration-status", "--json"])
        .run();
    out.assert_code(0);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--orchestration-status --json is not JSON ({e})\n{out}"))
}

fn names<'a>(agents: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    agents.into_iter().map(str::to_string).collect()
}

#[test]
fn status_shows_the_live_runs_own_agents_then_the_finished_run() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  slow: { command: "sleep 3" }
layers:
  - name: main
    categories: [slow]
"#,
    );
    let mut run = project.runner().args(["--use-layers", "main"]).spawn();
    let events = project.wait_for_events(&mut run, "the unit started", |events| {
        events.iter().any(|e| e["type"] == "test_started")
    });
    let run_id = events[0]["run_id"].as_str().unwrap().to_string();

    // The live run's agents, once every one of them has beaten.
    let deadline = Instant::now() + WAIT_DEADLINE;
    let live = loop {
        let v = status(&project);
        assert!(
            v.get("agents").is_none(),
            "the status starts no agents: {v}"
        );
        let runs = v["runs_in_progress"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(r) = runs.iter().find(|r| r["run_id"] == run_id.as_str())
            && r["agents"].as_array().is_some_and(|a| {
                a.len() == AGENTS.len() && a.iter().all(|a| a["status"] == "healthy")
            })
        {
            break r.clone();
        }
        assert!(
            run.try_wait().is_none(),
            "the run ended before its agents were shown: {v}"
        );
        assert!(
            Instant::now() < deadline,
            "no healthy agents for run {run_id}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live["pid"], run.pid(), "{live}");
    let agents = live["agents"].as_array().unwrap();
    assert_eq!(
        names(agents.iter().map(|a| a["name"].as_str().unwrap())),
        names(AGENTS),
        "{live}"
    );
    for a in agents {
        let age = a["last_heartbeat_secs"].as_f64().unwrap();
        assert!((0.0..5.0).contains(&age), "a recent heartbeat: {a}");
        assert!(a["last_heartbeat_at"].is_string(), "{a}");
        assert_eq!(a["error_count"], 0, "{a}");
    }
    assert!(
        live["agents_updated_secs"].as_f64().unwrap() < 5.0,
        "rewritten every supervisor tick: {live}"
    );
    let text = project.runner().arg("--orchestration-status").run();
    text.assert_code(0);
    assert!(text.stdout.contains(&run_id), "{text}");
    for name in AGENTS {
        assert!(text.stdout.contains(name), "text names {name}\n{text}");
    }

    run.wait().assert_code(0);
    let v = status(&project);
    assert!(
        v["runs_in_progress"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{v}"
    );
    let last = &v["last_run"];
    assert_eq!(last["run_id"], run_id.as_str(), "{v}");
    assert_eq!(last["outcome"], "passed", "{v}");
    assert_eq!(
        names(
            last["agents"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
        ),
        names(AGENTS),
        "the fold recorded every agent: {v}"
    );
    // The run's last word on its agents stays beside its run.json.
    let file: Value =
        serde_json::from_str(&project.read(&format!(".runner/runs/{run_id}/agents.json"))).unwrap();
    assert_eq!(file["pid"], live["pid"], "{file}");
    assert_eq!(
        names(
            file["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap())
        ),
        names(AGENTS),
        "{file}"
    );
}
