//! Units of `pytest:` categories: Python tests collected once by pytest, one unit per
//! test id, executed in batches (one pytest process runs many tests).
//!
//! # Discovery: one collection per category
//!
//! `<python> -m pytest --collect-only -q -p _layered_runner_pytest [paths] [-m markers]
//! [-k k] [args]` runs in the category's working directory with the category's `env`,
//! so the project's configuration (`pytest.ini`, `pyproject.toml`, `conftest.py` with
//! its `collect_ignore`) applies exactly as for a plain `pytest`. The runner's
//! [plugin](PLUGIN_SOURCE), written to a temporary directory and found through
//! `PYTHONPATH`, records each collected item (node id, file, line) and pytest's
//! `rootdir` as JSON lines. pytest's exit code 5 (nothing collected) is an empty
//! category; any other failure (the interpreter or pytest missing, a collection error)
//! is an infrastructure error with pytest's own output and the command that was run.
//!
//! # Execution
//!
//! A unit is one node id ([`UnitSpec::Pytest`]); how units are packed into pytest
//! processes is [`batches`]; running a batch is the executor's
//! (`agents::pytest_batches`).
//!
//! # Layout
//!
//! - here: the plugin, the collection and the [`units`].
//! - `batches`: packing test ids into batches (pure).
//! - [`cache`]: the last collection, reused while its inputs are unchanged.

mod batches;
pub mod cache;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

pub use batches::{Batch, BatchTest, plan_batches};

use super::{Unit, UnitSpec};
use crate::config::{Category, PytestSpec};

/// The module name of the runner's pytest plugin (`-p` argument).
pub const PLUGIN_MODULE: &str = "_layered_runner_pytest";

/// The plugin's source: streams per-test results, filters by id, records a collection.
pub const PLUGIN_SOURCE: &str = include_str!("plugin.py");

/// Writes the plugin into `dir` (created if needed) and returns `dir`, for `PYTHONPATH`.
pub fn write_plugin(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!("{PLUGIN_MODULE}.py"));
    let fresh = std::fs::read_to_string(&file).is_ok_and(|s| s == PLUGIN_SOURCE);
    if !fresh {
        // Written under another name then renamed: a concurrent reader never sees half.
        let tmp = dir.join(format!(".{PLUGIN_MODULE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, PLUGIN_SOURCE)?;
        std::fs::rename(&tmp, &file)?;
    }
    Ok(dir.to_path_buf())
}

/// `PYTHONPATH` with `plugin_dir` first, then the category's value (else the runner's).
pub fn python_path(plugin_dir: &Path, category: &Category) -> String {
    let inherited = match category.env.get("PYTHONPATH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("PYTHONPATH").ok(),
    };
    let mut out = plugin_dir.to_string_lossy().into_owned();
    if let Some(rest) = inherited.filter(|r| !r.is_empty()) {
        out.push(':');
        out.push_str(&rest);
    }
    out
}

/// A `pytest:` category to collect.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The category.
    pub category: &'a Category,
    /// Its `pytest:` settings.
    pub spec: &'a PytestSpec,
    /// Where pytest runs (the category's `cwd`, or the project root).
    pub cwd: PathBuf,
    /// Where the collection is cached ([`cache`]); None: always collect.
    pub cache: Option<PathBuf>,
}

/// One collected test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    /// pytest's node id (`tests/test_a.py::TestX::test_y[1-a b]`).
    pub id: String,
    /// The file that defines it, absolute (what a batch passes to pytest).
    pub path: PathBuf,
    /// The file relative to the rootdir, as pytest reports it.
    pub file: String,
    /// Line of its definition, from 1, when known.
    pub line: Option<u32>,
}

/// What one collection found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// pytest's rootdir (node ids are relative to it; batches pass it as `--rootdir`).
    pub rootdir: PathBuf,
    /// The tests, in collection order.
    pub tests: Vec<Test>,
}

/// The collections of every requested category, by category name.
#[derive(Debug, Default)]
pub struct Discovery {
    collected: HashMap<String, Collected>,
}

impl Discovery {
    /// The collection of `category` (empty when it was not requested).
    pub fn collected(&self, category: &str) -> Collected {
        self.collected.get(category).cloned().unwrap_or_default()
    }
}

/// Collects every requested category (one pytest call each, unless its cached
/// collection is still valid).
pub fn discover(requests: &[Request<'_>]) -> Result<Discovery, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary dir: {e}"))?;
    let plugin_dir =
        write_plugin(dir.path()).map_err(|e| format!("cannot write the pytest plugin: {e}"))?;
    let mut collected = HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        let cached = r
            .cache
            .as_deref()
            .filter(|_| cache::enabled())
            .and_then(|file| cache::load(file, r.category, r.spec, &r.cwd));
        let c = match cached {
            Some(c) => c,
            None => {
                let out = dir.path().join(format!("collect-{i}.jsonl"));
                let c = collect(r, &plugin_dir, &out)?;
                if let Some(file) = &r.cache {
                    cache::store(file, r.category, r.spec, &r.cwd, &c);
                }
                c
            }
        };
        collected.insert(r.category.name.clone(), c);
    }
    Ok(Discovery { collected })
}

/// The collection command's arguments after the interpreter.
pub fn collect_args(spec: &PytestSpec) -> Vec<String> {
    let mut args: Vec<String> = ["-m", "pytest", "--collect-only", "-q", "-p", PLUGIN_MODULE]
        .map(String::from)
        .to_vec();
    args.extend(spec.paths.iter().cloned());
    if let Some(m) = &spec.markers {
        args.extend(["-m".to_string(), m.clone()]);
    }
    if let Some(k) = &spec.k {
        args.extend(["-k".to_string(), k.clone()]);
    }
    args.extend(spec.args.iter().cloned());
    args
}

/// A command line as a person would type it.
pub fn shell_line(program: &str, args: &[String]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            shlex::try_quote(a)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| a.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How much of pytest's output an error shows.
const OUTPUT_KEEP_BYTES: usize = 8192;

fn collect(r: &Request<'_>, plugin_dir: &Path, out: &Path) -> Result<Collected, String> {
    let args = collect_args(r.spec);
    let line = shell_line(&r.spec.python, &args);
    let cat = &r.category.name;
    let child = Command::new(&r.spec.python)
        .args(&args)
        .current_dir(&r.cwd)
        .envs(&r.category.env)
        .env("PYTHONPATH", python_path(plugin_dir, r.category))
        .env("RUNNER_PYTEST_COLLECT", out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            return Err(format!(
                "category `{cat}`: cannot run the Python interpreter `{}`: {e}\n  command: {line}\n  in: {}\n  hint: set `pytest.python` to an interpreter that has pytest installed",
                r.spec.python,
                r.cwd.display()
            ));
        }
    };
    let _tracked = crate::exec::track_group(child.id());
    let output = child
        .wait_with_output()
        .map_err(|e| format!("category `{cat}`: waiting for pytest: {e}"))?;
    let code = output.status.code();
    // 5: no tests collected.
    if code == Some(5) {
        let rootdir = std::fs::read_to_string(out)
            .ok()
            .and_then(|s| parse_collection(&s).ok())
            .map(|c| c.rootdir)
            .unwrap_or_else(|| r.cwd.clone());
        return Ok(Collected {
            rootdir,
            tests: Vec::new(),
        });
    }
    let text = std::fs::read_to_string(out).ok();
    match (code, text) {
        (Some(0), Some(text)) => parse_collection(&text)
            .map_err(|e| format!("category `{cat}`: cannot read pytest's collection: {e}")),
        _ => {
            let mut shown = String::from_utf8_lossy(&output.stdout).into_owned();
            shown.push_str(&String::from_utf8_lossy(&output.stderr));
            let shown = keep_end(shown.trim_end(), OUTPUT_KEEP_BYTES);
            let status = match code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".to_string(),
            };
            Err(format!(
                "category `{cat}`: pytest could not collect the tests ({status})\n  command: {line}\n  in: {}\n{}\n{shown}\n{}",
                r.cwd.display(),
                "-".repeat(60),
                "-".repeat(60)
            ))
        }
    }
}

fn keep_end(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[...]\n{}", &s[cut..])
}

#[derive(serde::Deserialize)]
struct RawRoot {
    rootdir: PathBuf,
}

#[derive(serde::Deserialize)]
struct RawItem {
    id: String,
    path: PathBuf,
    file: String,
    line: Option<u32>,
}

/// Reads the plugin's collection record: a rootdir line, then one line per item.
pub fn parse_collection(text: &str) -> Result<Collected, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or("the collection record is empty")?;
    let root: RawRoot = serde_json::from_str(first).map_err(|e| e.to_string())?;
    let mut tests = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for l in lines {
        let item: RawItem = serde_json::from_str(l).map_err(|e| e.to_string())?;
        // A test given twice (overlapping paths) is one unit.
        if seen.insert(item.id.clone()) {
            tests.push(Test {
                id: item.id,
                path: item.path,
                file: item.file,
                line: item.line,
            });
        }
    }
    Ok(Collected {
        rootdir: root.rootdir,
        tests,
    })
}

/// The units of a pytest category in `layer`: one per collected test, in collection order.
pub fn units(layer: &str, category: &Category, collected: &Collected, cwd: &Path) -> Vec<Unit> {
    let rootdir = Arc::new(collected.rootdir.clone());
    let (layer_name, category_name, shared_cwd): (Arc<str>, Arc<str>, Arc<Path>) =
        (layer.into(), category.name.as_str().into(), cwd.into());
    collected
        .tests
        .iter()
        .map(|t| Unit {
            id: Unit::make_id(layer, &category.name, &t.id),
            layer: Arc::clone(&layer_name),
            category: Arc::clone(&category_name),
            name: t.id.clone(),
            spec: UnitSpec::Pytest {
                module: t.path.clone(),
                rootdir: Arc::clone(&rootdir),
                file: t.file.clone(),
                line: t.line,
            },
            cwd: Arc::clone(&shared_cwd),
            env: Vec::new(),
            skip: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_record_is_read_with_duplicates_removed() {
        let text = concat!(
            "{\"rootdir\": \"/p\"}\n",
            "{\"id\": \"t/test_a.py::test_x[a b]\", \"path\": \"/p/t/test_a.py\", \"file\": \"t/test_a.py\", \"line\": 3}\n",
            "{\"id\": \"t/test_a.py::test_x[a b]\", \"path\": \"/p/t/test_a.py\", \"file\": \"t/test_a.py\", \"line\": 3}\n",
            "{\"id\": \"t/doc.txt::doc.txt\", \"path\": \"/p/t/doc.txt\", \"file\": \"t/doc.txt\", \"line\": null}\n",
        );
        let c = parse_collection(text).unwrap();
        assert_eq!(c.rootdir, Path::new("/p"));
        assert_eq!(c.tests.len(), 2);
        assert_eq!(c.tests[0].id, "t/test_a.py::test_x[a b]");
        assert_eq!(c.tests[0].line, Some(3));
        assert_eq!(c.tests[1].line, None);
        assert!(parse_collection("").is_err());
    }

    #[test]
    fn collect_args_carry_paths_markers_keywords_and_args() {
        let spec = PytestSpec {
            paths: vec!["tests".into()],
            markers: Some("not slow".into()),
            k: Some("add or sub".into()),
            args: vec!["-p".into(), "no:randomly".into()],
            python: "python3".into(),
        };
        let args = collect_args(&spec);
        assert_eq!(
            shell_line("python3", &args),
            "python3 -m pytest --collect-only -q -p _layered_runner_pytest tests -m 'not slow' -k 'add or sub' -p no:randomly"
        );
    }
}
