//! `--background-status`, `--background-results [N]`, `--kill-background ID`, and the
//! background section of `--orchestration-status`.
//!
//! Every view first checks each queued or running run's worker (a dead one is
//! recorded as `dead`); the progress of a running run is the fold of its
//! `events.jsonl`, as everywhere else.

use std::time::Duration;

use serde_json::{Value, json};

use super::state::{BackgroundRun, Status, Store, age};
use super::sweep;
use crate::cli::Cli;
use crate::exit_code;
use crate::report::out::{self, Listed, OutError, outln};

/// Finished runs shown by `--background-status`.
const RECENT: usize = 5;

/// A run as shown: its state, plus `progress` (the fold's counts) while it runs.
pub fn run_json(run: &BackgroundRun) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or_default();
    if run.status == Status::Running
        && let Some(p) = run.progress()
    {
        v["progress"] = serde_json::to_value(p.counts).unwrap_or_default();
    }
    v
}

/// Queued, running and the most recent finished runs of a project, as JSON.
pub fn overview(store: &Store, max_concurrent: Option<usize>, recent: usize) -> Value {
    let runs = store.list_checked();
    let of = |status: Status| -> Vec<Value> {
        runs.iter()
            .filter(|r| r.status == status)
            .map(run_json)
            .collect()
    };
    let mut finished: Vec<&BackgroundRun> =
        runs.iter().filter(|r| r.status.is_finished()).collect();
    finished.sort_by_key(|r| std::cmp::Reverse(finish_key(r)));
    json!({
        "dir": store.root(),
        "max_concurrent": max_concurrent,
        "running": of(Status::Running),
        "queued": of(Status::Queued),
        "finished": finished.iter().take(recent).map(|r| run_json(r)).collect::<Vec<_>>(),
    })
}

/// The background lines of `--orchestration-status` (from [`overview`]).
pub fn print_overview(view: &Value) -> Result<(), OutError> {
    let list = |key: &str| view[key].as_array().cloned().unwrap_or_default();
    let (running, queued, finished) = (list("running"), list("queued"), list("finished"));
    if running.is_empty() && queued.is_empty() && finished.is_empty() {
        outln!("background runs: none")?;
        return Ok(());
    }
    outln!(
        "background runs: {} running, {} queued",
        running.len(),
        queued.len()
    )?;
    let what = |r: &Value| {
        let names = |k: &str| {
            r[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let cats = names("categories");
        if cats.is_empty() {
            names("layers")
        } else {
            format!("categories {cats}")
        }
    };
    for r in running.iter().chain(&queued).chain(&finished) {
        let counts = r
            .get("progress")
            .or_else(|| r.get("counts"))
            .filter(|c| !c.is_null())
            .map(|c| format!(" ({} passed, {} failed)", c["passed"], c["failed"]))
            .unwrap_or_default();
        outln!(
            "  {} {} {}{counts}",
            r["id"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            what(r)
        )?;
    }
    Ok(())
}

fn finish_key(r: &BackgroundRun) -> (String, String) {
    (
        r.finished_at
            .clone()
            .unwrap_or_else(|| r.created_at.clone()),
        r.id.clone(),
    )
}

fn store_for(cli: &Cli) -> (Store, Option<crate::config::Config>) {
    let root = super::project_root(cli);
    // The views work without a loadable configuration; it only adds the tunables.
    let config = crate::config::load(&crate::config::LoadOptions {
        path: cli.config.clone(),
        environment: cli.environment.clone(),
    })
    .ok();
    let root = config.as_ref().map(|c| c.root.clone()).unwrap_or(root);
    (Store::new(&root), config)
}

/// `--background-status`.
pub fn status(cli: &Cli) -> i32 {
    out::listing(|| write_status(cli))
}

fn write_status(cli: &Cli) -> Listed {
    let (store, config) = store_for(cli);
    let max = config
        .as_ref()
        .map(|c| c.agents.background_e2e.max_concurrent);
    let view = overview(&store, max, RECENT);
    if cli.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        )?;
        return Ok(exit_code::PASSED);
    }
    outln!("background runs in {}", store.root().display())?;
    let runs = store.list();
    let running: Vec<&BackgroundRun> = runs
        .iter()
        .filter(|r| r.status == Status::Running)
        .collect();
    let queued: Vec<&BackgroundRun> = runs.iter().filter(|r| r.status == Status::Queued).collect();
    if running.is_empty() {
        outln!("running: none")?;
    } else {
        outln!("running:")?;
        for r in running {
            outln!("  {}", running_line(r))?;
        }
    }
    if !queued.is_empty() {
        outln!("queued:")?;
        for r in queued {
            outln!(
                "  {}  {}  waiting for a slot{}",
                r.id,
                r.what(),
                max.map(|m| format!(" ({m} at once)")).unwrap_or_default()
            )?;
        }
    }
    let finished: Vec<Value> = view["finished"].as_array().cloned().unwrap_or_default();
    if !finished.is_empty() {
        outln!("recently finished:")?;
        let mut done: Vec<&BackgroundRun> =
            runs.iter().filter(|r| r.status.is_finished()).collect();
        done.sort_by_key(|r| std::cmp::Reverse(finish_key(r)));
        for r in done.into_iter().take(RECENT) {
            outln!("  {}", finished_line(r))?;
        }
    }
    Ok(exit_code::PASSED)
}

/// `--background-results [N]`: the last N finished runs, newest first.
pub fn results(cli: &Cli, n: usize) -> i32 {
    out::listing(|| write_results(cli, n))
}

fn write_results(cli: &Cli, n: usize) -> Listed {
    let (store, _) = store_for(cli);
    let mut done: Vec<BackgroundRun> = store
        .list_checked()
        .into_iter()
        .filter(|r| r.status.is_finished())
        .collect();
    done.sort_by_key(|r| std::cmp::Reverse(finish_key(r)));
    done.truncate(n);
    if cli.json {
        let list: Vec<Value> = done.iter().map(run_json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        )?;
        return Ok(exit_code::PASSED);
    }
    if done.is_empty() {
        outln!("no finished background runs in {}", store.root().display())?;
        return Ok(exit_code::PASSED);
    }
    for r in &done {
        outln!("{}", finished_line(r))?;
        outln!("  events:  {}", r.events.display())?;
        if r.summary.is_file() {
            outln!("  summary: {}", r.summary.display())?;
        }
        if let Some(junit) = r.junit.as_ref().filter(|j| j.is_file()) {
            outln!("  junit:   {}", junit.display())?;
        }
        outln!("  log:     {}", r.log.display())?;
    }
    Ok(exit_code::PASSED)
}

fn running_line(r: &BackgroundRun) -> String {
    let progress = match r.progress() {
        Some(p) => {
            let c = p.counts;
            let done = c.passed + c.failed + c.skipped;
            format!(
                "{done}/{} units done ({} passed, {} failed), {} running",
                c.total, c.passed, c.failed, c.running
            )
        }
        None => "starting".into(),
    };
    let elapsed = r
        .started_at
        .as_deref()
        .and_then(age)
        .map(|d| format!(", for {}", human(d)))
        .unwrap_or_default();
    let watch = r
        .progress_addr
        .as_ref()
        .map(|url| format!("\n    follow: runner watch {url}"))
        .unwrap_or_default();
    format!(
        "{}  {}  pid {}{elapsed}  {progress}{watch}",
        r.id,
        r.what(),
        r.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
    )
}

fn finished_line(r: &BackgroundRun) -> String {
    let counts = r
        .counts
        .map(|c| {
            let mut s = format!("{} passed, {} failed", c.passed, c.failed);
            if c.skipped > 0 {
                s.push_str(&format!(", {} skipped", c.skipped));
            }
            s
        })
        .unwrap_or_else(|| "no results".into());
    let took = r
        .duration_ms
        .map(|ms| format!(" in {}", human(Duration::from_millis(ms))))
        .unwrap_or_default();
    let why = r
        .message
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    format!(
        "{}  {:<9}  {}  {counts}{took}{why}",
        r.id,
        r.status.as_str(),
        r.what()
    )
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.0}h{:02.0}m", (s / 3600.0).floor(), (s % 3600.0) / 60.0)
    } else if s >= 60.0 {
        format!("{:.0}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1}s")
    }
}

/// `--kill-background ID`: SIGTERM to the worker (it stops its units as on Ctrl-C),
/// SIGKILL after a grace period, then whatever is left of the run is killed; the run
/// is recorded as `cancelled`. A run that already finished is left as it is (only
/// leftovers of a dead one are swept).
pub async fn kill(cli: &Cli, wanted: &str) -> i32 {
    let (store, config) = store_for(cli);
    let id = match store.resolve(wanted) {
        Ok(id) => id,
        Err(message) => {
            eprintln!("error: {message}");
            return exit_code::USAGE;
        }
    };
    let run = match store.read(&id) {
        Ok(run) => store.check(run),
        Err(e) => {
            eprintln!("error: cannot read background run `{id}`: {e}");
            return exit_code::INFRASTRUCTURE;
        }
    };
    let kill_grace = config
        .as_ref()
        .map(|c| c.execution.kill_grace)
        .unwrap_or(Duration::from_secs(5));
    let session = run.pid.zip(run.start_time);
    let was = run.status;
    if !was.is_finished() {
        let _ = store.update(&id, |r| r.cancel_requested = true);
    }
    if run.worker_alive()
        && let Some((pid, start)) = session
    {
        sweep::signal(pid, start, nix::sys::signal::Signal::SIGTERM);
        // The worker stops its units (SIGTERM, grace, SIGKILL) and writes its summary.
        let deadline = tokio::time::Instant::now() + kill_grace + Duration::from_secs(10);
        while run.worker_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if run.worker_alive() {
            eprintln!("runner: worker {pid} did not stop in time; killing it");
            sweep::signal(pid, start, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let leftovers = sweep::kill_all(&id, session, kill_grace).await;
    let after = store
        .update(&id, |r| {
            if !r.status.is_finished() {
                r.status = Status::Cancelled;
                r.finished_at = Some(crate::bus::now_rfc3339());
                r.counts = r
                    .final_summary()
                    .map(|s| s.counts)
                    .or_else(|| r.progress().map(|p| p.counts));
                r.message = Some("cancelled by --kill-background".into());
            }
        })
        .unwrap_or(run);
    let swept = if leftovers > 0 {
        format!("; killed {leftovers} leftover processes")
    } else {
        String::new()
    };
    // The run is stopped whether or not anyone reads this line.
    if was.is_finished() {
        out::line(&format!(
            "background run {id} had already finished ({}){swept}",
            after.status.as_str()
        ));
    } else {
        out::line(&format!(
            "background run {id} {}{swept}",
            match after.status {
                Status::Cancelled => "cancelled".to_string(),
                s => format!("finished before it could be cancelled ({})", s.as_str()),
            }
        ));
    }
    exit_code::PASSED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
        assert_eq!(human(Duration::from_secs(7260)), "2h01m");
    }
}
