//! Services a layer requires (`services:` in layers.yaml): probe, start, wait, stop.
//!
//! Before a layer with `required_services` starts, the dispatcher has [`Services::ensure`] make each
//! service ready, dependencies first (`depends_on`): a service whose `ready` probe
//! already passes is used as is; otherwise its `start` command runs in its own process
//! group (stdout and stderr to `<run dir>/services/<name>.log`) and the probe is
//! retried until it passes or `startup_timeout_seconds` runs out. A service is brought
//! up once per run however many layers need it (one `OnceCell` per service), and
//! everything the run started is stopped by [`Services::stop_all`] at the end of the
//! run, after the last layer, whether the run passed, failed or was interrupted:
//! the `stop` command if there is one, then SIGTERM → grace → SIGKILL to whatever is
//! left of the service's processes (its group, and escapees found by the
//! `RUNNER_UNIT_TOKEN` marker the service is started with). If the controller's
//! future is dropped instead, `Drop` kills them with SIGKILL.
//!
//! A service that does not come up stops the run (`StopCause::ServiceFailed`: exit
//! code 3): the layer is skipped, `service_failed` is emitted and the tail of the
//! service's log is printed on stderr.
//!
//! Probes: `tcp` is a TCP connect; `http` is an HTTP/1.0 GET written by hand over a
//! TCP stream (2xx is ready; for `https://` URLs only the TCP connect is checked, the
//! runner carries no TLS stack); `command` is `sh -c` exiting 0. Every probe attempt
//! is bounded by a few seconds.
//!
//! While the leader of a started service has exited but is not reaped yet, its
//! process group id stays reserved (see `exec/unix.rs`), so signalling the group
//! cannot hit an unrelated one; the leader is reaped only after the group is empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::agents::layer_executor::RunContext;
use crate::agents::names;
use crate::config::{ReadyProbe, Service};
use crate::event::EventKind;
use crate::exec::{self, Signal};

/// Longest single probe attempt.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `command` probe.
const COMMAND_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `stop` command.
const STOP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a service's log shown when it fails.
const TAIL_LINES: usize = 20;

/// Why a service is not available.
#[derive(Debug, Clone)]
pub struct ServiceError {
    /// The service.
    pub service: String,
    /// Why, in words.
    pub reason: String,
    /// Its log, if it was started.
    pub log: Option<PathBuf>,
    /// The last lines of that log.
    pub log_tail: String,
    /// The run was stopping: not the service's fault.
    pub cancelled: bool,
}

/// A service this run started.
struct Started {
    name: String,
    child: tokio::process::Child,
    pgid: u32,
    token: String,
    log: PathBuf,
}

/// The services of one run.
pub struct Services {
    ctx: Arc<RunContext>,
    cells: HashMap<String, OnceCell<Result<(), ServiceError>>>,
    /// Started services, in start order (stopped in reverse).
    started: Mutex<Vec<Started>>,
}

impl Services {
    /// The services of the run of `ctx` (nothing is started yet).
    pub fn new(ctx: Arc<RunContext>) -> Arc<Self> {
        let cells = ctx
            .config
            .services
            .keys()
            .map(|k| (k.clone(), OnceCell::new()))
            .collect();
        Arc::new(Services {
            ctx,
            cells,
            started: Mutex::new(Vec::new()),
        })
    }

    /// Makes every service in `names` ready (dependencies first), each at most once per run.
    pub async fn ensure(&self, names: &[String]) -> Result<(), ServiceError> {
        for name in names {
            self.ensure_one(name).await?;
        }
        Ok(())
    }

    fn ensure_one<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(cell) = self.cells.get(name) else {
                return Err(self.error(name, "no such service", None));
            };
            cell.get_or_init(|| self.bring_up(name)).await.clone()
        })
    }

    /// Dependencies, probe, start, wait. Reports failures (event and stderr) once.
    async fn bring_up(&self, name: &str) -> Result<(), ServiceError> {
        let svc = &self.ctx.config.services[name];
        for dep in &svc.depends_on {
            if let Err(e) = self.ensure_one(dep).await {
                let mut e = e;
                if !e.cancelled {
                    // The dependency reported itself; this one only fails because of it.
                    e = ServiceError {
                        reason: format!("depends on service `{dep}`, which {}", e.reason),
                        ..e
                    };
                }
                return Err(e);
            }
        }
        let result = self.start_and_wait(svc).await;
        if let Err(e) = &result
            && !e.cancelled
        {
            self.ctx.bus.emit(
                names::ORCHESTRATOR,
                EventKind::ServiceFailed {
                    service: name.to_string(),
                    reason: e.reason.clone(),
                },
            );
            report_failure(e);
        }
        result
    }

    async fn start_and_wait(&self, svc: &Service) -> Result<(), ServiceError> {
        let name = svc.name.as_str();
        let root = self.ctx.config.root.clone();
        let env = self.env(svc);
        if let Some(probe) = &svc.ready
            && probe_once(probe, &root, &env).await
        {
            self.emit(EventKind::ServiceReady {
                service: name.to_string(),
                started: false,
            });
            return Ok(());
        }
        let Some(start) = &svc.start else {
            return Err(self.error(
                name,
                &format!(
                    "not ready ({}) and it has no `start` command",
                    describe_probe(svc.ready.as_ref())
                ),
                None,
            ));
        };
        self.emit(EventKind::ServiceStarting {
            service: name.to_string(),
        });
        let log = self
            .ctx
            .run_dir
            .join("services")
            .join(format!("{}.log", safe_name(name)));
        let token = format!("{}:service:{name}", self.ctx.bus.run_id());
        let child = spawn_service(start, &root, &env, &token, &log)
            .map_err(|e| self.error(name, &format!("cannot run `{start}`: {e}"), Some(&log)))?;
        let pgid = child.id().unwrap_or(0);
        // Recorded at once, so that stop_all (or Drop) stops it whatever happens next.
        self.started.lock().expect("services lock").push(Started {
            name: name.to_string(),
            child,
            pgid,
            token,
            log: log.clone(),
        });

        let began = Instant::now();
        let deadline = began + svc.startup_timeout;
        let outcome: Result<(), String> = loop {
            if let Some(code) = leader_exit(pgid) {
                // A start command that exits 0 may have daemonized: keep probing.
                if code != 0 {
                    break Err(format!(
                        "`start` exited with code {code} before it was ready"
                    ));
                }
                if svc.ready.is_none() {
                    break Ok(());
                }
            }
            match &svc.ready {
                None => break Ok(()),
                Some(probe) if probe_once(probe, &root, &env).await => break Ok(()),
                Some(_) => {}
            }
            if Instant::now() >= deadline {
                break Err(format!(
                    "not ready after {} ({})",
                    seconds(svc.startup_timeout),
                    describe_probe(svc.ready.as_ref())
                ));
            }
            // Probes are cheap: every 50 ms while a quick start is likely, then every 250 ms.
            let pause = if began.elapsed() < Duration::from_secs(2) {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(250)
            };
            tokio::select! {
                _ = self.ctx.run_token.cancelled() => {
                    return Err(ServiceError {
                        service: name.to_string(),
                        reason: "the run is stopping".into(),
                        log: Some(log),
                        log_tail: String::new(),
                        cancelled: true,
                    });
                }
                _ = tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))) => {}
            }
        };
        match outcome {
            Ok(()) => {
                self.emit(EventKind::ServiceReady {
                    service: name.to_string(),
                    started: true,
                });
                Ok(())
            }
            Err(reason) => {
                // Stop it now; the error carries the log as it was when it failed.
                let err = self.error(name, &reason, Some(&log));
                let started = {
                    let mut list = self.started.lock().expect("services lock");
                    list.iter()
                        .position(|s| s.name == name)
                        .map(|i| list.remove(i))
                };
                if let Some(s) = started {
                    self.stop_one(s).await;
                }
                Err(err)
            }
        }
    }

    /// Stops every service this run started, last started first.
    pub async fn stop_all(&self) {
        loop {
            let next = self.started.lock().expect("services lock").pop();
            match next {
                Some(s) => self.stop_one(s).await,
                None => break,
            }
        }
    }

    async fn stop_one(&self, mut s: Started) {
        let svc = &self.ctx.config.services[&s.name];
        let kill_now = self.ctx.kill_now.is_cancelled();
        if let Some(stop) = &svc.stop
            && !kill_now
        {
            let mut cmd = shell(stop, &self.ctx.config.root, &self.env(svc));
            if let Ok((out, err)) = log_handles(&s.log, true) {
                cmd.stdout(out).stderr(err);
            }
            match cmd.kill_on_drop(true).spawn() {
                Ok(mut child) => {
                    if tokio::time::timeout(STOP_COMMAND_TIMEOUT, child.wait())
                        .await
                        .is_err()
                    {
                        tracing::warn!(service = %s.name, "`stop` command did not finish in time");
                    }
                }
                Err(e) => tracing::warn!(service = %s.name, "cannot run `stop`: {e}"),
            }
        }
        let grace = if kill_now {
            Duration::ZERO
        } else {
            self.ctx.config.execution.kill_grace
        };
        exec::terminate(s.pgid, &s.token, grace, self.ctx.kill_now.cancelled()).await;
        // The group is empty: the leader may be reaped now.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.child.wait()).await;
        self.emit(EventKind::ServiceStopped {
            service: s.name.clone(),
        });
    }

    fn env(&self, svc: &Service) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = svc
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("RUNNER_RUN_ID".into(), self.ctx.bus.run_id().to_string()));
        env.push(("RUNNER_SERVICE".into(), svc.name.clone()));
        env
    }

    fn emit(&self, kind: EventKind) {
        self.ctx.bus.emit(names::ORCHESTRATOR, kind);
    }

    fn error(&self, service: &str, reason: &str, log: Option<&Path>) -> ServiceError {
        ServiceError {
            service: service.to_string(),
            reason: reason.to_string(),
            log: log.map(Path::to_path_buf),
            log_tail: log.map(log_tail).unwrap_or_default(),
            cancelled: false,
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // Only reached with services still up when the run was abandoned (the
        // controller's future dropped): no time for grace.
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()));
        for s in started {
            exec::kill_unit_tree(s.pgid, &s.token, Signal::SIGKILL);
        }
    }
}

/// Before anything runs: every service the planned layers need (with the services
/// those depend on) that has no `start` command must already be up. Probes them all
/// and returns, for each one down, a line naming it, its probe and the layers that
/// need it (the run then stops with exit code 3 before any unit starts).
pub async fn preflight(
    config: &crate::config::Config,
    layers: &[(&str, &[String])],
) -> Result<(), String> {
    // Service -> layers needing it (directly or through `depends_on`), in plan order.
    let mut needed: Vec<(String, Vec<String>)> = Vec::new();
    for (layer, services) in layers {
        let mut stack: Vec<&str> = services.iter().map(String::as_str).collect();
        let mut seen: Vec<&str> = Vec::new();
        while let Some(name) = stack.pop() {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let Some(svc) = config.services.get(name) else {
                continue;
            };
            stack.extend(svc.depends_on.iter().map(String::as_str));
            match needed.iter_mut().find(|(n, _)| n == name) {
                Some((_, ls)) if !ls.iter().any(|l| l == layer) => ls.push(layer.to_string()),
                Some(_) => {}
                None => needed.push((name.to_string(), vec![layer.to_string()])),
            }
        }
    }
    needed.sort_by_key(|(n, _)| config.services.get_index_of(n.as_str()));
    let mut down = Vec::new();
    for (name, layers) in &needed {
        let svc = &config.services[name.as_str()];
        if svc.start.is_some() {
            continue;
        }
        let Some(probe) = &svc.ready else { continue };
        let env: Vec<(String, String)> = svc.env.clone().into_iter().collect();
        if !probe_once(probe, &config.root, &env).await {
            down.push(format!(
                "service `{name}` is not running at {} and has no `start` command; needed by layer{} {}",
                describe_probe(Some(probe)),
                if layers.len() == 1 { "" } else { "s" },
                layers.join(", ")
            ));
        }
    }
    if down.is_empty() {
        return Ok(());
    }
    Err(format!(
        "runner: {}\n  help: start {} first, or give {} a `start` command (under `services:` or `service_dependencies:`)",
        down.join("\nrunner: "),
        if down.len() == 1 { "it" } else { "them" },
        if down.len() == 1 { "it" } else { "each" },
    ))
}

/// Prints a failed service's reason and log tail on stderr, between dividers.
fn report_failure(e: &ServiceError) {
    let mut msg = format!(
        "runner: service `{}` did not become ready: {}",
        e.service, e.reason
    );
    if let Some(log) = &e.log {
        let tail = e.log_tail.trim_end();
        if tail.is_empty() {
            msg.push_str(&format!("\n(its log {} is empty)", log.display()));
        } else {
            msg.push_str(&format!(
                "\n--- last lines of {} ---\n{tail}\n---",
                log.display()
            ));
        }
    }
    eprintln!("{msg}");
}

/// The last [`TAIL_LINES`] lines (at most 8 KiB) of a log file.
fn log_tail(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(8192);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn describe_probe(probe: Option<&ReadyProbe>) -> String {
    match probe {
        Some(ReadyProbe::Tcp { address }) => format!("tcp {address}"),
        Some(ReadyProbe::Http { url }) => format!("http {url}"),
        Some(ReadyProbe::Command { command }) => format!("command `{command}`"),
        None => "no probe".into(),
    }
}

fn shell(line: &str, cwd: &Path, env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(line)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

/// Two handles on the service's log (stdout and stderr), appending.
fn log_handles(path: &Path, append: bool) -> std::io::Result<(std::fs::File, std::fs::File)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .truncate(false)
        .open(path)?;
    if !append {
        file.set_len(0)?;
    }
    let other = file.try_clone()?;
    Ok((file, other))
}

/// `sh -c start` in a new process group, output to the log, with the service's marker.
fn spawn_service(
    start: &str,
    cwd: &Path,
    env: &[(String, String)],
    token: &str,
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let (out, err) = log_handles(log, false)?;
    let mut cmd = shell(start, cwd, env);
    cmd.env(exec::TOKEN_ENV, token)
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// The exit code of our child `pid` if it has exited (128 + signal when killed),
/// **without reaping it**: the zombie keeps the process group id reserved.
fn leader_exit(pid: u32) -> Option<i32> {
    if pid == 0 {
        return Some(-1);
    }
    crate::exec::exit_code_unreaped(pid).ok().flatten()
}

/// One readiness check.
pub async fn probe_once(probe: &ReadyProbe, cwd: &Path, env: &[(String, String)]) -> bool {
    match probe {
        ReadyProbe::Tcp { address } => tcp_ok(address).await,
        ReadyProbe::Http { url } => http_ok(url).await,
        ReadyProbe::Command { command } => {
            let mut cmd = shell(command, cwd, env);
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let Ok(mut child) = cmd.spawn() else {
                return false;
            };
            matches!(
                tokio::time::timeout(COMMAND_PROBE_TIMEOUT, child.wait()).await,
                Ok(Ok(status)) if status.success()
            )
        }
    }
}

async fn tcp_ok(address: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

/// `http://host[:port][/path]` → (`host:port`, host header, path); None when not http(s).
fn parse_url(url: &str) -> Option<(String, String, String, bool)> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("http://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, true)
    } else {
        return None;
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Some((address, authority.to_string(), path, tls))
}

/// True when a status line is `HTTP/1.x 2xx`.
fn status_is_2xx(head: &str) -> bool {
    let mut parts = head.split_whitespace();
    matches!(
        (parts.next(), parts.next()),
        (Some(v), Some(code)) if v.starts_with("HTTP/") && code.len() == 3 && code.starts_with('2')
    )
}

async fn http_ok(url: &str) -> bool {
    let Some((address, host, path, tls)) = parse_url(url) else {
        return false;
    };
    if tls {
        return tcp_ok(&address).await;
    }
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: layered-runner\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        Some(status_is_2xx(text.lines().next().unwrap_or("")))
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let p = parse_url;
        assert_eq!(
            p("http://127.0.0.1:8080/health"),
            Some((
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/health".into(),
                false
            ))
        );
        assert_eq!(
            p("http://localhost"),
            Some(("localhost:80".into(), "localhost".into(), "/".into(), false))
        );
        assert_eq!(
            p("http://h:1?x=1"),
            Some(("h:1".into(), "h:1".into(), "/?x=1".into(), false))
        );
        assert_eq!(p("https://example.org/a").unwrap().0, "example.org:443");
        assert_eq!(p("http://[::1]:9/").unwrap().0, "[::1]:9");
        assert_eq!(p("http://[::1]/").unwrap().0, "[::1]:80");
        assert!(p("ftp://x").is_none());
        assert!(p("http:///x").is_none());
    }

    #[test]
    fn only_2xx_status_lines_are_ready() {
        assert!(status_is_2xx("HTTP/1.0 200 OK"));
        assert!(status_is_2xx("HTTP/1.1 204 No Content"));
        assert!(!status_is_2xx("HTTP/1.1 503 Service Unavailable"));
        assert!(!status_is_2xx("HTTP/1.1 301 Moved"));
        assert!(!status_is_2xx("SSH-2.0-OpenSSH"));
        assert!(!status_is_2xx(""));
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_of_a_real_server() {
        use tokio::net::TcpListener;
        for (reply, want) in [
            ("HTTP/1.0 200 OK\r\n\r\nok", true),
            ("HTTP/1.0 500 Internal Server Error\r\n\r\n", false),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap();
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                sock.write_all(reply.as_bytes()).await.unwrap();
                request
            });
            assert_eq!(http_ok(&format!("http://{addr}/health")).await, want);
            let request = server.await.unwrap();
            assert!(request.starts_with("GET /health HTTP/1.0\r\n"), "{request}");
            assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
        }
    }

    #[tokio::test]
    async fn tcp_and_command_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dir = std::env::temp_dir();
        assert!(
            probe_once(
                &ReadyProbe::Tcp {
                    address: addr.clone()
                },
                &dir,
                &[]
            )
            .await
        );
        drop(listener);
        assert!(!probe_once(&ReadyProbe::Tcp { address: addr }, &dir, &[]).await);
        let env = vec![("LR_PROBE".to_string(), "yes".to_string())];
        let ok = ReadyProbe::Command {
            command: "test \"$LR_PROBE\" = yes".into(),
        };
        assert!(probe_once(&ok, &dir, &env).await);
        assert!(!probe_once(&ok, &dir, &[]).await);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.log");
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p);
        assert!(tail.starts_with("line 31\n"), "{tail}");
        assert!(tail.ends_with("line 50"), "{tail}");
        assert_eq!(log_tail(&dir.path().join("missing")), "");
    }
}
