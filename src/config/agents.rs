//! Agent manifests: `agents/*.yaml` next to the layers file.
//!
//! One manifest per built-in agent holds its tunables (heartbeat, sampling interval,
//! WebSocket address, ...); a manifest with `command:` declares an external agent that
//! receives the events it subscribes to as JSON lines on its stdin. A missing file or
//! directory means defaults. Manifests are parsed with the same located tree as
//! `layers.yaml`, so an unknown key or a wrong type is reported with file, line,
//! column and a suggestion, and a number outside its range (from [`super::bounds`]) with
//! the range.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bounds::{self, Number, Range};
use super::node::{self, Node, Sources, Value};
use super::{ConfigError, Diagnostic, de, finish};

/// Tunables every agent has (each manifest carries them as top-level keys).
#[derive(Debug, Clone, Copy)]
pub struct Common {
    /// How often the agent heartbeats, ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: `stale`, ms.
    pub stale_after_ms: u64,
}

/// The common tunables of a manifest.
pub trait Manifest {
    /// Heartbeat and staleness.
    fn common(&self) -> Common;
}

macro_rules! manifest {
    ($($t:ty),*) => {$(
        impl Manifest for $t {
            fn common(&self) -> Common {
                Common { heartbeat_ms: self.heartbeat_ms, stale_after_ms: self.stale_after_ms }
            }
        }
    )*};
}
manifest!(
    PlainManifest,
    ResourceManagerManifest,
    ProgressStreamerManifest,
    BackgroundManifest
);

impl Common {
    /// Heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }
    /// Staleness threshold.
    pub fn stale_after(&self) -> Duration {
        Duration::from_millis(self.stale_after_ms.max(100))
    }
}

/// `agents/test_orchestrator.yaml`, `agents/layer_executor.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlainManifest {
    /// The agent's name (informational; the file name decides).
    pub name: Option<String>,
    /// How often the agent heartbeats, ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: `stale`, ms.
    pub stale_after_ms: u64,
}

impl Default for PlainManifest {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_ms: 500,
            stale_after_ms: 5000,
        }
    }
}

/// `agents/resource_manager.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceManagerManifest {
    /// The agent's name (informational; the file name decides).
    pub name: Option<String>,
    /// How often the agent heartbeats, ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: `stale`, ms.
    pub stale_after_ms: u64,
    /// How often running units' process trees and the system are sampled, ms.
    pub sample_interval_ms: u64,
    /// Admission pauses while the system's available memory is under this share, percent.
    pub memory_pressure_percent: f64,
    /// How long a unit that does not fit may be overtaken by smaller ones, ms.
    pub bypass_window_ms: u64,
}

impl Default for ResourceManagerManifest {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_ms: 250,
            stale_after_ms: 5000,
            sample_interval_ms: 250,
            memory_pressure_percent: 10.0,
            bypass_window_ms: 2000,
        }
    }
}

/// `agents/progress_streamer.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressStreamerManifest {
    /// The agent's name (informational; the file name decides).
    pub name: Option<String>,
    /// How often the agent heartbeats, ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: `stale`, ms.
    pub stale_after_ms: u64,
    /// Address of the progress server when no `--websocket-addr` is given (None: off,
    /// except in streamed orchestration, where `127.0.0.1:0` is used).
    pub websocket_addr: Option<String>,
    /// At most this many WebSocket clients at once.
    pub max_clients: usize,
    /// Events queued per client before it is resynchronised or dropped.
    pub client_queue: usize,
    /// Events kept for `since_seq` resumption.
    pub ring_size: usize,
    /// Largest frame accepted from a client, bytes.
    pub max_frame_bytes: usize,
}

impl Default for ProgressStreamerManifest {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_ms: 500,
            stale_after_ms: 5000,
            websocket_addr: None,
            max_clients: 256,
            client_queue: 4096,
            ring_size: 100_000,
            max_frame_bytes: 64 * 1024,
        }
    }
}

/// `agents/background_e2e.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackgroundManifest {
    /// The agent's name (informational; the file name decides).
    pub name: Option<String>,
    /// How often the agent heartbeats, ms.
    pub heartbeat_ms: u64,
    /// No heartbeat for this long: `stale`, ms.
    pub stale_after_ms: u64,
    /// Detached background runs at once; more wait in the queue.
    pub max_concurrent: usize,
    /// Niceness increment of background units.
    pub nice: i32,
    /// Finished background runs are deleted after this many days.
    pub retention_days: u64,
}

impl Default for BackgroundManifest {
    fn default() -> Self {
        Self {
            name: None,
            heartbeat_ms: 500,
            stale_after_ms: 5000,
            max_concurrent: 1,
            nice: 10,
            retention_days: 7,
        }
    }
}

/// An external agent: `agents/<name>.yaml` with `command:`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAgent {
    /// Name (defaults to the file name).
    #[serde(default)]
    pub name: String,
    /// Shell command; receives events as JSON lines on stdin.
    pub command: String,
    /// Event types to send (empty: all).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Every manifest, with defaults for those absent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentManifests {
    /// TestOrchestratorAgent.
    pub test_orchestrator: PlainManifest,
    /// LayerExecutorAgent.
    pub layer_executor: PlainManifest,
    /// BackgroundE2EAgent.
    pub background_e2e: BackgroundManifest,
    /// ProgressStreamerAgent.
    pub progress_streamer: ProgressStreamerManifest,
    /// ResourceManagerAgent.
    pub resource_manager: ResourceManagerManifest,
    /// External agents, by file name order.
    pub external: Vec<ExternalAgent>,
}

/// Load `<root>/agents/*.yaml`.
pub fn load_agents(root: &Path) -> Result<AgentManifests, ConfigError> {
    let mut out = AgentManifests::default();
    let dir = root.join("agents");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut sources = Sources::default();
    let mut diags = Vec::new();
    for file in files {
        let text = super::read_utf8(&file, "agent manifest").map_err(|e| {
            if let Some(d) = super::utf8_diagnostic(&e) {
                return ConfigError::single(d);
            }
            ConfigError::single(super::Diagnostic::in_file(
                &file,
                format!("cannot read agent manifest `{}`: {e}", file.display()),
            ))
        })?;
        let tree = node::parse(&mut sources, &file, text)?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out_of_range = check_ranges(&tree, &stem, &sources);
        if !out_of_range.is_empty() {
            diags.extend(out_of_range);
            continue;
        }
        let result = match stem.as_str() {
            "test_orchestrator" => {
                de::from_node(&tree, &sources).map(|m| out.test_orchestrator = m)
            }
            "layer_executor" => de::from_node(&tree, &sources).map(|m| out.layer_executor = m),
            "background_e2e" => de::from_node(&tree, &sources).map(|m| out.background_e2e = m),
            "progress_streamer" => {
                de::from_node(&tree, &sources).map(|m| out.progress_streamer = m)
            }
            "resource_manager" => de::from_node(&tree, &sources).map(|m| out.resource_manager = m),
            _ => de::from_node::<ExternalAgent>(&tree, &sources).map(|mut m| {
                if m.name.is_empty() {
                    m.name = stem.clone();
                }
                out.external.push(m)
            }),
        };
        if let Err(d) = result {
            diags.extend(d);
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(finish(diags, &sources))
    }
}

/// The numeric keys of each built-in manifest and their ranges.
pub(super) fn numeric_keys(stem: &str) -> &'static [(&'static str, Range)] {
    const COMMON: [(&str, Range); 2] = [
        ("heartbeat_ms", bounds::INTERVAL_MS),
        ("stale_after_ms", bounds::STALE_AFTER_MS),
    ];
    const RESOURCE_MANAGER: [(&str, Range); 5] = [
        COMMON[0],
        COMMON[1],
        ("sample_interval_ms", bounds::INTERVAL_MS),
        ("memory_pressure_percent", bounds::PRESSURE_PERCENT),
        ("bypass_window_ms", bounds::WAIT_MS),
    ];
    const PROGRESS_STREAMER: [(&str, Range); 6] = [
        COMMON[0],
        COMMON[1],
        ("max_clients", bounds::PARALLEL),
        ("client_queue", bounds::QUEUE),
        ("ring_size", bounds::QUEUE),
        ("max_frame_bytes", bounds::FRAME_BYTES),
    ];
    const BACKGROUND: [(&str, Range); 5] = [
        COMMON[0],
        COMMON[1],
        ("max_concurrent", bounds::PARALLEL),
        ("nice", bounds::NICE),
        ("retention_days", bounds::RETENTION_DAYS),
    ];
    match stem {
        "test_orchestrator" | "layer_executor" => &COMMON,
        "resource_manager" => &RESOURCE_MANAGER,
        "progress_streamer" => &PROGRESS_STREAMER,
        "background_e2e" => &BACKGROUND,
        _ => &[],
    }
}

/// Every numeric key of manifest `stem` outside its range, before serde reads the
/// manifest (whose fields are plain integers: serde alone would reject `-1` or a value
/// past `u64` without saying the range, and accept `0`). Non-numbers are left to serde.
fn check_ranges(tree: &Node, stem: &str, sources: &Sources) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (key, range) in numeric_keys(stem) {
        let Some(node) = tree.get(key) else { continue };
        let v = match node.value {
            Value::Int(i) => Number::Int(i.into()),
            Value::UInt(u) => Number::Int(u.into()),
            Value::Float(f) => Number::Float(f),
            _ => continue,
        };
        if let Err(e) = range.check(v) {
            let what = format!("`{key}` of agent `{stem}`");
            let d = bounds::diagnostic(sources, node.loc, &what, &e);
            diags.push(d);
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_absent_and_values_when_present() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_agents(dir.path())
                .unwrap()
                .resource_manager
                .sample_interval_ms,
            250
        );
        std::fs::create_dir(dir.path().join("agents")).unwrap();
        std::fs::write(
            dir.path().join("agents/resource_manager.yaml"),
            "sample_interval_ms: 100\nheartbeat_ms: 50\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("agents/notify.yaml"),
            "command: cat > /dev/null\nsubscribe: [run_finished]\n",
        )
        .unwrap();
        let m = load_agents(dir.path()).unwrap();
        assert_eq!(m.resource_manager.sample_interval_ms, 100);
        assert_eq!(m.resource_manager.common().heartbeat_ms, 50);
        assert_eq!(m.resource_manager.bypass_window_ms, 2000);
        assert_eq!(m.external[0].name, "notify");
    }

    #[test]
    fn unknown_key_is_located_with_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("agents")).unwrap();
        std::fs::write(
            dir.path().join("agents/background_e2e.yaml"),
            "nice: 5\nmax_concurent: 2\n",
        )
        .unwrap();
        let err = load_agents(dir.path()).unwrap_err();
        let text = err.to_string();
        assert_eq!((err.line(), err.column()), (Some(2), Some(1)), "{text}");
        assert!(text.contains("max_concurrent"), "{text}");
    }

    fn manifest_error(file: &str, yaml: &str) -> ConfigError {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("agents")).unwrap();
        std::fs::write(dir.path().join("agents").join(file), yaml).unwrap();
        load_agents(dir.path()).unwrap_err()
    }

    #[test]
    fn numbers_out_of_range_are_located_with_the_range() {
        let err = manifest_error("background_e2e.yaml", "nice: 5\nmax_concurrent: 0\n");
        assert_eq!((err.line(), err.column()), (Some(2), Some(17)), "{err}");
        assert_eq!(
            err.message(),
            "invalid `max_concurrent` of agent `background_e2e`: expected an integer from 1 to 100000, found `0`"
        );
        assert!(
            err.to_string().contains("= help: 0 would never start"),
            "{err}"
        );

        let err = manifest_error(
            "resource_manager.yaml",
            "heartbeat_ms: 18446744073709551616\nsample_interval_ms: -1\nmemory_pressure_percent: 101\n",
        );
        let messages: Vec<&str> = err
            .diagnostics()
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "invalid `heartbeat_ms` of agent `resource_manager`: expected a whole number of ms from 10 to 31536000000 (365 days), found `18446744073709551616`",
                "invalid `sample_interval_ms` of agent `resource_manager`: expected a whole number of ms from 10 to 31536000000 (365 days), found `-1`",
                "invalid `memory_pressure_percent` of agent `resource_manager`: expected a percentage from 0 to 100, found `101`",
            ]
        );

        let err = manifest_error(
            "progress_streamer.yaml",
            "client_queue: 4611686018427387904\n",
        );
        assert!(err.message().contains("from 1 to 10000000"), "{err}");
        let err = manifest_error("progress_streamer.yaml", "max_frame_bytes: 10\n");
        assert!(
            err.message().contains("from 1024 to 1073741824 (1 GiB)"),
            "{err}"
        );
        let err = manifest_error("background_e2e.yaml", "nice: -5\n");
        assert!(err.message().contains("from 0 to 19"), "{err}");
        let err = manifest_error("background_e2e.yaml", "retention_days: 400\n");
        assert!(err.message().contains("from 0 to 365"), "{err}");
        let err = manifest_error("layer_executor.yaml", "stale_after_ms: 0\n");
        assert!(err.message().contains("from 100 to"), "{err}");
    }

    #[test]
    fn every_numeric_field_has_a_range() {
        // Adding a numeric tunable without a range fails here: the defaults, serialized,
        // name every field.
        let m = AgentManifests::default();
        let manifests = [
            (
                "test_orchestrator",
                serde_json::to_value(&m.test_orchestrator).unwrap(),
            ),
            (
                "background_e2e",
                serde_json::to_value(&m.background_e2e).unwrap(),
            ),
            (
                "progress_streamer",
                serde_json::to_value(&m.progress_streamer).unwrap(),
            ),
            (
                "resource_manager",
                serde_json::to_value(&m.resource_manager).unwrap(),
            ),
        ];
        for (stem, value) in manifests {
            for (key, v) in value.as_object().unwrap() {
                if v.is_number() {
                    let range = numeric_keys(stem).iter().find(|(k, _)| k == key);
                    let (_, range) = range.unwrap_or_else(|| panic!("{stem}.{key} has no range"));
                    let n = Number::Float(v.as_f64().unwrap());
                    assert!(
                        range.contains(n),
                        "default {stem}.{key} = {v} is out of its range"
                    );
                }
            }
        }
    }

    #[test]
    fn the_project_manifests_are_in_range() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        load_agents(root).unwrap_or_else(|e| panic!("{e}"));
    }
}
