//! External agents (`agents/<name>.yaml` with `command:`) receive the events they
//! subscribe to as JSON lines; a broken one costs the run nothing.

mod common;

use common::Project;

#[test]
fn external_agent_receives_subscribed_events_in_order() {
    let p = Project::new();
    p.layers(
        r#"
categories:
  ok: { command: "true" }
  bad: { command: "exit 4" }
layers:
  - { name: l, fail_fast: disabled, categories: [ok, bad] }
"#,
    )
    .file(
        "agents/recorder.yaml",
        "command: \"cat > received.jsonl\"\nsubscribe: [test_finished, run_finished]\n",
    );
    p.runner().args(["--use-layers", "l"]).run().assert_code(1);
    let received: Vec<serde_json::Value> = p
        .read("received.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<&str> = received
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["test_finished", "test_finished", "run_finished"]);
    let seqs: Vec<u64> = received
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
    assert_eq!(received[2]["exit_code"], 1);
}

#[test]
fn an_agent_that_exits_at_once_does_not_change_the_run() {
    let p = Project::new();
    p.layers(
        r#"
categories:
  ok: { command: "true", files: "u/*.sh" }
layers:
  - { name: l, categories: [ok] }
"#,
    )
    .file("agents/quitter.yaml", "command: \"exit 0\"\n");
    for i in 0..30 {
        p.file(&format!("u/{i}.sh"), "true\n");
    }
    let out = p.runner().args(["--use-layers", "l"]).run();
    out.assert_code(0).assert_counts_line(30, 0, 0);
}

#[test]
fn unknown_key_in_a_manifest_is_a_located_error() {
    let p = Project::new();
    p.layers("categories:\n  ok: { command: \"true\" }\n").file(
        "agents/resource_manager.yaml",
        "sample_interval_ms: 100\nsample_intervall: 5\n",
    );
    let out = p.runner().arg("--show-layers").run();
    out.assert_code(2)
        .assert_stderr_contains("resource_manager.yaml:2:1")
        .assert_stderr_contains("sample_interval_ms");
}
