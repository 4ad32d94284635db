//! The worker: the detached process that carries out one background run.
//!
//! 1. Records its own identity (pid, start time, boot id) in `state.json`.
//! 2. Waits in `queued` until it may run: no older live queued run is waiting (first
//!    come, first served) and one of the `max_concurrent` slot locks is free. The
//!    slot is an `flock` held for the worker's life, so a worker that dies, even by
//!    SIGKILL, frees it. `cancel_requested`, or SIGTERM (default action), while queued:
//!    cancelled.
//! 3. `running`: the layers (or categories) run as an ordinary run
//!    ([`crate::runner::run`], a typed [`RunRequest`]: exactly the requested layers, no
//!    dependencies added, `--background-timeout` as the global deadline) with this
//!    run's id and directory, every layer through the BackgroundE2EAgent at lower
//!    priority. SIGTERM (what `--kill-background` sends) stops the
//!    units as Ctrl-C does.
//! 4. Records the outcome, counts and duration from the run's summary.

use std::sync::Arc;
use std::time::Duration;

use super::state::{Slot, Status, Store};
use crate::cli::{Cli, LayerSelection, Mode};
use crate::event::StopCause;
use crate::exit_code;
use crate::runner::RunRequest;

/// How often a queued worker looks for a slot.
const QUEUE_POLL: Duration = Duration::from_millis(250);

/// Runs background run `id` to the end; returns the exit code of its run.
pub async fn run(cli: Cli, id: String) -> i32 {
    let root = super::project_root(&cli);
    let store = Store::new(&root);
    let me = std::process::id();
    let run = match store.update(&id, |r| r.set_worker(me)) {
        Ok(run) => run,
        Err(e) => {
            eprintln!(
                "runner: background worker: no background run `{id}` in {}: {e}",
                store.root().display()
            );
            return exit_code::INFRASTRUCTURE;
        }
    };
    let config = match crate::runner::load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            let code = e.report();
            finish_without_run(&store, &id, Status::Failed, code, "configuration error");
            return code;
        }
    };
    let max = config.agents.background_e2e.max_concurrent;
    let Some(slot) = wait_for_slot(&store, &id, max).await else {
        finish_without_run(
            &store,
            &id,
            Status::Cancelled,
            exit_code::INTERRUPTED,
            "cancelled while queued",
        );
        return exit_code::INTERRUPTED;
    };
    let started = store.update(&id, |r| {
        if r.status == Status::Queued {
            r.status = Status::Running;
            r.started_at = Some(crate::bus::now_rfc3339());
        }
    });
    if started.as_ref().is_ok_and(|r| r.cancel_requested) {
        finish_without_run(
            &store,
            &id,
            Status::Cancelled,
            exit_code::INTERRUPTED,
            "cancelled before it started",
        );
        return exit_code::INTERRUPTED;
    }
    eprintln!(
        "runner: background run {id} running ({}) as pid {me}",
        run.what()
    );

    let mode = if run.categories.is_empty() {
        Mode::Layers {
            selection: LayerSelection::Names(run.layers.clone()),
            thread_id: None,
            master: false,
        }
    } else {
        Mode::Legacy {
            categories: run.categories.clone(),
        }
    };
    let address = tokio::spawn(record_progress_url(store.clone(), id.clone()));
    // The request names exactly what runs: dependencies outside it are not added.
    let (run_id, run_dir) = super::run_location(&cli, &config.root);
    let request = RunRequest {
        mode,
        run_id,
        run_dir,
        // In a worker every layer runs as background.
        plan_hook: Some(super::launch::prepare_plan),
        no_dependencies: true,
        global_timeout: cli
            .background_timeout
            .and_then(|minutes| Duration::try_from_secs_f64(minutes * 60.0).ok()),
    };
    let code = crate::runner::run(&cli, request, Arc::new(config))
        .await
        .unwrap_or_else(|e| e.report());
    address.abort();

    let summary = run.final_summary();
    // The global deadline is the background timeout (or the configuration's own).
    let timed_out = summary
        .as_ref()
        .is_some_and(|s| s.stop_cause == Some(StopCause::GlobalTimeout));
    let _ = store.update(&id, |r| {
        r.status = if r.cancel_requested || code == exit_code::INTERRUPTED {
            Status::Cancelled
        } else if code == exit_code::PASSED {
            Status::Passed
        } else {
            Status::Failed
        };
        r.exit_code = Some(code);
        r.finished_at = Some(crate::bus::now_rfc3339());
        if let Some(s) = &summary {
            r.counts = Some(s.counts);
            r.duration_ms = s.duration_ms;
        }
        r.message = match code {
            exit_code::PASSED => None,
            _ if r.cancel_requested => Some("cancelled by --kill-background".into()),
            exit_code::INFRASTRUCTURE => {
                Some(format!("infrastructure error (see {})", r.log.display()))
            }
            exit_code::USAGE => Some(format!("usage error (see {})", r.log.display())),
            _ if timed_out => Some(match r.timeout_minutes {
                Some(m) => format!("--background-timeout of {m} min exceeded"),
                None => StopCause::GlobalTimeout.describe(),
            }),
            _ => summary.as_ref().and_then(|s| {
                s.layers
                    .iter()
                    .find_map(|(name, l)| l.reason.as_ref().map(|why| format!("{name}: {why}")))
            }),
        };
    });
    drop(slot);
    code
}

/// Waits until this run may start: `Some(slot)` (`Some(None)` when slots cannot be
/// used at all), None when it is cancelled while waiting.
///
/// No signal handler is installed here on purpose: until the run's controller
/// installs its own, SIGTERM keeps its default action and ends a queued worker at
/// once (it has started nothing yet); `--kill-background` then records the run as
/// cancelled. A handler installed here and dropped later would leave a window in which
/// SIGTERM is swallowed.
async fn wait_for_slot(store: &Store, id: &str, max: usize) -> Option<Option<Slot>> {
    let mut said = false;
    loop {
        let me = store.read(id).ok()?;
        if me.cancel_requested {
            return None;
        }
        let older_waiting = store
            .list_checked()
            .iter()
            .any(|r| r.status == Status::Queued && r.id.as_str() < id);
        if !older_waiting {
            match store.try_slot(max) {
                Ok(Some(slot)) => return Some(Some(slot)),
                Ok(None) => {}
                Err(e) => {
                    // Without slot files the limit cannot be kept; running beats hanging.
                    eprintln!("runner: cannot use the background slots: {e}; running anyway");
                    return Some(None);
                }
            }
        }
        if !said {
            eprintln!("runner: queued; waiting for a background slot ({max} at once)");
            said = true;
        }
        tokio::time::sleep(QUEUE_POLL).await;
    }
}

/// Copies the progress server's URL from the run's `run.json` into `state.json` once
/// the server is up, so `--background-status` shows where `runner watch` can follow.
async fn record_progress_url(store: Store, id: String) {
    let run_json = store.dir(&id).join("run.json");
    loop {
        let url = std::fs::read(&run_json)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::report::files::RunInfo>(&b).ok())
            .and_then(|info| info.progress_url);
        if let Some(url) = url {
            let _ = store.update(&id, |r| r.progress_addr = Some(url));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finish_without_run(store: &Store, id: &str, status: Status, code: i32, why: &str) {
    let _ = store.update(id, |r| {
        r.status = status;
        r.exit_code = Some(code);
        r.finished_at = Some(crate::bus::now_rfc3339());
        r.message = Some(if r.cancel_requested && status == Status::Cancelled {
            "cancelled by --kill-background".into()
        } else {
            format!("{why} (see {})", r.log.display())
        });
    });
}
