//! Validation of one layer: category, layer and service references, self
//! dependencies, duration, resource limits (against the global budget) and success
//! criteria. Also used for the layers other environments' overrides would produce.

use super::*;

impl Validator<'_> {
    pub(super) fn layer(&mut self, r: &RawLayer, index: usize, names: &Names) -> Layer {
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
        let mut categories: Vec<String> = Vec::new();
        for c in &r.categories.value {
            if categories.contains(&c.value) {
                self.err(
                    c.loc,
                    format!("category `{}` is listed twice in {ctx}", c.value),
                );
            } else if self.reference(c, &names.categories, "category", &format!("in {ctx}")) {
                categories.push(c.value.clone());
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
        let depends_on = refs(&r.depends_on, "depends_on", &names.layers, "layer");
        let conflicts = refs(&r.conflicts, "conflicts", &names.layers, "layer");
        let required_services = refs(
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
        let success_criteria = SuccessCriteria {
            min_pass_rate: self.number(
                sc.map_or(&None, |s| &s.min_pass_rate),
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
        let priority = self
            .int(&r.priority, &bounds::ORDER, &format!("`priority` of {ctx}"))
            .unwrap_or(0);
        Layer {
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
            background: r.background.unwrap_or(false),
            categories,
            depends_on,
            conflicts,
            required_services,
            resource_limits,
            success_criteria,
        }
    }
}
