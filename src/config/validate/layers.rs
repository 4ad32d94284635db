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

        let max = u64::MAX >> 1;
        let rl = r.resource_limits.as_ref();
        let none = None;
        let lim_mem = rl.map_or(&none, |l| &l.max_memory_mb);
        let max_memory_mb = self.int(
            lim_mem,
            false,
            max,
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
                .int(
                    rl.map_or(&none, |l| &l.max_cpu_percent),
                    false,
                    u64::from(u32::MAX),
                    &format!("`resource_limits.max_cpu_percent` of {ctx}"),
                )
                .map(|v| v as u32),
            max_parallel_instances: self
                .int(
                    rl.map_or(&none, |l| &l.max_parallel_instances),
                    false,
                    max,
                    &format!("`resource_limits.max_parallel_instances` of {ctx}"),
                )
                .map(|v| v as usize),
        };
        let sc = r.success_criteria.as_ref();
        let min_pass_rate = sc.and_then(|s| s.min_pass_rate.as_ref()).and_then(|p| {
            if (0.0..=100.0).contains(&p.value) {
                Some(p.value)
            } else {
                self.err(
                    p.loc,
                    format!(
                        "invalid `success_criteria.min_pass_rate` of {ctx}: expected a percentage from 0 to 100, found `{}`",
                        fmt_num(p.value)
                    ),
                );
                None
            }
        });
        let success_criteria = SuccessCriteria {
            min_pass_rate,
            max_failures: self.int(
                sc.map_or(&none, |s| &s.max_failures),
                true,
                max,
                &format!("`success_criteria.max_failures` of {ctx}"),
            ),
            critical_tests_must_pass: sc.and_then(|s| s.critical_tests_must_pass).unwrap_or(true),
        };
        Layer {
            name: n.clone(),
            description: r.description.clone().unwrap_or_default(),
            execution_order: r.execution_order.unwrap_or(index as i64 + 1),
            priority: r.priority.unwrap_or(0),
            max_duration: self.duration(
                &r.max_duration_minutes,
                60.0,
                false,
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
