//! Retries and flaky detection: a unit that fails once and then passes is passed and
//! flaky; a unit that keeps failing uses every attempt and fails.

mod common;

use common::*;

#[test]
fn unit_passing_on_retry_is_flaky() {
    let project = Project::new();
    project.file(
        "flaky.sh",
        "echo \"$RUNNER_ATTEMPT\" >> attempts.log\n\
         if [ -e failed-once ]; then exit 0; fi\n\
         touch failed-once\n\
         echo 'first attempt fails'\n\
         exit 1\n",
    );
    project.layers(
        r#"
version: 1
execution: { retry_backoff_ms: 10 }
categories:
  steady: { command: "true" }
  flaky: { command: "sh flaky.sh", retries: 2 }
layers:
  - name: main
    categories: [steady, flaky]
"#,
    );
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(0).assert_counts_line(2, 0, 0);
    let (events, summary) = check_run(&project, &out);

    let id = "main/flaky/flaky";
    let finished = unit_events(&events, "test_finished", id);
    assert_eq!(finished.len(), 2, "two attempts:\n{}", dump(&events));
    assert_eq!(
        (
            &finished[0]["attempt"],
            &finished[0]["outcome"],
            &finished[0]["will_retry"]
        ),
        (&1.into(), &"failed".into(), &true.into()),
        "{}",
        finished[0]
    );
    assert_eq!(
        (
            &finished[1]["attempt"],
            &finished[1]["outcome"],
            &finished[1]["will_retry"]
        ),
        (&2.into(), &"passed".into(), &false.into()),
        "{}",
        finished[1]
    );
    let started: Vec<_> = unit_events(&events, "test_started", id)
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(started, [1, 2]);
    assert_eq!(
        project.read("attempts.log"),
        "1\n2\n",
        "RUNNER_ATTEMPT counts from 1"
    );

    assert_eq!(summary["counts"]["flaky"], 1);
    assert_eq!(summary["counts"]["passed"], 2);
    assert_eq!(summary["counts"]["failed"], 0);
    let unit = &summary["units"][id];
    assert_eq!(unit["flaky"], true, "{unit}");
    assert_eq!(unit["outcome"], "passed");
    assert_eq!(unit["attempts"], 2);
    assert_eq!(summary["units"]["main/steady/steady"]["flaky"], false);
    assert_eq!(layer_finished(&events, "main")["outcome"], "passed");
}

#[test]
fn unit_failing_every_attempt_fails_after_its_retries() {
    let project = Project::new();
    project.layers(
        r#"
version: 1
execution: { retry_backoff_ms: 10 }
categories:
  broken: { command: "echo \"$RUNNER_ATTEMPT\" >> attempts.log; exit 1", retries: 2 }
layers:
  - name: main
    categories: [broken]
"#,
    );
    let out = project.runner().args(["--use-layers", "main"]).run();
    out.assert_code(1).assert_counts_line(0, 1, 0);
    let (events, summary) = check_run(&project, &out);
    let finished = unit_events(&events, "test_finished", "main/broken/broken");
    let retries: Vec<_> = finished
        .iter()
        .map(|e| e["will_retry"].as_bool().unwrap())
        .collect();
    assert_eq!(
        retries,
        [true, true, false],
        "1 + 2 retries:\n{}",
        dump(&events)
    );
    assert_eq!(project.read("attempts.log"), "1\n2\n3\n");
    let unit = &summary["units"]["main/broken/broken"];
    assert_eq!(
        (&unit["outcome"], &unit["flaky"], &unit["attempts"]),
        (&"failed".into(), &false.into(), &3.into())
    );
    assert_eq!(summary["counts"]["flaky"], 0);
}
