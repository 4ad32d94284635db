//! What running a unit produced: [`ExecResult`], [`Termination`], [`LeakedProcess`].
//!
//! This module owns how an OS wait status becomes a [`Termination`] (exit code, or a
//! signal with its conventional name).

use std::fmt;
use std::time::Duration;

use super::capture::CapturedOutput;
use super::runlog::LogLocation;
use super::stop::StopReason;

/// How a unit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The main process exited with this code.
    Exited(i32),
    /// The main process was killed by a signal it did not get from the runner.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Its name, e.g. `"SIGSEGV"`.
        name: String,
    },
    /// The unit exceeded its timeout and was killed.
    TimedOut,
    /// The runner stopped the unit (see [`StopReason`]).
    Stopped(StopReason),
}

impl Termination {
    /// True for `Exited(0)`.
    pub fn is_success(&self) -> bool {
        matches!(self, Termination::Exited(0))
    }

    /// The termination for a reaped wait status.
    pub(crate) fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Exited(code),
            (None, Some(signal)) => Termination::Signaled {
                signal,
                name: signal_name(signal),
            },
            // Stopped/continued statuses are never returned by a blocking wait for exit.
            (None, None) => Termination::Exited(-1),
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(code) => write!(f, "exit code {code}"),
            Termination::Signaled { name, .. } => write!(f, "killed by {name}"),
            Termination::TimedOut => f.write_str("timed out"),
            Termination::Stopped(reason) => write!(f, "stopped: {reason}"),
        }
    }
}

/// The conventional name of a signal (`"SIGSEGV"`); `"SIGRTMIN+n"` for real-time
/// signals, `"SIG<n>"` for anything else.
pub fn signal_name(signal: i32) -> String {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        return sig.as_str().to_string();
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        if (min..=max).contains(&signal) {
            return format!("SIGRTMIN+{}", signal - min);
        }
    }
    format!("SIG{signal}")
}

/// A process of the unit that was still alive after the main process exited. The runner
/// kills it; reporting it lets the executor flag the test as leaky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedProcess {
    /// Its pid at the time it was found.
    pub pid: u32,
    /// Its command line (arguments joined by spaces).
    pub cmdline: String,
}

/// Everything the runner learned from running one unit.
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// How the unit ended.
    pub termination: Termination,
    /// From spawn to the end of the main process (or of the kill sequence).
    pub duration: Duration,
    /// The bounded capture of stdout and stderr.
    pub output: CapturedOutput,
    /// The main process's pid, which is also the unit's process group id.
    pub pid: u32,
    /// Processes left behind by a unit whose main process exited (then killed).
    pub leaked: Vec<LeakedProcess>,
    /// Where the output can be read (`None`: the unit printed nothing).
    pub log: Option<LogLocation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn names_common_signals() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGABRT), "SIGABRT");
        assert_eq!(signal_name(999), "SIG999");
        #[cfg(target_os = "linux")]
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(
            Termination::from_status(ExitStatusExt::from_raw(3 << 8)),
            Termination::Exited(3)
        );
        assert_eq!(
            Termination::from_status(ExitStatusExt::from_raw(libc::SIGSEGV)),
            Termination::Signaled {
                signal: libc::SIGSEGV,
                name: "SIGSEGV".into()
            }
        );
        assert!(Termination::Exited(0).is_success());
        assert!(!Termination::TimedOut.is_success());
        assert_eq!(
            Termination::Stopped(StopReason::Cancelled).to_string(),
            "stopped: cancelled"
        );
    }
}
