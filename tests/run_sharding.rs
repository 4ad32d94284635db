//! Sharding across machines, on the real binary: `--partition K/N` runs disjoint shards
//! whose union is the whole suite, `--durations-from` balances them by a previous
//! report, and `merge-junit` turns the shards' reports into one with the unsharded
//! run's counts.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use quick_junit::Report;
use serde_json::Value;

/// A suite of 15 units in two layers: 10 files (two failing), one unit skipped (it
/// requires real services), and 4 files in a second layer.
fn suite() -> Project {
    let project = Project::new();
    for i in 0..10 {
        let body = if i == 3 || i == 7 {
            "exit 1\n"
        } else {
            "exit 0\n"
        };
        project.file(&format!("unit/test_{i}.sh"), body);
    }
    for i in 0..4 {
        project.file(&format!("integ/test_{i}.sh"), "exit 0\n");
    }
    project.layers(
        r#"
version: 1
categories:
  unit: { command: "sh {file}", files: ["unit/*.sh"] }
  integ: { command: "sh {file}", files: ["integ/*.sh"] }
  lint: { command: "true", requires_real_services: true }
layers:
  - name: fast
    fail_fast: disabled
    categories: [unit, lint]
  - name: slow
    categories: [integ]
"#,
    );
    project
}

/// Runs the suite once (a fresh run directory each time) and returns the output and
/// the events of that run.
fn run(project: &Project, args: &[&str]) -> (Output, Vec<Value>) {
    let before: BTreeSet<PathBuf> = project.run_dirs().into_iter().collect();
    let out = project
        .runner()
        .env("RUNNER_REAL_SERVICES", "false")
        .args(["--use-layers", "fast,slow", "--no-fail-fast"])
        .args(args)
        .run();
    let dir = project
        .run_dirs()
        .into_iter()
        .find(|d| !before.contains(d))
        .unwrap_or_else(|| panic!("no new run directory\n{out}"));
    let events = read_events(&dir.join("events.jsonl"));
    check_stream(&events, &dir);
    (out, events)
}

fn planned(events: &[Value]) -> BTreeSet<String> {
    of_type(events, "run_started")[0]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

/// Units that finished or were skipped: what the run actually did.
fn settled(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| {
            (e["type"] == "test_finished" && e["will_retry"] == false)
                || e["type"] == "test_skipped"
        })
        .map(|e| e["unit"].as_str().unwrap().to_string())
        .collect()
}

/// `runner merge-junit ARGS...` in the project directory: (exit code, stdout, stderr).
fn merge_junit(project: &Project, args: &[&Path]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .current_dir(project.root())
        .arg("merge-junit")
        .args(args)
        .output()
        .expect("run runner merge-junit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Report::deserialize_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn testcases(r: &Report) -> BTreeSet<(String, String)> {
    r.test_suites
        .iter()
        .flat_map(|s| {
            s.test_cases
                .iter()
                .map(|c| (s.name.as_str().to_string(), c.name.as_str().to_string()))
        })
        .collect()
}

#[test]
fn shards_are_disjoint_cover_the_suite_and_merge_to_the_unsharded_report() {
    let project = suite();
    let full_path = project.path("full.xml");
    let (full_out, full_events) = run(&project, &["--junit", full_path.to_str().unwrap()]);
    full_out.assert_code(1).assert_counts_line(12, 2, 1);
    let all = planned(&full_events);
    assert_eq!(all.len(), 15);
    assert_eq!(settled(&full_events), all);

    const N: usize = 3;
    let mut union = BTreeSet::new();
    let mut shard_reports = Vec::new();
    let mut shard_ids = Vec::new();
    for k in 1..=N {
        let path = project.path(&format!("shard-{k}.xml"));
        let partition = format!("{k}/{N}");
        let (out, events) = run(
            &project,
            &["--partition", &partition, "--junit", path.to_str().unwrap()],
        );
        let mine = planned(&events);
        assert_eq!(settled(&events), mine, "shard {k} runs exactly its units");
        assert_eq!(
            mine.len(),
            5,
            "balanced by count when nothing is known: {k}/{N}\n{out}"
        );
        for id in &mine {
            assert!(union.insert(id.clone()), "{id} is in two shards");
        }
        // Units of other shards are not in the plan, so nothing reports them skipped.
        assert!(
            of_type(&events, "test_skipped")
                .iter()
                .all(|e| mine.contains(e["unit"].as_str().unwrap())),
            "{}",
            dump(&events)
        );
        shard_reports.push(path);
        shard_ids.push(mine);
    }
    assert_eq!(union, all, "the shards together are the whole suite");

    // The same shard twice: the same units.
    let (_, again) = run(&project, &["--partition", "2/3"]);
    assert_eq!(planned(&again), shard_ids[1], "deterministic");

    // merge-junit: one report with the unsharded counts and testcases.
    let merged_path = project.path("merged.xml");
    let mut args: Vec<&Path> = vec![&merged_path];
    args.extend(shard_reports.iter().map(PathBuf::as_path));
    let (code, stdout, stderr) = merge_junit(&project, &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("merged 3 report(s)"), "{stdout}");
    let full = report(&full_path);
    let merged = report(&merged_path);
    assert_eq!(
        (merged.tests, merged.failures, merged.errors, merged.skipped),
        (full.tests, full.failures, full.errors, full.skipped)
    );
    assert_eq!((full.tests, full.failures, full.skipped), (15, 2, 1));
    assert_eq!(testcases(&merged), testcases(&full));
    let suites = |r: &Report| -> Vec<(String, usize)> {
        let mut v: Vec<_> = r
            .test_suites
            .iter()
            .map(|s| (s.name.as_str().to_string(), s.tests))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        suites(&merged),
        suites(&full),
        "suites with the same name are merged"
    );

    // The runner's own report is a valid --durations-from.
    let (out, events) = run(
        &project,
        &[
            "--partition",
            "1/2",
            "--durations-from",
            full_path.to_str().unwrap(),
        ],
    );
    assert!(!planned(&events).is_empty(), "{out}");
    assert!(of_type(&events, "warning").is_empty(), "{}", dump(&events));
}

#[test]
fn durations_from_a_previous_report_balance_the_shards() {
    let project = suite();
    // unit/test_0.sh took 60 s last time; everything else 1 s.
    let mut xml = String::from("<testsuites>\n<testsuite name=\"fast/unit\">\n");
    for i in 0..10 {
        let time = if i == 0 { 60 } else { 1 };
        xml.push_str(&format!(
            "<testcase name=\"unit/test_{i}.sh\" time=\"{time}\"/>\n"
        ));
    }
    xml.push_str("</testsuite>\n<testsuite name=\"slow/integ\">\n");
    for i in 0..4 {
        xml.push_str(&format!(
            "<testcase name=\"integ/test_{i}.sh\" time=\"1\"/>\n"
        ));
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    project.file("durations.xml", &xml);
    let durations = project.path("durations.xml");
    let mut shards = Vec::new();
    for k in 1..=2 {
        let (_, events) = run(
            &project,
            &[
                "--partition",
                &format!("{k}/2"),
                "--durations-from",
                durations.to_str().unwrap(),
            ],
        );
        shards.push(planned(&events));
    }
    let long = "fast/unit/unit/test_0.sh";
    let with_long = shards.iter().find(|s| s.contains(long)).unwrap();
    assert_eq!(
        with_long.len(),
        1,
        "the 60 s unit has a shard to itself: {shards:?}"
    );
    assert_eq!(shards.iter().map(BTreeSet::len).sum::<usize>(), 15);

    // An unreadable durations file is a warning; the shards are then balanced by count.
    let (out, events) = run(
        &project,
        &["--partition", "1/2", "--durations-from", "missing.xml"],
    );
    let warnings = of_type(&events, "warning");
    assert_eq!(warnings.len(), 1, "{}", dump(&events));
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("balanced by count"),
        "{}",
        warnings[0]
    );
    assert_eq!(planned(&events).len(), 8, "{out}");
}

#[test]
fn invalid_partition_is_a_usage_error() {
    let project = suite();
    for bad in ["0/2", "3/2", "x"] {
        let out = project.runner().args(["--partition", bad]).run();
        out.assert_code(2);
        assert!(out.stderr.contains("K/N"), "{out}");
    }
    let (code, _, stderr) =
        merge_junit(&project, &[Path::new("out.xml"), Path::new("missing.xml")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.xml"), "{stderr}");
}

/// 40 command units in two categories of one layer. Each sleeps for the seconds in
/// `d/<name>` (written by [`set_durations`]) and fails when `fail_<name>` exists.
fn timed_suite() -> Project {
    let project = Project::new();
    project.layers(
        r#"
version: 1
categories:
  alpha: { command: "sh t.sh {file}", files: ["alpha/*.u"] }
  beta: { command: "sh t.sh {file}", files: ["beta/*.u"] }
layers:
  - name: all
    fail_fast: disabled
    categories: [alpha, beta]
"#,
    );
    project.file(
        "t.sh",
        "n=$(basename \"$1\" .u)\nsleep \"$(cat \"d/$n\" 2>/dev/null || echo 0)\"\nif [ -e \"fail_$n\" ]; then echo failing; exit 1; fi\n",
    );
    for i in 0..TIMED_UNITS {
        let cat = if i < 25 { "alpha" } else { "beta" };
        project.file(&format!("{cat}/u{i:02}.u"), "");
    }
    project
}

const TIMED_UNITS: usize = 40;

/// Every unit `i` sleeps `ms(i)` milliseconds from now on.
fn set_durations(project: &Project, ms: impl Fn(usize) -> u64) {
    for i in 0..TIMED_UNITS {
        project.file(
            &format!("d/u{i:02}"),
            &format!("{:.3}\n", ms(i) as f64 / 1000.0),
        );
    }
}

/// One run of the timed suite; returns (exit code, run_started ids, settled ids,
/// the `partition` event if any). Checks that `summary.json` agrees on the settled units.
fn timed_run(
    project: &Project,
    args: &[&str],
) -> (i32, BTreeSet<String>, BTreeSet<String>, Option<Value>) {
    let before: BTreeSet<PathBuf> = project.run_dirs().into_iter().collect();
    let out = project
        .runner()
        .args(["--use-layers", "all", "--progress-mode", "simple"])
        .args(args)
        .run();
    let dir = project
        .run_dirs()
        .into_iter()
        .find(|d| !before.contains(d))
        .unwrap_or_else(|| panic!("no new run directory\n{out}"));
    let events = read_events(&dir.join("events.jsonl"));
    check_stream(&events, &dir);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let ran: BTreeSet<String> = summary["units"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, u)| u["status"] == "finished")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        ran,
        settled(&events),
        "summary.json and events agree\n{out}"
    );
    let partition = of_type(&events, "partition").first().map(|e| (*e).clone());
    (out.code(), planned(&events), ran, partition)
}

/// Runs shards 1..=n of the timed suite one after the other, balanced by the project's
/// own history, each shard first changing how long every unit takes and which fail
/// (so each shard records new durations and outcomes before the next one plans).
/// Asserts that together they ran every unit exactly once; returns the JUnit reports.
fn sequential_shards(project: &Project, n: usize, all: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut union = BTreeSet::new();
    let mut digests = BTreeSet::new();
    let mut reports = Vec::new();
    for k in 1..=n {
        set_durations(project, |i| ((i * 7 + k * 13) % TIMED_UNITS) as u64 * 3);
        for i in 0..TIMED_UNITS {
            let flag = project.path(&format!("fail_u{i:02}"));
            if (i + k) % 9 == 0 {
                project.file(&format!("fail_u{i:02}"), "");
            } else {
                let _ = std::fs::remove_file(flag);
            }
        }
        let junit = project.path(&format!("shard-{k}-of-{n}.xml"));
        let (_, planned, ran, partition) = timed_run(
            project,
            &[
                "--partition",
                &format!("{k}/{n}"),
                "--durations-from",
                ".runner/history.sqlite",
                "--junit",
                junit.to_str().unwrap(),
            ],
        );
        assert_eq!(ran, planned, "shard {k}/{n} runs exactly its units");
        for id in &ran {
            assert!(union.insert(id.clone()), "{id} ran in two shards of {n}");
        }
        let partition = partition.expect("a partition event");
        assert_eq!(partition["planned"], TIMED_UNITS, "{partition}");
        assert_eq!(partition["known_durations"], TIMED_UNITS, "{partition}");
        digests.insert(partition["digest"].as_str().unwrap().to_string());
        reports.push(junit);
    }
    let missing: Vec<_> = all.difference(&union).collect();
    assert!(missing.is_empty(), "never ran in {n} shards: {missing:?}");
    assert_eq!(&union, all);
    assert_eq!(digests.len(), 1, "every shard balanced from the same input");
    reports
}

#[test]
fn sequential_shards_balanced_by_history_run_every_unit_once() {
    let project = timed_suite();
    set_durations(&project, |i| 5 + (i as u64 * 37) % 120);
    let (code, all, ran, partition) = timed_run(&project, &[]);
    assert_eq!(code, 0);
    assert_eq!(all.len(), TIMED_UNITS);
    assert_eq!(ran, all);
    assert!(partition.is_none(), "not a shard");

    let halves = sequential_shards(&project, 2, &all);
    let thirds = sequential_shards(&project, 3, &all);

    // The shards' reports merge into one report of the whole suite, without a word.
    for (reports, name) in [(&halves, "halves.xml"), (&thirds, "thirds.xml")] {
        let out = project.path(name);
        let mut args: Vec<&Path> = vec![&out];
        args.extend(reports.iter().map(PathBuf::as_path));
        let (code, stdout, stderr) = merge_junit(&project, &args);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(stderr.trim().is_empty(), "no warning: {stderr}");
        assert_eq!(report(&out).tests, TIMED_UNITS, "{stdout}");
    }
}

#[test]
fn merge_junit_refuses_overlapping_reports_and_warns_about_missing_shards() {
    let project = suite();
    let junit = |name: &str| project.path(name);
    let full = junit("full.xml");
    run(&project, &["--junit", full.to_str().unwrap()]);
    for k in 1..=3 {
        let path = junit(&format!("shard-{k}.xml"));
        run(
            &project,
            &[
                "--partition",
                &format!("{k}/3"),
                "--junit",
                path.to_str().unwrap(),
            ],
        );
    }
    let (s1, s2, s3) = (
        junit("shard-1.xml"),
        junit("shard-2.xml"),
        junit("shard-3.xml"),
    );
    let shard1 = testcases(&report(&s1));
    let (suite_name, test_name) = shard1.iter().next().unwrap().clone();

    // A test in two inputs: exit 2, the test and both files named, OUT not written.
    let out = junit("merged.xml");
    let (code, stdout, stderr) = merge_junit(&project, &[&out, &full, &s1]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{suite_name} :: {test_name} in")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} and {}", full.display(), s1.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} test(s) in more than one report", shard1.len())),
        "{stderr}"
    );
    assert!(stderr.contains("not written"), "{stderr}");
    assert!(!out.exists(), "nothing written on overlap");

    // A shard left out: a warning (planned 15, found fewer, which shard), exit 0.
    let (code, stdout, stderr) = merge_junit(&project, &[&out, &s1, &s3]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let missing = testcases(&report(&s2)).len();
    assert!(
        stderr.contains(&format!(
            "warning: merge-junit: the shards planned 15 units, the reports hold {}: {missing} unit(s) missing from all shards",
            15 - missing
        )),
        "{stderr}"
    );
    assert!(stderr.contains("no report from shard 2/3"), "{stderr}");
    assert_eq!(report(&out).tests, 15 - missing);

    // All three: no warning; the merged report is not a shard any more.
    let (code, _, stderr) = merge_junit(&project, &[&out, &s1, &s2, &s3]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let merged = std::fs::read_to_string(&out).unwrap();
    assert!(!merged.contains("runner.partition"), "{merged}");
    assert!(
        std::fs::read_to_string(&s1)
            .unwrap()
            .contains("<property name=\"runner.partition\" value=\"1/3\"/>"),
        "a shard's report says which shard it is"
    );

    // A shard balanced from other durations than its siblings: a warning.
    project.file(
        "other.xml",
        "<testsuites><testsuite name=\"fast/unit\"><testcase name=\"unit/test_0.sh\" time=\"60\"/></testsuite></testsuites>",
    );
    let other = junit("shard-2-other.xml");
    run(
        &project,
        &[
            "--partition",
            "2/3",
            "--durations-from",
            "other.xml",
            "--junit",
            other.to_str().unwrap(),
        ],
    );
    let (_, _, stderr) = merge_junit(&project, &[&junit("x.xml"), &s1, &other, &s3]);
    assert!(
        stderr.contains("not partitioned from the same plan and durations"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} (shard 2/3)", other.display())),
        "{stderr}"
    );
}

#[test]
fn sequential_shards_with_rerun_failed_rerun_every_failure_once() {
    let project = timed_suite();
    set_durations(&project, |_| 0);
    let failing: Vec<usize> = (0..TIMED_UNITS).filter(|i| i % 5 == 1).collect();
    for i in &failing {
        project.file(&format!("fail_u{i:02}"), "");
    }
    let (code, _, _, _) = timed_run(&project, &[]);
    assert_eq!(code, 1);
    // Fixed: each shard's reruns now pass, and are recorded before the next shard plans.
    for i in &failing {
        std::fs::remove_file(project.path(&format!("fail_u{i:02}"))).unwrap();
    }
    let mut union = BTreeSet::new();
    for k in 1..=2 {
        let (code, planned, ran, _) = timed_run(
            &project,
            &[
                "--rerun-failed",
                "--partition",
                &format!("{k}/2"),
                "--durations-from",
                ".runner/history.sqlite",
            ],
        );
        assert_eq!(code, 0);
        assert_eq!(ran, planned);
        for id in ran {
            assert!(union.insert(id.clone()), "{id} reran twice");
        }
    }
    let expected: BTreeSet<String> = failing
        .iter()
        .map(|i| {
            let cat = if *i < 25 { "alpha" } else { "beta" };
            format!("all/{cat}/{cat}/u{i:02}.u")
        })
        .collect();
    assert_eq!(union, expected, "every failure reran once, nothing else");
}
