//! The watchdog: a small process that outlives a killed runner to end its units.
//!
//! A runner killed by SIGKILL (or crashing) cannot stop anything, and its units are
//! not in its process group: each leads its own group, some leave it (`setsid`), and
//! `PR_SET_PDEATHSIG` reaches only direct children (and fires on the death of the
//! *thread* that spawned them). So every run starts a watchdog: the `runner` binary
//! re-executed with [`WATCHDOG_ENV`] set (handled by [`main_if_requested`] before the
//! command line is parsed), in its own process group (a Ctrl-C at the terminal does
//! not reach it), with stdout and stderr to `watchdog.log` in the run directory (it
//! never holds the runner's output pipes open), and with stdin the read end of a
//! pipe whose write end only the runner holds (close-on-exec, so no unit inherits it).
//!
//! - The runner ends normally (or unwinds): dropping the [`Watchdog`] handle writes one
//!   byte; the watchdog reads it and exits.
//! - The runner dies: the kernel closes the pipe; the watchdog reads end-of-file
//!   without that byte. It then ends every process of the run (see
//!   [`leftovers::RunLeftovers`]: the run's `RUNNER_RUN_ID` marker, which every unit and
//!   service inherits, plus the runner's descendants as last seen, which catches
//!   daemons that cleared their environment) through the one terminate sequence, and
//!   closes the run as `dead` from its `events.jsonl` ([`dead_runs::close`]).
//!
//! While the runner lives, the watchdog wakes once a second to remember the runner's
//! descendants (`/proc/PID/task/*/children`, a few reads: the runner is a child
//! subreaper, so everything its units start stays in its subtree).
//!
//! If the watchdog is killed too (`kill -9` of both), the next `runner` invocation
//! finds the run's runner gone and does the same ([`dead_runs::sweep`]), minus the
//! descendants it could not have seen.

pub mod dead_runs;
pub mod leftovers;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Set in the watchdog's environment to its orders (JSON): the one thing that makes a
/// `runner` process a watchdog.
pub const WATCHDOG_ENV: &str = "RUNNER_WATCHDOG";

/// The variable every unit and service of a run carries with the run's id.
pub const RUN_ID_ENV: &str = "RUNNER_RUN_ID";

/// How long the run's processes get between SIGTERM and SIGKILL once the runner died.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often the watchdog remembers the runner's descendants.
const WATCH_INTERVAL_MS: i32 = 1000;

/// What a watchdog watches (passed in [`WATCHDOG_ENV`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Orders {
    run_id: String,
    run_dir: PathBuf,
    root: PathBuf,
    runner_pid: u32,
}

/// The runner's end of its watchdog. Dropping it tells the watchdog the runner ended
/// by itself (so nothing is killed), and waits for it to exit.
#[derive(Debug)]
pub struct Watchdog {
    pipe: Option<ChildStdin>,
    child: Child,
}

/// Starts the watchdog of run `run_id`. `None` (with a log line) when it cannot be
/// started: the run goes on, unguarded against its own death.
pub fn start(run_id: &str, run_dir: &Path, root: &Path) -> Option<Watchdog> {
    let orders = Orders {
        run_id: run_id.to_string(),
        run_dir: run_dir.to_path_buf(),
        root: root.to_path_buf(),
        runner_pid: std::process::id(),
    };
    let spawned = (|| -> std::io::Result<Child> {
        // This very binary, even if the file was replaced since the runner started.
        let exe = Path::new("/proc/self/exe");
        std::fs::create_dir_all(run_dir)?;
        let log = std::fs::File::create(run_dir.join("watchdog.log"))?;
        let json = serde_json::to_string(&orders).map_err(std::io::Error::other)?;
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .env(WATCHDOG_ENV, json)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
    })();
    match spawned {
        Ok(mut child) => Some(Watchdog {
            pipe: child.stdin.take(),
            child,
        }),
        Err(e) => {
            tracing::warn!("cannot start the run's watchdog: {e}");
            None
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"x");
        }
        let _ = self.child.wait();
    }
}

/// In a process started as a watchdog: watch, and exit. Returns at once otherwise.
pub fn main_if_requested() {
    let Some(raw) = std::env::var_os(WATCHDOG_ENV) else {
        return;
    };
    let code = match serde_json::from_str::<Orders>(&raw.to_string_lossy()) {
        Ok(orders) => watch(&orders),
        Err(e) => {
            eprintln!("runner watchdog: bad orders: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// The watchdog's life: wait for the runner's end; if it died, end its run.
fn watch(orders: &Orders) -> i32 {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for sig in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGPIPE] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let me = std::process::id();
    let mut seen: HashMap<u32, u64> = HashMap::new();
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut fds = [libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, its length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, WATCH_INTERVAL_MS) };
        if ready == 0 {
            let now: HashMap<u32, u64> = descendants_of(orders.runner_pid)
                .into_iter()
                .filter(|p| p.pid != me && p.is_live())
                .map(|p| (p.pid, p.start_time))
                .collect();
            for pid in now.keys().filter(|p| !seen.contains_key(p)) {
                eprintln!("runner watchdog: watching pid {pid}");
            }
            seen = now;
            continue;
        }
        if ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        let mut byte = [0u8; 1];
        match stdin.read(&mut byte) {
            Ok(1) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    eprintln!(
        "runner watchdog: runner (pid {}) of run {} died; ending its processes",
        orders.runner_pid, orders.run_id
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runner watchdog: no runtime: {e}");
            return 3;
        }
    };
    let ended = runtime.block_on(leftovers::end(&orders.run_id, seen, GRACE));
    eprintln!("runner watchdog: {ended} processes ended");
    match dead_runs::close(&orders.run_dir, &orders.root) {
        Ok(Some(state)) => eprintln!(
            "runner watchdog: run {} recorded as dead ({})",
            orders.run_id,
            state.summary_line()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("runner watchdog: cannot record the run: {e}"),
    }
    0
}

/// The processes descended from `root`, from one `/proc/*/stat` snapshot (parent links
/// only: a live process's per-thread `children` files are never read).
fn descendants_of(root: u32) -> Vec<crate::exec::procfs::ProcInfo> {
    let all = crate::exec::procfs::snapshot();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            found.push(p.clone());
        }
    }
    found
}
