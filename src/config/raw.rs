//! The raw `layers.yaml` schema: serde structs mirroring the file one to one, with
//! `deny_unknown_fields` everywhere and locations on every value validation looks at.
//! Nothing here is checked beyond its YAML type; [`super::validate`] turns these into
//! the domain types of [`super::model`]. Integer settings are read as any
//! [`Number`], so that their range, not serde, judges a value too large for a `u64`.

use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use super::bounds::Number;
use super::de::{Entries, Located, OneOrMany};
use super::model::{ConflictResolution, FailFast, LayerExecutionMode, LayerMode, LlmMode};

/// A list of names, each with its location.
pub(crate) type Names = Vec<Located<String>>;

/// The whole file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Config", extend("patternProperties" = {"^x-": true}))]
pub(crate) struct RawConfig {
    pub version: Option<Located<Number>>,
    pub execution: Option<RawExecution>,
    pub services: Option<Entries<Located<RawService>>>,
    pub categories: Option<Entries<Located<RawCategory>>>,
    #[schemars(default, schema_with = "super::schema::layers")]
    pub layers: Option<Located<Vec<Located<RawLayer>>>>,
    // The format of the harness `runner` replaces (see `super::harness`).
    pub metadata: Option<RawMetadata>,
    pub execution_config: Option<RawExecutionConfig>,
    pub service_dependencies: Option<Entries<Located<RawServiceDependency>>>,
}

/// `metadata:` (old format): kept as data.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Metadata")]
pub(crate) struct RawMetadata {
    pub version: Option<EnvValue>,
    pub description: Option<EnvValue>,
    pub created_at: Option<EnvValue>,
    pub config_schema_version: Option<EnvValue>,
}

/// `execution_config:` (old format): mapped onto `execution:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExecutionConfig")]
pub(crate) struct RawExecutionConfig {
    pub layer_execution_mode: Option<Located<LayerExecutionMode>>,
    pub global_timeout_minutes: Option<Located<f64>>,
    pub layer_startup_timeout_seconds: Option<Located<f64>>,
    pub inter_layer_delay_seconds: Option<Located<f64>>,
    pub max_global_parallel_tests: Option<Located<Number>>,
    pub max_memory_usage_mb: Option<Located<Number>>,
    pub max_cpu_usage_percent: Option<Located<Number>>,
    pub resource_conflict_resolution: Option<Located<ConflictResolution>>,
    pub fail_fast_strategy: Option<Entries<Located<RawFailFast>>>,
    pub background_execution: Option<RawBackgroundExecution>,
    pub default_command: Option<Located<String>>,
}

/// `execution_config.background_execution:` (old format).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BackgroundExecution")]
pub(crate) struct RawBackgroundExecution {
    pub enabled: Option<bool>,
    pub max_background_layers: Option<Located<Number>>,
    pub background_layers: Option<Names>,
}

/// `service_dependencies.NAME:` (old format): a service probed at
/// `health_check_endpoint` (`host:port` TCP, `host:port/path` HTTP).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ServiceDependency")]
pub(crate) struct RawServiceDependency {
    pub startup_timeout_seconds: Option<Located<f64>>,
    pub health_check_endpoint: Option<Located<String>>,
    pub depends_on: Option<Names>,
    pub start: Option<Located<String>>,
    pub stop: Option<Located<String>>,
    pub ready: Option<Located<RawReady>>,
    pub env: Option<Entries<EnvValue>>,
}

/// `execution:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Execution")]
pub(crate) struct RawExecution {
    pub max_parallel_tests: Option<Located<Number>>,
    pub default_command: Option<Located<String>>,
    pub layer_execution_mode: Option<LayerExecutionMode>,
    pub inter_layer_delay_seconds: Option<Located<f64>>,
    pub layer_startup_timeout_seconds: Option<Located<f64>>,
    pub resource_conflict_resolution: Option<ConflictResolution>,
    pub max_background_layers: Option<Located<Number>>,
    pub max_memory_mb: Option<Located<Number>>,
    pub max_cpu_percent: Option<Located<Number>>,
    pub global_timeout_minutes: Option<Located<f64>>,
    pub background_layers: Option<Names>,
    pub background_max_slots: Option<Located<Number>>,
    pub kill_grace_seconds: Option<Located<f64>>,
    pub retry_backoff_ms: Option<Located<Number>>,
    pub output_head_bytes: Option<Located<Number>>,
    pub output_tail_bytes: Option<Located<Number>>,
    pub log_file_max_mb: Option<Located<Number>>,
    pub keep_runs: Option<Located<Number>>,
    pub runs_max_mb: Option<Located<Number>>,
    pub real_services: Option<bool>,
}

/// `services.NAME:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
pub(crate) struct RawService {
    pub start: Option<Located<String>>,
    pub ready: Option<Located<RawReady>>,
    pub startup_timeout_seconds: Option<Located<f64>>,
    pub depends_on: Option<Names>,
    pub stop: Option<Located<String>>,
    pub env: Option<Entries<EnvValue>>,
}

/// `ready:`: exactly one probe.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "ReadyProbe")]
pub(crate) enum RawReady {
    Tcp(Located<String>),
    Http(Located<String>),
    Command(Located<String>),
}

/// `categories.NAME:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Category")]
pub(crate) struct RawCategory {
    pub description: Option<String>,
    pub command: Option<Located<String>>,
    pub nextest: Option<Located<RawNextest>>,
    pub pytest: Option<Located<RawPytest>>,
    pub files: Option<Located<OneOrMany<Located<String>>>>,
    pub exclude: Option<Located<OneOrMany<Located<String>>>>,
    pub timeout_seconds: Option<Located<f64>>,
    pub slow_seconds: Option<Located<f64>>,
    pub max_parallel_instances: Option<Located<Number>>,
    pub priority_order: Option<Located<Number>>,
    pub retries: Option<Located<Number>>,
    pub min_memory_mb: Option<Located<Number>>,
    pub max_memory_mb: Option<Located<Number>>,
    pub rlimit_as_mb: Option<Located<Number>>,
    pub critical: Option<bool>,
    pub env: Option<Entries<EnvValue>>,
    pub depends_on: Option<Names>,
    pub requires_real_services: Option<bool>,
    pub cwd: Option<Located<String>>,
    /// Only in a layer's category object (`- name: unit`).
    pub name: Option<Located<String>>,
    pub filters: Option<RawFilters>,
    pub markers: Option<OneOrMany<String>>,
    pub category_type: Option<String>,
    pub tags: Option<Vec<String>>,
    pub estimated_duration_minutes: Option<Located<f64>>,
    pub conflicts: Option<Names>,
    pub requires_real_llm: Option<bool>,
    pub requires_environment: Option<OneOrMany<Located<String>>>,
    pub parent: Option<Located<String>>,
    pub children: Option<Names>,
    pub success_rate_threshold: Option<Located<f64>>,
    pub environment_scope: Option<OneOrMany<String>>,
    pub exclusive: Option<bool>,
    pub heavy: Option<Vec<Located<String>>>,
    pub required_services: Option<Names>,
    /// Checked and applied on the tree before deserialization (see [`super::env`]).
    #[allow(dead_code)]
    #[schemars(default, schema_with = "super::schema::category_overrides")]
    #[schemars(description = "Per environment (`--env`), fields of this category to replace.")]
    pub environment_overrides: Option<IgnoredAny>,
    // Old names and flags, mapped in validation (`validate/harness.rs`).
    pub priority: Option<Located<RawPriority>>,
    pub dependencies: Option<Names>,
    pub retry_count: Option<Located<Number>>,
    pub parallel_safe: Option<bool>,
    pub memory_intensive: Option<bool>,
    pub cpu_intensive: Option<bool>,
    pub database_dependent: Option<bool>,
    pub network_intensive: Option<bool>,
    pub requires_staging_environment: Option<bool>,
    pub requires_frontend: Option<bool>,
    pub requires_backend: Option<bool>,
    pub requires_database: Option<bool>,
    pub resource_requirements: Option<RawResourceRequirements>,
}

impl RawCategory {
    /// True when the category uses a key only the old format has.
    pub fn uses_old_keys(&self) -> bool {
        self.priority.is_some()
            || self.dependencies.is_some()
            || self.retry_count.is_some()
            || self.parallel_safe.is_some()
            || self.memory_intensive.is_some()
            || self.cpu_intensive.is_some()
            || self.database_dependent.is_some()
            || self.network_intensive.is_some()
            || self.requires_staging_environment.is_some()
            || self.requires_frontend.is_some()
            || self.requires_backend.is_some()
            || self.requires_database.is_some()
            || self.resource_requirements.is_some()
    }
}

/// `filters:` of a category.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Filters")]
pub(crate) struct RawFilters {
    pub include_patterns: Option<OneOrMany<String>>,
    pub exclude_patterns: Option<OneOrMany<String>>,
}

/// `resource_requirements:` of a category (old format).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResourceRequirements")]
pub(crate) struct RawResourceRequirements {
    pub requires_postgresql: Option<bool>,
    pub requires_redis: Option<bool>,
    pub requires_backend_service: Option<bool>,
    pub requires_auth_service: Option<bool>,
    pub requires_frontend_service: Option<bool>,
    pub requires_websocket_server: Option<bool>,
    pub requires_real_llm: Option<bool>,
    pub requires_real_services: Option<bool>,
    pub requires_node_runtime: Option<bool>,
    pub requires_frontend_build: Option<bool>,
    pub min_memory_mb: Option<Located<Number>>,
    pub dedicated_resources: Option<bool>,
}

/// Priority names of legacy categories, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[schemars(rename = "Priority", extend("enum" = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "OPTIONAL", "critical", "high", "medium", "low", "optional"]))]
pub(crate) enum RawPriority {
    #[serde(rename = "CRITICAL", alias = "critical")]
    Critical,
    #[serde(rename = "HIGH", alias = "high")]
    High,
    #[serde(rename = "MEDIUM", alias = "medium")]
    Medium,
    #[serde(rename = "LOW", alias = "low")]
    Low,
    #[serde(rename = "OPTIONAL", alias = "optional")]
    Optional,
}

impl RawPriority {
    /// The `priority_order` it becomes: 1 (CRITICAL) to 5 (OPTIONAL).
    pub fn order(self) -> i64 {
        self as i64 + 1
    }

    /// As written in the old format.
    pub fn name(self) -> &'static str {
        ["CRITICAL", "HIGH", "MEDIUM", "LOW", "OPTIONAL"][self as usize]
    }
}

/// An item of a layer's `categories:`: a name, or an object with `name` and category
/// fields (merged onto the `categories:` entry of that name, see `super::harness`).
#[derive(Debug)]
pub(crate) enum RawLayerCategory {
    Name(String),
    Object(Box<RawCategory>),
}

impl<'de> Deserialize<'de> for RawLayerCategory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLayerCategory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a category name or a mapping with `name` and category fields")
            }
            fn visit_str<E>(self, s: &str) -> Result<RawLayerCategory, E> {
                Ok(RawLayerCategory::Name(s.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawLayerCategory, A::Error> {
                RawCategory::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|c| RawLayerCategory::Object(Box::new(c)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `llm_requirements:` of a layer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LlmRequirements")]
pub(crate) struct RawLlm {
    pub mode: Option<LlmMode>,
    pub timeout_seconds: Option<Located<f64>>,
    pub fallback_to_mock: Option<bool>,
}

/// `nextest:` in a category.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Nextest")]
pub(crate) struct RawNextest {
    pub filter: Located<String>,
    pub features: Option<Vec<String>>,
    pub package: Option<OneOrMany<String>>,
    pub workspace: Option<bool>,
    pub test_args: Option<Vec<String>>,
    pub leak: Option<RawLeak>,
}

/// `pytest:` in a category.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPytest {
    pub paths: Option<OneOrMany<String>>,
    pub markers: Option<String>,
    pub k: Option<String>,
    pub args: Option<Vec<String>>,
    pub python: Option<String>,
}

/// `nextest.leak:`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "Leak")]
pub(crate) enum RawLeak {
    Fail,
    Warn,
}

/// One item of `layers:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Layer")]
pub(crate) struct RawLayer {
    pub name: Located<String>,
    pub description: Option<String>,
    pub execution_order: Option<Located<Number>>,
    pub priority: Option<Located<Number>>,
    pub max_duration_minutes: Option<Located<f64>>,
    pub execution_mode: Option<LayerMode>,
    pub fail_fast: Option<RawFailFast>,
    pub background: Option<bool>,
    pub categories: Located<Vec<Located<RawLayerCategory>>>,
    pub depends_on: Option<Names>,
    pub conflicts: Option<Names>,
    pub required_services: Option<Names>,
    pub resource_limits: Option<RawResourceLimits>,
    pub success_criteria: Option<RawSuccessCriteria>,
    /// Checked and applied on the tree before deserialization (see [`super::env`]).
    #[allow(dead_code)]
    #[schemars(default, schema_with = "super::schema::layer_overrides")]
    #[schemars(description = "Per environment (`--env`), fields of this layer to replace.")]
    pub environment_overrides: Option<IgnoredAny>,
    /// The `name:` of a layer in the mapping form (see `super::harness`).
    #[schemars(
        description = "A display name (in the mapping form of `layers:`, the layer's `name:`)."
    )]
    pub display_name: Option<String>,
    pub llm_requirements: Option<RawLlm>,
    // Old names, mapped in validation.
    pub background_execution: Option<Located<bool>>,
    pub dependencies: Option<Names>,
}

/// `resource_limits:` of a layer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ResourceLimits")]
pub(crate) struct RawResourceLimits {
    pub max_memory_mb: Option<Located<Number>>,
    pub max_cpu_percent: Option<Located<Number>>,
    pub max_parallel_instances: Option<Located<Number>>,
}

/// `success_criteria:` of a layer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SuccessCriteria")]
pub(crate) struct RawSuccessCriteria {
    pub min_pass_rate: Option<Located<f64>>,
    pub max_failures: Option<Located<Number>>,
    pub critical_tests_must_pass: Option<bool>,
    pub allow_partial_success: Option<bool>,
}

/// `fail_fast:` accepts a strategy name or a boolean (`true` = immediate, `false` = disabled).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFailFast(pub FailFast);

const FAIL_FAST_VALUES: &[&str] = &[
    "immediate",
    "category",
    "layer",
    "disabled",
    "true",
    "false",
];

impl<'de> Deserialize<'de> for RawFailFast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawFailFast;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one of `immediate`, `category`, `layer`, `disabled`, or a boolean")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<RawFailFast, E> {
                Ok(RawFailFast(if b {
                    FailFast::Immediate
                } else {
                    FailFast::Disabled
                }))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawFailFast, E> {
                Ok(RawFailFast(match s {
                    "immediate" => FailFast::Immediate,
                    "category" => FailFast::Category,
                    "layer" => FailFast::Layer,
                    "disabled" => FailFast::Disabled,
                    _ => return Err(E::unknown_variant(s, FAIL_FAST_VALUES)),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// An environment variable value: strings, numbers and booleans are accepted and
/// turned into their text.
#[derive(Debug, Clone)]
pub(crate) struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, s: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(s.to_string()))
            }
            fn visit_bool<E>(self, b: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(b.to_string()))
            }
            fn visit_i64<E>(self, i: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(i.to_string()))
            }
            fn visit_u64<E>(self, u: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(u.to_string()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(f.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
