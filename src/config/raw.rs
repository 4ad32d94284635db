//! The raw `layers.yaml` schema: serde structs mirroring the file one to one, with
//! `deny_unknown_fields` everywhere and locations on every value validation looks at.
//! Nothing here is checked beyond its YAML type; [`super::validate`] turns these into
//! the domain types of [`super::model`]. Integer settings are read as any
//! [`Number`], so that their range, not serde, judges a value too large for a `u64`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use super::bounds::Number;
use super::de::{Entries, Located, OneOrMany};
use super::model::{FailFast, LayerMode};

/// A list of names, each with its location.
pub(crate) type Names = Vec<Located<String>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub version: Option<Located<Number>>,
    pub execution: Option<RawExecution>,
    pub services: Option<Entries<Located<RawService>>>,
    pub categories: Option<Entries<Located<RawCategory>>>,
    pub layers: Option<Located<Vec<Located<RawLayer>>>>,
}

/// `execution:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExecution {
    pub max_parallel_tests: Option<Located<Number>>,
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
    pub real_services: Option<bool>,
}

/// `services.NAME:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub start: Option<Located<String>>,
    pub ready: Option<Located<RawReady>>,
    pub startup_timeout_seconds: Option<Located<f64>>,
    pub depends_on: Option<Names>,
    pub stop: Option<Located<String>>,
    pub env: Option<Entries<EnvValue>>,
}

/// `ready:`: exactly one probe.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawReady {
    Tcp(Located<String>),
    Http(Located<String>),
    Command(Located<String>),
}

/// `categories.NAME:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCategory {
    pub description: Option<String>,
    pub command: Option<Located<String>>,
    pub nextest: Option<Located<RawNextest>>,
    pub pytest: Option<Located<RawPytest>>,
    pub files: Option<Located<OneOrMany<Located<String>>>>,
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
}

/// `nextest:` in a category.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNextest {
    pub filter: Located<String>,
    pub features: Option<Vec<String>>,
    pub package: Option<OneOrMany<String>>,
    pub workspace: Option<bool>,
    pub test_args: Option<Vec<String>>,
    pub leak: Option<RawLeak>,
}

/// `pytest:` in a category.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPytest {
    pub paths: Option<OneOrMany<String>>,
    pub markers: Option<String>,
    pub k: Option<String>,
    pub args: Option<Vec<String>>,
    pub python: Option<String>,
}

/// `nextest.leak:`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawLeak {
    Fail,
    Warn,
}

/// One item of `layers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLayer {
    pub name: Located<String>,
    pub description: Option<String>,
    pub execution_order: Option<Located<Number>>,
    pub priority: Option<Located<Number>>,
    pub max_duration_minutes: Option<Located<f64>>,
    pub execution_mode: Option<LayerMode>,
    pub fail_fast: Option<RawFailFast>,
    pub background: Option<bool>,
    pub categories: Located<Names>,
    pub depends_on: Option<Names>,
    pub conflicts: Option<Names>,
    pub required_services: Option<Names>,
    pub resource_limits: Option<RawResourceLimits>,
    pub success_criteria: Option<RawSuccessCriteria>,
    /// Checked and applied on the tree before deserialization (see [`super::env`]).
    #[allow(dead_code)]
    pub environment_overrides: Option<IgnoredAny>,
}

/// `resource_limits:` of a layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResourceLimits {
    pub max_memory_mb: Option<Located<Number>>,
    pub max_cpu_percent: Option<Located<Number>>,
    pub max_parallel_instances: Option<Located<Number>>,
}

/// `success_criteria:` of a layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSuccessCriteria {
    pub min_pass_rate: Option<Located<f64>>,
    pub max_failures: Option<Located<Number>>,
    pub critical_tests_must_pass: Option<bool>,
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
