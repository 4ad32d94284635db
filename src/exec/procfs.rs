//! Process discovery from `/proc`: who belongs to a unit, and how much memory it uses.
//!
//! This module only *reads*. It owns the parsing of `/proc/PID/stat`, `statm`, `environ`
//! and `cmdline`, and the rule that decides which live processes make up a unit:
//!
//! 1. every process whose process group is the unit's (`pgrp == pgid`);
//! 2. every process whose environment carries `RUNNER_UNIT_TOKEN=<token>`: this finds
//!    processes that left the group (`setsid`, `setpgid`) and were reparented elsewhere;
//! 3. every descendant (through `ppid` links) of the processes found by 1 and 2.
//!
//! Zombies are not "live": they cannot run, cannot be signalled usefully and only need
//! reaping (see [`super::reaper`]). The runner's own pid is never part of a unit.
//!
//! A process is identified by `(pid, start_time)`, not by pid alone: a pid can be reused
//! once its process is reaped, the start time (in clock ticks since boot) cannot repeat
//! for the same pid. Signalling code re-checks the start time before it acts.
//!
//! On systems without `/proc` every function here finds nothing; the runner then relies
//! on the process group alone.

use std::collections::{HashMap, HashSet};

/// One process as seen in `/proc/PID/stat` at the time of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Session id.
    pub session: u32,
    /// State letter (`R`, `S`, `D`, `Z`, `T`, ...).
    pub state: char,
    /// Start time in clock ticks after boot: with `pid`, the identity of the process.
    pub start_time: u64,
    /// Kernel task flags (used to skip kernel threads).
    pub flags: u64,
}

/// `PF_KTHREAD` from the kernel's `sched.h`: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcInfo {
    /// True when the process can still run (it is neither a zombie nor dead).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// True for kernel threads, which are never part of a unit.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0 || self.pid == 2 || self.ppid == 2
    }
}

/// Parses the content of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so the fixed fields are read after the *last* `)`.
pub(crate) fn parse_stat(content: &str) -> Option<ProcInfo> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    let pid = content[..open].trim().parse().ok()?;
    // Fields 3.. of stat(5); index 0 is field 3 (state).
    let rest: Vec<&str> = content.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcInfo {
        pid,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        flags: field(9)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Reads `/proc/PID/stat`; `None` when the process is gone (or there is no `/proc`).
pub(crate) fn read_stat(pid: u32) -> Option<ProcInfo> {
    let content = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&content)
}

/// Every process currently listed in `/proc` (thread-group leaders only), zombies included.
pub(crate) fn snapshot() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let name = entry.ok()?.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        read_stat(pid)
    })
    .collect()
}

/// The processes a unit scan looks at: every process in `/proc` (its `stat` only).
///
/// Scans are the slow path (something was left in a unit's group, an orphan was adopted,
/// a unit is stopped, a memory sample): the common path of a unit reads nothing here.
/// A scan never opens a live process's per-thread `children` files: reading them makes
/// the kernel walk those entries again when the process is reaped, which cost more than
/// the scan itself.
pub(crate) fn scan() -> Vec<ProcInfo> {
    snapshot()
}

/// Clock ticks since boot now (the unit of [`ProcInfo::start_time`]): processes started
/// at or after this instant have a `start_time` not below it.
pub(crate) fn boot_ticks_now() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    let ticks = clock_ticks_per_second();
    (ts.tv_sec as u64) * ticks + (ts.tv_nsec as u64) * ticks / 1_000_000_000
}

/// `sysconf(_SC_CLK_TCK)` (cached).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
    })
}

/// True when the NUL-separated environment block contains exactly the entry `needle`.
pub(crate) fn environ_contains(environ: &[u8], needle: &[u8]) -> bool {
    environ.split(|b| *b == 0).any(|entry| entry == needle)
}

/// Reads `/proc/PID/environ` (the environment the process was started with).
///
/// Empty for zombies, kernel threads, and processes of other users we may not inspect.
pub(crate) fn read_environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// The value of `RUNNER_UNIT_TOKEN` in an environment block, if any.
pub(crate) fn token_in_environ(environ: &[u8]) -> Option<&[u8]> {
    environ.split(|b| *b == 0).find_map(|entry| {
        entry
            .strip_prefix(super::TOKEN_ENV.as_bytes())?
            .strip_prefix(b"=")
    })
}

/// The environment entry that marks a unit's processes.
pub(crate) fn token_entry(token: &str) -> Vec<u8> {
    format!("{}={token}", super::TOKEN_ENV).into_bytes()
}

/// The command line of a process, arguments joined by spaces; `[comm]` when it has none
/// (kernel threads, zombies), empty when the process is gone.
pub(crate) fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.is_empty() {
        return args.join(" ");
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("[{}]", comm.trim_end()),
        Err(_) => String::new(),
    }
}

/// Whether we may read another process's environment: root may read all, others only
/// their own processes (a cheap `stat` on `/proc/PID` saves a failing `open`).
fn may_inspect(pid: u32, euid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    euid == 0
        || std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| m.uid() == euid)
            .unwrap_or(false)
}

/// Every live process of a unit: its process group, the descendants of its members
/// through `ppid` links, and any process whose environment holds
/// `RUNNER_UNIT_TOKEN=<token>` (which catches `setsid`'d escapees reparented elsewhere).
///
/// Sorted by pid; zombies, the runner itself and init are never included. One scan of
/// `/proc` (environments are read only for processes not already matched); empty on
/// systems without `/proc`.
pub fn unit_processes(pgid: u32, token: &str) -> Vec<u32> {
    unit_members(pgid, token).iter().map(|p| p.pid).collect()
}

/// [`unit_processes`] with full process identities.
pub(crate) fn unit_members(pgid: u32, token: &str) -> Vec<ProcInfo> {
    find_unit(pgid, token)
}

/// The live processes of a unit, from one scan of `/proc` (see the module docs for the rule).
///
/// Sorted by pid. The runner's own process and init are never included. An empty `token`
/// disables the environment rule.
pub(crate) fn find_unit(pgid: u32, token: &str) -> Vec<ProcInfo> {
    find_unit_in(&scan(), pgid, token, std::process::id(), |pid| {
        // SAFETY: geteuid cannot fail and has no arguments.
        let euid = unsafe { libc::geteuid() };
        if may_inspect(pid, euid) {
            read_environ(pid)
        } else {
            Vec::new()
        }
    })
}

/// [`find_unit`] over a given snapshot, with the environment reader injected (for tests).
pub(crate) fn find_unit_in(
    all: &[ProcInfo],
    pgid: u32,
    token: &str,
    me: u32,
    mut environ_of: impl FnMut(u32) -> Vec<u8>,
) -> Vec<ProcInfo> {
    let eligible = |p: &ProcInfo| p.is_live() && !p.is_kernel_thread() && p.pid != me && p.pid > 1;
    let mut members: HashSet<u32> = HashSet::new();
    if pgid > 1 {
        members.extend(all.iter().filter(|p| p.pgrp == pgid).map(|p| p.pid));
    }
    if !token.is_empty() {
        let needle = token_entry(token);
        // A process carrying the unit's token was started by the unit, so never before
        // its leader (still in /proc: run_unit reaps it last). Reading environments is
        // the expensive part of a scan; this skips it for every older process.
        let leader_start = all.iter().find(|p| p.pid == pgid).map(|p| p.start_time);
        let matched: Vec<u32> = all
            .iter()
            .filter(|p| eligible(p) && !members.contains(&p.pid))
            .filter(|p| leader_start.is_none_or(|start| p.start_time >= start))
            .filter(|p| environ_contains(&environ_of(p.pid), &needle))
            .map(|p| p.pid)
            .collect();
        members.extend(matched);
    }
    // Descendants through ppid links (zombies included as links: a zombie's live
    // children have already been reparented, so this only adds live processes).
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut stack: Vec<u32> = members.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if child != me && members.insert(child) {
                stack.push(child);
            }
        }
    }
    let mut found: Vec<ProcInfo> = all
        .iter()
        .filter(|p| members.contains(&p.pid) && eligible(p))
        .cloned()
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// Sum of the resident set sizes of `pids`, in bytes, from `/proc/PID/statm`.
///
/// Cheap enough to call every second per unit (one small read per process). Processes
/// that are gone count as zero; on systems without `/proc` the result is 0.
pub fn tree_rss_bytes(pids: &[u32]) -> u64 {
    let page = page_size();
    pids.iter()
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some(resident * page)
        })
        .sum()
}

/// The system page size in bytes (cached).
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, pgrp: u32, state: char) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgrp,
            session: 1,
            state,
            start_time: u64::from(pid) * 10,
            flags: 0,
        }
    }

    #[test]
    fn parses_stat_with_parentheses_and_spaces_in_comm() {
        let line = "4242 (my (weird) proc) S 4000 4242 4000 0 -1 4194560 100 0 0 0 1 2 0 0 \
                    20 0 1 0 987654 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3";
        let p = parse_stat(line).expect("parses");
        assert_eq!(p.pid, 4242);
        assert_eq!(p.state, 'S');
        assert_eq!(p.ppid, 4000);
        assert_eq!(p.pgrp, 4242);
        assert_eq!(p.session, 4000);
        assert_eq!(p.start_time, 987654);
        assert!(p.is_live());
        assert!(!p.is_kernel_thread());
    }

    #[test]
    fn boot_ticks_bracket_a_new_process() {
        let before = boot_ticks_now();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let info = read_stat(child.id());
        let _ = child.wait();
        if let Some(info) = info {
            assert!(info.start_time >= before, "{} < {before}", info.start_time);
            assert!(info.start_time <= boot_ticks_now());
        }
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn reads_own_stat() {
        let me = read_stat(std::process::id()).expect("own /proc entry");
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(me.is_live());
    }

    #[test]
    fn environ_matching_is_exact_per_entry() {
        let env = b"A=1\0RUNNER_UNIT_TOKEN=abc\0B=2\0";
        assert!(environ_contains(env, b"RUNNER_UNIT_TOKEN=abc"));
        assert!(!environ_contains(env, b"RUNNER_UNIT_TOKEN=ab"));
        assert!(!environ_contains(env, b"RUNNER_UNIT_TOKEN=abcd"));
        assert_eq!(token_in_environ(env), Some(&b"abc"[..]));
        assert_eq!(token_in_environ(b"A=1\0"), None);
    }

    #[test]
    fn unit_is_group_plus_token_plus_descendants() {
        let me = 100;
        let all = vec![
            proc(100, 1, 100, 'S'),   // the runner
            proc(200, 100, 200, 'S'), // unit leader
            proc(201, 200, 200, 'S'), // child in the group
            proc(202, 201, 202, 'S'), // setpgid'd grandchild: found via ppid
            proc(203, 202, 203, 'R'), // its child
            proc(300, 1, 300, 'S'),   // setsid escapee reparented to init: found via token
            proc(301, 300, 300, 'S'), // escapee's child
            proc(204, 200, 200, 'Z'), // zombie member: not live
            proc(400, 100, 400, 'S'), // another unit of the runner
            proc(500, 1, 500, 'S'),   // unrelated
        ];
        let environ = |pid: u32| match pid {
            300 => b"RUNNER_UNIT_TOKEN=t1\0".to_vec(),
            400 => b"RUNNER_UNIT_TOKEN=t2\0".to_vec(),
            _ => Vec::new(),
        };
        let pids: Vec<u32> = find_unit_in(&all, 200, "t1", me, environ)
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids, vec![200, 201, 202, 203, 300, 301]);
    }

    #[test]
    fn never_includes_the_runner_or_init() {
        let all = vec![
            proc(1, 0, 1, 'S'),
            proc(100, 1, 100, 'S'),
            proc(200, 100, 200, 'S'),
        ];
        let environ = |_| b"RUNNER_UNIT_TOKEN=t\0".to_vec();
        let pids: Vec<u32> = find_unit_in(&all, 200, "t", 100, environ)
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids, vec![200]);
        // A group id of 0 or 1 means nothing.
        assert!(find_unit_in(&all, 1, "", 100, |_| Vec::new()).is_empty());
    }

    #[test]
    fn rss_of_self_is_positive_and_gone_pids_count_zero() {
        assert!(tree_rss_bytes(&[std::process::id()]) > 0);
        assert_eq!(tree_rss_bytes(&[u32::MAX - 1]), 0);
    }

    #[test]
    fn cmdline_of_self_names_the_test_binary() {
        assert!(!cmdline(std::process::id()).is_empty());
        assert_eq!(cmdline(u32::MAX - 1), "");
    }
}
