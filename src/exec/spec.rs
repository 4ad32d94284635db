//! What to run and within which limits: [`UnitCommand`] and [`ExecLimits`].
//!
//! Plain data handed to [`run_unit`](super::run_unit) by the executor; this module owns
//! their validation and the defaults.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::runlog::RunLog;
use std::time::Duration;

/// What to run for one unit.
///
/// Exactly one of `shell_command` and `program` must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitCommand {
    /// A shell command line, run as `/bin/sh -c <shell_command>` (command units).
    pub shell_command: Option<String>,
    /// A binary and its arguments, executed directly (Rust test binaries).
    pub program: Option<(PathBuf, Vec<String>)>,
    /// Working directory of the unit.
    pub cwd: PathBuf,
    /// Variables added to (or overriding) the runner's environment.
    pub env: Vec<(String, String)>,
    /// The unit's own log file: combined stdout and stderr, capped at
    /// [`ExecLimits::log_max_bytes`]. Parent directories are created. With a `run_log`,
    /// it is only written at the unit's end when the output needs a file of its own
    /// (the unit failed, leaked, or printed more than the capture keeps).
    pub log_path: PathBuf,
    /// The run's shared output log (see [`RunLog`]); `None`: always `log_path`.
    pub run_log: Option<Arc<RunLog>>,
    /// A marker unique to this unit (and attempt). The child gets
    /// `RUNNER_UNIT_TOKEN=<token>`; descendants inherit it, which is how processes that
    /// left the unit's process group are still found. Must not be empty.
    pub unit_token: String,
    /// Niceness increment applied in the child (relative to the runner's), clamped to
    /// the valid range. Background units run at a lower priority this way. A negative
    /// increment needs privileges; without them the spawn fails.
    pub nice: Option<i32>,
    /// `RLIMIT_AS` (address space, soft and hard) for the child, in MiB. Never raises the
    /// runner's own hard limit.
    pub rlimit_as_mb: Option<u64>,
}

impl UnitCommand {
    /// A unit running `command` with `/bin/sh -c`.
    pub fn shell(
        command: impl Into<String>,
        cwd: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
        unit_token: impl Into<String>,
    ) -> Self {
        UnitCommand {
            shell_command: Some(command.into()),
            cwd: cwd.into(),
            log_path: log_path.into(),
            unit_token: unit_token.into(),
            ..UnitCommand::default()
        }
    }

    /// A unit executing `program` with `args` directly.
    pub fn program(
        program: impl Into<PathBuf>,
        args: Vec<String>,
        cwd: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
        unit_token: impl Into<String>,
    ) -> Self {
        UnitCommand {
            program: Some((program.into(), args)),
            cwd: cwd.into(),
            log_path: log_path.into(),
            unit_token: unit_token.into(),
            ..UnitCommand::default()
        }
    }

    /// A short human-readable description, for errors and logs.
    pub fn describe(&self) -> String {
        match (&self.shell_command, &self.program) {
            (Some(cmd), _) => cmd.clone(),
            (None, Some((program, args))) => {
                let mut s = program.display().to_string();
                for arg in args {
                    s.push(' ');
                    s.push_str(arg);
                }
                s
            }
            (None, None) => "<nothing>".to_string(),
        }
    }

    /// Checks the invariants [`run_unit`](super::run_unit) relies on.
    pub(crate) fn validate(&self) -> io::Result<()> {
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        match (&self.shell_command, &self.program) {
            (Some(_), Some(_)) => return invalid("a unit has both a shell command and a program"),
            (None, None) => return invalid("a unit has neither a shell command nor a program"),
            _ => {}
        }
        if self.unit_token.is_empty() || self.unit_token.contains('\0') {
            return invalid("a unit token must be non-empty and free of NUL bytes");
        }
        Ok(())
    }
}

/// Time and size limits for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock limit; `None` means no timeout.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a unit is timed out or stopped.
    pub kill_grace: Duration,
    /// Bytes of the beginning of the output kept in memory.
    pub head_bytes: usize,
    /// Bytes of the end of the output kept in memory.
    pub tail_bytes: usize,
    /// Bytes of output written to the log file before it is truncated.
    pub log_max_bytes: u64,
}

impl Default for ExecLimits {
    /// No timeout, 5 s grace, 32 KiB head, 128 KiB tail, 16 MiB log.
    fn default() -> Self {
        ExecLimits {
            timeout: None,
            kill_grace: Duration::from_secs(5),
            head_bytes: 32 * 1024,
            tail_bytes: 128 * 1024,
            log_max_bytes: 16 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_shell_and_program() {
        let ok = UnitCommand::shell("true", "/", "/tmp/x.log", "t");
        assert!(ok.validate().is_ok());
        let mut both = ok.clone();
        both.program = Some(("/bin/true".into(), vec![]));
        assert!(both.validate().unwrap_err().to_string().contains("both"));
        let neither = UnitCommand {
            unit_token: "t".into(),
            ..UnitCommand::default()
        };
        assert!(
            neither
                .validate()
                .unwrap_err()
                .to_string()
                .contains("neither")
        );
        let no_token = UnitCommand::shell("true", "/", "/tmp/x.log", "");
        assert!(
            no_token
                .validate()
                .unwrap_err()
                .to_string()
                .contains("token")
        );
    }

    #[test]
    fn describe_joins_program_and_args() {
        let u = UnitCommand::program(
            "/bin/t",
            vec!["--exact".into(), "a::b".into()],
            "/",
            "l",
            "t",
        );
        assert_eq!(u.describe(), "/bin/t --exact a::b");
    }
}
