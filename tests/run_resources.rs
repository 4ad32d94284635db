//! Memory budgets that hold, with real children that allocate and touch memory:
//! admission by estimate under a global budget, the hard limit of a unit's whole
//! process tree, fairness for a large unit, memory pressure, degraded sampling and
//! `--orchestration-status` showing budgets and a live run's use.
//!
//! Units are small Python programs that write their start and end times
//! (`time.time()`) to `out/<name>`, so concurrency is checked from what the units saw,
//! not from the runner's own events.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// `mem.py NAME MB SECONDS [GROUP N]`: record the start, touch MB MiB, (with GROUP:
/// wait until N processes of GROUP hold theirs,) hold it for SECONDS, record the end.
const MEM_PY: &str = r#"
import os, sys, time
name, mb, hold = os.path.basename(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
os.makedirs("out", exist_ok=True)
start = time.time()
block = b"x" * (mb << 20)
if len(sys.argv) > 5:
    group, n = os.path.join("barrier", sys.argv[4]), int(sys.argv[5])
    os.makedirs(group, exist_ok=True)
    open(os.path.join(group, name), "w").close()
    deadline = time.time() + 30
    while len(os.listdir(group)) < n and time.time() < deadline:
        time.sleep(0.01)
time.sleep(hold)
with open(os.path.join("out", name + ".tmp"), "w") as f:
    f.write("%f %f\n" % (start, time.time()))
os.rename(os.path.join("out", name + ".tmp"), os.path.join("out", name))
"#;

/// `grow.py`: grow by 20 MiB steps towards 2 GiB; writes `out/grew` if it got there.
const GROW_PY: &str = r#"
import os, time
os.makedirs("out", exist_ok=True)
chunks = []
while len(chunks) < 100:
    chunks.append(b"x" * (20 << 20))
    time.sleep(0.03)
open("out/grew", "w").write("2 GiB\n")
"#;

/// `forks.sh NAME`: three children, one in its own session, each holding 150 MiB, all
/// three at once for a second.
const FORKS_SH: &str = r#"
python3 mem.py "$1-a" 150 1 "$1" 3 &
python3 mem.py "$1-b" 150 1 "$1" 3 &
setsid python3 mem.py "$1-c" 150 1 "$1" 3 &
wait
"#;

/// `sleep.sh NAME SECONDS`: like `mem.py` without memory, and cheaper to start.
const SLEEP_SH: &str = r#"
name=$(basename "$1"); mkdir -p out
start=$(date +%s.%N); sleep "$2"
echo "$start $(date +%s.%N)" > "out/$name.tmp" && mv "out/$name.tmp" "out/$name"
"#;

/// Generous bound for a whole run.
const RUN: Duration = Duration::from_secs(60);

fn project(layers: &str) -> Project {
    let p = Project::new();
    p.file("mem.py", MEM_PY)
        .file("grow.py", GROW_PY)
        .file("forks.sh", FORKS_SH)
        .file("sleep.sh", SLEEP_SH)
        .layers(layers);
    p
}

/// Start and end times the units wrote, by name.
fn intervals(project: &Project) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(project.path("out")).expect("units wrote out/") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut it = text.split_whitespace().map(|t| t.parse::<f64>().unwrap());
        if let (Some(s), Some(e)) = (it.next(), it.next()) {
            out.push((name, s, e));
        }
    }
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// The most intervals open at one instant.
fn max_overlap(iv: &[(String, f64, f64)]) -> usize {
    let mut points: Vec<(f64, i32)> = iv
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // At equal times, ends before starts.
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in points {
        open += d;
        max = max.max(open);
    }
    max as usize
}

fn finished<'a>(events: &'a [Value], unit: &str) -> &'a Value {
    let f = unit_events(events, "test_finished", unit);
    assert_eq!(f.len(), 1, "{unit}:\n{}", dump(events));
    f[0]
}

fn peak(events: &[Value], unit: &str) -> u64 {
    let f = finished(events, unit);
    f["peak_memory_mb"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak_memory_mb on {f}"))
}

#[test]
fn units_of_300_mb_under_a_700_mb_budget_run_two_at_a_time() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 8, max_memory_mb: 700 }
categories:
  big:
    command: "python3 mem.py {file} 300 1.0"
    files: "units/*"
    min_memory_mb: 300
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    execution_mode: parallel
    categories: [big]
"#,
    );
    for i in 1..=6 {
        p.file(&format!("units/u{i}"), "");
    }
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(0).assert_counts_line(6, 0, 0);
    let iv = intervals(&p);
    assert_eq!(iv.len(), 6, "{iv:?}");
    assert_eq!(
        max_overlap(&iv),
        2,
        "300 MiB units under 700 MiB: never more than two, and two do run together: {iv:?}"
    );
    let events = p.events();
    for i in 1..=6 {
        let mb = peak(&events, &format!("main/big/units/u{i}"));
        assert!((290..=400).contains(&mb), "u{i} measured at {mb} MiB");
    }
    let samples = of_type(&events, "resource_sample");
    assert!(!samples.is_empty(), "resource samples published");
    for s in &samples {
        assert!(s["running"].as_u64().unwrap() <= 2, "{s}");
        assert!(s["admitted_memory_mb"].as_u64().unwrap() <= 700, "{s}");
        assert!(s["available_memory_mb"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s["used_memory_mb"].as_u64().unwrap() >= 500),
        "two units of 300 MiB seen together"
    );
    assert_no_process_with(p.marker());
}

#[test]
fn a_unit_growing_past_its_limit_is_killed_and_the_rest_passes() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 4, kill_grace_seconds: 1 }
categories:
  grow:
    command: "python3 grow.py"
    max_memory_mb: 200
    timeout_seconds: 30
    env: { LR_MARK: "@MARK@" }
  fine:
    command: "python3 mem.py {file} 50 0.5"
    files: "units/*"
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    execution_mode: parallel
    fail_fast: disabled
    categories: [grow, fine]
"#,
    );
    p.file("units/a", "").file("units/b", "");
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(1).assert_counts_line(2, 1, 0);
    let events = p.events();
    let f = finished(&events, "main/grow/grow");
    assert_eq!(f["outcome"], "memory_limit", "{f}");
    assert!(
        f["message"].as_str().unwrap().contains("memory limit"),
        "{f}"
    );
    let mb = peak(&events, "main/grow/grow");
    assert!(
        (200..2048).contains(&mb),
        "killed past 200 MiB, long before 2 GiB: {mb}"
    );
    assert!(!p.path("out/grew").exists(), "the unit never reached 2 GiB");
    for u in ["main/fine/units/a", "main/fine/units/b"] {
        assert_eq!(finished(&events, u)["outcome"], "passed");
    }
    assert_eq!(
        p.summary()["units"]["main/grow/grow"]["outcome"],
        "memory_limit"
    );
    assert_no_process_with(p.marker());
}

#[test]
fn a_unit_is_measured_and_limited_as_a_whole_process_tree() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 2, kill_grace_seconds: 1 }
categories:
  measured:
    command: "sh forks.sh measured"
    env: { LR_MARK: "@MARK@" }
  limited:
    command: "sh forks.sh limited"
    max_memory_mb: 300
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    execution_mode: parallel
    fail_fast: disabled
    categories: [measured, limited]
"#,
    );
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(1).assert_counts_line(1, 1, 0);
    let events = p.events();
    let m = peak(&events, "main/measured/measured");
    assert!(
        m >= 400,
        "three children of 150 MiB (one in its own session) count together: {m}"
    );
    let f = finished(&events, "main/limited/limited");
    assert_eq!(
        f["outcome"], "memory_limit",
        "each child is under 300 MiB, the tree is not: {f}"
    );
    assert!(peak(&events, "main/limited/limited") > 300);
    let done: Vec<String> = intervals(&p).into_iter().map(|(n, ..)| n).collect();
    assert!(
        done.iter().all(|n| n.starts_with("measured-")),
        "no child of the killed tree finished: {done:?}"
    );
    assert_no_process_with(p.marker());
}

#[test]
fn a_large_unit_behind_many_small_ones_still_starts() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 4, max_memory_mb: 1000 }
categories:
  small:
    command: "sh sleep.sh {file} 0.4"
    files: "small/*"
    min_memory_mb: 200
  warmup:
    command: "sleep 0.5"
  big:
    command: "python3 mem.py big 100 0.3"
    min_memory_mb: 700
    depends_on: [warmup]
layers:
  - name: main
    execution_mode: parallel
    categories: [small, warmup, big]
"#,
    );
    p.file("agents/resource_manager.yaml", "bypass_window_ms: 300\n");
    for i in 0..24 {
        p.file(&format!("small/s{i:02}"), "");
    }
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(0).assert_counts_line(26, 0, 0);
    let events = p.events();
    let started: Vec<&str> = of_type(&events, "test_started")
        .iter()
        .map(|e| e["unit"].as_str().unwrap())
        .collect();
    let big_at = started.iter().position(|u| *u == "main/big/big").unwrap();
    let smalls_after = started[big_at..]
        .iter()
        .filter(|u| u.starts_with("main/small/"))
        .count();
    assert!(
        smalls_after >= 4,
        "the big unit started while small ones kept coming ({smalls_after} started after it): {started:?}"
    );
    // While it ran, the budget held: 700 + one small unit's 200 at most.
    let iv = intervals(&p);
    let (_, bs, be) = iv.iter().find(|(n, ..)| n == "big").unwrap().clone();
    let beside: Vec<(String, f64, f64)> = iv
        .iter()
        .filter(|(n, s, e)| n != "big" && *s < be && *e > bs)
        .map(|(n, s, e)| (n.clone(), s.max(bs), e.min(be)))
        .collect();
    assert!(
        max_overlap(&beside) <= 1,
        "at most one small unit at a time beside the big one: {beside:?} within {bs}..{be}"
    );
}

#[test]
fn memory_pressure_pauses_admission_to_one_unit_at_a_time() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 8 }
categories:
  first:
    command: "sleep 0.6"
  rest:
    command: "python3 mem.py {file} 10 0.3"
    files: "rest/*"
    depends_on: [first]
layers:
  - name: main
    execution_mode: parallel
    categories: [first, rest]
"#,
    );
    // Any machine is "under pressure" when 99.99% must stay available.
    p.file(
        "agents/resource_manager.yaml",
        "memory_pressure_percent: 99.99\nsample_interval_ms: 50\n",
    );
    for i in 0..3 {
        p.file(&format!("rest/r{i}"), "");
    }
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(0).assert_counts_line(4, 0, 0);
    let events = p.events();
    let throttled = of_type(&events, "resource_throttled");
    assert_eq!(throttled.len(), 1, "{}", dump(&events));
    assert!(
        throttled[0]["reason"]
            .as_str()
            .unwrap()
            .contains("memory_pressure_percent 99.99%"),
        "{}",
        throttled[0]
    );
    assert_eq!(
        max_overlap(&intervals(&p)),
        1,
        "paused admission lets one unit run at a time"
    );
    assert_eq!(p.summary()["throttled"], true);
}

#[test]
fn without_sampling_the_manager_degrades_and_the_run_goes_on() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 8, max_memory_mb: 700 }
categories:
  big:
    command: "python3 mem.py {file} 100 0.5"
    files: "units/*"
    min_memory_mb: 300
  over:
    command: "python3 mem.py over 100 0.5"
    max_memory_mb: 20
layers:
  - name: main
    execution_mode: hybrid
    categories: [big, over]
"#,
    );
    for i in 1..=4 {
        p.file(&format!("units/u{i}"), "");
    }
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .env("RUNNER_DISABLE_SAMPLING", "1")
        .spawn()
        .wait_within(RUN);
    out.assert_code(0).assert_counts_line(5, 0, 0);
    let events = p.events();
    let health: Vec<&Value> = of_type(&events, "agent_health")
        .into_iter()
        .filter(|e| e["name"] == "resource_manager")
        .collect();
    assert!(
        health.iter().any(|e| e["status"] == "degraded"
            && e["last_error"]
                .as_str()
                .unwrap()
                .contains("RUNNER_DISABLE_SAMPLING")),
        "{health:?}"
    );
    assert!(of_type(&events, "resource_sample").is_empty());
    for f in of_type(&events, "test_finished") {
        assert!(f.get("peak_memory_mb").is_none(), "nothing measured: {f}");
        assert_eq!(f["outcome"], "passed", "no memory kill without sampling");
    }
    let bigs: Vec<_> = intervals(&p)
        .into_iter()
        .filter(|(n, ..)| n.starts_with('u'))
        .collect();
    assert_eq!(
        max_overlap(&bigs),
        2,
        "declared estimates still hold the budget"
    );
}

#[test]
fn orchestration_status_shows_budgets_and_a_live_runs_use() {
    let p = project(
        r#"
version: 1
execution: { max_parallel_tests: 4, max_memory_mb: 2000 }
categories:
  hold:
    command: "python3 mem.py hold 100 30"
    min_memory_mb: 150
    max_memory_mb: 1000
    rlimit_as_mb: 8000
    env: { LR_MARK: "@MARK@" }
layers:
  - name: main
    resource_limits: { max_memory_mb: 1500, max_parallel_instances: 2 }
    categories: [hold]
"#,
    );
    let mut run = p.runner().args(["--use-layers", "main"]).spawn();
    p.wait_for_events(&mut run, "a sample with the unit running", |events| {
        events
            .iter()
            .any(|e| e["type"] == "resource_sample" && e["used_memory_mb"].as_u64() >= Some(100))
    });
    let status = p.runner().args(["--orchestration-status", "--json"]).run();
    status.assert_code(0);
    let v: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let b = &v["configuration"]["budgets"];
    assert_eq!(b["max_memory_mb"], 2000, "{b}");
    assert_eq!(b["layers"][0]["slots"], 2, "{b}");
    assert_eq!(b["layers"][0]["max_memory_mb"], 1500, "{b}");
    assert_eq!(b["categories"][0]["min_memory_mb"], 150, "{b}");
    assert_eq!(b["categories"][0]["rlimit_as_mb"], 8000, "{b}");
    let live = &v["runs_in_progress"][0]["resources"];
    assert_eq!(live["running"], 1, "{v}");
    assert_eq!(live["admitted_memory_mb"], 150, "{v}");
    let text = p.runner().arg("--orchestration-status").run();
    assert!(text.stdout.contains("budgets: 4 slots"), "{text}");
    assert!(text.stdout.contains("use: 1 running"), "{text}");
    run.signal("INT");
    run.wait_within(RUN).assert_code(130);
    assert_no_process_with(p.marker());
}

#[test]
fn rlimit_as_mb_is_a_hard_backstop_in_the_child() {
    let p = project(
        r#"
version: 1
categories:
  capped:
    command: "python3 mem.py capped 300 0"
    rlimit_as_mb: 200
  roomy:
    command: "python3 mem.py roomy 100 0"
    rlimit_as_mb: 200
layers:
  - name: main
    fail_fast: disabled
    categories: [capped, roomy]
"#,
    );
    let out = p
        .runner()
        .args(["--use-layers", "main"])
        .spawn()
        .wait_within(RUN);
    out.assert_code(1).assert_counts_line(1, 1, 0);
    let events = p.events();
    let f = finished(&events, "main/capped/capped");
    assert_eq!(f["outcome"], "failed", "{f}");
    assert!(
        f["output_tail"].as_str().unwrap().contains("MemoryError"),
        "the allocation itself failed: {f}"
    );
    assert_eq!(finished(&events, "main/roomy/roomy")["outcome"], "passed");
}
