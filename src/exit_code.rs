//! Exit codes: the stable contract with shells and CI.

/// Every selected layer passed (or, in legacy mode, every unit).
pub const PASSED: i32 = 0;
/// Tests failed.
pub const FAILED: i32 = 1;
/// Usage or configuration error; nothing ran.
pub const USAGE: i32 = 2;
/// Infrastructure error: a service did not start, discovery or the run directory failed.
pub const INFRASTRUCTURE: i32 = 3;
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: i32 = 130;
/// A listing's reader went away (`runner history | head`): 128 + SIGPIPE, as for `git log | head`.
pub const CLOSED_STDOUT: i32 = 141;
