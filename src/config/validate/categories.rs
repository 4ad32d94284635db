//! Validation of `categories:` (and of the category objects of layers): exactly one of
//! `command` / `nextest` / `pytest` (or none yet: `execution.default_command`, else a category
//! that loads but cannot run), `files` globs, timeouts, parallelism, memory limits
//! (against each other and the global budget), retries and `depends_on` references
//! between categories. The old format's category fields are mapped in `harness.rs`.

use super::*;

/// What validating a category needs to know besides the category.
pub(super) struct CategoryCtx<'a> {
    /// Every category name (top-level entries and names defined only in layers).
    pub known: &'a [String],
    /// `execution.max_memory_mb`.
    pub global_memory: Option<u64>,
    /// `execution.default_command`.
    pub default_command: Option<&'a str>,
    /// Names of the services defined.
    pub services: &'a [String],
    /// The top-level entry, when validating a layer's category object laid over it.
    pub base: Option<&'a Category>,
}

impl Validator<'_> {
    pub(super) fn categories(
        &mut self,
        raw: &Entries<Located<RawCategory>>,
        cx: &CategoryCtx<'_>,
    ) -> IndexMap<String, Category> {
        let mut out = IndexMap::new();
        for (name, cat) in &raw.0 {
            if let Some(inner) = &cat.value.name {
                self.err(
                    inner.loc,
                    format!(
                        "`name` in `categories.{}`: the key is the category's name (`name` belongs to category objects in a layer's `categories:`)",
                        name.value
                    ),
                );
            }
            let category = self.category(name, &cat.value, cx);
            out.insert(name.value.clone(), category);
        }
        out
    }

    /// One category: a `categories:` entry, or a layer's category object (merged onto
    /// its entry, see `super::super::harness`).
    pub(super) fn category(
        &mut self,
        name: &Located<String>,
        c: &RawCategory,
        cx: &CategoryCtx<'_>,
    ) -> Category {
        let known = cx.known;
        let global_memory = cx.global_memory;
        {
            let n = &name.value;
            let ctx = format!("category `{n}`");
            let mut mappings = Vec::new();
            let filters = filters_of(c);
            let kind = self.unit_kind(name, c, cx, &filters, &mut mappings);
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
                    &known.to_vec(),
                    "category",
                    &format!("in `depends_on` of {ctx}"),
                ) {
                    depends_on.push(dep.value.clone());
                }
            }
            let mut category = Category {
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
                category_type: c.category_type.clone(),
                tags: c.tags.clone().unwrap_or_default(),
                estimated_duration: None,
                conflicts: Vec::new(),
                exclusive: false,
                heavy: Vec::new(),
                requires_real_llm: c.requires_real_llm.unwrap_or(false),
                requires_environment: Vec::new(),
                required_services: Vec::new(),
                filters,
                markers: c.markers.clone().map(|m| m.0).unwrap_or_default(),
                parent: c.parent.as_ref().map(|p| p.value.clone()),
                children: c
                    .children
                    .iter()
                    .flatten()
                    .map(|c| c.value.clone())
                    .collect(),
                success_rate_threshold: None,
                environment_scope: c.environment_scope.clone().map(|s| s.0).unwrap_or_default(),
                mappings,
            };
            self.map_harness_category(name, c, &mut category, cx);
            category
        }
    }

    /// Exactly one of `command` / `nextest` / `pytest`, or none (then `execution.default_command`,
    /// else [`UnitKind::Missing`]); `files` only with `command`.
    fn unit_kind(
        &mut self,
        name: &Located<String>,
        c: &RawCategory,
        cx: &CategoryCtx<'_>,
        filters: &Filters,
        mappings: &mut Vec<Mapping>,
    ) -> UnitKind {
        let n = &name.value;
        let placeholder = UnitKind::Command(CommandSpec {
            command: String::new(),
            files: Vec::new(),
            exclude: Vec::new(),
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
            return self.pytest_spec(n, py, c, filters, mappings);
        }
        match (&c.command, &c.nextest) {
            (None, None) => match cx.default_command {
                Some(template) => {
                    let command = expand_template(template, n, filters);
                    mappings.push(Mapping::new(
                        "execution.default_command",
                        format!("command: {command}"),
                    ));
                    UnitKind::Command(CommandSpec {
                        command,
                        files: self.files(n, c),
                        exclude: self.exclude(n, c),
                    })
                }
                None => {
                    mappings.push(Mapping::new(
                        "command",
                        "none: give the category a `command`, a `categories:` entry with one, or `execution.default_command`",
                    ));
                    UnitKind::Missing
                }
            },
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
            (Some(cmd), _) => {
                let command = self
                    .non_empty(&Some(cmd.clone()), &format!("`command` of category `{n}`"))
                    .unwrap_or_default();
                if let Some(base) = cx.base
                    && matches!(&base.kind, UnitKind::Command(b) if b.command == command)
                {
                    mappings.push(Mapping::new("command", format!("from `categories.{n}`")));
                }
                let files = self.files(n, c);
                let exclude = self.exclude(n, c);
                UnitKind::Command(CommandSpec {
                    command,
                    files,
                    exclude,
                })
            }
        }
    }

    /// `files:` globs of a command category.
    fn files(&mut self, n: &str, c: &RawCategory) -> Vec<String> {
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
                } else if let Some(why) = crate::config::pattern_escapes(&glob.value) {
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
        files
    }

    /// `exclude:` globs, removed from what `files:` matched.
    fn exclude(&mut self, n: &str, c: &RawCategory) -> Vec<String> {
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
        exclude
    }

    /// `pytest:`: every field optional; given strings must not be empty.
    /// The old format's `filters` and `markers` become `-k` and `-m` where the category
    /// sets no `k` / `markers` of its own.
    fn pytest_spec(
        &mut self,
        n: &str,
        py: &Located<RawPytest>,
        c: &RawCategory,
        filters: &Filters,
        mappings: &mut Vec<Mapping>,
    ) -> UnitKind {
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
        let k = k.or_else(|| {
            let expr = filters.expression();
            (!expr.is_empty()).then(|| {
                mappings.push(Mapping::new("filters", format!("pytest.k: {expr}")));
                expr
            })
        });
        let markers = markers.or_else(|| {
            let old: Vec<String> = c.markers.clone().map(|m| m.0).unwrap_or_default();
            (!old.is_empty()).then(|| {
                let expr = old.join(" or ");
                mappings.push(Mapping::new("markers", format!("pytest.markers: {expr}")));
                expr
            })
        });
        UnitKind::Pytest(PytestSpec {
            paths,
            markers,
            k,
            args: r.args.clone().unwrap_or_default(),
            python,
        })
    }
}

/// `filters:` as data.
fn filters_of(c: &RawCategory) -> Filters {
    let f = c.filters.clone().unwrap_or_default();
    Filters {
        include_patterns: f.include_patterns.map(|p| p.0).unwrap_or_default(),
        exclude_patterns: f.exclude_patterns.map(|p| p.0).unwrap_or_default(),
    }
}

/// `execution.default_command` for one category: `{category}` and `{filter_expr}`
/// substituted (`{junit}` and `{file}` stay for the unit).
fn expand_template(template: &str, category: &str, filters: &Filters) -> String {
    template
        .replace("{category}", category)
        .replace("{filter_expr}", &filters.expression())
}
