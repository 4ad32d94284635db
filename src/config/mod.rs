//! Configuration: `layers.yaml`, environment overlays, agent manifests, validation.
//!
//! Loading happens in passes: YAML is read into a location-carrying tree, environment
//! overlays are deep-merged onto it, the merged tree is deserialized into raw serde
//! structs (unknown keys rejected), and the raw structs are validated into the domain
//! types of [`model`]. Every error carries the file, line and column it is about.

pub mod model;

pub use model::*;
