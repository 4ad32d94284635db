//! Running one unit as a real child process, safely.
//!
//! This module owns everything between "run this command" and "here is how it ended":
//! the process group, the environment marker, timeouts and stops, killing the whole tree
//! (escapees included), bounded output capture, leak detection and reaping.
//!
//! # Layout
//!
//! - [`run_unit`] (here): the life of one unit, start to finish.
//! - `spec`: what to run ([`UnitCommand`]) and its limits ([`ExecLimits`]).
//! - `stop`: stopping a unit from outside ([`StopHandle`], [`StopReason`]).
//! - `outcome`: what came out ([`ExecResult`], [`Termination`], [`LeakedProcess`]).
//! - `capture`: the bounded head + tail capture and the capped log ([`CapturedOutput`]).
//! - `procfs`: which processes belong to a unit ([`unit_processes`]), their memory
//!   ([`tree_rss_bytes`]).
//! - `groups`: process groups started outside units (discovery builds), tracked so an
//!   interrupt can stop them ([`track_group`], [`terminate_tracked_groups`]).
//! - `registry`: the running units' leaders and tokens, a leaf.
//! - `orphans`: the children the runner adopted as a subreaper: listed without a scan,
//!   ascribed to units, stopped with their descendants ([`sweep_adopted`] at a run's end).
//! - `reaper`: the runner as a child subreaper ([`become_subreaper`],
//!   [`reap_adopted_orphans`]) without stealing anyone's exit status.
//! - `unix`: every OS call: spawning, signals, the SIGTERM → grace → SIGKILL sequence
//!   ([`kill_unit_tree`]), with the races it handles explained.
//!
//! # The life of a unit
//!
//! 1. The child is spawned in its own process group (its pid is the group id), stdin
//!    from `/dev/null`, stdout and stderr into one pipe (the output keeps the order the
//!    unit wrote it in), `RUNNER_UNIT_TOKEN=<token>` in its environment. A task drains
//!    the pipe into a bounded capture and the log.
//! 2. The runner waits for the first of: the main process exits (its pidfd becomes
//!    readable on the runtime), the timeout, a stop. The main process is *not reaped*
//!    yet, so its group id stays reserved.
//! 3. On a normal exit (the common path): the leader is reaped at once, and one
//!    `kill(-pgid, 0)` tells whether anything is left in its group. A member keeps the
//!    group id allocated, so a live answer cannot come from a reused id. Only then is
//!    `/proc` scanned: what is left is a leak, reported in [`ExecResult::leaked`] and
//!    killed with a short grace.
//!    On timeout or stop: SIGTERM to the group and to every escapee, the grace period
//!    (skipped by [`StopHandle::kill_now`]), then SIGKILL until nothing is left; then the
//!    leader is reaped.
//! 4. Processes that left the group and lost their parent were adopted by the runner (a
//!    child subreaper): one read of the runner's own list of adopted children says
//!    whether there are any (`orphans`); those that are the unit's are leaks too, killed
//!    with their descendants. Then the output is collected; if a pipe is still held
//!    open by something we could not kill, reading stops after a short bound instead of
//!    waiting for end-of-file forever.
//!
//! Dropping the future returned by [`run_unit`] kills the unit with SIGKILL at once, so
//! an aborted executor task leaves no process behind.

mod capture;
mod groups;
mod orphans;
mod outcome;
pub(crate) mod procfs;
mod reaper;
mod registry;
mod runlog;
mod spec;
mod stop;
mod unix;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use capture::CapturedOutput;
pub use groups::{TrackedGroup, terminate_tracked_groups, track_group};
pub use nix::sys::signal::Signal;
pub use orphans::reap_adopted_orphans;
pub use orphans::sweep_adopted;
pub use outcome::{ExecResult, LeakedProcess, Termination, signal_name};
pub use procfs::{tree_rss_bytes, unit_processes};
pub use reaper::{become_subreaper, reap_orphans_until};
pub use runlog::{FLUSH_AFTER, LogLocation, RunLog};
pub use spec::{ExecLimits, UnitCommand};
pub use stop::{StopHandle, StopReason};
pub(crate) use unix::exit_code_unreaped;
pub use unix::kill_unit_tree;
pub(crate) use unix::{Targets, terminate, terminate_targets};

/// The environment variable that marks every process of a unit.
pub const TOKEN_ENV: &str = "RUNNER_UNIT_TOKEN";

/// Grace period for processes a unit leaked after its main process exited normally
/// (shorter than [`ExecLimits::kill_grace`] if that is shorter).
pub const LEAK_GRACE: Duration = Duration::from_millis(500);

/// How long output is still read after the unit is over. Normally the pipe reaches
/// end-of-file at once; this bound only matters when a process we could not find or
/// kill still holds it open.
pub const OUTPUT_DRAIN_BOUND: Duration = Duration::from_secs(2);

/// How the executor starts a unit attempt: real processes ([`Processes`]) in a run,
/// a scripted stand-in in the dispatcher's in-process tests (paused time, injected
/// faults such as a spawn that fails or a task that panics).
pub trait Launcher: Send + Sync {
    /// Run one attempt of `cmd`; `on_spawn` gets the process group id once it started.
    fn launch<'a>(
        &'a self,
        cmd: &'a UnitCommand,
        limits: &'a ExecLimits,
        stop: &'a StopHandle,
        on_spawn: Box<dyn FnOnce(u32) + Send + 'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<ExecResult>> + Send + 'a>>;
}

/// Units as real child processes: [`run_unit`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Processes;

impl Launcher for Processes {
    fn launch<'a>(
        &'a self,
        cmd: &'a UnitCommand,
        limits: &'a ExecLimits,
        stop: &'a StopHandle,
        on_spawn: Box<dyn FnOnce(u32) + Send + 'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<ExecResult>> + Send + 'a>>
    {
        Box::pin(run_unit(cmd, limits, stop, on_spawn))
    }
}

/// Runs one unit to completion and returns how it ended, what it printed, and what it
/// leaked.
///
/// `on_spawn` is called once with the main process's pid (which is also the unit's
/// process group id) as soon as it is running: the resource manager uses it to sample
/// the unit's tree.
///
/// # Errors
///
/// Only infrastructure failures: an invalid [`UnitCommand`] (`InvalidInput`), a log file
/// that cannot be created, a spawn failure (missing program or `cwd`; the message names
/// the command and the directory). A unit that fails, crashes, times out or is stopped is
/// an `Ok` with the matching [`Termination`].
///
/// Cancel-safe: dropping the future kills the unit's whole tree with SIGKILL.
pub async fn run_unit(
    cmd: &UnitCommand,
    limits: &ExecLimits,
    stop: &StopHandle,
    on_spawn: impl FnOnce(u32),
) -> io::Result<ExecResult> {
    cmd.validate()?;
    let token = cmd.unit_token.as_str();
    // Orphans started from here on may be this unit's (see `orphans`).
    let since = procfs::boot_ticks_now();
    let log = match &cmd.run_log {
        Some(run_log) => capture::LogSink::Run(capture::RunSink::new(
            Arc::clone(run_log),
            token.to_string(),
            limits.log_max_bytes,
        )),
        None => capture::LogSink::File(
            capture::LogFile::create(&cmd.log_path, limits.log_max_bytes).await?,
        ),
    };
    let (output, output_writer) = std::io::pipe()?;
    let mut command = unix::build_command(cmd, output_writer)?;
    let spawned = reaper::spawn_registered(token, || {
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
        Ok((child, pid))
    });
    // The command holds the pipe's write ends: closed here, the output ends when the
    // unit's last process closes its copies.
    drop(command);
    let (mut child, pid) = spawned.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot start `{}` in {}: {e}",
                cmd.describe(),
                cmd.cwd.display()
            ),
        )
    })?;
    let started = Instant::now();
    // Declared after `child`, so dropped before it: the tree dies before tokio's handle.
    let mut guard = UnitGuard {
        pgid: pid,
        token: token.to_string(),
        armed: true,
    };

    let cancel_reader = CancellationToken::new();
    let _cancel_reader_on_drop = cancel_reader.clone().drop_guard();
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(output.into())?;
    let mut reader = tokio::spawn(capture::pump(
        output,
        capture::Capture::new(limits.head_bytes, limits.tail_bytes),
        log,
        cancel_reader.clone(),
    ));
    on_spawn(pid);

    let ended = tokio::select! {
        // A unit that finished is not reported as timed out or stopped.
        biased;
        exited = unix::wait_exited_unreaped(pid) => {
            exited?;
            Ended::Exited
        }
        reason = stop.stopped() => Ended::Stopped(reason),
        () = sleep_until(limits.timeout.map(|t| started + t)) => Ended::TimedOut,
    };

    let mut leaked = Vec::new();
    let (termination, duration) = match ended {
        Ended::Exited => {
            let duration = started.elapsed();
            // The pidfd said it exited: this reaps at once, on this task.
            let status = child.wait().await?;
            reaper::leader_reaped(pid);
            // The common path ends here: one `kill(-pgid, 0)`. The group id cannot have
            // been reused while anything is left in the group (a member keeps the number
            // allocated), so "alive" means the unit left processes in its group.
            if unix::signal_group_alive(pid) {
                let left = leftovers(pid, token).await;
                tracing::debug!(
                    pid,
                    count = left.len(),
                    "unit leaked processes; killing them"
                );
                leaked = left;
                let grace = limits.kill_grace.min(LEAK_GRACE);
                unix::terminate(pid, token, grace, stop.kill_now_requested()).await;
            }
            (Termination::from_status(status), duration)
        }
        Ended::TimedOut => {
            unix::terminate(pid, token, limits.kill_grace, stop.kill_now_requested()).await;
            reap_forced(&mut child, pid).await;
            (Termination::TimedOut, started.elapsed())
        }
        Ended::Stopped(reason) => {
            unix::terminate(pid, token, limits.kill_grace, stop.kill_now_requested()).await;
            reap_forced(&mut child, pid).await;
            (Termination::Stopped(reason), started.elapsed())
        }
    };
    guard.armed = false;

    // Processes that left the group and whose parent died were adopted by the runner
    // (a child subreaper): one read of its own `children` list, a scan only if one was.
    let escaped = orphans::adopted_by_unit(token, since);
    if !escaped.is_empty() {
        let trees = orphans::OrphanTrees::new(escaped);
        let found = trees.describe_leaks();
        tracing::debug!(
            pid,
            count = found.len(),
            "unit left adopted processes; killing them"
        );
        for p in found {
            if !leaked.iter().any(|l: &LeakedProcess| l.pid == p.pid) {
                leaked.push(p);
            }
        }
        orphans::stop(trees, limits.kill_grace.min(LEAK_GRACE)).await;
    }

    let (output, sink) = match tokio::time::timeout(OUTPUT_DRAIN_BOUND, &mut reader).await {
        Ok(joined) => joined,
        Err(_) => {
            tracing::debug!(
                pid,
                "unit output still open after the unit ended; not waiting for it"
            );
            cancel_reader.cancel();
            reader.await
        }
    }
    .map_err(io::Error::other)?;

    let own_file = !termination.is_success() || !leaked.is_empty() || !output.is_complete();
    let log = log_location(sink, &cmd.log_path, own_file).await;
    Ok(ExecResult {
        termination,
        duration,
        output,
        pid,
        leaked,
        log,
    })
}

/// What ended the wait for the main process.
enum Ended {
    Exited,
    TimedOut,
    Stopped(StopReason),
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Where the unit's output is: its own file, or its segments of the run log. With
/// `own_file` (failed, leaked or large output) the segments are copied into `path`.
async fn log_location(
    sink: capture::LogSink,
    path: &std::path::Path,
    own_file: bool,
) -> Option<LogLocation> {
    let run = match sink {
        capture::LogSink::File(_) => return Some(LogLocation::File(path.to_path_buf())),
        capture::LogSink::Run(run) => run,
    };
    if run.segments.is_empty() {
        return None;
    }
    if !own_file {
        return Some(LogLocation::Segments {
            path: run.log().path().to_path_buf(),
            segments: run.segments,
        });
    }
    let (log, segments, target) = (Arc::clone(run.log()), run.segments, path.to_path_buf());
    let copied = tokio::task::spawn_blocking(move || {
        let done = log.extract(&segments, &target);
        (done, segments, log)
    })
    .await;
    match copied {
        Ok((Ok(()), _, _)) => Some(LogLocation::File(path.to_path_buf())),
        Ok((Err(e), segments, log)) => {
            tracing::warn!(error = %e, "cannot write {}; the output stays in the run log", path.display());
            Some(LogLocation::Segments {
                path: log.path().to_path_buf(),
                segments,
            })
        }
        Err(_) => None,
    }
}

/// Reaps a leader that was killed. Normally instant; a leader stuck in uninterruptible
/// sleep must not hang the run: after a bound it is left to tokio's orphan queue.
async fn reap_forced(child: &mut tokio::process::Child, pid: u32) {
    if tokio::time::timeout(unix::KILL_PERSIST, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pid,
            "unit leader did not die after SIGKILL; not waiting for it"
        );
    }
    reaper::leader_reaped(pid);
}

/// Live processes of the unit, with their command lines (read before they are killed).
async fn leftovers(pgid: u32, token: &str) -> Vec<LeakedProcess> {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        procfs::unit_members(pgid, &token)
            .into_iter()
            .map(|p| LeakedProcess {
                pid: p.pid,
                cmdline: procfs::cmdline(p.pid),
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Kills the unit if `run_unit` is dropped (or fails) before it finished with it, and
/// tells the reaper the unit is done in every case.
struct UnitGuard {
    pgid: u32,
    token: String,
    /// True while the unit may still have processes that `run_unit` would kill.
    armed: bool,
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        if self.armed {
            unix::kill_tree_blocking(self.pgid, &self.token);
            // tokio's orphan queue (or our reaper, by group) reaps the leader.
            reaper::leader_reaped(self.pgid);
        }
        reaper::unit_finished(self.pgid);
    }
}
