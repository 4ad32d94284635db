//! Validation of one layer: category, layer and service references, self
//! dependencies, duration, resource limits (against the global budget) and success
//! criteria; its category objects (validated as categories, see `categories.rs`) and
//! the old format's layer fields (`background_execution`, `dependencies`,
//! `llm_requirements`, conflicts naming categories, fractional `min_pass_rate`). Also
//! used for the layers other environments' overrides would produce.

use super::categories::CategoryCtx;
use super::*;

impl Validator<'_> {
    pub(super) fn layer(
        &mut self,
        r: &RawLayer,
        index: usize,
        names: &Names,
        categories_map: &mut IndexMap<String, Category>,
    ) -> Layer {
        let n = &r.name.value;
        if n.trim().is_empty() {
            self.err(r.name.loc, "empty layer name: expected a non-empty string");
        }
        let ctx = format!("layer `{n}`");
        if r.categories.value.is_empty() {
            self.err(
                r.categories.loc,
                format!("{ctx} has no categories: expected at least one category name"),
            );
        }
        let mut mappings: Vec<Mapping> = Vec::new();
        let mut categories: Vec<String> = Vec::new();
        let mut category_overrides: IndexMap<String, Category> = IndexMap::new();
        for item in &r.categories.value {
            let c = match &item.value {
                RawLayerCategory::Name(n) => Located {
                    value: n.clone(),
                    loc: item.loc,
                },
                RawLayerCategory::Object(obj) => match &obj.name {
                    Some(n) => n.clone(),
                    None => {
                        self.err(
                            item.loc,
                            format!("missing key `name` in a category object of {ctx}"),
                        );
                        continue;
                    }
                },
            };
            if categories.contains(&c.value) {
                self.err(
                    c.loc,
                    format!("category `{}` is listed twice in {ctx}", c.value),
                );
                continue;
            }
            match &item.value {
                RawLayerCategory::Name(_) => {
                    if self.reference(&c, &names.categories, "category", &format!("in {ctx}")) {
                        categories.push(c.value.clone());
                    }
                }
                RawLayerCategory::Object(obj) => {
                    let cx = CategoryCtx {
                        known: names.categories.names(),
                        global_memory: names.global_memory,
                        default_command: names.default_command.as_deref(),
                        services: names.services.names(),
                        base: categories_map.get(&c.value),
                    };
                    let category = self.category(&c, obj, &cx);
                    categories_map
                        .entry(c.value.clone())
                        .or_insert_with(|| category.clone());
                    category_overrides.insert(c.value.clone(), category);
                    categories.push(c.value.clone());
                }
            }
        }
        let mut refs = |list: &Option<Vec<Located<String>>>,
                        field: &str,
                        known: &super::NameSet,
                        kind: &str| {
            let mut out = Vec::new();
            for item in list.iter().flatten() {
                if kind == "layer" && item.value == *n {
                    let verb = if field == "depends_on" {
                        "depends on"
                    } else {
                        "conflicts with"
                    };
                    self.err(item.loc, format!("{ctx} {verb} itself"));
                } else if self.reference(item, known, kind, &format!("in `{field}` of {ctx}")) {
                    out.push(item.value.clone());
                }
            }
            out
        };
        let mut depends_on = refs(&r.depends_on, "depends_on", &names.layers, "layer");
        for d in refs(&r.dependencies, "dependencies", &names.layers, "layer") {
            if !depends_on.contains(&d) {
                depends_on.push(d);
            }
        }
        // `conflicts` may name layers or categories (the old format mixes both).
        let (layer_conflicts, category_conflicts): (Vec<_>, Vec<_>) = r
            .conflicts
            .iter()
            .flatten()
            .cloned()
            .partition(|c| names.layers.has(&c.value) || !names.categories.has(&c.value));
        let conflicts = refs(&Some(layer_conflicts), "conflicts", &names.layers, "layer");
        let conflicting_categories: Vec<String> =
            category_conflicts.into_iter().map(|c| c.value).collect();
        let mut required_services = refs(
            &r.required_services,
            "required_services",
            &names.services,
            "service",
        );

        let rl = r.resource_limits.as_ref();
        let none = None;
        let lim_mem = rl.map_or(&none, |l| &l.max_memory_mb);
        let max_memory_mb = self.count(
            lim_mem,
            &bounds::MEMORY_MB,
            &format!("`resource_limits.max_memory_mb` of {ctx}"),
        );
        if let (Some(m), Some(global), Some(l)) = (max_memory_mb, names.global_memory, lim_mem)
            && m > global
        {
            self.err(
                    l.loc,
                    format!(
                        "`resource_limits.max_memory_mb` of {ctx} ({m}) is greater than the global budget `execution.max_memory_mb` ({global})"
                    ),
                );
        }
        let resource_limits = ResourceLimits {
            max_memory_mb,
            max_cpu_percent: self
                .count(
                    rl.map_or(&none, |l| &l.max_cpu_percent),
                    &bounds::CPU_PERCENT,
                    &format!("`resource_limits.max_cpu_percent` of {ctx}"),
                )
                .map(|v| v as u32),
            max_parallel_instances: self
                .count(
                    rl.map_or(&none, |l| &l.max_parallel_instances),
                    &bounds::PARALLEL,
                    &format!("`resource_limits.max_parallel_instances` of {ctx}"),
                )
                .map(|v| v as usize),
        };
        let sc = r.success_criteria.as_ref();
        // In the old format a pass rate is a fraction (0.95): percent here.
        let rate = sc.and_then(|s| s.min_pass_rate.clone()).map(|mut l| {
            if self.harness_layers && l.value <= 1.0 {
                mappings.push(Mapping::new(
                    format!("success_criteria.min_pass_rate: {}", l.value),
                    format!(
                        "min_pass_rate: {}% (a fraction in the old format)",
                        l.value * 100.0
                    ),
                ));
                l.value *= 100.0;
            }
            l
        });
        let allow_partial_success = sc.and_then(|s| s.allow_partial_success).unwrap_or(false);
        let success_criteria = SuccessCriteria {
            allow_partial_success,
            min_pass_rate: self.number(
                &rate,
                &bounds::PASS_RATE,
                &format!("`success_criteria.min_pass_rate` of {ctx}"),
            ),
            max_failures: self.count(
                sc.map_or(&none, |s| &s.max_failures),
                &bounds::FAILURES,
                &format!("`success_criteria.max_failures` of {ctx}"),
            ),
            critical_tests_must_pass: sc.and_then(|s| s.critical_tests_must_pass).unwrap_or(true),
        };
        let execution_order = self
            .int(
                &r.execution_order,
                &bounds::ORDER,
                &format!("`execution_order` of {ctx}"),
            )
            .unwrap_or(index as i64 + 1);
        let mut priority = self
            .int(&r.priority, &bounds::ORDER, &format!("`priority` of {ctx}"))
            .unwrap_or(0);
        // The old format ranks layers 1 (first) to 5; here the higher goes first.
        if self.harness_layers && (1..=5).contains(&priority) {
            mappings.push(Mapping::new(
                format!("priority: {priority}"),
                format!(
                    "priority: {} (1 is the most important in the old format; here higher goes first among layers of equal execution_order)",
                    6 - priority
                ),
            ));
            priority = 6 - priority;
        }
        let background = match (&r.background, &r.background_execution) {
            (Some(b), _) => *b,
            (None, Some(b)) => {
                mappings.push(Mapping::new(
                    format!("background_execution: {}", b.value),
                    format!("background: {}", b.value),
                ));
                b.value
            }
            (None, None) => false,
        };
        if r.dependencies.is_some() {
            mappings.push(Mapping::new("dependencies", "depends_on"));
        }
        if !conflicting_categories.is_empty() {
            mappings.push(Mapping::new(
                format!("conflicts: {}", conflicting_categories.join(", ")),
                "categories whose units never run at the same time as this layer's",
            ));
        }
        let llm = r.llm_requirements.as_ref().map(|l| {
            mappings.push(Mapping::new(
                "llm_requirements",
                "RUNNER_LLM_MODE, RUNNER_LLM_TIMEOUT_SECONDS, RUNNER_LLM_FALLBACK_TO_MOCK in the units' environment",
            ));
            LlmRequirements {
                mode: l.mode.unwrap_or(LlmMode::Mock),
                timeout_seconds: self
                    .duration(
                        &l.timeout_seconds,
                        &bounds::TIMEOUT_SECONDS,
                        &format!("`llm_requirements.timeout_seconds` of {ctx}"),
                    )
                    .map(|d| d.as_secs_f64()),
                fallback_to_mock: l.fallback_to_mock,
            }
        });
        if allow_partial_success {
            mappings.push(Mapping::new(
                "success_criteria.allow_partial_success",
                "a layer missing its criteria is `partial`: its dependents still run",
            ));
        }
        // Services the layer's categories need (`requires_<service>`).
        for name in &categories {
            let cat = category_overrides
                .get(name)
                .or_else(|| categories_map.get(name));
            for s in cat.iter().flat_map(|c| c.required_services.iter()) {
                if !required_services.contains(s) {
                    required_services.push(s.clone());
                }
            }
        }
        Layer {
            display_name: r.display_name.clone(),
            conflicting_categories,
            llm,
            category_overrides,
            mappings,
            name: n.clone(),
            description: r.description.clone().unwrap_or_default(),
            execution_order,
            priority,
            max_duration: self.duration(
                &r.max_duration_minutes,
                &bounds::TIMEOUT_MINUTES,
                &format!("`max_duration_minutes` of {ctx}"),
            ),
            execution_mode: r.execution_mode.unwrap_or(LayerMode::Parallel),
            fail_fast: r.fail_fast.map_or(FailFast::Layer, |f| f.0),
            background,
            categories,
            depends_on,
            conflicts,
            required_services,
            resource_limits,
            success_criteria,
        }
    }
}
