//! Environments: discovering `config/environments/*.yaml`, choosing the one `--env`
//! names (short names `dev` and `prod` included; the standard names and every name used
//! in an `environment_overrides` are valid without a file), and applying each layer's
//! and each category's `environment_overrides` for the active environment on the
//! located tree (mappings merge key by key, lists and scalars replace).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Diagnostic};
use super::harness::merge_replacing_lists as merge;
use super::node::{Node, Sources, Value};

/// The environment used when `--env` is not given.
pub const DEFAULT_ENVIRONMENT: &str = "test";

/// Conventional environment names, accepted as `environment_overrides` keys even when
/// the project has no file for them.
const CONVENTIONAL: &[&str] = &["test", "development", "staging", "production"];

/// Short names and the environment they stand for.
const SHORT_NAMES: &[(&str, &str)] = &[("dev", "development"), ("prod", "production")];

/// The directory holding environment overlays, for a project root.
pub fn environments_dir(root: &Path) -> PathBuf {
    root.join("config").join("environments")
}

/// Names of the environments defined in `<root>/config/environments/*.yaml`
/// (file names without the extension), sorted. Empty when the directory is missing.
pub fn environments_in(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(environments_dir(root)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "yaml" {
                return None;
            }
            Some(path.file_stem()?.to_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// The full name for a short one (`dev` -> `development`); other names are returned as is.
pub fn canonical_environment(name: &str) -> &str {
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map_or(name, |(_, full)| full)
}

/// The environment chosen for a load.
#[derive(Debug, Clone)]
pub(crate) struct Selected {
    /// Canonical (full) name.
    pub name: String,
    /// Overlay file to merge, when there is one.
    pub file: Option<PathBuf>,
}

/// Resolves `--env` against the files present, the standard names and `declared` (the
/// names used in the configuration's `environment_overrides`): a file is merged when
/// there is one; a standard or declared name without a file is valid too.
pub(crate) fn select(
    root: &Path,
    requested: Option<&str>,
    available: &[String],
    declared: &[String],
) -> Result<Selected, ConfigError> {
    let dir = environments_dir(root);
    let Some(requested) = requested else {
        let file = available
            .iter()
            .any(|a| a == DEFAULT_ENVIRONMENT)
            .then(|| dir.join(format!("{DEFAULT_ENVIRONMENT}.yaml")));
        return Ok(Selected {
            name: DEFAULT_ENVIRONMENT.to_string(),
            file,
        });
    };
    let found = available.iter().find(|a| *a == requested).or_else(|| {
        available
            .iter()
            .find(|a| canonical_environment(a) == canonical_environment(requested))
    });
    if let Some(stem) = found {
        return Ok(Selected {
            name: canonical_environment(stem).to_string(),
            file: Some(dir.join(format!("{stem}.yaml"))),
        });
    }
    let canonical = canonical_environment(requested);
    if CONVENTIONAL.contains(&canonical)
        || declared
            .iter()
            .any(|d| canonical_environment(d) == canonical)
    {
        return Ok(Selected {
            name: canonical.to_string(),
            file: None,
        });
    }
    let looked_for = dir.join(format!("{requested}.yaml"));
    let mut d = Diagnostic::in_file(&looked_for, format!("unknown environment `{requested}`"))
        .with_note(format!("no file `{}`", looked_for.display()));
    let mut valid: Vec<String> = available.to_vec();
    for name in CONVENTIONAL
        .iter()
        .map(|s| s.to_string())
        .chain(declared.iter().cloned())
    {
        let name = canonical_environment(&name).to_string();
        if !valid.contains(&name) {
            valid.push(name);
        }
    }
    valid.sort();
    let mut candidates: Vec<&str> = valid.iter().map(String::as_str).collect();
    for (short, _) in SHORT_NAMES {
        candidates.push(short);
    }
    if let Some(s) = super::error::suggest(requested, candidates.iter().copied()) {
        d = d.with_help(format!("did you mean `{}`?", canonical_environment(s)));
    }
    d = d.with_help(format!("available environments: {}", valid.join(", ")));
    Err(ConfigError::single(d))
}

/// An `environment_overrides` entry of another environment, merged onto a copy of its
/// layer so that it can be checked too.
pub(crate) struct Variant {
    /// Key path of the layer copy, for messages.
    pub path: String,
    /// The layer with the override applied.
    pub layer: Node,
}

/// Applies, on the tree, every layer's `environment_overrides` entry for `active`,
/// and removes the `environment_overrides` keys. Returns the problems found and the
/// layers as the other environments would see them.
pub(crate) fn apply_overrides(
    tree: &mut Node,
    active: &str,
    available: &[String],
    sources: &Sources,
) -> (Vec<Diagnostic>, Vec<Variant>) {
    let mut diags = Vec::new();
    let mut variants = Vec::new();
    let Value::Map(top) = &mut tree.value else {
        return (diags, variants);
    };
    let known: BTreeSet<&str> = available
        .iter()
        .map(String::as_str)
        .chain(CONVENTIONAL.iter().copied())
        .map(canonical_environment)
        .collect();
    let mut candidates: Vec<&str> = known.iter().copied().collect();
    candidates.extend(SHORT_NAMES.iter().map(|(s, _)| *s));

    if let Some((_, categories)) = top
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("categories"))
        && let Value::Map(categories) = &mut categories.value
    {
        for (name, category) in categories.iter_mut() {
            let name = name.as_str().unwrap_or("?").to_string();
            let Value::Map(entries) = &mut category.value else {
                continue;
            };
            let Some(pos) = entries
                .iter()
                .position(|(k, _)| k.as_str() == Some("environment_overrides"))
            else {
                continue;
            };
            let (_, overrides) = entries.remove(pos);
            let Value::Map(envs) = overrides.value else {
                if !matches!(overrides.value, Value::Null) {
                    diags.push(sources.diag(
                        overrides.loc,
                        format!(
                            "invalid type for `categories.{name}.environment_overrides`: expected a mapping of environment names to category fields, found {}",
                            overrides.kind()
                        ),
                    ));
                }
                continue;
            };
            for (env_key, patch) in envs {
                let env = env_key.as_str().unwrap_or_default().to_string();
                if let Some(d) = misspelt_environment(
                    &env,
                    &known,
                    &candidates,
                    &name,
                    "category",
                    &env_key,
                    sources,
                ) {
                    diags.push(d);
                    continue;
                }
                match &patch.value {
                    Value::Null => {}
                    Value::Map(_) if canonical_environment(&env) == active => merge(category, patch),
                    Value::Map(_) => {}
                    _ => diags.push(sources.diag(
                        patch.loc,
                        format!(
                            "invalid type for `categories.{name}.environment_overrides.{env}`: expected a mapping of category fields, found {}",
                            patch.kind()
                        ),
                    )),
                }
            }
        }
    }

    let Some((_, layers)) = top.iter_mut().find(|(k, _)| k.as_str() == Some("layers")) else {
        return (diags, variants);
    };
    let Value::Seq(layers) = &mut layers.value else {
        return (diags, variants);
    };
    for (index, layer) in layers.iter_mut().enumerate() {
        let layer_name = layer.name().unwrap_or("?").to_string();
        let layer_path = match layer.name() {
            Some(_) => format!("layers[{layer_name}]"),
            None => format!("layers[{index}]"),
        };
        let Value::Map(entries) = &mut layer.value else {
            continue;
        };
        let Some(pos) = entries
            .iter()
            .position(|(k, _)| k.as_str() == Some("environment_overrides"))
        else {
            continue;
        };
        let (_, overrides) = entries.remove(pos);
        let entries = match overrides.value {
            Value::Null => continue,
            Value::Map(entries) => entries,
            _ => {
                diags.push(sources.diag(
                    overrides.loc,
                    format!(
                        "invalid type for `{layer_path}.environment_overrides`: expected a mapping of environment names to layer fields, found {}",
                        overrides.kind()
                    ),
                ));
                continue;
            }
        };
        let original = layer.clone();
        for (env_key, patch) in entries {
            let env = env_key.as_str().unwrap_or_default().to_string();
            let canonical = canonical_environment(&env);
            if let Some(d) = misspelt_environment(
                &env,
                &known,
                &candidates,
                &layer_name,
                "layer",
                &env_key,
                sources,
            ) {
                diags.push(d);
                continue;
            }
            let patch_ok = match &patch.value {
                Value::Null => continue,
                Value::Map(keys) => {
                    let mut ok = true;
                    for (k, _) in keys {
                        if let Some(bad @ ("name" | "environment_overrides")) = k.as_str() {
                            diags.push(sources.diag(
                                k.loc,
                                format!(
                                    "`environment_overrides` of layer `{layer_name}` cannot change `{bad}`"
                                ),
                            ));
                            ok = false;
                        }
                    }
                    ok
                }
                _ => {
                    diags.push(sources.diag(
                        patch.loc,
                        format!(
                            "invalid type for `{layer_path}.environment_overrides.{env}`: expected a mapping of layer fields, found {}",
                            patch.kind()
                        ),
                    ));
                    false
                }
            };
            if !patch_ok {
                continue;
            }
            if canonical == active {
                merge(layer, patch);
            } else {
                let mut copy = original.clone();
                merge(&mut copy, patch);
                variants.push(Variant {
                    path: format!("{layer_path}.environment_overrides.{env}"),
                    layer: copy,
                });
            }
        }
    }
    (diags, variants)
}

/// An `environment_overrides` key that is no known environment but close to one is a
/// typo (with a suggestion); any other unknown key names an environment of its own
/// (valid for `--env`, with no file needed).
fn misspelt_environment(
    env: &str,
    known: &BTreeSet<&str>,
    candidates: &[&str],
    owner: &str,
    what: &str,
    key: &Node,
    sources: &Sources,
) -> Option<Diagnostic> {
    if known.contains(canonical_environment(env)) {
        return None;
    }
    super::error::suggest(env, candidates.iter().copied())?;
    Some(
        sources
            .diag(
                key.loc,
                format!(
                    "unknown environment `{env}` in `environment_overrides` of {what} `{owner}`"
                ),
            )
            .with_suggestion(env, candidates.iter().copied(), "environments", true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(canonical_environment("dev"), "development");
        assert_eq!(canonical_environment("prod"), "production");
        assert_eq!(canonical_environment("staging"), "staging");
    }

    #[test]
    fn select_default_and_short_names() {
        let root = Path::new("/nowhere");
        let none = select(root, None, &[], &[]).unwrap();
        assert_eq!((none.name.as_str(), none.file), ("test", None));
        let avail = vec!["development".to_string(), "test".to_string()];
        let dev = select(root, Some("dev"), &avail, &[]).unwrap();
        assert_eq!(dev.name, "development");
        assert!(
            dev.file
                .unwrap()
                .ends_with("config/environments/development.yaml")
        );
        let err = select(root, Some("devv"), &avail, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown environment `devv`"), "{err}");
        assert!(err.contains("did you mean `development`?"), "{err}");
        assert!(
            err.contains("available environments: development, production, staging, test"),
            "{err}"
        );
        // Standard names and names used in `environment_overrides` need no file.
        let staging = select(root, Some("staging"), &[], &[]).unwrap();
        assert_eq!((staging.name.as_str(), staging.file), ("staging", None));
        let prod = select(root, Some("prod"), &[], &[]).unwrap();
        assert_eq!(prod.name, "production");
        let qa = select(root, Some("qa"), &[], &["qa".to_string()]).unwrap();
        assert_eq!((qa.name.as_str(), qa.file), ("qa", None));
        let err = select(root, Some("qa"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("unknown environment `qa`"), "{err}");
    }
}
