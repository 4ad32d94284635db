//! The lines of a failed unit's output a person acts on, for the console (and the HTML
//! report): pure text in, lines out.
//!
//! - A Rust panic (`thread '…' panicked at file:line:col:`, since Rust 1.90 with the
//!   thread id: `thread '…' (1234) panicked at …`) gives the panic: its
//!   location line and its message, with an assertion's `left:` / `right:`, up to the
//!   note about `RUST_BACKTRACE` or the backtrace (older toolchains' one-line form
//!   `panicked at 'msg', file:line:col` too). The first panic is the one that failed
//!   the test; later ones are consequences.
//! - Otherwise the end of the output without the trailers that say nothing: libtest's
//!   summary (`failures:`, `test result:`, `error: test failed, to rerun pass …`), the
//!   capture's `... N bytes omitted ...` marker, blank lines at the end.
//!
//! When the captured tail has no panic but the unit's full output (its log file) does
//! (a long backtrace pushed the panic out of the tail), the panic comes from the log:
//! [`excerpt_of_failure`] reads its first [`LOG_SCAN_BYTES`].
//!
//! The caller prints the path of the full output after the excerpt.

/// How much of a unit's log is read to find a panic the tail lost.
pub const LOG_SCAN_BYTES: u64 = 256 * 1024;

/// The excerpt of a failed unit: the panic from its tail or else from its log file,
/// else the end of its tail ([`excerpt`]).
pub fn excerpt_of_failure(
    tail: &str,
    log: Option<&std::path::Path>,
    max_lines: usize,
) -> Vec<String> {
    let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
    if let Some(panic) = panic_block(tail, max_lines) {
        return owned(panic);
    }
    if let Some(path) = log {
        use std::io::Read;
        let mut head = Vec::new();
        if std::fs::File::open(path)
            .and_then(|f| f.take(LOG_SCAN_BYTES).read_to_end(&mut head))
            .is_ok()
        {
            let text = String::from_utf8_lossy(&head);
            if let Some(panic) = panic_block(&text, max_lines) {
                return owned(panic);
            }
        }
    }
    owned(excerpt(tail, max_lines))
}

/// Lines a libtest or runner trailer starts with: never worth a line of an excerpt.
const TRAILERS: &[&str] = &[
    "failures:",
    "test result: ",
    "error: test failed, to rerun pass",
    "note: run with `RUST_BACKTRACE=",
    "successes:",
];

/// The excerpt of `output`: at most `max_lines` lines.
pub fn excerpt(output: &str, max_lines: usize) -> Vec<&str> {
    if let Some(panic) = panic_block(output, max_lines) {
        return panic;
    }
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| !is_trailer(l))
        .collect::<Vec<_>>();
    // Trailing blank lines and the names listed under `failures:` say nothing.
    let mut end = lines.len();
    while end > 0 && (lines[end - 1].trim().is_empty() || is_failure_name(lines[end - 1])) {
        end -= 1;
    }
    let start = end.saturating_sub(max_lines);
    lines[start..end].to_vec()
}

fn is_trailer(line: &str) -> bool {
    let t = line.trim_start();
    TRAILERS.iter().any(|p| t.starts_with(p))
        || is_running_n_tests(t)
        || (t.starts_with("... ") && t.ends_with(" bytes omitted ..."))
        || is_test_status(t)
}

/// `running 3 tests`.
fn is_running_n_tests(t: &str) -> bool {
    let mut words = t.split_whitespace();
    words.next() == Some("running")
        && words.next().is_some_and(|n| n.parse::<u64>().is_ok())
        && matches!(words.next(), Some("test" | "tests"))
}

/// `test tests::adds ... ok` / `... FAILED` / `... ignored`.
fn is_test_status(t: &str) -> bool {
    t.starts_with("test ")
        && (t.ends_with(" ... ok") || t.ends_with(" ... FAILED") || t.contains(" ... ignored"))
}

/// An indented test name as libtest lists them under `failures:`.
fn is_failure_name(line: &str) -> bool {
    line.starts_with("    ") && !line.trim().contains(' ') && line.contains("::")
}

/// The first panic's lines, when the output has one.
fn panic_block(output: &str, max_lines: usize) -> Option<Vec<&str>> {
    let lines: Vec<&str> = output.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("thread '") && l.contains(" panicked at "))?;
    let mut block = vec![lines[at]];
    for l in &lines[at + 1..] {
        let t = l.trim_start();
        if block.len() >= max_lines
            || t.starts_with("note: run with `RUST_BACKTRACE=")
            || t.starts_with("stack backtrace:")
            || t.starts_with("thread '")
            || is_trailer(l)
            || l.trim().is_empty()
        {
            break;
        }
        block.push(l);
    }
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const RUST_ASSERT_HEAD: &str = "\
running 1 test
thread 'tests::adds' panicked at src/lib.rs:42:9:
assertion `left == right` failed: sums differ
  left: 3
 right: 4
stack backtrace:
";

    const RUST_ASSERT: &str = "\
running 1 test
setting up the fixture
thread 'tests::adds' panicked at src/lib.rs:42:9:
assertion `left == right` failed: sums differ
  left: 3
 right: 4
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
test tests::adds ... FAILED

failures:

failures:
    tests::adds

test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.00s

";

    #[test]
    fn a_rust_assertion_gives_message_location_left_and_right() {
        assert_eq!(
            excerpt(RUST_ASSERT, 12),
            [
                "thread 'tests::adds' panicked at src/lib.rs:42:9:",
                "assertion `left == right` failed: sums differ",
                "  left: 3",
                " right: 4",
            ]
        );
    }

    #[test]
    fn the_old_one_line_panic_and_the_first_of_two() {
        let out = "thread 'main' panicked at 'boom', src/main.rs:3:5\nnote: run with `RUST_BACKTRACE=1`\n\
                   thread 'other' (77) panicked at src/x.rs:1:1:\nlater\n";
        assert_eq!(
            excerpt(out, 12),
            ["thread 'main' panicked at 'boom', src/main.rs:3:5"]
        );
    }

    #[test]
    fn a_panic_with_the_thread_id() {
        let out = "\nrunning 1 test\n\nthread 'tests::fails' (22716) panicked at src/lib.rs:42:9:\nboom\nstack backtrace:\n   0: x\n";
        assert_eq!(
            excerpt(out, 12),
            [
                "thread 'tests::fails' (22716) panicked at src/lib.rs:42:9:",
                "boom"
            ]
        );
    }

    #[test]
    fn a_long_panic_message_is_bounded() {
        let mut out = String::from("thread 't' panicked at a.rs:1:1:\n");
        for i in 0..50 {
            out.push_str(&format!("line {i}\n"));
        }
        let e = excerpt(&out, 5);
        assert_eq!(e.len(), 5);
        assert_eq!(e[4], "line 3");
    }

    #[test]
    fn a_command_gives_its_tail_without_trailers() {
        let out = "step 1\nstep 2\nERROR: connection refused\n\n... 100 bytes omitted ...\n\n\n";
        assert_eq!(excerpt(out, 2), ["step 2", "ERROR: connection refused"]);
        let pytest = "tests/test_a.py F\nE   assert 1 == 2\n=== 1 failed in 0.1s ===\n";
        assert_eq!(
            excerpt(pytest, 12).last(),
            Some(&"=== 1 failed in 0.1s ===")
        );
        // `running` in ordinary text is not libtest's header.
        assert_eq!(
            excerpt("running the server\nfailed\n", 12),
            ["running the server", "failed"]
        );
        assert!(excerpt("", 12).is_empty());
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn a_panic_the_tail_lost_comes_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("u.log");
        std::fs::write(
            &log,
            format!("{}   4: frame\n", super::tests::RUST_ASSERT_HEAD),
        )
        .unwrap();
        let e = excerpt_of_failure("   3: frame\n   4: frame\n", Some(&log), 12);
        assert_eq!(e[0], "thread 'tests::adds' panicked at src/lib.rs:42:9:");
        assert_eq!(e.len(), 4);
        // No log, no panic: the tail.
        let e = excerpt_of_failure("a\nb\n", Some(&dir.path().join("missing")), 12);
        assert_eq!(e, ["a", "b"]);
    }
}
