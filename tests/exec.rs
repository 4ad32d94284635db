//! `layered_runner::exec` against real processes: exit codes and signals, bounded
//! capture, timeouts and stops that kill whole trees (escapees included), leak detection,
//! and the child's environment.
//!
//! This test binary is its own process, so every test may make it a child subreaper
//! (`become_subreaper` affects the whole process, which is what the runner does too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use layered_runner::exec::{
    self, ExecLimits, ExecResult, StopHandle, StopReason, Termination, UnitCommand,
};
use tempfile::TempDir;

/// A temp dir for one test, and a unit builder rooted in it.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        exec::become_subreaper().expect("subreaper");
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.path("logs/nested/unit.log")
    }

    fn shell(&self, command: &str) -> UnitCommand {
        UnitCommand::shell(command, self.dir.path(), self.log(), token())
    }

    /// Waits (bounded) for the unit to create `name`: the unit's "I am ready" signal.
    async fn ready(&self, name: &str) {
        let path = self.path(name);
        let until = Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(Instant::now() < until, "{} never appeared", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The pid a unit wrote into `name` (waiting for the file to be complete).
    async fn pid_file(&self, name: &str) -> u32 {
        let path = self.path(name);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .filter(|s| s.ends_with('\n'))
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < until, "{} never written", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn token() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "exec-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn limits() -> ExecLimits {
    ExecLimits {
        timeout: Some(Duration::from_secs(60)),
        kill_grace: Duration::from_secs(1),
        head_bytes: 4096,
        tail_bytes: 4096,
        log_max_bytes: 1 << 20,
    }
}

async fn run(cmd: &UnitCommand, limits: &ExecLimits) -> ExecResult {
    exec::run_unit(cmd, limits, &StopHandle::new(), |_| {})
        .await
        .expect("run_unit")
}

/// `/proc/PID/stat` fields: (state, ppid, pgrp, session).
fn stat(pid: u32) -> Option<(char, u32, u32, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        rest[0].chars().next()?,
        rest[1].parse().ok()?,
        rest[2].parse().ok()?,
        rest[3].parse().ok()?,
    ))
}

/// Asserts that `pid` is gone: neither alive nor a zombie left unreaped by us. Polls
/// briefly, since a SIGKILLed process needs a moment to be torn down; a zombie of ours
/// would stay forever and fail.
fn assert_gone(pid: u32, what: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let Some((state, ppid, _, _)) = stat(pid) else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = state == 'Z' && ppid == std::process::id();
        let alive_sleep = String::from_utf8_lossy(&cmdline).contains("sleep");
        if !ours && !alive_sleep {
            return; // the pid was reused by something unrelated
        }
        assert!(
            Instant::now() < until,
            "{what} (pid {pid}) still exists: state {state}, ppid {ppid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn reports_exit_codes() {
    let fx = Fixture::new();
    assert_eq!(
        run(&fx.shell("exit 3"), &limits()).await.termination,
        Termination::Exited(3)
    );
    let ok = run(&fx.shell("true"), &limits()).await;
    assert_eq!(ok.termination, Termination::Exited(0));
    assert!(ok.termination.is_success());
    assert!(ok.leaked.is_empty());
}

#[tokio::test]
async fn reports_signals_by_name() {
    let fx = Fixture::new();
    let r = run(&fx.shell("ulimit -c 0; kill -SEGV $$"), &limits()).await;
    assert_eq!(
        r.termination,
        Termination::Signaled {
            signal: libc::SIGSEGV,
            name: "SIGSEGV".into()
        }
    );
    assert_eq!(r.termination.to_string(), "killed by SIGSEGV");
    let r = run(&fx.shell("kill -USR1 $$"), &limits()).await;
    assert_eq!(
        r.termination,
        Termination::Signaled {
            signal: libc::SIGUSR1,
            name: "SIGUSR1".into()
        }
    );
}

#[tokio::test]
async fn passes_env_cwd_and_token_and_closes_stdin() {
    let fx = Fixture::new();
    let mut cmd = fx.shell(r#"cat; printf '%s|%s|%s' "$FOO" "$(pwd -P)" "$RUNNER_UNIT_TOKEN""#);
    cmd.env = vec![
        ("FOO".into(), "bar baz".into()),
        // A unit cannot forge another unit's marker.
        ("RUNNER_UNIT_TOKEN".into(), "forged".into()),
    ];
    let r = run(&cmd, &limits()).await;
    assert_eq!(r.termination, Termination::Exited(0));
    let cwd = fx.dir.path().canonicalize().unwrap();
    assert_eq!(
        r.output.text_lossy(),
        format!("bar baz|{}|{}", cwd.display(), cmd.unit_token)
    );
    // The log has the same bytes.
    assert_eq!(
        std::fs::read_to_string(fx.log()).unwrap(),
        r.output.text_lossy()
    );
}

#[tokio::test]
async fn runs_a_program_directly_with_args() {
    let fx = Fixture::new();
    let cmd = UnitCommand::program(
        "/bin/sh",
        vec![
            "-c".into(),
            "echo \"$0:$1\"; exit 4".into(),
            "zero".into(),
            "one two".into(),
        ],
        fx.dir.path(),
        fx.log(),
        token(),
    );
    let r = run(&cmd, &limits()).await;
    assert_eq!(r.termination, Termination::Exited(4));
    assert_eq!(r.output.text_lossy(), "zero:one two\n");
}

#[tokio::test]
async fn applies_niceness_and_address_space_limit() {
    let fx = Fixture::new();
    let mut cmd = fx.shell(r#"printf '%s %s' "$(nice)" "$(ulimit -v)""#);
    cmd.nice = Some(5);
    cmd.rlimit_as_mb = Some(512);
    // SAFETY: plain syscall.
    let own = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
    let r = run(&cmd, &limits()).await;
    assert_eq!(
        r.termination,
        Termination::Exited(0),
        "{}",
        r.output.text_lossy()
    );
    assert_eq!(
        r.output.text_lossy(),
        format!("{} {}", (own + 5).min(19), 512 * 1024)
    );
}

#[tokio::test]
async fn spawn_failures_are_errors_that_name_the_command() {
    let fx = Fixture::new();
    let mut cmd = fx.shell("true");
    cmd.cwd = fx.path("does/not/exist");
    let err = exec::run_unit(&cmd, &limits(), &StopHandle::new(), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does/not/exist"), "{err}");

    let cmd = UnitCommand::program("/no/such/binary", vec![], fx.dir.path(), fx.log(), token());
    let err = exec::run_unit(&cmd, &limits(), &StopHandle::new(), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
}

/// stdout and stderr share one pipe: the output is what a terminal would show, line for
/// line in the order the unit wrote it (two pipes read side by side reorder them).
#[tokio::test]
async fn stdout_and_stderr_keep_the_order_they_were_written_in() {
    let fx = Fixture::new();
    let cmd =
        fx.shell("i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done");
    let limits = ExecLimits {
        head_bytes: 1 << 20,
        ..limits()
    };
    let r = run(&cmd, &limits).await;
    assert_eq!(r.termination, Termination::Exited(0));
    let expected: String = (0..300).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(r.output.text_lossy(), expected);
}

#[tokio::test]
async fn output_flood_is_bounded_in_memory_and_in_the_log() {
    let fx = Fixture::new();
    // 200 MB in total, on stdout and stderr at the same time.
    let cmd = fx.shell("yes | head -c 120000000 & yes err | head -c 80000000 >&2; wait");
    let limits = ExecLimits {
        timeout: Some(Duration::from_secs(300)),
        head_bytes: 1000,
        tail_bytes: 2000,
        log_max_bytes: 1 << 20,
        ..limits()
    };
    let r = run(&cmd, &limits).await;
    assert_eq!(r.termination, Termination::Exited(0));
    let out = &r.output;
    assert_eq!(out.total_bytes, 200_000_000);
    assert_eq!(out.head.len(), 1000);
    assert_eq!(out.tail.len(), 2000);
    assert_eq!(out.omitted_bytes, 200_000_000 - 3000);
    assert!(out.text_lossy().contains("bytes omitted"));

    let log = std::fs::read(fx.log()).unwrap();
    let marker = format!("[log truncated at {} bytes]\n", 1 << 20);
    assert!(
        log.ends_with(marker.as_bytes()),
        "log does not end with the marker"
    );
    assert!(
        log.len() <= (1 << 20) + marker.len() + 1,
        "log is {} bytes",
        log.len()
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_including_escapees() {
    let fx = Fixture::new();
    let cmd = fx.shell(
        "sleep 100 & echo $! > grandchild.pid
         setsid sh -c 'echo $$ > escapee.pid; exec sleep 100' &
         wait",
    );
    let limits = ExecLimits {
        timeout: Some(Duration::from_secs(3)),
        ..limits()
    };
    let started = Instant::now();
    let (r, escapee_stat) = tokio::join!(run(&cmd, &limits), async {
        // While the unit runs: check that the escapee really left the unit's group.
        stat(fx.pid_file("escapee.pid").await)
    });
    assert_eq!(r.termination, Termination::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let (_, _, pgrp, _) = escapee_stat.expect("escapee was alive");
    assert_ne!(pgrp, r.pid, "the escapee should have left the unit's group");

    let grandchild = fx.pid_file("grandchild.pid").await;
    let escapee = fx.pid_file("escapee.pid").await;
    assert_gone(r.pid, "leader");
    assert_gone(grandchild, "grandchild");
    assert_gone(escapee, "setsid escapee");
    assert!(exec::unit_processes(r.pid, &cmd.unit_token).is_empty());
}

#[tokio::test]
async fn a_stopped_process_is_continued_so_it_can_die() {
    let fx = Fixture::new();
    let limits = ExecLimits {
        timeout: Some(Duration::from_millis(500)),
        kill_grace: Duration::from_secs(60),
        ..limits()
    };
    let started = Instant::now();
    let r = run(&fx.shell("kill -STOP $$; sleep 100"), &limits).await;
    assert_eq!(r.termination, Termination::TimedOut);
    // SIGTERM alone would stay pending until the grace ran out.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stop_cancels_a_running_unit() {
    let fx = Fixture::new();
    let cmd = fx.shell("touch ready; sleep 100");
    let stop = StopHandle::new();
    let limits = ExecLimits {
        kill_grace: Duration::from_secs(60),
        ..limits()
    };
    let started = Instant::now();
    let (r, ()) = tokio::join!(exec::run_unit(&cmd, &limits, &stop, |_| {}), async {
        fx.ready("ready").await;
        stop.stop(StopReason::Cancelled);
        stop.stop(StopReason::Deadline); // the first reason wins
    });
    let r = r.unwrap();
    assert_eq!(r.termination, Termination::Stopped(StopReason::Cancelled));
    // The unit died on SIGTERM: the 60 s grace is not waited out.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_gone(r.pid, "leader");
}

#[tokio::test]
async fn stop_waits_the_grace_for_a_child_that_ignores_sigterm() {
    let fx = Fixture::new();
    let cmd = fx.shell("trap '' TERM; touch ready; sleep 100");
    let stop = StopHandle::new();
    let grace = Duration::from_secs(2);
    let limits = ExecLimits {
        kill_grace: grace,
        ..limits()
    };
    let (r, stopped_at) = tokio::join!(exec::run_unit(&cmd, &limits, &stop, |_| {}), async {
        fx.ready("ready").await;
        stop.stop(StopReason::MemoryLimit {
            limit_mb: 1,
            observed_mb: 2,
        });
        Instant::now()
    });
    let r = r.unwrap();
    let took = stopped_at.elapsed();
    assert!(matches!(
        r.termination,
        Termination::Stopped(StopReason::MemoryLimit { .. })
    ));
    assert!(
        took >= grace,
        "SIGKILL came before the grace period ended ({took:?})"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_gone(r.pid, "leader");
}

#[tokio::test]
async fn kill_now_skips_the_grace() {
    let fx = Fixture::new();
    let cmd = fx.shell("trap '' TERM; sleep 100 & echo $! > child.pid; touch ready; wait");
    let stop = StopHandle::new();
    let limits = ExecLimits {
        kill_grace: Duration::from_secs(600),
        ..limits()
    };
    let (r, stopped_at) = tokio::join!(exec::run_unit(&cmd, &limits, &stop, |_| {}), async {
        fx.ready("ready").await;
        stop.stop(StopReason::Cancelled);
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.kill_now(); // the second Ctrl-C
        Instant::now()
    });
    let r = r.unwrap();
    assert_eq!(r.termination, Termination::Stopped(StopReason::Cancelled));
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopped_at.elapsed()
    );
    assert_gone(r.pid, "leader");
    assert_gone(fx.pid_file("child.pid").await, "child");
}

#[tokio::test]
async fn kill_now_alone_stops_at_once() {
    let fx = Fixture::new();
    let cmd = fx.shell("trap '' TERM; touch ready; sleep 100");
    let stop = StopHandle::new();
    let limits = ExecLimits {
        kill_grace: Duration::from_secs(600),
        ..limits()
    };
    let started = Instant::now();
    let (r, ()) = tokio::join!(exec::run_unit(&cmd, &limits, &stop, |_| {}), async {
        fx.ready("ready").await;
        stop.kill_now();
    });
    assert_eq!(
        r.unwrap().termination,
        Termination::Stopped(StopReason::Cancelled)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_leaked_background_process_is_reported_and_killed() {
    let fx = Fixture::new();
    let cmd = fx.shell("sleep 100 & echo $! > leak.pid; echo done; exit 0");
    let started = Instant::now();
    let r = run(&cmd, &limits()).await;
    assert_eq!(r.termination, Termination::Exited(0));
    // The leak held stdout open: the output is complete anyway, without a long wait.
    assert_eq!(r.output.text_lossy(), "done\n");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let leaked = fx.pid_file("leak.pid").await;
    // Other tests of this binary may leave orphans at the same time: ours is listed.
    let ours: Vec<_> = r.leaked.iter().filter(|p| p.pid == leaked).collect();
    assert_eq!(ours.len(), 1, "{:?}", r.leaked);
    // "sleep 100", or the forked shell's command line if it had not exec'd yet.
    assert!(ours[0].cmdline.contains("sleep 100"), "{:?}", r.leaked);
    assert_gone(leaked, "leaked sleep");
}

#[tokio::test]
async fn a_hidden_process_holding_the_pipe_is_adopted_reported_and_killed() {
    let fx = Fixture::new();
    // A process that clears its environment (no token) and leaves the group, holding
    // stdout: once its parent (the unit's shell) exits, the runner adopts it as a child
    // subreaper, so it is the unit's leak and is killed (and the output ends).
    let cmd = fx.shell(
        "setsid env -i sh -c 'echo $$ > hidden.pid; exec sleep 100' &
         while [ ! -s hidden.pid ]; do sleep 0.01; done; echo done",
    );
    let started = Instant::now();
    let r = run(&cmd, &limits()).await;
    assert_eq!(r.termination, Termination::Exited(0));
    assert!(r.output.text_lossy().starts_with("done\n"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let hidden = fx.pid_file("hidden.pid").await;
    // Other tests of this binary may leave orphans at the same time: ours is listed.
    assert!(r.leaked.iter().any(|p| p.pid == hidden), "{:?}", r.leaked);
    assert_gone(hidden, "hidden process");
}

#[tokio::test]
async fn unit_processes_and_rss_see_the_running_tree() {
    let fx = Fixture::new();
    let cmd = fx.shell("sleep 100 & touch ready; wait");
    let stop = StopHandle::new();
    let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel();
    let limits = limits();
    let (r, seen) = tokio::join!(
        exec::run_unit(&cmd, &limits, &stop, move |pid| {
            let _ = spawned_tx.send(pid);
        }),
        async {
            let pid = spawned_rx.await.unwrap();
            fx.ready("ready").await;
            let procs = exec::unit_processes(pid, &cmd.unit_token);
            let rss = exec::tree_rss_bytes(&procs);
            stop.stop(StopReason::Cancelled);
            (pid, procs, rss)
        }
    );
    let r = r.unwrap();
    let (pid, procs, rss) = seen;
    assert_eq!(pid, r.pid);
    assert!(procs.contains(&pid), "{procs:?}");
    assert!(procs.len() >= 2, "{procs:?}");
    assert!(rss > 0);
}

#[tokio::test]
async fn dropping_the_future_kills_the_unit() {
    let fx = Fixture::new();
    let cmd = fx.shell("sleep 100 & echo $! > child.pid; touch ready; wait");
    let task = {
        let cmd = cmd.clone();
        tokio::spawn(async move { run(&cmd, &limits()).await })
    };
    fx.ready("ready").await;
    let child = fx.pid_file("child.pid").await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The kill happened synchronously in drop; the zombies are reaped by the reaper.
    let until = Instant::now() + Duration::from_secs(5);
    while stat(child).is_some() && Instant::now() < until {
        exec::reap_adopted_orphans();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_gone(child, "child of a dropped unit");
}

#[tokio::test]
async fn stopping_before_the_spawn_stops_at_once() {
    let fx = Fixture::new();
    let stop = StopHandle::new();
    stop.stop(StopReason::Deadline);
    let r = exec::run_unit(&fx.shell("sleep 100"), &limits(), &stop, |_| {})
        .await
        .unwrap();
    assert_eq!(r.termination, Termination::Stopped(StopReason::Deadline));
}

/// The log path's parent directories are created; an unwritable log is an error.
#[tokio::test]
async fn log_directories_are_created() {
    let fx = Fixture::new();
    let mut cmd = fx.shell("echo hi");
    cmd.log_path = fx.path("a/b/c/u.log");
    run(&cmd, &limits()).await;
    assert_eq!(std::fs::read_to_string(&cmd.log_path).unwrap(), "hi\n");
    cmd.log_path = Path::new("/proc/definitely/not/writable.log").to_path_buf();
    assert!(
        exec::run_unit(&cmd, &limits(), &StopHandle::new(), |_| {})
            .await
            .is_err()
    );
}
