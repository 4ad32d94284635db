//! Validation of `categories:`: exactly one of `command` / `nextest`, `files` globs,
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

    /// Exactly one of `command` / `nextest`; `files` only with `command`.
    fn unit_kind(&mut self, name: &Located<String>, c: &RawCategory) -> UnitKind {
        let n = &name.value;
        let placeholder = UnitKind::Command(CommandSpec {
            command: String::new(),
            files: Vec::new(),
            exclude: Vec::new(),
        });
        match (&c.command, &c.nextest) {
            (Some(_), Some(nx)) => {
                self.err(
                    nx.loc,
                    format!(
                        "category `{n}` has both `command` and `nextest`: expected exactly one"
                    ),
                );
                placeholder
            }
            (None, None) => {
                self.err(
                    name.loc,
                    format!(
                        "category `{n}` has neither `command` nor `nextest`: expected exactly one"
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
                if let Some(exclude) = &c.exclude {
                    self.err(
                        exclude.loc,
                        format!("`exclude` of category `{n}` only applies to `command` categories with `files`, not `nextest`"),
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
            (Some(cmd), None) => {
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
                        } else if let Some(why) =
                            crate::discover::commands::pattern_escapes(&glob.value)
                        {
                            self.err(
                                glob.loc,
                                format!(
                                    "glob `{}` in `files` of category `{n}` is {why}: patterns are relative to the configuration's directory and stay inside it",
                                    glob.value
                                ),
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
                let mut exclude = Vec::new();
                if let Some(list) = &c.exclude {
                    if c.files.is_none() {
                        self.err(
                            list.loc,
                            format!("`exclude` of category `{n}` without `files`: expected `files` globs to exclude from"),
                        );
                    }
                    for glob in &list.value.0 {
                        match glob::Pattern::new(&glob.value) {
                            Err(e) => self.err(
                                glob.loc,
                                format!(
                                    "invalid glob `{}` in `exclude` of category `{n}`: {}",
                                    glob.value, e.msg
                                ),
                            ),
                            Ok(_) => exclude.push(glob.value.clone()),
                        }
                    }
                }
                UnitKind::Command(CommandSpec {
                    command,
                    files,
                    exclude,
                })
            }
        }
    }
}
