//! The informational commands: `--show-layers` and `--orchestration-status`.
//!
//! `--show-layers` prints what a run would do without running it: layers in run
//! order with their categories, modes, dependencies, services and unit counts.
//! `--orchestration-status` starts nothing: it reports the configuration found, the
//! environments, the system's CPU and memory, and from `.runner/` each run in
//! progress with its own five agents (the `agents.json` its dispatcher rewrites on
//! every supervision tick, see [`crate::report::agents_file`]) and the last finished run with
//! what its fold recorded (`summary.json`).

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::agents::resource_manager;
use crate::agents::unix_ms;
use crate::cli::{Cli, LayerSelection};
use crate::config::{Config, UnitKind};
use crate::exit_code;
use crate::plan::{self, PlanOptions};
use crate::report::agents_file::{AgentHealthFile, read_agent_health};
use crate::report::files;
use crate::report::out::{self, Listed, OutError, outln};
use crate::runner::slots;

/// `--show-layers`.
pub fn show_layers(config: &Config, cli: &Cli) -> i32 {
    out::listing(|| write_layers(config, cli))
}

fn write_layers(config: &Config, cli: &Cli) -> Listed {
    let opts = PlanOptions {
        skip_test_listing: true,
        allow_missing_commands: true,
        ..PlanOptions::default()
    };
    let plan = if config.has_layers && !config.layers.is_empty() {
        plan::plan_layers(config, &LayerSelection::All, &opts)
    } else {
        plan::plan_legacy(config, &[], &opts)
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", e.message);
            return Ok(exit_code::USAGE);
        }
    };
    let slots = slots(cli.jobs, config);
    let known = KnownUnits::read(config);
    if cli.json {
        let layers: Vec<_> = plan
            .layers()
            .map(|pl| {
                let l = &pl.layer;
                json!({
                    "name": l.name,
                    "display_name": l.display_name,
                    "description": l.description,
                    "execution_order": l.execution_order,
                    "priority": l.priority,
                    "execution_mode": l.execution_mode,
                    "fail_fast": l.fail_fast,
                    "background": pl.background,
                    "depends_on": l.depends_on,
                    "conflicts": l.conflicts,
                    "required_services": l.required_services,
                    "max_duration_seconds": l.max_duration.map(|d| d.as_secs_f64()),
                    "conflicting_categories": l.conflicting_categories,
                    "resource_limits": l.resource_limits,
                    "success_criteria": l.success_criteria,
                    "llm_requirements": l.llm,
                    "mappings": l.mappings,
                    "expected_seconds": known.expected(&l.name, pl.categories.iter().map(|c| c.category.name.as_str())).map(|d| d.as_secs_f64()),
                    "categories": pl.categories.iter().map(|c| json!({
                        "name": c.category.name,
                        "settings": c.category,
                        "mappings": c.category.mappings,
                        "units": match &c.category.kind {
                            UnitKind::Nextest(_) | UnitKind::Pytest(_) | UnitKind::Missing => serde_json::Value::Null,
                            UnitKind::Command(_) => c.units.len().into(),
                        },
                        "units_last_run": known.count(&l.name, &c.category.name),
                        "kind": match &c.category.kind { UnitKind::Command(_) => "command", UnitKind::Nextest(_) => "nextest", UnitKind::Pytest(_) => "pytest", UnitKind::Missing => "none" },
                        "files": match &c.category.kind {
                            UnitKind::Command(spec) if !spec.files.is_empty() =>
                                c.units.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().into(),
                            _ => serde_json::Value::Null,
                        },
                        "timeout_seconds": c.category.timeout.map(|d| d.as_secs_f64()),
                        "skip_reason": c.skip_reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = json!({
            "config": config.source,
            "format": if config.harness_format { "harness" } else { "native" },
            "metadata": config.metadata,
            "execution": config.execution,
            "mappings": config.mappings,
            "environment": config.environment,
            "environments": config.environments_available,
            "slots": slots,
            "legacy": plan.legacy,
            "layers": layers,
            "services": config.services.keys().collect::<Vec<_>>(),
            "warnings": plan.warnings,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())?;
        return Ok(exit_code::PASSED);
    }
    outln!(
        "{} (environment {}, {} slots)",
        config.source.display(),
        config.environment,
        slots
    )?;
    if config.harness_format {
        outln!(
            "format of the replaced harness: every old field is shown with what it became (docs/migrating.md)"
        )?;
    }
    if let Some(m) = &config.metadata {
        let parts: Vec<String> = [
            ("version", &m.version),
            ("schema", &m.config_schema_version),
            ("created", &m.created_at),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
        outln!(
            "metadata: {}{}",
            m.description.clone().unwrap_or_default(),
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        )?;
    }
    write_mappings("", &config.mappings)?;
    if plan.legacy {
        outln!("no layers defined: legacy category mode")?;
    }
    for pl in plan.layers() {
        let l = &pl.layer;
        let categories = || pl.categories.iter().map(|c| c.category.name.as_str());
        // Files are matched now; Rust tests are listed at run time: their count is the
        // one history recorded for the category.
        let mut known_units = 0;
        let mut unknown = 0;
        for c in &pl.categories {
            match (&c.category.kind, known.count(&l.name, &c.category.name)) {
                (UnitKind::Command(_), _) => known_units += c.units.len(),
                (UnitKind::Nextest(_) | UnitKind::Pytest(_), Some(n)) => known_units += n,
                (UnitKind::Nextest(_) | UnitKind::Pytest(_), None) => unknown += 1,
                (UnitKind::Missing, _) => {}
            }
        }
        let units = if unknown > 0 {
            format!("{known_units} units + the tests of {unknown} categories (listed at run time)")
        } else {
            format!("{known_units} units")
        };
        outln!()?;
        outln!(
            "layer {}{}{} (order {}, priority {}): {}",
            l.name,
            l.display_name
                .as_ref()
                .map(|d| format!(" \"{d}\""))
                .unwrap_or_default(),
            if pl.background { " [background]" } else { "" },
            l.execution_order,
            l.priority,
            if l.description.is_empty() {
                "-"
            } else {
                &l.description
            }
        )?;
        let mut times = String::new();
        if let Some(d) = known.expected(&l.name, categories()) {
            times.push_str(&format!(", expected {} of work (history)", human(d)));
        }
        if let Some(d) = l.max_duration {
            times.push_str(&format!(", time limit {}", human(d)));
        }
        outln!(
            "  mode {}, fail_fast {}, {units}{times}",
            snake(&l.execution_mode),
            snake(&l.fail_fast),
        )?;
        if !l.depends_on.is_empty() {
            outln!("  depends on: {}", l.depends_on.join(", "))?;
        }
        if !l.conflicts.is_empty() {
            outln!("  conflicts with: {}", l.conflicts.join(", "))?;
        }
        if !l.conflicting_categories.is_empty() {
            outln!(
                "  never alongside categories: {}",
                l.conflicting_categories.join(", ")
            )?;
        }
        if !l.required_services.is_empty() {
            outln!("  services: {}", l.required_services.join(", "))?;
        }
        let sc = &l.success_criteria;
        let mut criteria = Vec::new();
        if let Some(r) = sc.min_pass_rate {
            criteria.push(format!("pass rate >= {r}%"));
        }
        if let Some(f) = sc.max_failures {
            criteria.push(format!("at most {f} failures"));
        }
        if sc.allow_partial_success {
            criteria.push("partial success allowed".into());
        }
        if !criteria.is_empty() {
            outln!("  success: {}", criteria.join(", "))?;
        }
        if let Some(llm) = &l.llm {
            outln!(
                "  llm: {}{}{}",
                llm.mode.as_str(),
                llm.timeout_seconds
                    .map(|t| format!(", timeout {t}s"))
                    .unwrap_or_default(),
                llm.fallback_to_mock
                    .map(|f| format!(", fallback to mock {f}"))
                    .unwrap_or_default()
            )?;
        }
        write_mappings("  ", &l.mappings)?;
        for c in &pl.categories {
            let kind = match &c.category.kind {
                UnitKind::Command(spec) => format!("command `{}`", spec.command),
                UnitKind::Nextest(spec) => format!("nextest `{}`", spec.filter),
                UnitKind::Pytest(spec) => format!("pytest `{}`", spec.paths.join(" ")),
                UnitKind::Missing => "no command yet".to_string(),
            };
            let count = match (&c.category.kind, known.count(&l.name, &c.category.name)) {
                (UnitKind::Nextest(_), Some(n)) => {
                    format!("{n} Rust tests last run; listed again at run time")
                }
                (UnitKind::Nextest(_), None) => {
                    "one unit per Rust test, listed at run time".to_string()
                }
                (UnitKind::Pytest(_), Some(n)) => {
                    format!("{n} Python tests last run; collected again at run time")
                }
                (UnitKind::Pytest(_), None) => {
                    "one unit per Python test, collected at run time".to_string()
                }
                (UnitKind::Missing, _) => "cannot run".to_string(),
                (UnitKind::Command(_), _) => format!("{} units", c.units.len()),
            };
            outln!(
                "  - {} ({count}, {kind}{}){}",
                c.category.name,
                c.category
                    .timeout
                    .map(|t| format!(", time limit {} per unit", human(t)))
                    .unwrap_or_default(),
                c.skip_reason
                    .as_ref()
                    .map(|r| format!(" [skipped: {r}]"))
                    .unwrap_or_default()
            )?;
            write_category_settings(&c.category)?;
        }
    }
    if !config.services.is_empty() {
        outln!()?;
        outln!(
            "services: {}",
            config
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    outln!()?;
    outln!("execution modes: fast_feedback (commit), nightly (weekend), background, hybrid (ci)")?;
    for w in &plan.warnings {
        outln!("warning: {w}")?;
    }
    Ok(exit_code::PASSED)
}

/// What old fields became, one per line.
fn write_mappings(indent: &str, mappings: &[crate::config::Mapping]) -> Result<(), OutError> {
    for m in mappings {
        outln!("{indent}  {} -> {}", m.from, m.to)?;
    }
    Ok(())
}

/// A category's effective settings beyond its command and timeout, then its mappings.
fn write_category_settings(c: &crate::config::Category) -> Result<(), OutError> {
    let mut parts = Vec::new();
    if c.priority_order != 0 {
        parts.push(format!("priority_order {}", c.priority_order));
    }
    if let Some(n) = c.max_parallel_instances {
        parts.push(format!("max {n} at once"));
    }
    if c.retries > 0 {
        parts.push(format!("retries {}", c.retries));
    }
    if let Some(m) = c.min_memory_mb {
        parts.push(format!("estimate {m} MiB"));
    }
    if c.exclusive {
        parts.push("runs alone".into());
    }
    if !c.heavy.is_empty() {
        parts.push(format!("heavy: {}", c.heavy.join(", ")));
    }
    if !c.conflicts.is_empty() {
        parts.push(format!("never with {}", c.conflicts.join(", ")));
    }
    if !c.depends_on.is_empty() {
        parts.push(format!("after {}", c.depends_on.join(", ")));
    }
    if !c.required_services.is_empty() {
        parts.push(format!("services {}", c.required_services.join(", ")));
    }
    let expr = c.filters.expression();
    if !expr.is_empty() {
        parts.push(format!("filter `{expr}`"));
    }
    if !parts.is_empty() {
        outln!("      {}", parts.join("; "))?;
    }
    write_mappings("    ", &c.mappings)
}

/// What history knows of each `layer/category`: how many units it recorded (Rust tests
/// are listed only at run time) and their expected durations. Empty without history.
#[derive(Default)]
struct KnownUnits {
    /// `layer/category` -> (units, sum of the known expected durations).
    by_category: std::collections::HashMap<String, (usize, Option<Duration>)>,
}

impl KnownUnits {
    fn read(config: &Config) -> Self {
        let path = crate::store::path(&config.root);
        let Ok(Some(history)) = crate::store::History::open_existing(&path) else {
            return Self::default();
        };
        let Ok(units) = history.all_units() else {
            return Self::default();
        };
        let mut by_category: std::collections::HashMap<String, (usize, Option<Duration>)> =
            std::collections::HashMap::new();
        for (id, h) in &units {
            let mut parts = id.splitn(3, '/');
            let (Some(layer), Some(category)) = (parts.next(), parts.next()) else {
                continue;
            };
            let entry = by_category
                .entry(format!("{layer}/{category}"))
                .or_default();
            entry.0 += 1;
            if let Some(d) = h.expected() {
                entry.1 = Some(entry.1.unwrap_or_default() + d);
            }
        }
        Self { by_category }
    }

    /// Units history recorded for `layer/category`.
    fn count(&self, layer: &str, category: &str) -> Option<usize> {
        self.by_category
            .get(&format!("{layer}/{category}"))
            .map(|e| e.0)
    }

    /// The expected work of `categories` of `layer`: the sum of their units' expected
    /// durations (history), None when history knows none of them.
    fn expected<'a>(
        &self,
        layer: &str,
        categories: impl Iterator<Item = &'a str>,
    ) -> Option<Duration> {
        categories
            .filter_map(|c| {
                self.by_category
                    .get(&format!("{layer}/{c}"))
                    .and_then(|e| e.1)
            })
            .reduce(|a, b| a + b)
    }
}

/// A value's serde name (`hybrid`, `immediate`).
fn snake(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.0}s")
    }
}

/// `--orchestration-status`: reads what runs wrote, starts nothing.
pub async fn orchestration_status(cli: &Cli, config: Option<Config>) -> i32 {
    let system = system_figures().await;
    let root = config
        .as_ref()
        .map(|c| c.root.clone())
        .or_else(|| cli.config.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| ".".into());
    // Runs whose runner died are closed as `dead` (and what is left of them ended).
    crate::watchdog::dead_runs::sweep(&root).await;
    let runs = files::list_runs(&root);
    let now_ms = unix_ms(SystemTime::now());
    let in_progress: Vec<_> = runs
        .iter()
        .filter(|(_, info, summary)| summary.is_none() && crate::watchdog::dead_runs::runner_alive(info))
        .map(|(dir, info, _)| {
            let health = read_agent_health(dir);
            json!({
                "run_id": info.run_id,
                "pid": info.pid,
                "mode": info.mode,
                "started_at": info.started_at,
                "dir": dir,
                "agents": health.as_ref().map(|h| live_agents(h, now_ms)).unwrap_or_default(),
                "agents_updated_secs": health.as_ref().map(|h| secs_between(h.updated_unix_ms, now_ms)),
                "resources": resource_manager::last_sample(&dir.join("events.jsonl")),
            })
        })
        .collect();
    let last = runs.iter().find_map(|(dir, _, summary)| {
        summary.as_ref().map(|s| {
            json!({
                "run_id": s.run_id,
                "outcome": s.outcome,
                "exit_code": s.exit_code,
                "finished_at": s.finished_at,
                "duration_ms": s.duration_ms,
                "counts": s.counts,
                "summary": s.summary_line(),
                "agents": s.agents,
                "dir": dir,
            })
        })
    });
    let configuration = match &config {
        Some(c) => json!({
            "path": c.source,
            "found": true,
            "environment": c.environment,
            "environments": c.environments_available,
            "layers": c.layers.iter().map(|l| &l.name).collect::<Vec<_>>(),
            "categories": c.categories.len(),
            "services": c.services.keys().collect::<Vec<_>>(),
            "slots": slots(cli.jobs, c),
            "memory_budget_mb": c.execution.max_memory_mb,
            "budgets": resource_manager::budgets_view(c, slots(cli.jobs, c)),
        }),
        None => json!({"path": cli.config, "found": false}),
    };
    let background = crate::background::commands::overview(
        &crate::background::Store::new(&root),
        config
            .as_ref()
            .map(|c| c.agents.background_e2e.max_concurrent),
        3,
    );
    let code = if config.is_some() {
        exit_code::PASSED
    } else {
        exit_code::USAGE
    };
    out::listing(|| {
        if cli.json {
            let out = json!({
                "configuration": configuration,
                "system": system,
                "runs_in_progress": in_progress,
                "last_run": last,
                "background": background,
            });
            outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())?;
            return Ok(code);
        }
        match &config {
            Some(c) => {
                outln!(
                    "configuration: {} (environment {})",
                    c.source.display(),
                    c.environment
                )?;
                outln!(
                    "  layers: {}",
                    c.layers
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                outln!("  environments: {}", c.environments_available.join(", "))?;
                outln!("  slots: {}", slots(cli.jobs, c))?;
                print_budgets(&resource_manager::budgets_view(c, slots(cli.jobs, c)))?;
            }
            None => outln!("configuration: {} (not loaded)", cli.config.display())?,
        }
        match &system {
            serde_json::Value::Object(m) if !m.contains_key("error") => outln!(
                "system: {} cpus, {:.0}% busy, {} of {} MiB available",
                system["cpus"],
                system["cpu_percent"].as_f64().unwrap_or(0.0),
                system["memory_available_mb"],
                system["memory_total_mb"]
            )?,
            _ => outln!("system: unavailable ({})", system["error"])?,
        }
        if in_progress.is_empty() {
            outln!("runs in progress: none")?;
        } else {
            outln!("runs in progress:")?;
            for r in &in_progress {
                outln!(
                    "  {} (pid {}, {})",
                    r["run_id"].as_str().unwrap_or(""),
                    r["pid"],
                    r["mode"].as_str().unwrap_or("")
                )?;
                print_live_agents(r)?;
                if let Some(s) = r["resources"].as_object() {
                    outln!(
                        "    use: {} running, {} MiB admitted, {} MiB used, {} MiB available, cpu {:.0}%",
                        s["running"],
                        s["admitted_memory_mb"],
                        s["used_memory_mb"],
                        s["available_memory_mb"],
                        s["cpu_percent"].as_f64().unwrap_or(0.0)
                    )?;
                }
            }
        }
        match &last {
            Some(l) => {
                outln!(
                    "last run: {} {} ({})",
                    l["run_id"].as_str().unwrap_or(""),
                    l["outcome"].as_str().unwrap_or(""),
                    l["summary"].as_str().unwrap_or("")
                )?;
                print_recorded_agents(&l["agents"])?;
            }
            None => outln!("last run: none")?,
        }
        crate::background::commands::print_overview(&background)?;
        Ok(code)
    })
}

/// The agents of a run in progress, as `--orchestration-status` shows them: the
/// heartbeat's age is computed now from its recorded wall-clock time.
fn live_agents(file: &AgentHealthFile, now_ms: u64) -> Vec<serde_json::Value> {
    file.agents
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "status": a.status,
                "last_heartbeat_secs": secs_between(a.last_heartbeat_unix_ms, now_ms),
                "last_heartbeat_at": rfc3339(a.last_heartbeat_unix_ms),
                "error_count": a.error_count,
                "last_error": a.last_error,
            })
        })
        .collect()
}

fn secs_between(then_ms: u64, now_ms: u64) -> f64 {
    now_ms.saturating_sub(then_ms) as f64 / 1000.0
}

fn rfc3339(unix_ms: u64) -> Option<String> {
    jiff::Timestamp::from_millisecond(i64::try_from(unix_ms).ok()?)
        .ok()
        .map(|t| t.to_string())
}

/// The agent lines of a run in progress (from [`live_agents`]).
fn print_live_agents(run: &serde_json::Value) -> Result<(), OutError> {
    let agents = run["agents"].as_array().cloned().unwrap_or_default();
    if agents.is_empty() {
        return outln!("    agents: not reported yet");
    }
    outln!(
        "    agents (as of {:.1}s ago):",
        run["agents_updated_secs"].as_f64().unwrap_or(0.0)
    )?;
    for a in &agents {
        outln!(
            "      {:<18} {:<11} heartbeat {:.1}s ago, errors {}{}",
            a["name"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["last_heartbeat_secs"].as_f64().unwrap_or(0.0),
            a["error_count"],
            a["last_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// The agents line of the last finished run: what its fold recorded.
fn print_recorded_agents(agents: &serde_json::Value) -> Result<(), OutError> {
    let Some(agents) = agents.as_object().filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let list: Vec<String> = agents
        .iter()
        .map(|(name, a)| {
            let errors = a["error_count"].as_u64().unwrap_or(0);
            format!(
                "{name} {}{}",
                a["status"].as_str().unwrap_or(""),
                if errors > 0 {
                    format!(
                        " ({errors} errors{})",
                        a["last_error"]
                            .as_str()
                            .map(|e| format!(", last: {e}"))
                            .unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            )
        })
        .collect();
    outln!("  agents: {}", list.join(", "))
}

/// The budgets lines of `--orchestration-status` (from [`resource_manager::budgets_view`]).
fn print_budgets(b: &serde_json::Value) -> Result<(), OutError> {
    let mb = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| format!("{n} MiB"));
    let pct = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| format!("{n}%"));
    outln!(
        "  budgets: {} slots on {} cores, memory {}, cpu {}; sampling every {} ms, pause under {}% available",
        b["slots"],
        b["cores"],
        mb(&b["max_memory_mb"]),
        pct(&b["max_cpu_percent"]),
        b["sample_interval_ms"],
        b["memory_pressure_percent"]
    )?;
    for l in b["layers"].as_array().into_iter().flatten() {
        if l["slots"].is_null() && l["max_memory_mb"].is_null() {
            continue;
        }
        outln!(
            "    layer {}: {} slots, memory {}",
            l["name"].as_str().unwrap_or(""),
            l["slots"]
                .as_u64()
                .map_or("-".to_string(), |n| n.to_string()),
            mb(&l["max_memory_mb"])
        )?;
    }
    for c in b["categories"].as_array().into_iter().flatten() {
        if c["min_memory_mb"].is_null()
            && c["max_memory_mb"].is_null()
            && c["rlimit_as_mb"].is_null()
        {
            continue;
        }
        outln!(
            "    category {}: estimate {}, limit {}, rlimit_as {}",
            c["name"].as_str().unwrap_or(""),
            mb(&c["min_memory_mb"]),
            mb(&c["max_memory_mb"]),
            mb(&c["rlimit_as_mb"])
        )?;
    }
    Ok(())
}

/// CPU and memory of the machine, or `{"error": ...}` when sampling is unavailable.
async fn system_figures() -> serde_json::Value {
    let mut sys = match sysinfo::System::new() {
        Ok(sys) => sys,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    sys.refresh_memory();
    sys.refresh_cpu_usage();
    tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
    sys.refresh_cpu_usage();
    json!({
        "cpus": sys.cpus().len(),
        "cpu_percent": sys.global_cpu_usage(),
        "memory_total_mb": sys.total_memory() / 1024 / 1024,
        "memory_available_mb": sys.available_memory() / 1024 / 1024,
    })
}
