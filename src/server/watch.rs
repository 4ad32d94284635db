//! `runner watch [URL]`: follow a run from another terminal (a CI machine, a
//! background run) and exit with the run's own exit code.
//!
//! The client connects to the run's `/ws`, folds the snapshot and the events into
//! a `RunState` with the same fold as every other report, and draws them with the
//! console's line renderers: live bars per layer on a TTY, plain lines otherwise,
//! the same closing block and counts line. A dropped connection is resumed with
//! `since_seq` (for up to [`RECONNECT_FOR`]), so nothing is lost or repeated.
//! Without a URL it follows the newest run in progress under `./.runner/` that
//! recorded a `progress_url` in its `run.json`.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use is_terminal::IsTerminal;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http};

use super::protocol::{ServerMessage, parse_server_messages};
use crate::event::{Event, EventKind, Outcome, RunState, UnitStatus};
use crate::exit_code;
use crate::report::console::{self, Palette};
use crate::report::files;

/// How long to keep trying to reconnect after the connection is lost.
pub const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// The WebSocket URL for what the user typed: a viewer URL (`http://h:p/`), a
/// stream URL (`ws://h:p/ws`) or a bare `host:port`. The query is kept.
pub fn ws_url(input: &str) -> Result<String, String> {
    let input = input.trim();
    let (scheme, rest) = match input.split_once("://") {
        Some(("http" | "ws", rest)) => ("ws", rest),
        Some(("https" | "wss", rest)) => ("wss", rest),
        Some((other, _)) => return Err(format!("unsupported URL scheme `{other}` in `{input}`")),
        None => ("ws", input),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    if authority.is_empty() {
        return Err(format!("no host in `{input}`"));
    }
    let path = match path.trim_end_matches('/') {
        "" => "/ws".to_string(),
        p if p.ends_with("/ws") => p.to_string(),
        p => format!("{p}/ws"),
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}{path}{query}"))
}

/// The stream URL to connect to: events in batches (one message per server tick),
/// resumed after `since` when given.
fn with_since(url: &str, since: Option<u64>) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    match since {
        Some(n) => format!("{url}{sep}batch=1&since_seq={n}"),
        None => format!("{url}{sep}batch=1"),
    }
}

/// The newest run in progress under `root/.runner/` with a progress server.
pub fn find_local_run(root: &std::path::Path) -> Option<String> {
    files::list_runs(root)
        .into_iter()
        .filter(|(_, info, summary)| summary.is_none() && files::pid_alive(info.pid))
        .find_map(|(_, info, _)| info.progress_url)
}

enum Ended {
    /// `run_finished` (or a final snapshot): the run's exit code.
    Finished(i32),
    /// The connection ended first.
    Lost(String),
}

enum ConnectError {
    /// Refused by the server (bad token, too many clients...): no point retrying.
    Refused(String),
    /// Network trouble: retry.
    Io(String),
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: Option<&str>) -> Result<Stream, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Refused(format!("bad URL `{url}`: {e}")))?;
    if let Some(t) = token {
        let value = http::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| ConnectError::Refused("the token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(stream),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            let status = response.status();
            let msg = format!("{status}: {body}");
            if status == http::StatusCode::SERVICE_UNAVAILABLE {
                Err(ConnectError::Io(msg))
            } else {
                Err(ConnectError::Refused(msg))
            }
        }
        Err(e) => Err(ConnectError::Io(e.to_string())),
    }
}

/// Run `runner watch`; returns the exit code.
pub async fn run(url: Option<String>, token: Option<String>) -> i32 {
    let url = match url {
        Some(u) => u,
        None => {
            let cwd = std::env::current_dir().unwrap_or_default();
            match find_local_run(&cwd) {
                Some(u) => u,
                None => {
                    eprintln!(
                        "error: no run in progress with a progress server under {}\n  = help: pass its URL: runner watch http://127.0.0.1:PORT/",
                        files::state_dir(&cwd).display()
                    );
                    return exit_code::USAGE;
                }
            }
        }
    };
    let ws = match ws_url(&url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
    };
    let token = token.filter(|t| !t.is_empty());
    let tty = std::io::stdout().is_terminal();
    let colour = tty && std::env::var_os("NO_COLOR").is_none();
    let mut view = View::new(Palette::new(colour), tty, ws.clone());
    let mut state: Option<RunState> = None;
    let mut lost_at: Option<(Instant, String)> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let since = state.as_ref().map(|s| s.seq).filter(|s| *s > 0);
        match connect(&with_since(&ws, since), token.as_deref()).await {
            Ok(stream) => {
                if lost_at.take().is_some() {
                    view.note("runner watch: reconnected");
                }
                backoff = Duration::from_millis(200);
                match follow(stream, &mut state, &mut view).await {
                    Ended::Finished(code) => return code,
                    Ended::Lost(why) => {
                        view.note(&format!(
                            "runner watch: connection lost ({why}); reconnecting"
                        ));
                        lost_at = Some((Instant::now(), why));
                    }
                }
            }
            Err(ConnectError::Refused(why)) => {
                view.abandon();
                eprintln!("error: {ws} refused the connection: {why}");
                return exit_code::USAGE;
            }
            Err(ConnectError::Io(why)) => {
                let Some((since, _)) = &lost_at else {
                    if state.is_none() {
                        eprintln!("error: cannot connect to {ws}: {why}");
                        return exit_code::INFRASTRUCTURE;
                    }
                    lost_at = Some((Instant::now(), why));
                    continue;
                };
                if since.elapsed() > RECONNECT_FOR {
                    view.abandon();
                    eprintln!(
                        "error: lost the connection to the run before it finished ({why}); gave up after {}s",
                        RECONNECT_FOR.as_secs()
                    );
                    return exit_code::INFRASTRUCTURE;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn follow(mut stream: Stream, state: &mut Option<RunState>, view: &mut View) -> Ended {
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                return Ended::Lost(
                    frame
                        .map(|f| format!("closed: {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "closed".into()),
                );
            }
            Ok(_) => continue,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        let Ok(messages) = parse_server_messages(&text) else {
            continue;
        };
        for message in messages {
            match message {
                ServerMessage::Snapshot { state: s, reason } => {
                    view.snapshot(&s, &reason);
                    let done = s.exit_code;
                    *state = Some(*s);
                    if let (Some(code), Some(st)) = (done, state.as_ref()) {
                        view.finish(st);
                        return Ended::Finished(code);
                    }
                }
                ServerMessage::Resume { .. } => {}
                ServerMessage::Event(event) => {
                    let st = state.get_or_insert_with(RunState::default);
                    if event.seq <= st.seq {
                        continue;
                    }
                    if event.seq != st.seq + 1 {
                        return Ended::Lost(format!("gap in the stream after seq {}", st.seq));
                    }
                    st.apply(&event);
                    view.event(st, &event);
                    if let EventKind::RunFinished { exit_code, .. } = event.kind {
                        view.finish(st);
                        return Ended::Finished(exit_code);
                    }
                }
                ServerMessage::Unknown { seq } => {
                    if let Some(st) = state.as_mut()
                        && seq == Some(st.seq + 1)
                    {
                        st.seq += 1;
                    }
                }
            }
        }
    }
    Ended::Lost("connection closed".into())
}

/// What `runner watch` draws: plain lines, or lines above live bars on a TTY.
struct View {
    p: Palette,
    url: String,
    header_done: bool,
    rich: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    layers: HashMap<String, ProgressBar>,
    status: ProgressBar,
}

impl View {
    fn new(p: Palette, tty: bool, url: String) -> Self {
        let rich = tty.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
            let status = multi.add(ProgressBar::new_spinner());
            status.set_style(
                ProgressStyle::with_template("{spinner} {wide_msg}").expect("valid template"),
            );
            status.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                layers: HashMap::new(),
                status,
            }
        });
        Self {
            p,
            url,
            header_done: false,
            rich,
        }
    }

    fn println(&self, line: &str) {
        match &self.rich {
            Some(b) => {
                let _ = b.multi.println(line);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        }
    }

    fn note(&self, line: &str) {
        match &self.rich {
            Some(b) => {
                let _ = b.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn snapshot(&mut self, state: &RunState, reason: &str) {
        if !self.header_done {
            self.header_done = true;
            let what = if state.run_id.is_empty() {
                "waiting for the run to start".to_string()
            } else {
                format!(
                    "run {} · mode {} · env {} · {} units",
                    state.run_id, state.mode, state.environment, state.counts.total
                )
            };
            self.println(&format!("runner watch: {} · {what}", self.url));
        } else {
            self.note(&format!("runner watch: resynchronised ({reason})"));
        }
        for (name, l) in &state.layers {
            if !l.started {
                continue;
            }
            let c = l.counts;
            let done = c.passed + c.failed + c.skipped;
            self.println(&format!(
                "── layer {name}: {done}/{} done, {} passed, {} failed, {} running",
                c.total, c.passed, c.failed, c.running
            ));
        }
        for (id, u) in state
            .units
            .iter()
            .filter(|(_, u)| u.outcome.is_some_and(Outcome::is_failure))
        {
            self.println(&format!(
                "{:>9} {id}{}",
                "FAILED",
                u.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
        self.update_bars(state);
    }

    fn event(&mut self, state: &RunState, event: &Event) {
        if !self.header_done {
            self.header_done = true;
            self.println(&format!("runner watch: {}", self.url));
        }
        let mut lines = console::structure_lines(state, event, self.p);
        if let Some(l) = console::unit_line(state, event, self.p) {
            let quiet_pass = self.rich.is_some()
                && matches!(
                    &event.kind,
                    EventKind::TestFinished {
                        outcome: Outcome::Passed,
                        attempt: 1,
                        ..
                    }
                );
            if !quiet_pass {
                lines.push(l);
            }
        }
        if let Some(t) = console::failure_tail(event, 12, self.p) {
            lines.push(t);
        }
        for l in lines {
            self.println(&l);
        }
        self.update_bars(state);
    }

    fn update_bars(&mut self, state: &RunState) {
        let Some(bars) = self.rich.as_mut() else {
            return;
        };
        for (name, l) in &state.layers {
            if !l.started {
                continue;
            }
            let c = l.counts;
            let bar = bars.layers.entry(name.clone()).or_insert_with(|| {
                let bar = bars
                    .multi
                    .insert_before(&bars.status, ProgressBar::new(c.total as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>18.bold} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(name.clone());
                bar
            });
            bar.set_length(c.total as u64);
            bar.set_position((c.passed + c.failed + c.skipped) as u64);
            if l.outcome.is_some() {
                if !bar.is_finished() {
                    bar.finish_with_message(format!("{} passed, {} failed", c.passed, c.failed));
                }
                continue;
            }
            let running: Vec<&str> = state
                .layer_units(name)
                .filter(|(_, u)| u.status == UnitStatus::Running)
                .map(|(_, u)| u.name.as_str())
                .take(3)
                .collect();
            let failed = if c.failed > 0 {
                format!("{} failed ", c.failed)
            } else {
                String::new()
            };
            bar.set_message(format!("{failed}{}", running.join(", ")));
        }
        let mut status = format!(
            "{} passed, {} failed, {} running of {}",
            state.counts.passed, state.counts.failed, state.counts.running, state.counts.total
        );
        if let Some(EventKind::ResourceSample {
            used_memory_mb,
            cpu_percent,
            ..
        }) = &state.resources
        {
            status.push_str(&format!(
                " · cpu {cpu_percent:.0}% · units use {used_memory_mb} MiB"
            ));
        }
        bars.status.set_message(status);
    }

    fn abandon(&mut self) {
        if let Some(bars) = self.rich.take() {
            for bar in bars.layers.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            bars.status.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }

    fn finish(&mut self, state: &RunState) {
        self.abandon();
        let mut out = std::io::stdout().lock();
        for l in console::final_lines(state, self.p) {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_stream_urls() {
        for (input, want) in [
            ("http://127.0.0.1:4000/", "ws://127.0.0.1:4000/ws"),
            ("http://127.0.0.1:4000", "ws://127.0.0.1:4000/ws"),
            ("http://h:1/?token=abc", "ws://h:1/ws?token=abc"),
            ("ws://h:1/ws", "ws://h:1/ws"),
            ("ws://[::1]:1", "ws://[::1]:1/ws"),
            ("127.0.0.1:9", "ws://127.0.0.1:9/ws"),
            ("https://ci.example/runs/7/", "wss://ci.example/runs/7/ws"),
        ] {
            assert_eq!(ws_url(input).unwrap(), want, "{input}");
        }
        assert!(ws_url("ftp://h:1").is_err());
        assert!(ws_url("http:///ws").is_err());
        assert_eq!(
            with_since("ws://h:1/ws", Some(5)),
            "ws://h:1/ws?batch=1&since_seq=5"
        );
        assert_eq!(
            with_since("ws://h:1/ws?token=t", Some(5)),
            "ws://h:1/ws?token=t&batch=1&since_seq=5"
        );
        assert_eq!(with_since("ws://h:1/ws", None), "ws://h:1/ws?batch=1");
    }
}
