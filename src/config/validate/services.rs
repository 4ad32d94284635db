//! Validation of `services:`: start/stop commands, readiness probes, timeouts and
//! `depends_on` references between services.

use super::*;

impl Validator<'_> {
    pub(super) fn services(
        &mut self,
        raw: Entries<Located<RawService>>,
        default_startup_timeout: Option<Duration>,
    ) -> IndexMap<String, Service> {
        let known: Vec<String> = raw.0.iter().map(|(k, _)| k.value.clone()).collect();
        let mut out = IndexMap::new();
        for (name, svc) in &raw.0 {
            let n = &name.value;
            let s = &svc.value;
            if s.start.is_none() && s.ready.is_none() {
                self.err(
                    name.loc,
                    format!("service `{n}` has neither `start` nor `ready`: expected at least one"),
                );
            }
            let ready = s.ready.as_ref().and_then(|r| self.probe(n, r));
            let mut depends_on = Vec::new();
            for dep in s.depends_on.iter().flatten() {
                if dep.value == *n {
                    self.err(dep.loc, format!("service `{n}` depends on itself"));
                } else if self.reference(
                    dep,
                    &known,
                    "service",
                    &format!("in `depends_on` of service `{n}`"),
                ) {
                    depends_on.push(dep.value.clone());
                }
            }
            let service = Service {
                name: n.clone(),
                start: self.non_empty(&s.start, &format!("`start` command of service `{n}`")),
                ready,
                startup_timeout: self
                    .duration(
                        &s.startup_timeout_seconds,
                        &bounds::TIMEOUT_SECONDS,
                        &format!("`startup_timeout_seconds` of service `{n}`"),
                    )
                    .or(default_startup_timeout)
                    .unwrap_or(Duration::from_secs(30)),
                depends_on,
                stop: self.non_empty(&s.stop, &format!("`stop` command of service `{n}`")),
                env: env_map(&s.env),
            };
            out.insert(n.clone(), service);
        }
        out
    }

    fn probe(&mut self, service: &str, r: &Located<RawReady>) -> Option<ReadyProbe> {
        match &r.value {
            RawReady::Tcp(a) => {
                let ok = a
                    .value
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    self.err(
                        a.loc,
                        format!(
                            "invalid `ready.tcp` of service `{service}`: expected `host:port`, found `{}`",
                            a.value
                        ),
                    );
                    return None;
                }
                Some(ReadyProbe::Tcp {
                    address: a.value.clone(),
                })
            }
            RawReady::Http(u) => {
                if let Err(why) = http_url(&u.value) {
                    self.err(
                        u.loc,
                        format!(
                            "invalid `ready.http` of service `{service}`: expected an `http://` or `https://` URL with a host, found `{}` ({why})",
                            u.value
                        ),
                    );
                    return None;
                }
                Some(ReadyProbe::Http {
                    url: u.value.clone(),
                })
            }
            RawReady::Command(c) => {
                let what = format!("`ready.command` of service `{service}`");
                self.non_empty(&Some(c.clone()), &what)
                    .map(|command| ReadyProbe::Command { command })
            }
        }
    }
}

/// Checks a probe URL as the probe will use it: `http` or `https`, a host (an IPv6
/// address in brackets), an optional numeric port, no user info.
fn http_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("the scheme must be http or https".into());
    }
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("user info is not supported".into());
    }
    let host = authority.host();
    if let Some(port) = authority.as_str()[host.len()..].strip_prefix(':') {
        port.parse::<u16>()
            .map_err(|_| format!("port `{port}` is not from 0 to 65535"))?;
    }
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
            .ok_or("an invalid IPv6 address")?;
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    #[test]
    fn probe_urls_are_checked_at_load() {
        for ok in [
            "http://127.0.0.1:8080/health",
            "https://localhost/",
            "http://[::1]:9/x",
        ] {
            assert_eq!(super::http_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://[::1:1/",
            "http://",
            "ftp://x/",
            "http://a@b/",
            "http://h:99999/",
            "localhost:80",
            "http://[zz]/",
        ] {
            assert!(super::http_url(bad).is_err(), "{bad}");
        }
    }
}
