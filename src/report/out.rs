//! Standard output that outlives its reader: `runner history | head` ends quietly.
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a pipe whose reader
//! has gone fails with `EPIPE`, and `println!` turns that into a panic (exit 101,
//! "failed printing to stdout: Broken pipe"). The runner keeps SIGPIPE ignored in
//! every mode (a run must never be killed by one of its units' pipes or a viewer's
//! socket, and one rule for every command is simpler than one per mode) and writes
//! stdout only through this module:
//!
//! - **Listing commands**, whose output is their product (`--show-layers`,
//!   `--orchestration-status`, `--background-status`, `--background-results`,
//!   `history`, `completions`), write with [`outln!`] and `?`. When the reader has
//!   gone they stop at once, print nothing on stderr, and exit with [`CLOSED`] (141,
//!   128 + SIGPIPE): what a shell reports for `git log | head` or `ls | head`, so
//!   `set -o pipefail` scripts see the same status as with any Unix listing. Any other
//!   write error (a full disk behind `>`) is reported on stderr and exits 3.
//! - **A run's console** writes through a [`Sink`]: once stdout is gone it writes
//!   nothing more, and the run goes on to the end, writes its reports and exits with
//!   the run's own code.
//! - **Commands that act and then announce** (`--queue-e2e` and `--background-e2e`
//!   printing the new run's id, `--kill-background`, `merge-junit`) write their line
//!   with [`line`], which ignores a closed reader: the action is done either way, and
//!   the exit code is the action's.
//!
//! Writing to a closed file descriptor (`runner … >&-`) is not an error here: the
//! standard library treats `EBADF` on stdout as a sink.

use std::fmt;
use std::io::{self, Write};

use crate::exit_code;

/// Exit code of a listing command whose reader went away: 128 + SIGPIPE.
pub const CLOSED: i32 = 141;

/// Why a listing stopped writing.
#[derive(Debug)]
pub enum OutError {
    /// The reader of stdout has gone (`EPIPE`): stop quietly.
    Closed,
    /// Stdout cannot be written for another reason.
    Failed(io::Error),
}

impl From<io::Error> for OutError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            OutError::Closed
        } else {
            OutError::Failed(e)
        }
    }
}

/// What a listing's body returns: its exit code, or why output stopped.
pub type Listed = Result<i32, OutError>;

/// Writes formatted text to stdout (use [`outln!`]).
pub fn write_fmt(args: fmt::Arguments<'_>) -> Result<(), OutError> {
    io::stdout().lock().write_fmt(args).map_err(OutError::from)
}

/// Writes raw bytes to stdout.
pub fn write_bytes(bytes: &[u8]) -> Result<(), OutError> {
    io::stdout().lock().write_all(bytes).map_err(OutError::from)
}

/// `println!` for listings: `outln!(...)?` stops the listing when stdout is gone.
macro_rules! outln {
    () => {
        $crate::report::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::report::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// The exit code of a listing: flushes stdout, then its own code, [`CLOSED`] when
/// the reader went away, 3 (with a message) when stdout could not be written.
pub fn finish(listed: Listed) -> i32 {
    let flushed = io::stdout().lock().flush().map_err(OutError::from);
    match listed.and_then(|code| flushed.map(|()| code)) {
        Ok(code) => code,
        Err(OutError::Closed) => CLOSED,
        Err(OutError::Failed(e)) => {
            eprintln!("runner: cannot write to stdout: {e}");
            exit_code::INFRASTRUCTURE
        }
    }
}

/// Runs a listing's body and returns its exit code (see [`finish`]).
pub fn listing(body: impl FnOnce() -> Listed) -> i32 {
    finish(body())
}

/// Writes one line to stdout, ignoring a closed reader (for commands that act and
/// then announce, where the action stands whether or not anyone reads).
pub fn line(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Stdout of a run's console: after the reader has gone (or any write error) it
/// writes nothing more and never fails; the run is not affected.
#[derive(Debug, Default)]
pub struct Sink {
    closed: bool,
}

impl Sink {
    /// A sink on the process's stdout.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once stdout could not be written: nothing more is written.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes `bytes` (whole lines), unless stdout is already gone.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if let Err(e) = io::stdout().lock().write_all(bytes) {
            self.stop(e);
        }
    }

    /// Writes `lines`, each followed by a newline.
    pub fn lines<S: AsRef<str>>(&mut self, lines: impl IntoIterator<Item = S>) {
        if self.closed {
            return;
        }
        let mut out = io::stdout().lock();
        for l in lines {
            if let Err(e) = out
                .write_all(l.as_ref().as_bytes())
                .and_then(|()| out.write_all(b"\n"))
            {
                drop(out);
                self.stop(e);
                return;
            }
        }
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) {
        if !self.closed
            && let Err(e) = io::stdout().lock().flush()
        {
            self.stop(e);
        }
    }

    fn stop(&mut self, e: io::Error) {
        self.closed = true;
        if e.kind() == io::ErrorKind::BrokenPipe {
            tracing::info!("stdout closed by its reader; the console stops writing");
        } else {
            tracing::warn!("cannot write to stdout ({e}); the console stops writing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_closed_and_other_errors_fail() {
        let closed = OutError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, OutError::Closed));
        let full = OutError::from(io::Error::other("disk full"));
        assert!(matches!(full, OutError::Failed(_)));
    }

    #[test]
    fn finish_maps_outcomes_to_exit_codes() {
        assert_eq!(finish(Ok(2)), 2);
        assert_eq!(finish(Err(OutError::Closed)), CLOSED);
        assert_eq!(
            finish(Err(OutError::Failed(io::Error::other("x")))),
            exit_code::INFRASTRUCTURE
        );
    }
}
