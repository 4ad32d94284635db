//! `runner schema`: the printed JSON Schema is a valid draft 2020-12 schema, every
//! configuration in the repository that loads (`layers.yaml`, the fixture projects, the
//! old harness's files) and every example of README.md and docs/configuration.md
//! validates against it, and every *structural* invalid fixture fails it. The checks use
//! a real validator, Python's `jsonschema` (`Draft202012Validator`); without it the test
//! is skipped (and fails under `CI=true`).
//!
//! Each file of `tests/fixtures/invalid/` is classified in [`INVALID`]: structural (a
//! key, a type or a value name the schema knows is wrong), semantic (references,
//! cycles, ranges: only the loader sees them, so the schema accepts the file) or
//! YAML (not a YAML document at all). A new fixture must be added there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// What the schema can say about an invalid fixture.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// The schema rejects it.
    Structural,
    /// Only the loader rejects it; the schema accepts it.
    Semantic,
    /// Not YAML (the schema never sees it).
    Yaml,
}

use Class::*;

const INVALID: &[(&str, Class)] = &[
    ("bool_for_list.yaml", Structural),
    ("category_cycle.yaml", Semantic),
    ("category_memory_over_global.yaml", Semantic),
    ("category_min_memory_over_max.yaml", Semantic),
    ("category_with_command_and_nextest.yaml", Semantic),
    ("cpu_percent_out_of_range.yaml", Semantic),
    ("duplicate_layer_name.yaml", Semantic),
    ("empty_command.yaml", Semantic),
    ("empty_glob.yaml", Semantic),
    ("empty_layer.yaml", Semantic),
    ("exclude_without_files.yaml", Semantic),
    ("files_absolute_glob.yaml", Semantic),
    ("files_glob_leaves_project.yaml", Semantic),
    ("files_with_nextest.yaml", Semantic),
    ("global_timeout_over_a_year.yaml", Semantic),
    ("harness_category_object_key_typo.yaml", Structural),
    ("harness_execution_config_typo.yaml", Structural),
    ("harness_layer_key_typo.yaml", Structural),
    ("harness_priority_name.yaml", Structural),
    ("huge_layer_max_parallel_instances.yaml", Semantic),
    ("huge_max_parallel_instances.yaml", Semantic),
    ("invalid_tcp_probe.yaml", Semantic),
    ("layer_cycle.yaml", Semantic),
    ("layer_depends_on_itself.yaml", Semantic),
    ("layer_memory_over_global.yaml", Semantic),
    ("min_pass_rate_out_of_range.yaml", Semantic),
    ("missing_layer_name.yaml", Structural),
    ("missing_nextest_filter.yaml", Structural),
    ("negative_kill_grace.yaml", Semantic),
    ("negative_max_duration.yaml", Semantic),
    ("negative_min_memory.yaml", Semantic),
    ("ready_http_bad_authority.yaml", Semantic),
    ("retries_over_limit.yaml", Semantic),
    ("retries_u32_max.yaml", Semantic),
    ("service_cycle.yaml", Semantic),
    ("string_for_number.yaml", Structural),
    ("timeout_1e300.yaml", Semantic),
    ("u64_max_retry_backoff.yaml", Semantic),
    ("u64_overflow_memory.yaml", Semantic),
    ("unknown_background_layer.yaml", Semantic),
    ("unknown_category_in_depends_on.yaml", Semantic),
    ("unknown_category_in_layer.yaml", Semantic),
    ("unknown_execution_mode.yaml", Structural),
    ("unknown_fail_fast.yaml", Structural),
    ("unknown_key.yaml", Structural),
    ("unknown_layer_in_conflicts.yaml", Semantic),
    ("unknown_layer_in_depends_on.yaml", Semantic),
    ("unknown_override_environment.yaml", Semantic),
    ("unknown_required_service.yaml", Semantic),
    ("unknown_service_in_depends_on.yaml", Semantic),
    ("unknown_top_level_key.yaml", Structural),
    ("unsupported_version.yaml", Semantic),
    ("yaml_duplicate_key.yaml", Yaml),
    ("zero_global_timeout.yaml", Semantic),
    ("zero_keep_runs.yaml", Semantic),
    ("zero_max_parallel_instances.yaml", Semantic),
    ("zero_max_parallel_tests.yaml", Semantic),
    ("zero_startup_timeout.yaml", Semantic),
    ("zero_timeout_seconds.yaml", Semantic),
];

/// Small documents for what no fixture covers: (name, YAML, valid by the schema).
const INLINE: &[(&str, &str, bool)] = &[
    (
        "x- keys and merge keys",
        "x-py: &py {timeout_seconds: 60}\ncategories:\n  a: {<<: *py, command: pytest}\n",
        true,
    ),
    (
        "environment_overrides patch without categories",
        "categories: {a: {command: x}}\nlayers:\n  - name: l\n    categories: [a]\n    environment_overrides:\n      staging: {fail_fast: immediate, success_criteria: {max_failures: 0}}\n",
        true,
    ),
    (
        "typo inside environment_overrides",
        "categories: {a: {command: x}}\nlayers:\n  - name: l\n    categories: [a]\n    environment_overrides:\n      staging: {fail_fst: immediate}\n",
        false,
    ),
    (
        "typo inside a category's environment_overrides",
        "categories:\n  a:\n    command: x\n    environment_overrides: {staging: {timeout_second: 5}}\n",
        false,
    ),
    (
        "category object in a layer without name",
        "layers:\n  - name: l\n    categories: [{command: x}]\n",
        false,
    ),
    (
        "mapping-form layer without categories",
        "layers:\n  fast: {name: Fast}\n",
        false,
    ),
    (
        "two probes in one ready",
        "services: {db: {start: x, ready: {tcp: 'h:1', http: 'http://h/'}}}\n",
        false,
    ),
    (
        "fail_fast as a boolean, priority in lower case, env values of every type",
        "categories:\n  a: {command: x, priority: high, env: {A: 1, B: true, C: s}}\nlayers:\n  - {name: l, categories: [a], fail_fast: false}\n",
        true,
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The output of `runner schema`, run where there is no configuration (it needs none).
fn schema() -> Value {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("schema")
        .current_dir(empty.path())
        .output()
        .expect("runs runner schema");
    assert!(out.status.success(), "runner schema: {out:?}");
    serde_json::from_slice(&out.stdout).expect("runner schema prints JSON")
}

/// Every configuration in the repository that is meant to load: `layers.yaml` and the
/// YAML files under `tests/fixtures/` except the invalid ones and environment overlays
/// (partial files merged onto a layers file, not layers files themselves).
fn valid_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                let overlays = path.ends_with("config/environments");
                if !path.ends_with("invalid") && !overlays && !path.ends_with("target") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = vec![root().join("layers.yaml")];
    walk(&root().join("tests/fixtures"), &mut out);
    out.sort();
    out
}

/// The `yaml` examples of README.md and docs/configuration.md that are layers files:
/// not environment overlays (a block introduced by a line naming
/// `config/environments/`) nor other YAML (a CI job's steps, which are not a mapping).
fn doc_examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in ["README.md", "docs/configuration.md"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            if lines[i].trim() != "```yaml" {
                i += 1;
                continue;
            }
            let intro = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            let overlay = intro.is_some_and(|l| l.contains("config/environments/"));
            let end = i
                + 1
                + lines[i + 1..]
                    .iter()
                    .position(|l| l.trim() == "```")
                    .expect("closed block");
            if !overlay {
                let block = lines[i + 1..end].join("\n");
                let doc = serde_saphyr::from_str::<Value>(&block)
                    .unwrap_or_else(|e| panic!("{file}:{}: not YAML: {e}", i + 1));
                if doc.is_object() {
                    out.push((format!("{file}:{}", i + 1), doc));
                }
            }
            i = end + 1;
        }
    }
    assert!(out.len() >= 5, "found the examples: {out:?}");
    out
}

/// The YAML document as JSON (what an editor's YAML language server validates).
fn to_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str::<Value>(&text).map_err(|e| e.to_string())
}

/// Validates each named instance against `schema` with Python's `jsonschema`
/// (`Draft202012Validator`, after checking the schema itself against the meta-schema).
/// Returns, per name, `None` when valid or the first error; `None` overall when the
/// validator is missing (the caller skips).
fn validate(schema: &Value, instances: &[(String, Value)]) -> Option<Vec<Option<String>>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from jsonschema import Draft202012Validator
except ImportError:
    sys.exit(99)
data = json.load(sys.stdin)
Draft202012Validator.check_schema(data["schema"])
v = Draft202012Validator(data["schema"])
out = []
for inst in data["instances"]:
    errs = sorted(v.iter_errors(inst), key=lambda e: list(e.absolute_path))
    out.append(None if not errs else "%s at %s" % (errs[0].message, "/".join(map(str, errs[0].absolute_path))))
json.dump(out, sys.stdout)
"#;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let payload = json!({
        "schema": schema,
        "instances": instances.iter().map(|(_, v)| v).collect::<Vec<_>>(),
    });
    std::fs::write(&input, payload.to_string()).unwrap();
    let out = match Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
    {
        Ok(out) => out,
        Err(_) => return None,
    };
    if out.status.code() == Some(99) {
        return None;
    }
    assert!(
        out.status.success(),
        "the validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("validator output"))
}

#[test]
fn the_schema_is_draft_2020_12_and_strict() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    for def in [
        "Layer",
        "LayerInMapping",
        "Category",
        "Execution",
        "ExecutionConfig",
    ] {
        assert_eq!(
            schema["$defs"][def]["additionalProperties"], false,
            "{def} rejects unknown keys"
        );
    }
    for key in [
        "categories",
        "layers",
        "metadata",
        "execution_config",
        "service_dependencies",
    ] {
        assert!(schema["properties"].get(key).is_some(), "top-level `{key}`");
    }
}

#[test]
fn every_invalid_fixture_is_classified() {
    let dir = root().join("tests/fixtures/invalid");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let listed: Vec<String> = INVALID.iter().map(|(f, _)| f.to_string()).collect();
    let missing: Vec<_> = files.iter().filter(|f| !listed.contains(f)).collect();
    let stale: Vec<_> = listed.iter().filter(|f| !files.contains(f)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "classify every file of tests/fixtures/invalid in INVALID (tests/config_schema.rs): unclassified {missing:?}, gone {stale:?}"
    );
}

#[test]
fn configs_validate_and_structural_mistakes_do_not() {
    let schema = schema();
    let mut instances = Vec::new();
    let mut expect_valid = Vec::new();

    let valid = valid_configs();
    assert!(valid.len() >= 9, "found the fixture configs: {valid:?}");
    for path in &valid {
        // Each one loads: it is a valid configuration, not only valid YAML.
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .arg("--show-layers")
            .arg("--config")
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not load: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        instances.push((name, to_json(path).expect("valid YAML")));
        expect_valid.push(true);
    }
    for (file, class) in INVALID {
        let path = root().join("tests/fixtures/invalid").join(file);
        match (to_json(&path), class) {
            (Err(_), Yaml) => {}
            (Err(e), _) => panic!("{file} is classified {class:?} but is not YAML: {e}"),
            (Ok(_), Yaml) => panic!("{file} is classified Yaml but parses"),
            (Ok(doc), _) => {
                instances.push((format!("invalid/{file}"), doc));
                expect_valid.push(*class == Semantic);
            }
        }
    }
    for (name, doc) in doc_examples() {
        instances.push((name, doc));
        expect_valid.push(true);
    }
    for (name, text, valid) in INLINE {
        let doc = serde_saphyr::from_str::<Value>(text).expect(name);
        instances.push((name.to_string(), doc));
        expect_valid.push(*valid);
    }

    let Some(results) = validate(&schema, &instances) else {
        common::skip_without("Python's jsonschema", "python3 -m pip install jsonschema");
        return;
    };
    let mut wrong = Vec::new();
    for (((name, _), expected), result) in instances.iter().zip(&expect_valid).zip(&results) {
        match (expected, result) {
            (true, Some(err)) => wrong.push(format!("{name}: rejected: {err}")),
            (false, None) => wrong.push(format!("{name}: accepted, expected a schema error")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
