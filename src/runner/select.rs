//! Selection: what the selection flags keep of a planned run, in order: `-E/--filter`,
//! `--partition`, `--rerun-failed`; then `--stress-count` repeats what is left. The same for a run and for `--list`, so that a
//! listing shows exactly what the run would execute.
//!
//! The filter comes first, so that shards partition the filtered units; `--rerun-failed`
//! last, as it reads what earlier shards just recorded.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::config::Config;
use crate::error::Error;
use crate::filter::{self, Filter, UnitFacts};
use crate::plan::Plan;
use crate::store::{self, Known};

/// A plan after selection, with the history read for it.
pub struct Selected {
    /// The units left to run.
    pub plan: Plan,
    /// History of the planned units (before selection).
    pub history: Known,
    /// Set when nothing is left to run, with the reason (the run exits 0 at once).
    pub nothing_left: Option<String>,
}

/// Parses `-E/--filter` (a usage error, exit 2, pointing at the column).
pub fn filter_of(cli: &Cli) -> Result<Option<Arc<Filter>>, Error> {
    match &cli.filter {
        None => Ok(None),
        Some(text) => Filter::parse(text)
            .map(|f| Some(Arc::new(f)))
            .map_err(|e| Error::usage(e.to_string())),
    }
}

/// Applies `-E`, `--partition` and `--rerun-failed` to `plan`.
pub fn select(cli: &Cli, config: &Config, mut plan: Plan, filter: Option<&Filter>) -> Selected {
    // History of every planned unit: the filter's `failed()`/`slow()`, then ordering.
    let history = store::load(&config.root, plan.units().map(|u| u.id.as_str()));
    plan.warnings.extend(history.warning.clone());
    if let Some(filter) = filter {
        let of = plan.units().count();
        let kept = apply_filter(&mut plan, &history, filter);
        if kept == 0 && of > 0 {
            return Selected {
                plan,
                history,
                nothing_left: Some(format!(
                    "--filter `{filter}` selects none of the {of} planned units; nothing to run"
                )),
            };
        }
        plan.warnings.push(format!(
            "--filter `{filter}`: running {kept} of {of} planned units"
        ));
    }
    plan = super::apply_partition(cli, plan);
    if cli.rerun_failed {
        match store::rerun_failed(&mut plan, &history) {
            store::Rerun::NothingLeft { of } => {
                return Selected {
                    plan,
                    history,
                    nothing_left: Some(format!(
                        "--rerun-failed: none of the {of} selected units failed or was left unfinished last time; nothing to run"
                    )),
                };
            }
            store::Rerun::Unknown => plan.warnings.push(
                "--rerun-failed: history knows none of the selected units; running them all".into(),
            ),
            store::Rerun::Selected { kept, of } => plan.warnings.push(format!(
                "--rerun-failed: running {kept} of {of} units (failed or unfinished last time)"
            )),
        }
    }
    if let Some(count) = super::stress::iterations(cli) {
        super::stress::expand(&mut plan, count);
        plan.warnings.push(match cli.stress_duration {
            Some(d) => format!(
                "--stress-duration {}s: every unit runs until then, at most {count} times (not recorded in history)",
                d.as_secs_f64()
            ),
            None => format!(
                "--stress-count {count}: every unit runs {count} times (not recorded in history)"
            ),
        });
    }
    Selected {
        plan,
        history,
        nothing_left: None,
    }
}

/// Keeps the units `filter` accepts (layers and categories stay, possibly empty);
/// returns how many are left. Per category, its kind and tags are looked up once.
pub fn apply_filter(plan: &mut Plan, history: &Known, filter: &Filter) -> usize {
    let uses_history = filter.needs_history();
    let mut left = 0;
    for layer in plan
        .stages
        .iter_mut()
        .flatten()
        .chain(plan.background.iter_mut())
    {
        for pc in &mut layer.categories {
            let category = &pc.category;
            let kind = filter::kind_name(&category.kind);
            let tags = filter::category_tags(category);
            pc.units.retain(|u| {
                let (failed, slow) = match history.units.get(&u.id).filter(|_| uses_history) {
                    Some(h) => {
                        let last = h.results.first();
                        let slow = match (category.slow_after, last.and_then(|r| r.duration_ms)) {
                            (Some(limit), Some(ms)) => Duration::from_millis(ms) > limit,
                            _ => false,
                        };
                        (h.left_to_rerun(), slow)
                    }
                    None => (false, false),
                };
                filter.matches(&UnitFacts {
                    layer: &u.layer,
                    category: &u.category,
                    test: filter::test_name(&category.kind, &u.name),
                    kind,
                    tags,
                    failed,
                    slow,
                })
            });
            left += pc.units.len();
        }
    }
    left
}
