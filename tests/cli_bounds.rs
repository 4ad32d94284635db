//! Numbers out of range on the command line, or in the configuration a run reads, stop
//! the runner with status 2 and a message naming the flag (or key) and the range,
//! before anything runs: no unit starts, no run directory, no background run queued.

mod common;

use common::Project;

/// A project whose only unit leaves a file behind when it runs.
fn project() -> Project {
    let p = Project::new();
    p.layers(
        "categories:\n  touch:\n    command: touch ran.txt\nlayers:\n  - name: fast\n    categories: [touch]\n  - name: e2e\n    background: true\n    categories: [touch]\n",
    );
    p
}

#[track_caller]
fn assert_nothing_ran(p: &Project) {
    assert!(!p.path("ran.txt").exists(), "the unit ran");
    assert!(
        !p.path(".runner").exists(),
        "the runner created {}",
        p.path(".runner").display()
    );
}

#[test]
fn the_project_runs_when_the_numbers_are_in_range() {
    // The control: the same project and flags with valid values do run.
    let p = project();
    p.runner()
        .args(["--use-layers", "fast", "--jobs", "100000"])
        .run()
        .assert_code(0);
    assert!(p.path("ran.txt").exists());
}

#[test]
fn jobs_zero_is_a_usage_error() {
    let p = project();
    p.runner()
        .args(["--use-layers", "fast", "--jobs", "0"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("invalid value '0' for '--jobs <N>'")
        .assert_stderr_contains("expected an integer from 1 to 100000");
    assert_nothing_ran(&p);
}

#[test]
fn jobs_beyond_the_semaphore_is_a_usage_error() {
    let p = project();
    p.runner()
        .args(["--use-layers", "fast", "-j", "4611686018427387904"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("invalid value '4611686018427387904' for '--jobs <N>'")
        .assert_stderr_contains("expected an integer from 1 to 100000");
    assert_nothing_ran(&p);
}

#[test]
fn background_timeout_beyond_a_year_is_a_usage_error() {
    for args in [
        &["--queue-e2e", "--background-timeout", "1e300"][..],
        &[
            "--use-layers",
            "fast,e2e",
            "--background-e2e",
            "--background-timeout",
            "1e300",
        ],
        &["--queue-e2e", "--background-timeout", "525601"],
        &["--queue-e2e", "--background-timeout", "inf"],
    ] {
        let p = project();
        let value = args.last().unwrap();
        p.runner()
            .args(args)
            .run()
            .assert_code(2)
            .assert_stderr_contains(&format!(
                "invalid value '{value}' for '--background-timeout <MIN>'"
            ))
            .assert_stderr_contains(
                "expected a duration greater than 0 and at most 525600 minutes (365 days)",
            );
        assert_nothing_ran(&p);
    }
}

#[test]
fn other_numeric_flags_are_bounded() {
    for (args, flag, range) in [
        (
            &["--use-layers", "fast", "--partition", "1/100001"][..],
            "--partition <K/N>",
            "1 <= K <= N <= 100000",
        ),
        (
            &["--use-layers", "fast", "--websocket-linger", "31536001"],
            "--websocket-linger <SECONDS>",
            "from 0 to 31536000",
        ),
        (
            &["--background-results", "0"],
            "--background-results [<N>]",
            "from 1 to 100000",
        ),
    ] {
        let p = project();
        p.runner()
            .args(args)
            .run()
            .assert_code(2)
            .assert_stderr_contains(&format!("for '{flag}'"))
            .assert_stderr_contains(range);
        assert_nothing_ran(&p);
    }
}

#[test]
fn retries_that_would_wrap_stop_the_run_before_it_starts() {
    // `retries + 1` attempts used to wrap to 0: the unit never ran and the run passed.
    let p = Project::new();
    p.layers("categories:\n  flaky:\n    command: touch ran.txt; false\n    retries: 4294967295\n");
    p.runner()
        .args(["--categories", "flaky"])
        .run()
        .assert_code(2)
        .assert_stderr_contains(
            "invalid `retries` of category `flaky`: expected an integer from 0 to 100, found `4294967295`",
        )
        .assert_stderr_contains("layers.yaml:4:14");
    assert_nothing_ran(&p);
}

#[test]
fn huge_parallelism_in_the_configuration_stops_the_run_before_it_starts() {
    let p = Project::new();
    p.layers(
        "categories:\n  touch:\n    command: touch ran.txt\n    max_parallel_instances: 4611686018427387904\n",
    );
    p.runner()
        .run()
        .assert_code(2)
        .assert_stderr_contains(
            "invalid `max_parallel_instances` of category `touch`: expected an integer from 1 to 100000",
        );
    assert_nothing_ran(&p);
}

#[test]
fn an_agent_manifest_out_of_range_stops_the_run_before_it_starts() {
    let p = project();
    p.file("agents/progress_streamer.yaml", "client_queue: 0\n");
    p.runner()
        .args(["--use-layers", "fast"])
        .run()
        .assert_code(2)
        .assert_stderr_contains(
            "invalid `client_queue` of agent `progress_streamer`: expected an integer from 1 to 10000000, found `0`",
        )
        .assert_stderr_contains("progress_streamer.yaml:1:15");
    assert_nothing_ran(&p);
}
