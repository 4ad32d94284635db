//! `--list [--json]`: the units a run would execute, with the same selection flags
//! (layers or categories, `-E`, `--partition`, `--rerun-failed`), each with its layer,
//! category, kind, name and the expected duration from history; nothing runs.
//!
//! Rust tests are listed, which builds them (as `cargo nextest list` does). Units are
//! in the order the run would start them (longest first from history). Background
//! layers are listed too, marked; warnings go to stderr, the listing to stdout.

use serde::Serialize;

use crate::cli::{Cli, Mode};
use crate::error::Error;
use crate::exit_code;
use crate::plan::{self, Plan};
use crate::report::out::{self, Listed};
use crate::runner::select;

/// One listed unit.
#[derive(Debug, Serialize)]
struct Row<'a> {
    id: &'a str,
    layer: &'a str,
    category: &'a str,
    kind: &'static str,
    name: &'a str,
    expected_ms: Option<u64>,
    background: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip: Option<&'a str>,
}

/// Runs `--list` for a run's mode (layers or legacy categories).
pub async fn run(cli: &Cli, mode: &Mode) -> Result<i32, Error> {
    let config = crate::runner::load_config(cli)?;
    let filter = select::filter_of(cli)?;
    let opts = crate::runner::plan_options(cli, &config, cli.no_dependencies, filter.clone());
    let planned = {
        let config = config.clone();
        let mode = mode.clone();
        tokio::task::spawn_blocking(move || match &mode {
            Mode::Layers { selection, .. } => plan::plan_layers(&config, selection, &opts),
            Mode::Legacy { categories } => plan::plan_legacy(&config, categories, &opts),
            _ => unreachable!("--list is called for runs only"),
        })
        .await
        .map_err(|e| Error::infrastructure(format!("runner: planning failed: {e}")))??
    };
    let selected = select::select(cli, &config, planned, filter.as_deref());
    for w in &selected.plan.warnings {
        eprintln!("runner: warning: {w}");
    }
    if let Some(why) = &selected.nothing_left {
        eprintln!("runner: {why}");
    }
    let mut plan = selected.plan;
    if selected.nothing_left.is_some() {
        plan::retain_units(&mut plan, |_| false);
    }
    let hints = selected.history.hints(cli.failed_first);
    plan::order_units(&mut plan, &hints);
    let rows = rows(&plan, &config, &hints);
    Ok(out::listing(|| write(&rows, cli.json)))
}

fn rows<'a>(plan: &'a Plan, config: &crate::config::Config, hints: &plan::Hints) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for layer in plan.layers() {
        for pc in &layer.categories {
            let kind = config
                .categories
                .get(&pc.category.name)
                .map(|c| crate::filter::kind_name(&c.kind))
                .unwrap_or("command");
            for u in &pc.units {
                rows.push(Row {
                    id: &u.id,
                    layer: &u.layer,
                    category: &u.category,
                    kind,
                    name: &u.name,
                    expected_ms: hints.expected(&u.id).map(|d| d.as_millis() as u64),
                    background: layer.background,
                    skip: u.skip.as_deref().or(pc.skip_reason.as_deref()),
                });
            }
        }
    }
    rows
}

fn write(rows: &[Row<'_>], json: bool) -> Listed {
    if json {
        let doc = serde_json::json!({ "count": rows.len(), "units": rows });
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        out::write_bytes(text.as_bytes())?;
        return Ok(exit_code::PASSED);
    }
    let width = |f: fn(&Row<'_>) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (wl, wc, wk) = (
        width(|r| r.layer.len(), "LAYER"),
        width(|r| r.category.len(), "CATEGORY"),
        width(|r| r.kind.len(), "KIND"),
    );
    let mut text = String::with_capacity(rows.len() * 64 + 128);
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "{:wl$}  {:wc$}  {:wk$}  {:>9}  NAME",
        "LAYER", "CATEGORY", "KIND", "EXPECTED"
    );
    for r in rows {
        let expected = r
            .expected_ms
            .map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            text,
            "{:wl$}  {:wc$}  {:wk$}  {:>9}  {}",
            r.layer, r.category, r.kind, expected, r.name
        );
        if r.background {
            text.push_str("  [background]");
        }
        if let Some(skip) = r.skip {
            let _ = write!(text, "  [skipped: {skip}]");
        }
        text.push('\n');
    }
    let total_ms: u64 = rows.iter().filter_map(|r| r.expected_ms).sum();
    let known = rows.iter().filter(|r| r.expected_ms.is_some()).count();
    let _ = writeln!(
        text,
        "{} units; expected {:.1}s of work for the {known} with history",
        rows.len(),
        total_ms as f64 / 1000.0
    );
    out::write_bytes(text.as_bytes())?;
    Ok(exit_code::PASSED)
}
