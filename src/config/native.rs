//! The native `layers.yaml` equivalent of a loaded configuration (`--print-config`):
//! what a file in the replaced harness's format (or any file) becomes, written with
//! today's keys only, in the environment it was loaded for (overlays and
//! `environment_overrides` applied). Loading the printed file gives the same plan.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Serialize;

use super::model::*;

/// The configuration as a native `layers.yaml` text.
pub fn native_yaml(config: &Config) -> Result<String, String> {
    let doc = Doc::from(config);
    let body = serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Native layers.yaml equivalent of {} (environment {}), printed by `runner --print-config`.\n{body}",
        config.source.display(),
        config.environment
    ))
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn secs(d: &Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn mins(d: &Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() / 60.0)
}

#[derive(Serialize)]
struct Doc {
    version: u32,
    execution: Exec,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    services: IndexMap<String, Svc>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    categories: IndexMap<String, Cat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<Lay>>,
}

#[derive(Serialize)]
struct Exec {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_parallel_tests: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_cpu_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    global_timeout_minutes: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    background_layers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    background_max_slots: Option<usize>,
    kill_grace_seconds: f64,
    retry_backoff_ms: u64,
    output_head_bytes: usize,
    output_tail_bytes: usize,
    log_file_max_mb: u64,
    #[serde(skip_serializing_if = "is_false")]
    real_services: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_command: Option<String>,
    layer_execution_mode: LayerExecutionMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    inter_layer_delay_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_startup_timeout_seconds: Option<f64>,
    resource_conflict_resolution: ConflictResolution,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_background_layers: Option<usize>,
}

#[derive(Serialize)]
struct Svc {
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<BTreeMap<&'static str, String>>,
    startup_timeout_seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
}

#[derive(Serialize, PartialEq)]
struct Cat {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nextest: Option<Nx>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pytest: Option<Py>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_parallel_instances: Option<usize>,
    #[serde(skip_serializing_if = "is_zero")]
    priority_order: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rlimit_as_mb: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    critical: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    requires_real_services: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_duration_minutes: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    exclusive: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    heavy: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    requires_real_llm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    requires_environment: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    required_services: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<Filt>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    markers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_rate_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    environment_scope: Vec<String>,
}

#[derive(Serialize, PartialEq)]
struct Filt {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include_patterns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude_patterns: Vec<String>,
}

#[derive(Serialize, PartialEq)]
struct Py {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    markers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    python: String,
}

#[derive(Serialize, PartialEq)]
struct Nx {
    filter: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    features: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    package: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    workspace: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    test_args: Vec<String>,
    leak: LeakPolicy,
}

#[derive(Serialize)]
#[serde(untagged)]
enum LayerCat {
    Name(String),
    Object(Box<Cat>),
}

#[derive(Serialize)]
struct Lay {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    execution_order: i64,
    priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_duration_minutes: Option<f64>,
    execution_mode: LayerMode,
    fail_fast: FailFast,
    #[serde(skip_serializing_if = "is_false")]
    background: bool,
    categories: Vec<LayerCat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    required_services: Vec<String>,
    resource_limits: ResourceLimits,
    success_criteria: SuccessCriteria,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_requirements: Option<LlmRequirements>,
}

impl From<&Config> for Doc {
    fn from(c: &Config) -> Self {
        let e = &c.execution;
        let execution = Exec {
            max_parallel_tests: e.max_parallel_tests,
            max_memory_mb: e.max_memory_mb,
            max_cpu_percent: e.max_cpu_percent,
            global_timeout_minutes: mins(&e.global_timeout),
            background_layers: e.background_layers.clone(),
            background_max_slots: e.background_max_slots,
            kill_grace_seconds: e.kill_grace.as_secs_f64(),
            retry_backoff_ms: e.retry_backoff.as_millis() as u64,
            output_head_bytes: e.output_head_bytes,
            output_tail_bytes: e.output_tail_bytes,
            log_file_max_mb: e.log_file_max_bytes >> 20,
            real_services: e.real_services,
            default_command: e.default_command.clone(),
            layer_execution_mode: e.layer_execution_mode,
            inter_layer_delay_seconds: secs(&e.inter_layer_delay),
            layer_startup_timeout_seconds: secs(&e.layer_startup_timeout),
            resource_conflict_resolution: e.resource_conflict_resolution,
            max_background_layers: e.max_background_layers,
        };
        let services = c
            .services
            .iter()
            .map(|(n, s)| {
                let ready = s.ready.as_ref().map(|r| {
                    let (k, v) = match r {
                        ReadyProbe::Tcp { address } => ("tcp", address.clone()),
                        ReadyProbe::Http { url } => ("http", url.clone()),
                        ReadyProbe::Command { command } => ("command", command.clone()),
                    };
                    BTreeMap::from([(k, v)])
                });
                (
                    n.clone(),
                    Svc {
                        start: s.start.clone(),
                        ready,
                        startup_timeout_seconds: s.startup_timeout.as_secs_f64(),
                        depends_on: s.depends_on.clone(),
                        stop: s.stop.clone(),
                        env: s.env.clone(),
                    },
                )
            })
            .collect();
        let categories: IndexMap<String, Cat> = c
            .categories
            .iter()
            .map(|(n, cat)| (n.clone(), Cat::from(cat)))
            .collect();
        let layers = c.has_layers.then(|| {
            c.layers
                .iter()
                .map(|l| Lay {
                    name: l.name.clone(),
                    display_name: l.display_name.clone(),
                    description: l.description.clone(),
                    execution_order: l.execution_order,
                    priority: l.priority,
                    max_duration_minutes: mins(&l.max_duration),
                    execution_mode: l.execution_mode,
                    fail_fast: l.fail_fast,
                    background: l.background,
                    categories: l
                        .categories
                        .iter()
                        .map(|name| {
                            let own = l.category_overrides.get(name).map(Cat::from);
                            match own {
                                Some(own) if Some(&own) != categories.get(name) => {
                                    LayerCat::Object(Box::new(Cat {
                                        name: Some(name.clone()),
                                        ..own
                                    }))
                                }
                                _ => LayerCat::Name(name.clone()),
                            }
                        })
                        .collect(),
                    depends_on: l.depends_on.clone(),
                    conflicts: l
                        .conflicts
                        .iter()
                        .chain(l.conflicting_categories.iter())
                        .cloned()
                        .collect(),
                    required_services: l.required_services.clone(),
                    resource_limits: l.resource_limits.clone(),
                    success_criteria: l.success_criteria.clone(),
                    llm_requirements: l.llm.clone(),
                })
                .collect()
        });
        Doc {
            version: c.version,
            execution,
            services,
            categories,
            layers,
        }
    }
}

impl From<&Category> for Cat {
    fn from(c: &Category) -> Self {
        let (command, files, exclude, nextest, pytest) = match &c.kind {
            UnitKind::Command(spec) => (
                Some(spec.command.clone()),
                spec.files.clone(),
                spec.exclude.clone(),
                None,
                None,
            ),
            UnitKind::Nextest(spec) => (
                None,
                Vec::new(),
                Vec::new(),
                Some(Nx {
                    filter: spec.filter.clone(),
                    features: spec.features.clone(),
                    package: spec.packages.clone(),
                    workspace: spec.workspace,
                    test_args: spec.test_args.clone(),
                    leak: spec.leak,
                }),
                None,
            ),
            UnitKind::Pytest(spec) => (
                None,
                Vec::new(),
                Vec::new(),
                None,
                Some(Py {
                    paths: spec.paths.clone(),
                    markers: spec.markers.clone(),
                    k: spec.k.clone(),
                    args: spec.args.clone(),
                    python: spec.python.clone(),
                }),
            ),
            UnitKind::Missing => (None, Vec::new(), Vec::new(), None, None),
        };
        let f = &c.filters;
        Cat {
            name: None,
            description: c.description.clone(),
            command,
            files,
            exclude,
            nextest,
            pytest,
            timeout_seconds: secs(&c.timeout),
            slow_seconds: secs(&c.slow_after),
            max_parallel_instances: c.max_parallel_instances,
            priority_order: c.priority_order,
            retries: (c.retries > 0).then_some(c.retries),
            min_memory_mb: c.min_memory_mb,
            max_memory_mb: c.max_memory_mb,
            rlimit_as_mb: c.rlimit_as_mb,
            critical: c.critical,
            env: c.env.clone(),
            depends_on: c.depends_on.clone(),
            requires_real_services: c.requires_real_services,
            cwd: c.cwd.as_ref().map(|p| p.display().to_string()),
            category_type: c.category_type.clone(),
            tags: c.tags.clone(),
            estimated_duration_minutes: mins(&c.estimated_duration),
            conflicts: c.conflicts.clone(),
            exclusive: c.exclusive,
            heavy: c.heavy.clone(),
            requires_real_llm: c.requires_real_llm,
            requires_environment: c.requires_environment.clone(),
            required_services: c.required_services.clone(),
            filters: (!f.include_patterns.is_empty() || !f.exclude_patterns.is_empty()).then(
                || Filt {
                    include_patterns: f.include_patterns.clone(),
                    exclude_patterns: f.exclude_patterns.clone(),
                },
            ),
            markers: c.markers.clone(),
            parent: c.parent.clone(),
            children: c.children.clone(),
            success_rate_threshold: c.success_rate_threshold,
            environment_scope: c.environment_scope.clone(),
        }
    }
}
