//! Validation of `categories:`: exactly one of `command` / `nextest` / `pytest`, `files` globs,
//! timeouts, parallelism, memory limits (against each other and the global budget),
//! retries and `depends_on` references between categories.

use super::*;

impl Validator<'_> {
    pub(super) fn categories(
        &mut self,
        raw: Entries<Located<RawCategory>>,
        global_memory: Option<u64>,
    ) -> IndexMap<String, Category> {
        let known: Vec<String> = raw.0.iter().map(|(k, _)| k.value.clone()).collect();
        let mut out = IndexMap::new();
        for (name, cat) in &raw.0 {
            let n = &name.value;
            let c = &cat.value;
            let ctx = format!("category `{n}`");
            let kind = self.unit_kind(name, c);
            let min_memory_mb = self.count(
                &c.min_memory_mb,
                &bounds::MEMORY_ESTIMATE_MB,
                &format!("`min_memory_mb` of {ctx}"),
            );
            let max_memory_mb = self.count(
                &c.max_memory_mb,
                &bounds::MEMORY_MB,
                &format!("`max_memory_mb` of {ctx}"),
            );
            if let (Some(lo), Some(hi), Some(l)) = (min_memory_mb, max_memory_mb, &c.min_memory_mb)
                && lo > hi
            {
                self.err(
                    l.loc,
                    format!(
                        "`min_memory_mb` of {ctx} ({lo}) is greater than its `max_memory_mb` ({hi})"
                    ),
                );
            }
            if let (Some(hi), Some(global), Some(l)) =
                (max_memory_mb, global_memory, &c.max_memory_mb)
                && hi > global
            {
                self.err(
                        l.loc,
                        format!(
                            "`max_memory_mb` of {ctx} ({hi}) is greater than the global budget `execution.max_memory_mb` ({global})"
                        ),
                    );
            }
            let mut depends_on = Vec::new();
            for dep in c.depends_on.iter().flatten() {
                if dep.value == *n {
                    self.err(dep.loc, format!("{ctx} depends on itself"));
                } else if self.reference(
                    dep,
                    &known,
                    "category",
                    &format!("in `depends_on` of {ctx}"),
                ) {
                    depends_on.push(dep.value.clone());
                }
            }
            let category = Category {
                name: n.clone(),
                description: c.description.clone().unwrap_or_default(),
                kind,
                timeout: self.duration(
                    &c.timeout_seconds,
                    &bounds::TIMEOUT_SECONDS,
                    &format!("`timeout_seconds` of {ctx}"),
                ),
                slow_after: self.duration(
                    &c.slow_seconds,
                    &bounds::TIMEOUT_SECONDS,
                    &format!("`slow_seconds` of {ctx}"),
                ),
                max_parallel_instances: self
                    .count(
                        &c.max_parallel_instances,
                        &bounds::PARALLEL,
                        &format!("`max_parallel_instances` of {ctx}"),
                    )
                    .map(|n| n as usize),
                priority_order: self
                    .int(
                        &c.priority_order,
                        &bounds::ORDER,
                        &format!("`priority_order` of {ctx}"),
                    )
                    .unwrap_or(0),
                retries: self
                    .count(&c.retries, &bounds::RETRIES, &format!("`retries` of {ctx}"))
                    .unwrap_or(0) as u32,
                min_memory_mb,
                max_memory_mb,
                rlimit_as_mb: self.count(
                    &c.rlimit_as_mb,
                    &bounds::MEMORY_MB,
                    &format!("`rlimit_as_mb` of {ctx}"),
                ),
                critical: c.critical.unwrap_or(false),
                env: env_map(&c.env),
                depends_on,
                requires_real_services: c.requires_real_services.unwrap_or(false),
                cwd: self
                    .non_empty(&c.cwd, &format!("`cwd` of {ctx}"))
                    .map(PathBuf::from),
            };
            out.insert(n.clone(), category);
        }
        out
    }

    /// Exactly one of `command` / `nextest` / `pytest`; `files` only with `command`.
    fn unit_kind(&mut self, name: &Located<String>, c: &RawCategory) -> UnitKind {
        let n = &name.value;
        let placeholder = UnitKind::Command(CommandSpec {
            command: String::new(),
            files: Vec::new(),
        });
        let given: Vec<(&str, Loc)> = [
            ("command", c.command.as_ref().map(|l| l.loc)),
            ("nextest", c.nextest.as_ref().map(|l| l.loc)),
            ("pytest", c.pytest.as_ref().map(|l| l.loc)),
        ]
        .into_iter()
        .filter_map(|(k, loc)| loc.map(|l| (k, l)))
        .collect();
        if given.len() > 1 {
            let names: Vec<String> = given.iter().map(|(k, _)| format!("`{k}`")).collect();
            let both = if names.len() == 2 {
                format!("both {} and {}", names[0], names[1])
            } else {
                names.join(", ")
            };
            self.err(
                given[1].1,
                format!(
                    "category `{n}` has {both}: expected exactly one of `command`, `nextest`, `pytest`"
                ),
            );
            return placeholder;
        }
        if let Some(py) = &c.pytest {
            if let Some(files) = &c.files {
                self.err(
                    files.loc,
                    format!("`files` of category `{n}` only applies to `command` categories, not `pytest`"),
                );
            }
            return self.pytest_spec(n, py);
        }
        match (&c.command, &c.nextest) {
            (None, None) => {
                self.err(
                    name.loc,
                    format!(
                        "category `{n}` has neither `command` nor `nextest` nor `pytest`: expected exactly one"
                    ),
                );
                placeholder
            }
            (None, Some(nx)) => {
                if let Some(files) = &c.files {
                    self.err(
                        files.loc,
                        format!("`files` of category `{n}` only applies to `command` categories, not `nextest`"),
                    );
                }
                let filter = self
                    .non_empty(
                        &Some(nx.value.filter.clone()),
                        &format!("`nextest.filter` of category `{n}`"),
                    )
                    .unwrap_or_default();
                let r = &nx.value;
                UnitKind::Nextest(NextestSpec {
                    filter,
                    features: r.features.clone().unwrap_or_default(),
                    packages: r.package.clone().map(|p| p.0).unwrap_or_default(),
                    workspace: r.workspace.unwrap_or(false),
                    test_args: r.test_args.clone().unwrap_or_default(),
                    leak: match r.leak {
                        Some(RawLeak::Warn) => LeakPolicy::Warn,
                        Some(RawLeak::Fail) | None => LeakPolicy::Fail,
                    },
                })
            }
            (Some(cmd), _) => {
                let command = self
                    .non_empty(&Some(cmd.clone()), &format!("`command` of category `{n}`"))
                    .unwrap_or_default();
                let mut files = Vec::new();
                if let Some(list) = &c.files {
                    if list.value.0.is_empty() {
                        self.err(
                            list.loc,
                            format!("empty `files` of category `{n}`: expected at least one glob"),
                        );
                    }
                    for glob in &list.value.0 {
                        if glob.value.trim().is_empty() {
                            self.err(
                                glob.loc,
                                format!("empty glob in `files` of category `{n}`: expected a pattern such as `tests/**/test_*.py`"),
                            );
                        } else if let Err(e) = glob::Pattern::new(&glob.value) {
                            self.err(
                                glob.loc,
                                format!(
                                    "invalid glob `{}` in `files` of category `{n}`: {}",
                                    glob.value, e.msg
                                ),
                            );
                        } else {
                            files.push(glob.value.clone());
                        }
                    }
                }
                UnitKind::Command(CommandSpec { command, files })
            }
        }
    }

    /// `pytest:`: every field optional; given strings must not be empty.
    fn pytest_spec(&mut self, n: &str, py: &Located<RawPytest>) -> UnitKind {
        let r = &py.value;
        let mut text = |v: &Option<String>, field: &str| -> Option<String> {
            let v = v.as_ref()?;
            if v.trim().is_empty() {
                self.err(
                    py.loc,
                    format!(
                        "empty `pytest.{field}` of category `{n}`: leave it out or give a value"
                    ),
                );
                return None;
            }
            Some(v.clone())
        };
        let markers = text(&r.markers, "markers");
        let k = text(&r.k, "k");
        let python = text(&r.python, "python").unwrap_or_else(|| "python3".to_string());
        let paths = r.paths.clone().map(|p| p.0).unwrap_or_default();
        if paths.iter().any(|p| p.trim().is_empty()) {
            self.err(
                py.loc,
                format!(
                    "empty path in `pytest.paths` of category `{n}`: expected a file or directory"
                ),
            );
        }
        UnitKind::Pytest(PytestSpec {
            paths,
            markers,
            k,
            args: r.args.clone().unwrap_or_default(),
            python,
        })
    }
}
