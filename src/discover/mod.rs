//! Discovery: turning a category into its units.
//!
//! - [`commands`]: `command:` categories, one unit or one per matching file.
//! - [`nextest`]: `nextest:` categories, one unit per Rust test listed by `cargo nextest list`.
//! - [`pytest`]: `pytest:` categories, one unit per Python test collected by pytest.

pub mod commands;
pub mod nextest;
pub mod pytest;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a unit is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitSpec {
    /// A shell command line, run with `/bin/sh -c`.
    Shell(String),
    /// A binary with its arguments (Rust test binaries).
    Program {
        /// Executable.
        path: PathBuf,
        /// Arguments.
        args: Vec<String>,
    },
    /// One pytest test id (the unit's name), run in a batch with others of its category.
    Pytest {
        /// The file that defines it, absolute.
        module: PathBuf,
        /// pytest's rootdir at collection.
        rootdir: Arc<PathBuf>,
        /// The file relative to the rootdir.
        file: String,
        /// Line of its definition, when known.
        line: Option<u32>,
    },
}

/// One schedulable process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Stable id: `layer/category/name`.
    pub id: String,
    /// Layer name (shared by the layer's units).
    pub layer: Arc<str>,
    /// Category name (shared by the category's units).
    pub category: Arc<str>,
    /// Name within the category.
    pub name: String,
    /// What to start.
    pub spec: UnitSpec,
    /// Working directory (shared by the category's units).
    pub cwd: Arc<Path>,
    /// Extra environment (on top of the category's).
    pub env: Vec<(String, String)>,
    /// Known before the run: the unit is reported skipped with this reason instead of
    /// running (an `#[ignore]`d Rust test without `--run-ignored`).
    pub skip: Option<String>,
}

impl Unit {
    /// The stable id of unit `name` of `category` in `layer`.
    pub fn make_id(layer: &str, category: &str, name: &str) -> String {
        format!("{layer}/{category}/{name}")
    }
}

/// A stress iteration's id or name split into the unit it repeats and its iteration
/// number (`a/b/c [3/10]` -> (`a/b/c`, 3)); `None` for an id that is no iteration.
pub fn stress_iteration(id: &str) -> Option<(&str, usize)> {
    let i = id.rfind(" [")?;
    let (k, n) = id.strip_suffix(']')?.get(i + 2..)?.split_once('/')?;
    n.parse::<usize>().ok()?;
    Some((&id[..i], k.parse().ok()?))
}
