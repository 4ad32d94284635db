//! One test, one category: which planned nextest category runs each test.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::discover::{Unit, UnitSpec};

/// A planned nextest category, for [`assign`].
pub struct Placement<'a> {
    /// Its layer.
    pub layer: &'a str,
    /// The layer's foreground stage; `None` for a background layer, which runs
    /// alongside every stage.
    pub stage: Option<usize>,
    /// The category.
    pub category: &'a str,
    /// Its filter, for messages.
    pub filter: &'a str,
    /// Its units; tests another placement keeps are removed.
    pub units: &'a mut Vec<Unit>,
}

/// Gives each test to one placement, in plan order (stages in order, then background
/// layers). Returns warnings about tests left out of later layers, or the error when
/// two categories that run together select the same test.
pub fn assign(placements: &mut [Placement<'_>]) -> Result<Vec<String>, String> {
    // test -> index of the placement that keeps it
    let mut owner: HashMap<(PathBuf, String), usize> = HashMap::new();
    let mut warnings = Vec::new();
    for i in 0..placements.len() {
        let mut left_out: BTreeMap<String, usize> = BTreeMap::new();
        let mut kept = Vec::with_capacity(placements[i].units.len());
        for unit in std::mem::take(placements[i].units) {
            let UnitSpec::Program { path, .. } = &unit.spec else {
                kept.push(unit);
                continue;
            };
            let key = (path.clone(), unit.name.clone());
            let Some(&j) = owner.get(&key) else {
                owner.insert(key, i);
                kept.push(unit);
                continue;
            };
            let (a, b) = (&placements[j], &placements[i]);
            if a.layer == b.layer {
                return Err(format!(
                    "test `{}` is selected by two categories of layer `{}`: `{}` (filter `{}`) and `{}` (filter `{}`)\n  help: a test runs in one category of a layer; make the filters disjoint, e.g. `{}` for `{}`",
                    unit.name,
                    a.layer,
                    a.category,
                    a.filter,
                    b.category,
                    b.filter,
                    format_args!("({}) and not ({})", b.filter, a.filter),
                    b.category
                ));
            }
            let concurrent = match (a.stage, b.stage) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            };
            if concurrent {
                return Err(format!(
                    "test `{}` is selected by category `{}` of layer `{}` and category `{}` of layer `{}`, which run at the same time\n  help: make the filters disjoint, or order the layers (a test runs in the first layer that selects it)",
                    unit.name, a.category, a.layer, b.category, b.layer
                ));
            }
            *left_out.entry(a.layer.to_string()).or_default() += 1;
        }
        *placements[i].units = kept;
        for (layer, n) in left_out {
            warnings.push(format!(
                "category `{}` in layer `{}`: {n} test(s) left out, already run by layer `{layer}`",
                placements[i].category, placements[i].layer
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program_unit(name: &str) -> Unit {
        Unit {
            id: name.into(),
            layer: "".into(),
            category: "".into(),
            name: name.into(),
            spec: UnitSpec::Program {
                path: "/bin/t".into(),
                args: vec![],
            },
            cwd: std::path::Path::new("/").into(),
            env: vec![],
            skip: None,
        }
    }

    #[test]
    fn assign_keeps_a_test_in_the_first_layer() {
        let mut fast = vec![program_unit("a")];
        let mut full = vec![program_unit("a"), program_unit("b")];
        let mut placements = vec![
            Placement {
                layer: "fast",
                stage: Some(0),
                category: "unit",
                filter: "test(a)",
                units: &mut fast,
            },
            Placement {
                layer: "full",
                stage: Some(1),
                category: "all",
                filter: "all()",
                units: &mut full,
            },
        ];
        let warnings = assign(&mut placements).unwrap();
        assert_eq!(fast.len(), 1);
        assert_eq!(
            full.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            warnings,
            ["category `all` in layer `full`: 1 test(s) left out, already run by layer `fast`"]
        );
    }

    #[test]
    fn assign_rejects_overlaps_that_run_together() {
        for (stages, expect) in [
            ((Some(0), Some(0)), "two categories of layer `l`"),
            ((Some(0), Some(0)), "which run at the same time"),
            ((Some(2), None), "which run at the same time"),
        ] {
            let (mut x, mut y) = (vec![program_unit("t")], vec![program_unit("t")]);
            let same_layer = expect.contains("two categories");
            let mut placements = vec![
                Placement {
                    layer: "l",
                    stage: stages.0,
                    category: "a",
                    filter: "kind(lib)",
                    units: &mut x,
                },
                Placement {
                    layer: if same_layer { "l" } else { "m" },
                    stage: stages.1,
                    category: "b",
                    filter: "test(t)",
                    units: &mut y,
                },
            ];
            let err = assign(&mut placements).unwrap_err();
            assert!(err.contains(expect), "{err}");
            assert!(
                err.contains("`a`") && err.contains("`b`") && err.contains("`t`"),
                "{err}"
            );
            if same_layer {
                assert!(err.contains("(test(t)) and not (kind(lib))"), "{err}");
            }
        }
    }
}
