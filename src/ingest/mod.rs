//! Inputs read during a run, as opposed to the reports it writes.
//!
//! - [`junit`]: a unit's own JUnit file (`{junit}` in its command) turned into
//!   `test_case` events, and durations from a JUnit report for `--partition`.

pub mod junit;
