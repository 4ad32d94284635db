//! The fields of the harness `runner` replaces, mapped onto the native model, each
//! mapping recorded (`Mapping`) so `--show-layers` can say what an old field became:
//! legacy category fields (`priority` names, `retry_count`, `parallel_safe`, the
//! `*_intensive` flags, `requires_*`, `resource_requirements`...) and
//! `service_dependencies` (`execution_config` is mapped in `execution.rs`).
//! docs/migrating.md lists every field.

use super::categories::CategoryCtx;
use super::*;

/// The ways a category may be heavy (`heavy:`; the old `*_intensive` flags).
const HEAVY_KINDS: &[&str] = &["memory", "cpu", "database", "network"];

/// `requires_<service>` flags and the service names each may mean, first defined wins.
const SERVICE_FLAGS: &[(&str, &[&str])] = &[
    (
        "requires_postgresql",
        &["postgresql", "postgres", "database"],
    ),
    ("requires_redis", &["redis"]),
    ("requires_backend_service", &["backend_service", "backend"]),
    ("requires_auth_service", &["auth_service", "auth"]),
    (
        "requires_frontend_service",
        &["frontend_service", "frontend"],
    ),
    (
        "requires_websocket_server",
        &["websocket_server", "websocket"],
    ),
    ("requires_backend", &["backend_service", "backend"]),
    ("requires_frontend", &["frontend_service", "frontend"]),
    ("requires_database", &["postgresql", "postgres", "database"]),
];

impl Validator<'_> {
    /// Maps the old category fields of `c` onto `cat`.
    pub(super) fn map_harness_category(
        &mut self,
        name: &Located<String>,
        c: &RawCategory,
        cat: &mut Category,
        cx: &CategoryCtx<'_>,
    ) {
        let n = &name.value;
        let ctx = format!("category `{n}`");
        let mut maps: Vec<Mapping> = Vec::new();
        // Native keys first.
        cat.exclusive = c.exclusive.unwrap_or(false);
        for h in c.heavy.iter().flatten() {
            if HEAVY_KINDS.contains(&h.value.as_str()) {
                if !cat.heavy.contains(&h.value) {
                    cat.heavy.push(h.value.clone());
                }
            } else {
                let d = self
                    .sources
                    .diag(
                        h.loc,
                        format!("unknown value `{}` in `heavy` of {ctx}", h.value),
                    )
                    .with_suggestion(&h.value, HEAVY_KINDS.iter().copied(), "values", true);
                self.diags.push(d);
            }
        }
        for s in c.required_services.iter().flatten() {
            if self.reference(
                s,
                &cx.services.to_vec(),
                "service",
                &format!("in `required_services` of {ctx}"),
            ) && !cat.required_services.contains(&s.value)
            {
                cat.required_services.push(s.value.clone());
            }
        }
        if let Some(p) = &c.priority {
            if c.priority_order.is_some() {
                maps.push(Mapping::new(
                    format!("priority: {}", p.value.name()),
                    "not used: `priority_order` is given",
                ));
            } else {
                cat.priority_order = p.value.order();
                maps.push(Mapping::new(
                    format!("priority: {}", p.value.name()),
                    format!(
                        "priority_order: {} (legacy mode and hybrid layers run lower first)",
                        p.value.order()
                    ),
                ));
            }
        }
        if let Some(deps) = &c.dependencies {
            for dep in deps {
                if dep.value == *n {
                    self.err(dep.loc, format!("{ctx} depends on itself"));
                } else if self.reference(
                    dep,
                    &cx.known.to_vec(),
                    "category",
                    &format!("in `dependencies` of {ctx}"),
                ) && !cat.depends_on.contains(&dep.value)
                {
                    cat.depends_on.push(dep.value.clone());
                }
            }
            maps.push(Mapping::new("dependencies", "depends_on"));
        }
        if let Some(r) = &c.retry_count {
            if c.retries.is_some() {
                maps.push(Mapping::new("retry_count", "not used: `retries` is given"));
            } else if let Some(n) = self.count(
                &Some(r.clone()),
                &bounds::RETRIES,
                &format!("`retry_count` of {ctx}"),
            ) {
                cat.retries = n as u32;
                maps.push(Mapping::new("retry_count", format!("retries: {n}")));
            }
        }
        if let Some(m) = self.duration(
            &c.estimated_duration_minutes,
            &bounds::TIMEOUT_MINUTES,
            &format!("`estimated_duration_minutes` of {ctx}"),
        ) {
            cat.estimated_duration = Some(m);
            maps.push(Mapping::new(
                "estimated_duration_minutes",
                "expected duration until history knows the category (ordering, ETAs)",
            ));
        }
        for conflict in c.conflicts.iter().flatten() {
            if conflict.value == *n {
                self.err(conflict.loc, format!("{ctx} conflicts with itself"));
            } else if self.reference(
                conflict,
                &cx.known.to_vec(),
                "category",
                &format!("in `conflicts` of {ctx}"),
            ) && !cat.conflicts.contains(&conflict.value)
            {
                cat.conflicts.push(conflict.value.clone());
            }
        }
        if c.parallel_safe == Some(false) {
            cat.exclusive = true;
            maps.push(Mapping::new(
                "parallel_safe: false",
                "exclusive: its units run with nothing else running",
            ));
        }
        for (flag, set, heavy) in [
            ("memory_intensive", c.memory_intensive, "memory"),
            ("cpu_intensive", c.cpu_intensive, "cpu"),
            ("database_dependent", c.database_dependent, "database"),
            ("network_intensive", c.network_intensive, "network"),
        ] {
            if set == Some(true) {
                if !cat.heavy.iter().any(|h| h == heavy) {
                    cat.heavy.push(heavy.to_string());
                }
                maps.push(Mapping::new(
                    flag,
                    format!(
                        "heavy: {heavy} (never overlaps another category heavy in the same way)"
                    ),
                ));
            }
        }
        if let Some(envs) = &c.requires_environment {
            cat.requires_environment = envs.0.iter().map(|e| e.value.clone()).collect();
            maps.push(Mapping::new(
                "requires_environment",
                "skipped unless `--env` is one of these",
            ));
        }
        if c.requires_staging_environment == Some(true) {
            if !cat.requires_environment.iter().any(|e| e == "staging") {
                cat.requires_environment.push("staging".into());
            }
            maps.push(Mapping::new(
                "requires_staging_environment",
                "requires_environment: staging",
            ));
        }
        if let Some(t) = &c.success_rate_threshold {
            let pct = if t.value <= 1.0 {
                t.value * 100.0
            } else {
                t.value
            };
            if let Some(p) = self.number(
                &Some(Located {
                    value: pct,
                    loc: t.loc,
                }),
                &bounds::PASS_RATE,
                &format!("`success_rate_threshold` of {ctx}"),
            ) {
                cat.success_rate_threshold = Some(p);
                maps.push(Mapping::new(
                    "success_rate_threshold",
                    format!("{p}% (shown; layers judge by their `success_criteria`)"),
                ));
            }
        }
        for (flag, set) in [
            ("requires_frontend", c.requires_frontend),
            ("requires_backend", c.requires_backend),
            ("requires_database", c.requires_database),
        ] {
            if set == Some(true) {
                maps.push(self.service_flag(flag, cat, cx.services));
            }
        }
        if let Some(rr) = &c.resource_requirements {
            for (flag, set) in [
                ("requires_postgresql", rr.requires_postgresql),
                ("requires_redis", rr.requires_redis),
                ("requires_backend_service", rr.requires_backend_service),
                ("requires_auth_service", rr.requires_auth_service),
                ("requires_frontend_service", rr.requires_frontend_service),
                ("requires_websocket_server", rr.requires_websocket_server),
            ] {
                if set == Some(true) {
                    let mut m = self.service_flag(flag, cat, cx.services);
                    m.from = format!("resource_requirements.{}", m.from);
                    maps.push(m);
                }
            }
            if rr.requires_real_llm == Some(true) {
                cat.requires_real_llm = true;
                maps.push(Mapping::new(
                    "resource_requirements.requires_real_llm",
                    "requires_real_llm: runs with --real-llm or in a layer whose llm mode is real",
                ));
            }
            if rr.requires_real_services == Some(true) {
                cat.requires_real_services = true;
                maps.push(Mapping::new(
                    "resource_requirements.requires_real_services",
                    "requires_real_services: true",
                ));
            }
            for (flag, set) in [
                ("requires_node_runtime", rr.requires_node_runtime),
                ("requires_frontend_build", rr.requires_frontend_build),
            ] {
                if set == Some(true) {
                    maps.push(Mapping::new(
                        format!("resource_requirements.{flag}"),
                        "kept as information (not checked: make it part of the command)",
                    ));
                }
            }
            if let Some(mb) = &rr.min_memory_mb {
                if c.min_memory_mb.is_some() {
                    maps.push(Mapping::new(
                        "resource_requirements.min_memory_mb",
                        "not used: `min_memory_mb` is given",
                    ));
                } else if let Some(v) = self.count(
                    &Some(mb.clone()),
                    &bounds::MEMORY_ESTIMATE_MB,
                    &format!("`resource_requirements.min_memory_mb` of {ctx}"),
                ) {
                    cat.min_memory_mb = Some(v);
                    maps.push(Mapping::new(
                        "resource_requirements.min_memory_mb",
                        format!("min_memory_mb: {v} (admission estimate)"),
                    ));
                }
            }
            if rr.dedicated_resources == Some(true) {
                cat.exclusive = true;
                maps.push(Mapping::new(
                    "resource_requirements.dedicated_resources",
                    "exclusive: its units run with nothing else running",
                ));
            }
        }
        for (field, set) in [
            ("category_type", c.category_type.is_some()),
            ("tags", c.tags.is_some()),
            ("parent", c.parent.is_some()),
            ("children", c.children.is_some()),
            ("environment_scope", c.environment_scope.is_some()),
        ] {
            if set {
                maps.push(Mapping::new(field, "kept as information (shown)"));
            }
        }
        cat.mappings.extend(maps);
    }

    /// `requires_<service>`: the service, when one of its names is defined.
    fn service_flag(&mut self, flag: &str, cat: &mut Category, services: &[String]) -> Mapping {
        let names = SERVICE_FLAGS
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(&[][..], |(_, n)| *n);
        match names.iter().find(|n| services.iter().any(|s| s == *n)) {
            Some(service) => {
                if !cat.required_services.iter().any(|s| s == service) {
                    cat.required_services.push(service.to_string());
                }
                Mapping::new(
                    flag,
                    format!("required service `{service}` (added to the layers that run it)"),
                )
            }
            None => Mapping::new(
                flag,
                format!(
                    "no service named {} is defined: not checked",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
        }
    }
}

/// `service_dependencies:` entries as `services:` entries: `health_check_endpoint`
/// `host:port` is a TCP probe, `host:port/path` (or a URL) an HTTP probe.
pub(super) fn services_from_dependencies(
    deps: Entries<Located<RawServiceDependency>>,
    maps: &mut Vec<Mapping>,
) -> Vec<(Located<String>, Located<RawService>)> {
    let mut out = Vec::new();
    for (name, dep) in deps.0 {
        let d = dep.value;
        let ready = match (d.ready, d.health_check_endpoint) {
            (Some(r), _) => Some(r),
            (None, Some(ep)) => {
                let (http, value) = endpoint_probe(&ep.value);
                maps.push(Mapping::new(
                    format!("service_dependencies.{}.health_check_endpoint", name.value),
                    format!(
                        "services.{}.ready.{}: {value}",
                        name.value,
                        if http { "http" } else { "tcp" }
                    ),
                ));
                let located = Located { value, loc: ep.loc };
                Some(Located {
                    value: if http {
                        RawReady::Http(located)
                    } else {
                        RawReady::Tcp(located)
                    },
                    loc: ep.loc,
                })
            }
            (None, None) => None,
        };
        if d.start.is_none() {
            maps.push(Mapping::new(
                format!("service_dependencies.{}", name.value),
                format!(
                    "services.{} (no `start`: must already be up; a run that needs it exits 3 when it is not)",
                    name.value
                ),
            ));
        }
        out.push((
            name,
            Located {
                value: RawService {
                    start: d.start,
                    ready,
                    startup_timeout_seconds: d.startup_timeout_seconds,
                    depends_on: d.depends_on,
                    stop: d.stop,
                    env: d.env,
                },
                loc: dep.loc,
            },
        ));
    }
    out
}

/// The probe for a `health_check_endpoint`: (is HTTP, the address or URL).
pub(crate) fn endpoint_probe(endpoint: &str) -> (bool, String) {
    let e = endpoint.trim();
    if e.starts_with("http://") || e.starts_with("https://") {
        return (true, e.to_string());
    }
    match e.split_once('/') {
        Some((hostport, path)) => (true, format!("http://{hostport}/{path}")),
        None => (false, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_tcp_or_http_probes() {
        assert_eq!(
            endpoint_probe("localhost:5432"),
            (false, "localhost:5432".into())
        );
        assert_eq!(
            endpoint_probe("localhost:8000/health"),
            (true, "http://localhost:8000/health".into())
        );
        assert_eq!(
            endpoint_probe("http://h:1/x"),
            (true, "http://h:1/x".into())
        );
    }

    #[test]
    fn filter_expressions() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filter_expression(&s(&["a", "b"]), &s(&["c", "d"])),
            "(a or b) and not (c or d)"
        );
        assert_eq!(filter_expression(&s(&["a"]), &[]), "(a)");
        assert_eq!(filter_expression(&[], &s(&["c"])), "not (c)");
        assert_eq!(filter_expression(&[], &[]), "");
    }
}
