//! Who may talk to the progress server: the bind policy and the request checks.
//!
//! - The server binds to loopback unless told otherwise; a non-loopback address
//!   needs a token, else the run is refused before it starts ([`check_bind`]).
//! - With a token, `/ws`, `/status` and `/metrics` require it, as
//!   `Authorization: Bearer <token>` or `?token=<token>` ([`token_ok`]).
//! - Without a token (loopback only), requests must name a loopback host in their
//!   `Host` header (no DNS rebinding), and a browser's WebSocket must come from a
//!   page of the same origin ([`origin_ok`]): another web site open in the same
//!   browser cannot read the stream.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Resolve `addr` (`host:port`, `[v6]:port` or `:port` for loopback) to socket addresses.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let addr = addr.trim();
    let full = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_string()
    };
    let found: Vec<SocketAddr> = full
        .to_socket_addrs()
        .map_err(|e| format!("progress server address `{addr}` is not a usable host:port ({e})"))?
        .collect();
    if found.is_empty() {
        return Err(format!(
            "progress server address `{addr}` resolves to no address"
        ));
    }
    Ok(found)
}

/// Check that serving on `addrs` is allowed: loopback always, anything else only
/// with a token.
pub fn check_bind(shown: &str, addrs: &[SocketAddr], token: Option<&str>) -> Result<(), String> {
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    if loopback || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(format!(
        "refusing to serve live progress on `{shown}`: it is not a loopback address, and \
         anyone who can reach it could watch the run\n  = help: pass --websocket-token TOKEN \
         (or set RUNNER_WS_TOKEN), or bind to 127.0.0.1"
    ))
}

/// Constant-time equality (the comparison time does not depend on where they differ).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request carries `token`, in an `Authorization: Bearer` header or
/// a `token` query parameter.
pub fn token_ok(token: &str, authorization: Option<&str>, query_token: Option<&str>) -> bool {
    let bearer = authorization.and_then(|h| {
        let (scheme, value) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
    });
    [bearer, query_token]
        .into_iter()
        .flatten()
        .any(|t| same(t.as_bytes(), token.as_bytes()))
}

/// The host part of a `Host` header or an origin's authority (`h:p`, `[v6]:p`, `h`),
/// parsed strictly: `None` for anything else, such as userinfo
/// (`127.0.0.1:PORT@evil.example`), a port that is not a number, or stray characters.
fn host_of(authority: &str) -> Option<&str> {
    let (host, rest) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']')?;
            host.parse::<std::net::Ipv6Addr>().ok()?;
            (host, rest)
        }
        None => {
            let end = authority.find(':').unwrap_or(authority.len());
            let host = &authority[..end];
            let names_a_host = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !names_a_host {
                return None;
            }
            (host, &authority[end..])
        }
    };
    if let Some(port) = rest.strip_prefix(':') {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok()?;
    } else if !rest.is_empty() {
        return None;
    }
    Some(host)
}

/// True when a `Host` header names this machine's loopback interface.
pub fn loopback_host(host: &str) -> bool {
    let Some(h) = host_of(host) else {
        return false;
    };
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when a request's `Origin` (if any) is the server's own: same host and port
/// as the `Host` header. Non-browser clients send no `Origin`.
pub fn origin_ok(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binds_need_no_token_others_do() {
        let lo = resolve("127.0.0.1:0").unwrap();
        assert!(check_bind("127.0.0.1:0", &lo, None).is_ok());
        assert!(check_bind(":0", &resolve(":0").unwrap(), None).is_ok());
        assert!(check_bind("[::1]:0", &resolve("[::1]:0").unwrap(), None).is_ok());
        let any = resolve("0.0.0.0:0").unwrap();
        let err = check_bind("0.0.0.0:0", &any, None).unwrap_err();
        assert!(err.contains("--websocket-token"), "{err}");
        assert!(check_bind("0.0.0.0:0", &any, Some("")).is_err());
        assert!(check_bind("0.0.0.0:0", &any, Some("t0k")).is_ok());
        assert!(resolve("no-port").is_err());
    }

    #[test]
    fn tokens_from_header_or_query() {
        assert!(token_ok("s3", Some("Bearer s3"), None));
        assert!(token_ok("s3", Some("bearer  s3 "), None));
        assert!(token_ok("s3", None, Some("s3")));
        assert!(token_ok("s3", Some("Bearer nope"), Some("s3")));
        assert!(!token_ok("s3", Some("Bearer s4"), None));
        assert!(!token_ok("s3", Some("Basic s3"), None));
        assert!(!token_ok("s3", None, Some("s")));
        assert!(!token_ok("s3", None, None));
    }

    #[test]
    fn hosts_and_origins() {
        assert!(loopback_host("127.0.0.1:8080"));
        assert!(loopback_host("localhost:1"));
        assert!(loopback_host("[::1]:9"));
        assert!(!loopback_host("evil.example:8080"));
        assert!(!loopback_host("10.0.0.1:80"));
        for hostile in [
            "127.0.0.1:8080@evil.example",
            "127.0.0.1@evil.example",
            "localhost:80:81",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "[::1]x",
            "[::1:1",
            "127.0.0.1 evil",
            "",
        ] {
            assert!(!loopback_host(hostile), "{hostile:?}");
        }
        assert!(origin_ok(None, None));
        assert!(origin_ok(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080")
        ));
        assert!(!origin_ok(
            Some("http://evil.example"),
            Some("127.0.0.1:8080")
        ));
        assert!(!origin_ok(
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080")
        ));
    }
}
