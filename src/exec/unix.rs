//! Every OS call of the exec module: spawning in a process group, child setup
//! (niceness, `RLIMIT_AS`), waiting for exit without reaping, signals, and the
//! SIGTERM → grace → SIGKILL sequence.
//!
//! # Races, and how they are handled
//!
//! * **Process-group id reuse.** A process group id is the pid of its leader (the unit's
//!   main process). The kernel does not hand a pid out again while anything still refers
//!   to it, and an *unreaped* zombie leader does. So [`run_unit`](super::run_unit) waits
//!   for the leader's exit with [`wait_exited_unreaped`] (a pidfd, or `waitid(WNOWAIT)`),
//!   sends every group signal and finishes the leak sweep, and only then reaps the leader.
//!   `killpg(pgid)` can therefore never hit an unrelated group that got the same number.
//! * **Pid reuse for individual processes.** Processes outside the group (escapees found by
//!   their token) are signalled by pid. Between the `/proc` scan and the signal the process
//!   may die and, in theory, its pid be reused. [`signal_process`] opens a pidfd first
//!   (which pins the process), checks that the pid still has the start time seen in the
//!   scan, and signals through the pidfd. Without pidfds (kernel < 5.3) the start time is
//!   re-checked just before `kill(2)`; the remaining window needs a full wrap of the pid
//!   space in microseconds.
//! * **Forking during the kill.** A group-wide SIGKILL cannot be outrun by `fork` (the
//!   kernel makes a fork that races with a group signal fail or deliver the signal to the
//!   child too), but an escapee signalled by pid can fork between our scan and its death,
//!   and its child inherits the token. So SIGKILL is repeated — group, then a fresh scan —
//!   until a scan finds nothing alive, bounded by [`KILL_PERSIST`] (a process stuck in
//!   uninterruptible sleep cannot be killed faster; it is logged and left to the reaper).
//! * **Stopped processes.** SIGTERM stays pending in a stopped (`SIGSTOP`, `SIGTSTP`)
//!   process, so SIGCONT follows it. SIGKILL works on stopped processes.
//! * **Never the runner.** Group 0, group 1, the runner's own group, pid 1 and the runner's
//!   own pid are refused; `killpg(0)` would signal the runner itself.

use std::collections::HashSet;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep, sleep_until};

use super::procfs::{self, ProcInfo};
use super::spec::UnitCommand;

/// How often the grace period checks whether the unit is already gone.
const GRACE_POLL: Duration = Duration::from_millis(50);
/// Pause between SIGKILL rounds (lets the kernel finish tearing processes down).
const KILL_ROUND_PAUSE: Duration = Duration::from_millis(10);
/// How long SIGKILL is repeated before giving up on processes that will not die.
pub(crate) const KILL_PERSIST: Duration = Duration::from_secs(5);

/// Builds the child command: `/bin/sh -c` or a program, in `cwd`, with the unit's
/// environment and token, stdin from `/dev/null`, stdout and stderr both writing into
/// `output` (one pipe: the runner reads one stream, in the order the unit wrote it, as
/// a terminal would show it), in a new process group, with niceness and `RLIMIT_AS`
/// applied between fork and exec.
///
/// The command keeps the pipe's write end: drop it once the child is spawned, or the
/// reader never sees the end of the output.
pub(crate) fn build_command(
    unit: &UnitCommand,
    output: std::io::PipeWriter,
) -> io::Result<tokio::process::Command> {
    let mut cmd = match (&unit.shell_command, &unit.program) {
        (Some(line), _) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        (None, Some((program, args))) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a unit has neither a shell command nor a program",
            ));
        }
    };
    cmd.current_dir(&unit.cwd)
        .envs(unit.env.iter().map(|(k, v)| (k, v)))
        // Last, so a unit's own env cannot override the marker.
        .env(super::TOKEN_ENV, &unit.unit_token)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .process_group(0);

    // Computed in the parent: between fork and exec only async-signal-safe calls are allowed.
    let nice = unit.nice.map(nice_target).transpose()?;
    let address_space = unit.rlimit_as_mb.map(address_space_limit).transpose()?;
    if nice.is_some() || address_space.is_some() {
        // SAFETY: the closure runs in the child between fork and exec. It only calls
        // setpriority(2) and setrlimit(2), which are async-signal-safe, and builds an
        // `io::Error` from errno, which does not allocate.
        unsafe {
            cmd.pre_exec(move || child_setup(nice, address_space));
        }
    }
    Ok(cmd)
}

/// Runs in the child after fork: applies the absolute niceness and the address-space limit.
fn child_setup(nice: Option<i32>, address_space: Option<libc::rlim_t>) -> io::Result<()> {
    if let Some(nice) = nice {
        // SAFETY: plain syscall on the calling process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(limit) = address_space {
        let rlim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: plain syscall with a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The runner's niceness plus `increment`, clamped to -20..=19.
fn nice_target(increment: i32) -> io::Result<i32> {
    // getpriority may legitimately return -1: errno tells an error apart.
    nix::errno::Errno::clear();
    // SAFETY: plain syscall.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
    if current == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current.saturating_add(increment).clamp(-20, 19))
}

/// `mb` MiB in bytes, never above the runner's own hard limit.
fn address_space_limit(mb: u64) -> io::Result<libc::rlim_t> {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)?;
    Ok(mb.saturating_mul(1024 * 1024).min(hard))
}

/// Makes the runner a child subreaper: orphaned descendants are reparented to the runner
/// instead of init, so they stay visible and can be reaped (Linux only).
pub(crate) fn set_child_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(pid, flags) has no pointer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the syscall returns a new file descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) })
}

#[cfg(target_os = "linux")]
fn pidfd_send_signal(fd: &std::os::fd::OwnedFd, signal: Signal) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a null siginfo (meaning "as kill(2) would") and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Resolves when our child `pid` has exited, **without reaping it**: the zombie keeps
/// the pid, and so the process group id, reserved until the caller reaps it.
pub(crate) async fn wait_exited_unreaped(pid: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    match pidfd_open(pid) {
        Ok(fd) => {
            // A pidfd becomes readable when the process exits (before it is reaped).
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until
            // the AsyncFd is dropped.
            let fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
            };
            let _ready = fd.readable().await?;
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        Err(e) => return Err(e),
    }
    let mut delay = Duration::from_millis(5);
    while !exited_unreaped(pid)? {
        sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    Ok(())
}

/// `waitid(WEXITED | WNOHANG | WNOWAIT)`: has our child exited? Leaves it unreaped.
fn exited_unreaped(pid: u32) -> io::Result<bool> {
    Ok(exit_code_unreaped(pid)?.is_some())
}

/// The exit code of our child `pid` if it has exited (128 + signal when killed), via
/// `waitid(WEXITED | WNOHANG | WNOWAIT)`: **without reaping it**, so the zombie keeps
/// its process group id reserved.
pub(crate) fn exit_code_unreaped(pid: u32) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data; zeroed means "no child reported".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if info.si_signo == 0 {
        return Ok(None);
    }
    // SAFETY: si_signo is SIGCHLD (checked above), so the child fields are valid.
    let status = unsafe { info.si_status() };
    Ok(Some(if info.si_code == libc::CLD_EXITED {
        status
    } else {
        128 + status
    }))
}

/// `waitpid(pid, WNOHANG)`: reaps `pid` if it is our child and has exited. True if reaped.
pub(crate) fn reap_nohang(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)),
        Ok(status) if status != WaitStatus::StillAlive
    )
}

/// `killpg(pgid, signal)`, refusing groups that are not a unit's. True if delivered.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 || raw == nix::unistd::getpgrp().as_raw() {
        return false;
    }
    killpg(Pid::from_raw(raw), signal).is_ok()
}

/// Whether anything is left in process group `pgid` (`kill(-pgid, 0)`).
pub(crate) fn signal_group_alive(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    raw > 1 && killpg(Pid::from_raw(raw), None).is_ok()
}

/// Signals one process found by a scan, if it is still that process (see module docs).
pub(crate) fn signal_process(p: &ProcInfo, signal: Signal) {
    if p.pid <= 1 || p.pid == std::process::id() {
        return;
    }
    let still_same = || procfs::read_stat(p.pid).is_some_and(|now| now.start_time == p.start_time);
    #[cfg(target_os = "linux")]
    match pidfd_open(p.pid) {
        Ok(fd) => {
            // The pidfd refers to whatever process has this pid *now*; the start time
            // tells whether that is the one we scanned. From here on it cannot change.
            if still_same() {
                let _ = pidfd_send_signal(&fd, signal);
            }
            return;
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(_) => {}
    }
    if let Ok(raw) = i32::try_from(p.pid)
        && still_same()
    {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// Sends `signal` to every live process of a unit: the process group at once, then each
/// process outside the group that [`unit_processes`](super::unit_processes) finds.
///
/// Group signals are only reuse-safe while the group leader is unreaped (see the module
/// docs); [`run_unit`](super::run_unit) guarantees that for the units it runs. To stop a
/// unit that `run_unit` is running, prefer its [`StopHandle`](super::StopHandle).
pub fn kill_unit_tree(pgid: u32, token: &str, signal: Signal) {
    let group_ok = signal_group(pgid, signal);
    for p in procfs::unit_members(pgid, token) {
        if !group_ok || p.pgrp != pgid {
            signal_process(&p, signal);
        }
    }
}

/// [`kill_unit_tree`] with SIGKILL, repeated a few times without yielding: used when the
/// `run_unit` future is dropped, where nothing can be awaited.
pub(crate) fn kill_tree_blocking(pgid: u32, token: &str) {
    for _ in 0..3 {
        kill_unit_tree(pgid, token, Signal::SIGKILL);
        if procfs::unit_members(pgid, token).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One `/proc` scan for the unit, off the async worker threads (reading another
/// process's environment can block on that process's memory map lock).
async fn members(pgid: u32, token: &str) -> Vec<ProcInfo> {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || procfs::unit_members(pgid, &token))
        .await
        .unwrap_or_default()
}

/// What the terminate sequence stops: a set of processes it can find again and signal.
/// Units and services are a process group plus its escapees ([`UnitTree`]); a detached
/// background run is every process carrying its marker (`background::sweep`).
pub(crate) trait Targets {
    /// A process found by a scan.
    type Proc: Send + 'static;
    /// One scan: what is alive now.
    fn scan(&self) -> impl std::future::Future<Output = Vec<Self::Proc>> + Send;
    /// SIGTERM (and SIGCONT, so a stopped process can act on it) to what `found` holds
    /// that has not had it yet: a handler should not run twice.
    fn term(&mut self, found: &[Self::Proc]);
    /// SIGKILL to everything `found` holds (and anything the set can reach without a scan).
    fn kill(&mut self, found: &[Self::Proc]);
    /// Names the survivors in the log when SIGKILL did not end them.
    fn describe(&self, found: &[Self::Proc]) -> String;
}

/// The one terminate sequence, for units, services and background runs alike: SIGTERM
/// (and SIGCONT) to everything, wait up to `grace` (returning early once nothing is
/// alive, or when `kill_now` resolves; whatever appeared since gets its SIGTERM too),
/// then SIGKILL rounds until a scan is empty. Returns false if something survived
/// [`KILL_PERSIST`] of SIGKILL.
pub(crate) async fn terminate_targets<T: Targets>(
    targets: &mut T,
    grace: Duration,
    kill_now: impl std::future::Future<Output = ()>,
) -> bool {
    let first = targets.scan().await;
    targets.term(&first);
    let deadline = Instant::now() + grace;
    tokio::pin!(kill_now);
    while Instant::now() < deadline {
        let step = (Instant::now() + GRACE_POLL).min(deadline);
        tokio::select! {
            biased;
            () = &mut kill_now => break,
            () = sleep_until(step) => {}
        }
        let procs = targets.scan().await;
        if procs.is_empty() {
            return true;
        }
        // Processes forked, or escaped, since the previous scan.
        targets.term(&procs);
    }
    let give_up = Instant::now() + KILL_PERSIST;
    loop {
        // What the set reaches without a scan (a unit's group), then what a scan finds.
        targets.kill(&[]);
        let procs = targets.scan().await;
        if procs.is_empty() {
            return true;
        }
        if Instant::now() >= give_up {
            tracing::warn!(
                survivors = targets.describe(&procs),
                "processes survived SIGKILL (uninterruptible sleep?)"
            );
            return false;
        }
        targets.kill(&procs);
        sleep(KILL_ROUND_PAUSE).await;
    }
}

/// A unit's (or a service's) processes: its process group, and escapees found by the
/// `RUNNER_UNIT_TOKEN` in their environment or by parent links.
pub(crate) struct UnitTree {
    pgid: u32,
    token: String,
    /// Escapees already sent SIGTERM.
    warned: HashSet<(u32, u64)>,
    group_termed: bool,
}

impl UnitTree {
    /// The processes of the unit whose group is `pgid` and whose marker is `token`.
    pub(crate) fn new(pgid: u32, token: &str) -> Self {
        Self {
            pgid,
            token: token.to_string(),
            warned: HashSet::new(),
            group_termed: false,
        }
    }
}

impl Targets for UnitTree {
    type Proc = ProcInfo;

    fn scan(&self) -> impl std::future::Future<Output = Vec<ProcInfo>> + Send {
        members(self.pgid, &self.token)
    }

    fn term(&mut self, found: &[ProcInfo]) {
        if !self.group_termed {
            self.group_termed = true;
            signal_group(self.pgid, Signal::SIGTERM);
            signal_group(self.pgid, Signal::SIGCONT);
        }
        for p in found.iter().filter(|p| p.pgrp != self.pgid) {
            if self.warned.insert((p.pid, p.start_time)) {
                signal_process(p, Signal::SIGTERM);
                signal_process(p, Signal::SIGCONT);
            }
        }
    }

    fn kill(&mut self, found: &[ProcInfo]) {
        signal_group(self.pgid, Signal::SIGKILL);
        for p in found {
            signal_process(p, Signal::SIGKILL);
        }
    }

    fn describe(&self, found: &[ProcInfo]) -> String {
        let pids: Vec<u32> = found.iter().map(|p| p.pid).collect();
        format!("group {}: {pids:?}", self.pgid)
    }
}

/// The stop sequence of a unit or service ([`terminate_targets`] on its [`UnitTree`]).
pub(crate) async fn terminate(
    pgid: u32,
    token: &str,
    grace: Duration,
    kill_now: impl std::future::Future<Output = ()>,
) -> bool {
    terminate_targets(&mut UnitTree::new(pgid, token), grace, kill_now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_signal_the_runner() {
        assert!(!signal_group(0, Signal::SIGCONT));
        assert!(!signal_group(1, Signal::SIGCONT));
        let own = nix::unistd::getpgrp().as_raw() as u32;
        assert!(!signal_group(own, Signal::SIGCONT));
        // signal_process on ourselves is a no-op (else this test would die).
        let me = procfs::read_stat(std::process::id()).unwrap();
        signal_process(&me, Signal::SIGTERM);
    }

    #[test]
    fn nice_target_is_clamped() {
        assert_eq!(nice_target(1000).unwrap(), 19);
        assert!(nice_target(0).unwrap() <= 19);
    }

    #[test]
    fn a_stale_identity_is_not_signalled() {
        // Our own parent, with a wrong start time: must not be signalled (and if it were,
        // SIGCONT is harmless).
        let mut parent = procfs::read_stat(nix::unistd::getppid().as_raw() as u32).unwrap();
        parent.start_time += 1;
        signal_process(&parent, Signal::SIGCONT);
    }
}
