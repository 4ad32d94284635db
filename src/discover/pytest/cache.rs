//! The collection cache: a category's last collection, reused while nothing it could
//! depend on changed.
//!
//! Collecting a real suite costs seconds (imports, conftest, parametrisation), paid
//! again by every batch for its own files. The cache saves the first of the two: the
//! collection is stored in `.runner/pytest/<category>.json` with a fingerprint of
//! - the interpreter, the collection arguments, the working directory and the
//!   category's environment;
//! - every file under pytest's rootdir (path, size, modification time), except hidden
//!   entries (`.git`, `.venv`, `.pytest_cache`, `.runner`...), `__pycache__`,
//!   `node_modules`, `target`, virtual environments (a directory with `pyvenv.cfg`) and
//!   the runner's own `logs/orchestration/`.
//!
//! A later run whose fingerprint is equal uses the stored collection instead of running
//! pytest. What the fingerprint cannot see (a plugin installed into the interpreter,
//! tests generated from outside the rootdir or from the environment) is picked up by
//! setting `RUNNER_PYTEST_COLLECT_CACHE=0`, which always collects.

use std::path::{Path, PathBuf};

use super::{Collected, Test, collect_args};
use crate::config::{Category, PytestSpec};

/// Set to `0` to always collect.
pub const CACHE_ENV: &str = "RUNNER_PYTEST_COLLECT_CACHE";

/// A tree with more files than this is not fingerprinted (always collected).
const MAX_FILES: usize = 200_000;

/// Whether the cache may be used (not disabled by [`CACHE_ENV`]).
pub fn enabled() -> bool {
    std::env::var(CACHE_ENV).map_or(true, |v| v != "0")
}

/// FNV-1a, 64 bits: a stable digest for a local cache key (not a security boundary).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

/// The fingerprint of a category's collection inputs with `rootdir` as pytest found it;
/// None when the tree is too large or unreadable.
pub fn fingerprint(
    category: &Category,
    spec: &PytestSpec,
    cwd: &Path,
    rootdir: &Path,
) -> Option<String> {
    let mut h = Fnv::new();
    h.bytes(spec.python.as_bytes());
    for a in collect_args(spec) {
        h.bytes(a.as_bytes());
    }
    h.bytes(cwd.as_os_str().as_encoded_bytes());
    for (k, v) in &category.env {
        h.bytes(k.as_bytes());
        h.bytes(v.as_bytes());
    }
    h.bytes(rootdir.as_os_str().as_encoded_bytes());
    let mut files: Vec<(PathBuf, u64, i128)> = Vec::new();
    walk(rootdir, &mut files)?;
    files.sort();
    for (path, len, mtime) in &files {
        h.bytes(path.as_os_str().as_encoded_bytes());
        h.bytes(&len.to_le_bytes());
        h.bytes(&mtime.to_le_bytes());
    }
    Some(format!("{:016x}-{}", h.0, files.len()))
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, i128)>) -> Option<()> {
    if dir.join("pyvenv.cfg").is_file() {
        return Some(());
    }
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || matches!(name.as_ref(), "__pycache__" | "node_modules" | "target")
        {
            continue;
        }
        let kind = entry.file_type().ok()?;
        let path = entry.path();
        if kind.is_dir() {
            // The runner's own log directory changes with every run.
            if name == "orchestration" && dir.file_name().is_some_and(|d| d == "logs") {
                continue;
            }
            walk(&path, out)?;
        } else {
            let meta = entry.metadata().ok()?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            out.push((path, meta.len(), mtime));
            if out.len() > MAX_FILES {
                return None;
            }
        }
    }
    Some(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    rootdir: PathBuf,
    tests: Vec<StoredTest>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredTest {
    id: String,
    path: PathBuf,
    file: String,
    line: Option<u32>,
}

/// The stored collection at `file`, if its inputs are unchanged.
pub fn load(file: &Path, category: &Category, spec: &PytestSpec, cwd: &Path) -> Option<Collected> {
    let text = std::fs::read_to_string(file).ok()?;
    let stored: Stored = serde_json::from_str(&text).ok()?;
    let key = fingerprint(category, spec, cwd, &stored.rootdir)?;
    (key == stored.key).then(|| Collected {
        rootdir: stored.rootdir,
        tests: stored
            .tests
            .into_iter()
            .map(|t| Test {
                id: t.id,
                path: t.path,
                file: t.file,
                line: t.line,
            })
            .collect(),
    })
}

/// Stores `collected` at `file` (best effort: a cache that cannot be written is not an error).
pub fn store(
    file: &Path,
    category: &Category,
    spec: &PytestSpec,
    cwd: &Path,
    collected: &Collected,
) {
    let Some(key) = fingerprint(category, spec, cwd, &collected.rootdir) else {
        return;
    };
    let stored = Stored {
        key,
        rootdir: collected.rootdir.clone(),
        tests: collected
            .tests
            .iter()
            .map(|t| StoredTest {
                id: t.id.clone(),
                path: t.path.clone(),
                file: t.file.clone(),
                line: t.line,
            })
            .collect(),
    };
    let write = || -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&tmp, &stored)?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(
            "cannot store the pytest collection in {}: {e}",
            file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnitKind;

    fn category(spec: &PytestSpec) -> Category {
        Category {
            name: "py".into(),
            description: String::new(),
            kind: UnitKind::Pytest(spec.clone()),
            ..Default::default()
        }
    }

    #[test]
    fn a_stored_collection_is_used_until_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tests/__pycache__")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("tests/test_a.py"), "def test_a(): pass\n").unwrap();
        let spec = PytestSpec {
            paths: vec![],
            markers: None,
            k: None,
            args: vec![],
            python: "python3".into(),
        };
        let cat = category(&spec);
        let collected = Collected {
            rootdir: root.to_path_buf(),
            tests: vec![Test {
                id: "tests/test_a.py::test_a".into(),
                path: root.join("tests/test_a.py"),
                file: "tests/test_a.py".into(),
                line: Some(1),
            }],
        };
        let file = root.join(".runner/pytest/py.json");
        store(&file, &cat, &spec, root, &collected);
        assert_eq!(load(&file, &cat, &spec, root), Some(collected.clone()));
        // Caches, hidden directories and the cache file itself do not count.
        std::fs::write(root.join("tests/__pycache__/x.pyc"), "x").unwrap();
        std::fs::write(root.join(".hidden/x"), "x").unwrap();
        assert!(load(&file, &cat, &spec, root).is_some());
        // Another argument, or a changed file: collect again.
        let mut other = spec.clone();
        other.k = Some("a".into());
        assert!(load(&file, &cat, &other, root).is_none());
        std::fs::write(
            root.join("tests/test_a.py"),
            "def test_a(): pass\ndef test_b(): pass\n",
        )
        .unwrap();
        assert!(load(&file, &cat, &spec, root).is_none());
    }
}
