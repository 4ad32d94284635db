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
    if cli.json {
        let layers: Vec<_> = plan
            .layers()
            .map(|pl| {
                let l = &pl.layer;
                json!({
                    "name": l.name,
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
                    "categories": pl.categories.iter().map(|c| json!({
                        "name": c.category.name,
                        "units": match &c.category.kind {
                            UnitKind::Nextest(_) | UnitKind::Pytest(_) => serde_json::Value::Null,
                            UnitKind::Command(_) => c.units.len().into(),
                        },
                        "kind": match &c.category.kind { UnitKind::Command(_) => "command", UnitKind::Nextest(_) => "nextest", UnitKind::Pytest(_) => "pytest" },
                        "timeout_seconds": c.category.timeout.map(|d| d.as_secs_f64()),
                        "skip_reason": c.skip_reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = json!({
            "config": config.source,
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
    if plan.legacy {
        outln!("no layers defined: legacy category mode")?;
    }
    for pl in plan.layers() {
        let l = &pl.layer;
        let units: usize = pl.categories.iter().map(|c| c.units.len()).sum();
        outln!()?;
        outln!(
            "layer {}{} (order {}, priority {}): {}",
            l.name,
            if pl.background { " [background]" } else { "" },
            l.execution_order,
            l.priority,
            if l.description.is_empty() {
                "-"
            } else {
                &l.description
            }
        )?;
        outln!(
            "  mode {}, fail_fast {}, {units} units{}",
            snake(&l.execution_mode),
            snake(&l.fail_fast),
            match l.max_duration {
                Some(d) => format!(", estimated at most {}", human(d)),
                None => String::new(),
            }
        )?;
        if !l.depends_on.is_empty() {
            outln!("  depends on: {}", l.depends_on.join(", "))?;
        }
        if !l.conflicts.is_empty() {
            outln!("  conflicts with: {}", l.conflicts.join(", "))?;
        }
        if !l.required_services.is_empty() {
            outln!("  services: {}", l.required_services.join(", "))?;
        }
        for c in &pl.categories {
            let kind = match &c.category.kind {
                UnitKind::Command(spec) => format!("command `{}`", spec.command),
                UnitKind::Nextest(spec) => format!("nextest `{}`", spec.filter),
                UnitKind::Pytest(spec) => format!("pytest `{}`", spec.paths.join(" ")),
            };
            let count = match &c.category.kind {
                UnitKind::Nextest(_) | UnitKind::Pytest(_) => {
                    "one unit per test, listed at run time".to_string()
                }
                UnitKind::Command(_) => format!("{} units", c.units.len()),
            };
            outln!(
                "  - {} ({count}, {kind}{}){}",
                c.category.name,
                c.category
                    .timeout
                    .map(|t| format!(", timeout {}", human(t)))
                    .unwrap_or_default(),
                c.skip_reason
                    .as_ref()
                    .map(|r| format!(" [skipped: {r}]"))
                    .unwrap_or_default()
            )?;
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
    let runs = files::list_runs(&root);
    let now_ms = unix_ms(SystemTime::now());
    let in_progress: Vec<_> = runs
        .iter()
        .filter(|(_, info, summary)| summary.is_none() && files::pid_alive(info.pid))
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
