//! Reading a listing: the tests that matched, the dynamic-library path and the
//! environment nextest gives a test, so a test runs under the runner as under nextest.

use std::path::PathBuf;
use std::sync::Arc;

use nextest_metadata::{
    PlatformLibdirSummary, RustBuildMetaSummary, RustNonTestBinaryKind, RustTestBinaryKind,
    RustTestSuiteSummary, TestListSummary,
};

use super::Test;

/// Every test of a listing that matched its filter, in binary-id then name order.
pub fn tests_of(summary: &TestListSummary) -> Vec<Test> {
    let meta = &summary.rust_build_meta;
    let dylib_paths = Arc::new(dylib_paths(meta));
    let mut out = Vec::new();
    for (id, suite) in &summary.rust_suites {
        let matched: Vec<_> = suite
            .test_cases
            .iter()
            .filter(|(_, case)| case.filter_match.is_match())
            .collect();
        if matched.is_empty() {
            continue;
        }
        let env = Arc::new(suite_env(meta, suite));
        for (name, case) in matched {
            out.push(Test {
                binary_id: id.as_str().to_string(),
                name: name.as_str().to_string(),
                binary_path: suite.binary.binary_path.clone().into_std_path_buf(),
                cwd: suite.cwd.clone().into_std_path_buf(),
                ignored: case.ignored,
                suite_env: Arc::clone(&env),
                dylib_paths: Arc::clone(&dylib_paths),
            });
        }
    }
    out
}

/// The directories nextest puts on the dynamic-library path, in its order: linked paths
/// that exist, each base output directory's `deps` and itself, then the rustc libdirs.
pub fn dylib_paths(meta: &RustBuildMetaSummary) -> Vec<PathBuf> {
    let target = meta.target_directory.as_std_path();
    let build = meta
        .build_directory
        .as_ref()
        .map(|b| b.as_std_path())
        .unwrap_or(target);
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for linked in &meta.linked_paths {
        let p = build.join(linked.as_std_path());
        if p.exists() {
            push(p);
        }
    }
    for base in &meta.base_output_directories {
        push(build.join(base.as_std_path()).join("deps"));
        push(target.join(base.as_std_path()));
    }
    if let Some(platforms) = &meta.platforms {
        let libdirs = std::iter::once(&platforms.host.libdir)
            .chain(platforms.targets.iter().map(|t| &t.libdir));
        for libdir in libdirs {
            if let PlatformLibdirSummary::Available { path } = libdir {
                push(path.clone().into_std_path_buf());
            }
        }
    }
    out
}

/// The environment nextest gives every test of `suite` (what does not depend on the test):
/// `NEXTEST=1`, `NEXTEST_EXECUTION_MODE`, `NEXTEST_BINARY_ID`, `CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, `CARGO_PKG_VERSION` (and `_MAJOR`, `_MINOR`, `_PATCH`, `_PRE`),
/// `OUT_DIR` and the build script's `rustc-env` variables when the package has a build
/// script, and `CARGO_BIN_EXE_<name>` / `NEXTEST_BIN_EXE_<name>` for integration tests
/// and benchmarks.
pub fn suite_env(
    meta: &RustBuildMetaSummary,
    suite: &RustTestSuiteSummary,
) -> Vec<(String, String)> {
    let bin = &suite.binary;
    let mut env: Vec<(String, String)> = vec![
        ("NEXTEST".into(), "1".into()),
        ("NEXTEST_EXECUTION_MODE".into(), "process-per-test".into()),
        ("NEXTEST_BINARY_ID".into(), bin.binary_id.as_str().into()),
        ("CARGO_MANIFEST_DIR".into(), suite.cwd.to_string()),
        ("CARGO_PKG_NAME".into(), suite.package_name.clone()),
    ];
    if let Some(version) = package_version(&bin.package_id) {
        let (major, minor, patch, pre) = version_parts(version);
        env.extend([
            ("CARGO_PKG_VERSION".into(), version.to_string()),
            ("CARGO_PKG_VERSION_MAJOR".into(), major.into()),
            ("CARGO_PKG_VERSION_MINOR".into(), minor.into()),
            ("CARGO_PKG_VERSION_PATCH".into(), patch.into()),
            ("CARGO_PKG_VERSION_PRE".into(), pre.into()),
        ]);
    }
    let target = meta.target_directory.as_std_path();
    let build = meta
        .build_directory
        .as_ref()
        .map(|b| b.as_std_path())
        .unwrap_or(target);
    if let Some(out_dir) = meta.build_script_out_dirs.get(&bin.package_id) {
        env.push((
            "OUT_DIR".into(),
            build.join(out_dir.as_std_path()).display().to_string(),
        ));
    }
    if let Some(info) = meta
        .build_script_info
        .as_ref()
        .and_then(|i| i.get(&bin.package_id))
    {
        env.extend(info.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let integration = bin.kind == RustTestBinaryKind::TEST || bin.kind == RustTestBinaryKind::BENCH;
    if integration && let Some(bins) = meta.non_test_binaries.get(&bin.package_id) {
        for b in bins
            .iter()
            .filter(|b| b.kind == RustNonTestBinaryKind::BIN_EXE)
        {
            let path = target.join(b.path.as_std_path()).display().to_string();
            env.push((format!("CARGO_BIN_EXE_{}", b.name), path.clone()));
            env.push((format!("NEXTEST_BIN_EXE_{}", b.name), path.clone()));
            if b.name.contains('-') {
                env.push((
                    format!("NEXTEST_BIN_EXE_{}", b.name.replace('-', "_")),
                    path,
                ));
            }
        }
    }
    env
}

/// The version in a cargo package id: `path+file:///p#name@1.2.3`, `path+file:///p/name#1.2.3`
/// or the old `name 1.2.3 (source)`.
pub fn package_version(package_id: &str) -> Option<&str> {
    if let Some((_, fragment)) = package_id.rsplit_once('#') {
        let v = fragment.rsplit_once('@').map_or(fragment, |(_, v)| v);
        return (!v.is_empty()).then_some(v);
    }
    package_id.split_whitespace().nth(1)
}

/// Major, minor, patch and pre-release of a semver version (build metadata dropped).
fn version_parts(version: &str) -> (&str, &str, &str, &str) {
    let version = version.split('+').next().unwrap_or_default();
    let (core, pre) = version.split_once('-').unwrap_or((version, ""));
    let mut parts = core.splitn(3, '.');
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next(), pre)
}

/// The dynamic-library path variable of this platform.
pub const DYLIB_PATH_VAR: &str = if cfg!(target_os = "macos") {
    "DYLD_FALLBACK_LIBRARY_PATH"
} else {
    "LD_LIBRARY_PATH"
};

/// The units of a nextest category in `layer` for its discovered `tests`.
///
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions_in_every_id_format() {
        assert_eq!(
            package_version("path+file:///w/app#app@0.3.1"),
            Some("0.3.1")
        );
        assert_eq!(package_version("path+file:///w/app#0.3.1"), Some("0.3.1"));
        assert_eq!(
            package_version("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0"),
            Some("1.0.0")
        );
        assert_eq!(
            package_version("app 0.3.1 (path+file:///w/app)"),
            Some("0.3.1")
        );
        assert_eq!(package_version("garbage"), None);
    }
}
