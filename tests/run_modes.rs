//! Layer execution modes: parallel units overlap, sequential ones do not, hybrid runs
//! categories of equal `priority_order` together and the next group after them.
//!
//! Units run tests/fixtures/projects/modes/stamp.sh, which records start and end times;
//! in parallel groups it also waits at a barrier until all of its group has started,
//! so "they overlapped" is proven by the units passing, not by timing luck.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// `(start_ns, end_ns)` of every unit, by unit id.
fn intervals(project: &Project, events: &[Value]) -> BTreeMap<String, (u128, u128)> {
    let units = events[0]["units"].as_array().unwrap();
    units
        .iter()
        .map(|u| {
            let id = u["id"].as_str().unwrap();
            let file = id.replace('/', "_");
            let read = |ext: &str| -> u128 {
                project
                    .read(&format!("stamps/{file}.{ext}"))
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("stamp {file}.{ext}: {e}"))
            };
            (id.to_string(), (read("start"), read("end")))
        })
        .collect()
}

fn run_modes(layers_yaml: &str, jobs: &str) -> (Project, Output, Vec<Value>) {
    let project = Project::from_fixture("modes");
    project.layers(layers_yaml);
    let out = project
        .runner()
        .args(["--use-layers", "main", "--jobs", jobs])
        .run();
    let (events, _) = check_run(&project, &out);
    (project, out, events)
}

#[track_caller]
fn assert_disjoint(spans: &BTreeMap<String, (u128, u128)>) {
    let mut sorted: Vec<_> = spans.iter().collect();
    sorted.sort_by_key(|(_, (start, _))| *start);
    for pair in sorted.windows(2) {
        let (a, (_, a_end)) = pair[0];
        let (b, (b_start, _)) = pair[1];
        assert!(
            a_end <= b_start,
            "{a} and {b} overlap, expected one after the other: {spans:?}"
        );
    }
}

#[test]
fn parallel_layer_runs_units_at_the_same_time() {
    let (_, out, events) = run_modes(
        r#"
version: 1
categories:
  a: { command: "sh stamp.sh all 4 {file}", files: "files/test_*.txt", max_parallel_instances: 2 }
  b: { command: "sh stamp.sh all 4" }
  c: { command: "sh stamp.sh all 4" }
layers:
  - name: main
    execution_mode: parallel
    categories: [a, b, c]
"#,
        "4",
    );
    out.assert_code(0).assert_counts_line(4, 0, 0);
    let running_peak = events
        .iter()
        .scan(0i64, |running, e| {
            match e["type"].as_str() {
                Some("test_started") => *running += 1,
                Some("test_finished") => *running -= 1,
                _ => {}
            }
            Some(*running)
        })
        .max();
    assert_eq!(
        running_peak,
        Some(4),
        "all four units ran together:\n{}",
        dump(&events)
    );
}

#[test]
fn parallel_layer_respects_the_global_jobs_limit() {
    let (project, out, events) = run_modes(
        r#"
version: 1
categories:
  a: { command: "sh stamp.sh {file}", files: "files/test_*.txt", max_parallel_instances: 2 }
  b: { command: "sh stamp.sh" }
layers:
  - name: main
    execution_mode: parallel
    categories: [a, b]
"#,
        "1",
    );
    out.assert_code(0).assert_counts_line(3, 0, 0);
    assert_disjoint(&intervals(&project, &events));
}

#[test]
fn sequential_layer_runs_one_unit_at_a_time_in_category_order() {
    let (project, out, events) = run_modes(
        r#"
version: 1
categories:
  a: { command: "sh stamp.sh {file}", files: "files/test_*.txt", max_parallel_instances: 2 }
  b: { command: "sh stamp.sh" }
  c: { command: "sh stamp.sh" }
layers:
  - name: main
    execution_mode: sequential
    categories: [a, b, c]
"#,
        "4",
    );
    out.assert_code(0).assert_counts_line(4, 0, 0);
    let spans = intervals(&project, &events);
    assert_disjoint(&spans);
    let start = |cat: &str| {
        spans
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("main/{cat}/")))
            .map(|(_, (s, _))| *s)
            .min()
            .unwrap()
    };
    assert!(
        start("a") < start("b") && start("b") < start("c"),
        "category order: {spans:?}"
    );
}

#[test]
fn hybrid_layer_groups_categories_by_priority_order() {
    let (project, out, events) = run_modes(
        r#"
version: 1
categories:
  late: { command: "sh stamp.sh", priority_order: 2 }
  a: { command: "sh stamp.sh first 2", priority_order: 1 }
  b: { command: "sh stamp.sh first 2", priority_order: 1 }
layers:
  - name: main
    execution_mode: hybrid
    categories: [late, a, b]
"#,
        "4",
    );
    // a and b passed their barrier: they ran together.
    out.assert_code(0).assert_counts_line(3, 0, 0);
    let spans = intervals(&project, &events);
    let (late_start, _) = spans["main/late/late"];
    for id in ["main/a/a", "main/b/b"] {
        let (_, end) = spans[id];
        assert!(
            end <= late_start,
            "priority 2 started before {id} (priority 1) ended: {spans:?}"
        );
    }
}
