//! Listing: grouping categories by build, running `cargo nextest list` (one build per
//! group, then the group's other filters against the same binaries) and turning its
//! failures into errors a person can act on.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use is_terminal::IsTerminal;
use nextest_metadata::{BinaryListSummary, NextestExitCode, TestListSummary};

use super::{Discovery, DiscoveryError, Request, Test, tests_of};

/// At most this much of cargo's stderr is kept for an error message.
const STDERR_KEEP_BYTES: usize = 24 * 1024;

/// The install hint when `cargo nextest` is missing.
pub const INSTALL_HINT: &str = "install it with `cargo install cargo-nextest --locked`";

/// Categories that share one build: same directory and cargo selection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    cwd: PathBuf,
    packages: BTreeSet<String>,
    workspace: bool,
    features: BTreeSet<String>,
}

/// Lists the tests of every request: one build per group, one list per distinct filter.
pub fn discover(requests: &[Request<'_>]) -> Result<Discovery, DiscoveryError> {
    // Group, keeping the order categories were requested in.
    let mut groups: Vec<(GroupKey, Vec<&Request<'_>>)> = Vec::new();
    for req in requests {
        let key = GroupKey {
            cwd: req.cwd.clone(),
            packages: req.spec.packages.iter().cloned().collect(),
            workspace: req.spec.workspace,
            features: req.spec.features.iter().cloned().collect(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(req),
            None => groups.push((key, vec![req])),
        }
    }
    let mut discovery = Discovery::default();
    for (key, members) in &groups {
        let mut filters: Vec<&str> = Vec::new();
        for m in members {
            if !filters.contains(&m.spec.filter.as_str()) {
                filters.push(&m.spec.filter);
            }
        }
        let by_filter = list_group(key, members, &filters)?;
        for m in members {
            let tests = by_filter.get(m.spec.filter.as_str()).cloned();
            discovery
                .tests
                .insert(m.category.name.clone(), tests.unwrap_or_default());
        }
    }
    Ok(discovery)
}

/// Builds and lists one group; returns the tests of each filter.
fn list_group(
    key: &GroupKey,
    members: &[&Request<'_>],
    filters: &[&str],
) -> Result<HashMap<String, Vec<Test>>, DiscoveryError> {
    let names_of = |filter: &str| -> String {
        let names: Vec<String> = members
            .iter()
            .filter(|m| m.spec.filter == filter)
            .map(|m| format!("`{}`", m.category.name))
            .collect();
        names.join(", ")
    };
    let mut first_args: Vec<OsString> = vec!["nextest".into(), "list".into()];
    if key.workspace {
        first_args.push("--workspace".into());
    }
    for p in &key.packages {
        first_args.extend(["--package".into(), p.into()]);
    }
    if !key.features.is_empty() {
        let joined: Vec<&str> = key.features.iter().map(String::as_str).collect();
        first_args.extend(["--features".into(), joined.join(",").into()]);
    }
    first_args.extend(list_args(filters[0]));
    let summary = run_list(&first_args, &key.cwd, &names_of(filters[0]), true)?;
    let mut out = HashMap::new();
    out.insert(filters[0].to_string(), tests_of(&summary));
    if filters.len() == 1 {
        return Ok(out);
    }

    // Further filters: the same binaries, without cargo.
    let reuse = ReuseFiles::write(&summary, &key.cwd)?;
    let results: Vec<(String, Result<TestListSummary, DiscoveryError>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = filters[1..]
                .iter()
                .map(|filter| {
                    let mut args: Vec<OsString> = vec![
                        "nextest".into(),
                        "list".into(),
                        "--binaries-metadata".into(),
                        reuse.binaries.path().into(),
                        "--cargo-metadata".into(),
                        reuse.cargo.path().into(),
                    ];
                    args.extend(list_args(filter));
                    let cwd = &key.cwd;
                    let who = names_of(filter);
                    let filter = filter.to_string();
                    scope.spawn(move || (filter, run_list(&args, cwd, &who, false)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a listing thread panicked"))
                .collect()
        });
    for (filter, result) in results {
        out.insert(filter, tests_of(&result?));
    }
    Ok(out)
}

fn list_args(filter: &str) -> Vec<OsString> {
    vec![
        "--message-format".into(),
        "json".into(),
        "--run-ignored".into(),
        "all".into(),
        "-E".into(),
        filter.into(),
    ]
}

/// `--binaries-metadata` and `--cargo-metadata` files for listing without a rebuild.
struct ReuseFiles {
    binaries: tempfile::NamedTempFile,
    cargo: tempfile::NamedTempFile,
}

impl ReuseFiles {
    fn write(summary: &TestListSummary, cwd: &Path) -> Result<Self, DiscoveryError> {
        let infra = |what: &str, e: &dyn std::fmt::Display| {
            DiscoveryError::Infrastructure(format!("cannot prepare the test listing: {what}: {e}"))
        };
        let binaries = BinaryListSummary {
            rust_build_meta: summary.rust_build_meta.clone(),
            rust_binaries: summary
                .rust_suites
                .iter()
                .map(|(id, suite)| (id.clone(), suite.binary.clone()))
                .collect(),
        };
        let mut binaries_file =
            tempfile::NamedTempFile::new().map_err(|e| infra("temp file", &e))?;
        serde_json::to_writer(&mut binaries_file, &binaries)
            .map_err(|e| infra("binaries metadata", &e))?;
        binaries_file.flush().map_err(|e| infra("temp file", &e))?;

        // The same `cargo metadata` nextest runs itself.
        let mut args: Vec<OsString> = vec![
            "metadata".into(),
            "--format-version=1".into(),
            "--all-features".into(),
        ];
        if let Some(p) = &summary.rust_build_meta.platforms {
            args.extend([
                "--filter-platform".into(),
                p.host.platform.triple.clone().into(),
            ]);
        }
        let out = run_cargo(&args, cwd, false).map_err(|e| cargo_spawn_error(&e))?;
        if !out.status.success() {
            return Err(DiscoveryError::Infrastructure(format!(
                "`cargo metadata` failed in {} ({})\n{}",
                cwd.display(),
                describe_status(out.status),
                framed("cargo metadata", &out.stderr)
            )));
        }
        let mut cargo_file = tempfile::NamedTempFile::new().map_err(|e| infra("temp file", &e))?;
        cargo_file
            .write_all(&out.stdout)
            .and_then(|()| cargo_file.flush())
            .map_err(|e| infra("temp file", &e))?;
        Ok(ReuseFiles {
            binaries: binaries_file,
            cargo: cargo_file,
        })
    }
}

/// Runs one `cargo nextest list` and parses its JSON.
fn run_list(
    args: &[OsString],
    cwd: &Path,
    categories: &str,
    builds: bool,
) -> Result<TestListSummary, DiscoveryError> {
    let forward = builds && std::io::stderr().is_terminal();
    // Without a terminal cargo's progress is not shown: one line when the build starts
    // and one when it ends, so a CI log never sits silent for minutes.
    let announce = builds && !forward;
    let started = std::time::Instant::now();
    if announce {
        eprintln!(
            "runner: building the Rust tests of category {categories} (cargo nextest list in {})",
            cwd.display()
        );
    }
    let out = run_cargo(args, cwd, forward).map_err(|e| cargo_spawn_error(&e))?;
    if announce {
        let verb = if out.status.success() {
            "built and listed"
        } else {
            "build failed"
        };
        eprintln!(
            "runner: {verb} the Rust tests of category {categories} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let command = format!(
        "cargo {}",
        args.iter()
            .map(|a| shlex::try_quote(&a.to_string_lossy())
                .map(|q| q.into_owned())
                .unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !out.status.success() {
        return Err(list_failure(&out, &command, cwd, categories));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    TestListSummary::parse_json(text.as_ref()).map_err(|e| {
        DiscoveryError::Infrastructure(format!(
            "cannot read the test list of category {categories}: {e}\n  command: {command} (in {})",
            cwd.display()
        ))
    })
}

/// Classifies a failed `cargo nextest list`.
fn list_failure(out: &CargoOutput, command: &str, cwd: &Path, categories: &str) -> DiscoveryError {
    let stderr = &out.stderr;
    if stderr.contains("no such command: `nextest`")
        || stderr.contains("no such subcommand: `nextest`")
    {
        return DiscoveryError::Infrastructure(format!(
            "cargo-nextest is not installed; nextest category {categories} needs it to list its tests\n  help: {INSTALL_HINT}"
        ));
    }
    let where_ = format!("  command: {command}\n  in: {}", cwd.display());
    match out.status.code() {
        Some(NextestExitCode::INVALID_FILTERSET) => DiscoveryError::Config(format!(
            "invalid nextest filter in category {categories}\n{}",
            framed("cargo nextest", stderr)
        )),
        Some(NextestExitCode::BUILD_FAILED) => DiscoveryError::Infrastructure(format!(
            "the Rust tests of category {categories} do not build\n{where_}\n{}",
            framed("cargo", stderr)
        )),
        _ => DiscoveryError::Infrastructure(format!(
            "cannot list the Rust tests of category {categories}: `cargo nextest list` failed ({})\n{where_}\n{}",
            describe_status(out.status),
            framed("cargo nextest", stderr)
        )),
    }
}

fn cargo_spawn_error(e: &std::io::Error) -> DiscoveryError {
    let cargo = cargo_program();
    let hint = if e.kind() == std::io::ErrorKind::NotFound {
        "\n  help: install Rust (https://rustup.rs), then `cargo install cargo-nextest --locked`"
    } else {
        ""
    };
    DiscoveryError::Infrastructure(format!(
        "cannot run `{}`: {e}{hint}",
        cargo.to_string_lossy()
    ))
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            match status.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => "no exit code".into(),
            }
        }
    }
}

/// A child's output between dividers, so it reads as quoted.
fn framed(what: &str, text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return format!("({what} printed nothing on stderr)");
    }
    format!("---- {what} stderr ----\n{text}\n---- end of {what} stderr ----")
}

/// The cargo to run: `$CARGO` (set when the runner itself runs under cargo), else `cargo`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

struct CargoOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    /// The end of stderr, at most [`STDERR_KEEP_BYTES`].
    stderr: String,
}

/// Runs cargo in `cwd`, collecting stdout, keeping the end of stderr and, with
/// `forward`, copying stderr to the runner's stderr as it comes.
fn run_cargo(args: &[OsString], cwd: &Path, forward: bool) -> std::io::Result<CargoOutput> {
    // Its own process group, tracked: an interrupt while it builds stops cargo and
    // every rustc it started (the runner's process group no longer gets the terminal's
    // Ctrl-C for it).
    let mut child = Command::new(cargo_program())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let _tracked = crate::exec::track_group(child.id());
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut kept = String::new();
        let mut lines = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if forward {
                let _ = std::io::stderr().write_all(&line);
            }
            kept.push_str(&String::from_utf8_lossy(&line));
            if kept.len() > 2 * STDERR_KEEP_BYTES {
                let mut cut = kept.len() - STDERR_KEEP_BYTES;
                while !kept.is_char_boundary(cut) {
                    cut += 1;
                }
                kept = format!("[...]\n{}", &kept[cut..]);
            }
            line.clear();
        }
        if kept.len() > STDERR_KEEP_BYTES {
            let mut cut = kept.len() - STDERR_KEEP_BYTES;
            while !kept.is_char_boundary(cut) {
                cut += 1;
            }
            kept = format!("[...]\n{}", &kept[cut..]);
        }
        kept
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut stdout)?;
    let status = child.wait()?;
    let stderr = reader.join().unwrap_or_default();
    Ok(CargoOutput {
        status,
        stdout,
        stderr,
    })
}

/// Every test of a listing that matched its filter, in binary-id then name order.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        use std::os::unix::process::ExitStatusExt;
        let out = |code: i32, stderr: &str| CargoOutput {
            status: ExitStatus::from_raw(code << 8),
            stdout: vec![],
            stderr: stderr.into(),
        };
        let cwd = Path::new("/w");
        let missing = list_failure(
            &out(101, "error: no such command: `nextest`\n"),
            "c",
            cwd,
            "`u`",
        );
        assert!(
            matches!(&missing, DiscoveryError::Infrastructure(m) if m.contains(INSTALL_HINT)),
            "{missing:?}"
        );
        let build = list_failure(
            &out(101, "error[E0425]: cannot find value `x`\n"),
            "c",
            cwd,
            "`u`",
        );
        assert!(
            matches!(&build, DiscoveryError::Infrastructure(m) if m.contains("do not build") && m.contains("E0425")),
            "{build:?}"
        );
        let filter = list_failure(
            &out(94, "error: failed to parse filterset\n"),
            "c",
            cwd,
            "`u`",
        );
        assert!(
            matches!(&filter, DiscoveryError::Config(m) if m.contains("failed to parse")),
            "{filter:?}"
        );
    }
}
