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
                if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    self.err(
                        u.loc,
                        format!(
                            "invalid `ready.http` of service `{service}`: expected an `http://` or `https://` URL, found `{}`",
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
