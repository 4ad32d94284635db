//! Units of `command:` categories.
//!
//! Without `files:` a category is one unit named after the category. With `files:`
//! (globs relative to the category's working directory) it is one unit per matching
//! file, in path order, with `{file}` replaced by the shell-quoted relative path.

use std::path::{Path, PathBuf};

use super::{Unit, UnitSpec};
use crate::config::{Category, CommandSpec};

/// The units of a command category in `layer`, run from `cwd`.
pub fn command_units(
    layer: &str,
    category: &Category,
    spec: &CommandSpec,
    cwd: &Path,
) -> Result<Vec<Unit>, String> {
    let unit = |name: &str, command: String| Unit {
        id: Unit::make_id(layer, &category.name, name),
        layer: layer.to_string(),
        category: category.name.clone(),
        name: name.to_string(),
        spec: UnitSpec::Shell(command),
        cwd: cwd.to_path_buf(),
        env: Vec::new(),
        skip: None,
    };
    if spec.files.is_empty() {
        return Ok(vec![unit(&category.name, spec.command.clone())]);
    }
    let files = matching_files(cwd, &spec.files)?;
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

/// Files under `base` matching any of `patterns`, relative to `base`, sorted, without duplicates.
fn matching_files(base: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for pattern in patterns {
        let full = base.join(pattern);
        let full = full.to_string_lossy();
        let paths = glob::glob(&full).map_err(|e| format!("invalid glob `{pattern}`: {e}"))?;
        for path in paths.flatten() {
            if path.is_file() {
                let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
                out.push(rel);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnitKind;

    fn category(files: &[&str]) -> (Category, CommandSpec) {
        let spec = CommandSpec {
            command: "python3 {file}".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
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
}
