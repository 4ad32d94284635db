//! Units of `command:` categories.
//!
//! Without `files:` a category is one unit named after the category. With `files:`
//! (globs relative to the category's working directory: the configuration's directory
//! unless the category sets `cwd`) it is one unit per matching file (minus those
//! matching `exclude:`), in path order, each file once, with `{file}` replaced by the
//! shell-quoted relative path. Links to directories are not followed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Unit, UnitSpec};
use crate::config::{Category, CommandSpec};

/// The units of a command category in `layer`, run from `cwd`.
pub fn command_units(
    layer: &str,
    category: &Category,
    spec: &CommandSpec,
    cwd: &Path,
) -> Result<Vec<Unit>, String> {
    // Built once for the category; every unit shares them.
    let (layer_name, category_name, shared_cwd): (Arc<str>, Arc<str>, Arc<Path>) =
        (layer.into(), category.name.as_str().into(), cwd.into());
    let unit = |name: &str, command: String| Unit {
        id: Unit::make_id(layer, &category.name, name),
        layer: Arc::clone(&layer_name),
        category: Arc::clone(&category_name),
        name: name.to_string(),
        spec: UnitSpec::Shell(command),
        cwd: Arc::clone(&shared_cwd),
        env: Vec::new(),
        skip: None,
    };
    if spec.files.is_empty() {
        return Ok(vec![unit(&category.name, spec.command.clone())]);
    }
    let files = matching_files(cwd, &spec.files, &spec.exclude)?;
    Ok(files
        .iter()
        .map(|rel| {
            let name = rel.to_string_lossy();
            let quoted = shlex::try_quote(&name)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| format!("'{}'", name.replace('\'', r"'\''")));
            unit(&name, spec.command.replace("{file}", &quoted))
        })
        .collect())
}

/// How `files:` patterns match: `*` and `?` stay within one path component, `**` spans
/// directories, dot files match like any other.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Files under `base` matching any of `patterns` and none of `exclude`, relative to
/// `base`, sorted, each file once.
///
/// The walk starts at each pattern's literal directory prefix and descends only as
/// deep as the pattern can match. It never follows a symbolic link to a directory (a
/// link such as `tests/loop -> ..` would repeat the tree without end); a link to a file
/// is a file. Two paths to one file (a file and a link to it) make one unit: the file's
/// own path (else the first in order).
pub fn matching_files(
    base: &Path,
    patterns: &[String],
    exclude: &[String],
) -> Result<Vec<PathBuf>, String> {
    let compile = |p: &String| {
        glob::Pattern::new(p.trim_start_matches("./"))
            .map_err(|e| format!("invalid glob `{p}`: {e}"))
    };
    let exclude = exclude.iter().map(compile).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for pattern in patterns {
        if let Some(why) = crate::config::pattern_escapes(pattern) {
            return Err(format!("glob `{pattern}` is {why}"));
        }
        let compiled = compile(pattern)?;
        let (prefix, max_depth) = walk_plan(pattern);
        walk(base, &prefix, max_depth, &mut |rel| {
            if compiled.matches_path_with(rel, MATCH)
                && !exclude.iter().any(|x| x.matches_path_with(rel, MATCH))
            {
                out.push(rel.to_path_buf());
            }
        });
    }
    // One path per file: the file itself before links to it, then the first in order.
    let mut keyed: Vec<(bool, PathBuf)> = out
        .into_iter()
        .map(|rel| (base.join(&rel).is_symlink(), rel))
        .collect();
    keyed.sort();
    keyed.dedup();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<PathBuf> = keyed
        .into_iter()
        .filter(|(_, rel)| match std::fs::metadata(base.join(rel)) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                seen.insert((m.dev(), m.ino()))
            }
            Err(_) => false,
        })
        .map(|(_, rel)| rel)
        .collect();
    out.sort();
    Ok(out)
}

/// Where a pattern's walk starts (its components before the first wildcard) and how
/// many components below `base` it can match (`None` with `**`).
fn walk_plan(pattern: &str) -> (PathBuf, Option<usize>) {
    let parts: Vec<&str> = pattern
        .trim_start_matches("./")
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let wild = |p: &str| p.contains(['*', '?', '['].as_slice());
    let literal = parts.iter().take_while(|p| !wild(p)).count();
    // The last component names files: the walk starts at its directory.
    let literal = literal.min(parts.len().saturating_sub(1));
    let prefix: PathBuf = parts[..literal].iter().collect();
    let depth = (!parts.contains(&"**")).then_some(parts.len());
    (prefix, depth)
}

/// Calls `found` with every file (or link to a file) under `base/dir`, relative to
/// `base`, down to `max_depth` components; never enters a link to a directory.
fn walk(base: &Path, dir: &Path, max_depth: Option<usize>, found: &mut dyn FnMut(&Path)) {
    let depth = dir.components().count();
    let Ok(entries) = std::fs::read_dir(base.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = dir.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if max_depth.is_none_or(|m| depth + 1 < m) {
                walk(base, &rel, max_depth, found);
            }
        } else if kind.is_file() || (kind.is_symlink() && entry.path().is_file()) {
            found(&rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnitKind;

    fn category(files: &[&str]) -> (Category, CommandSpec) {
        let spec = CommandSpec {
            command: "python3 {file}".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            exclude: Vec::new(),
        };
        let cat = Category {
            name: "unit".into(),
            description: String::new(),
            kind: UnitKind::Command(spec.clone()),
            timeout: None,
            slow_after: None,
            max_parallel_instances: None,
            priority_order: 0,
            retries: 0,
            min_memory_mb: None,
            max_memory_mb: None,
            rlimit_as_mb: None,
            critical: false,
            env: Default::default(),
            depends_on: vec![],
            requires_real_services: false,
            cwd: None,
            ..Default::default()
        };
        (cat, spec)
    }

    #[test]
    fn one_unit_per_file_with_quoted_substitution() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests/sub")).unwrap();
        for f in [
            "tests/test_b.py",
            "tests/sub/test_a.py",
            "tests/it's odd.py",
            "tests/readme.md",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let (cat, spec) = category(&["tests/**/test_*.py", "tests/it*.py", "tests/test_b.py"]);
        let units = command_units("fast", &cat, &spec, dir.path()).unwrap();
        let names: Vec<_> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tests/it's odd.py",
                "tests/sub/test_a.py",
                "tests/test_b.py"
            ]
        );
        assert_eq!(units[1].id, "fast/unit/tests/sub/test_a.py");
        assert_eq!(
            units[0].spec,
            UnitSpec::Shell(r#"python3 "tests/it's odd.py""#.into())
        );
    }

    #[test]
    fn no_files_means_one_unit() {
        let (cat, mut spec) = category(&[]);
        spec.command = "true".into();
        let units = command_units("l", &cat, &spec, Path::new("/")).unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].id, "l/unit/unit");
    }

    #[test]
    fn links_to_directories_are_not_followed_and_each_file_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tests/sub")).unwrap();
        std::fs::write(root.join("tests/test_a.py"), "").unwrap();
        std::fs::write(root.join("tests/sub/test_b.py"), "").unwrap();
        std::os::unix::fs::symlink("..", root.join("tests/loop")).unwrap();
        std::os::unix::fs::symlink("test_a.py", root.join("tests/test_link.py")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("tests/test_dangling.py")).unwrap();
        let files = matching_files(root, &["tests/**/test_*.py".into()], &[]).unwrap();
        assert_eq!(
            files,
            [
                PathBuf::from("tests/sub/test_b.py"),
                PathBuf::from("tests/test_a.py")
            ]
        );
        let excluded = matching_files(root, &["**/*.py".into()], &["tests/sub/**".into()]).unwrap();
        assert_eq!(excluded, [PathBuf::from("tests/test_a.py")]);
        let shallow = matching_files(root, &["tests/*.py".into()], &[]).unwrap();
        assert_eq!(shallow, [PathBuf::from("tests/test_a.py")]);
    }

    #[test]
    fn absolute_and_escaping_patterns_are_refused() {
        for p in ["/**/*.x", "../../etc/host*", "tests/../../x", "~/x"] {
            assert!(crate::config::pattern_escapes(p).is_some(), "{p}");
        }
        for p in ["tests/**/*.py", "./t/*.sh", "a/../b/*.sh", "*.sh"] {
            assert_eq!(crate::config::pattern_escapes(p), None, "{p}");
        }
        assert!(matching_files(Path::new("/"), &["/etc/host*".into()], &[]).is_err());
    }
}
