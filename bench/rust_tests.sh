#!/usr/bin/env bash
# 1,000 trivial Rust tests: the runner against a bare `xargs -P2` exec of the test binary.
# A generated crate (ten modules of 100 one-line tests) is built once. Then, alternating,
# REPEAT rounds (default 3):
#   - bare: `xargs -P2` runs `<test binary> --exact <name>` for every test;
#   - runner: `runner --use-layers bench --jobs 2` with one `nextest:` category;
#   - nextest: `cargo-nextest nextest run --test-threads 2` of the same crate.
# Wall-clock: the bare run's elapsed time against the runner's layer `duration_ms` (the
# tests' execution, listing excluded). The runner's own CPU per test is `runner_cost`
# (user + system, children excluded) of the run's summary.json divided by the tests;
# it includes the run's planning and listing bookkeeping, so it is an upper bound.
# nextest's own CPU is that of the cargo-nextest process (all its threads; cargo, the
# test binaries' listing and the tests are its children and excluded), read by
# bench/nextest_measure.py the same way. It includes nextest's own listing of the
# binaries, which the runner leaves to its `cargo nextest list` child.
# Usage: bench/rust_tests.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-3}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
[ -n "${RUNNER_BIN:-}" ] || cargo build --release --quiet --bin runner
RUNNER=${RUNNER_BIN:-$TARGET/release/runner}
command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null

work=$(mktemp -d /tmp/rust-tests-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/trivial/src" "$work/project"
cat > "$work/trivial/Cargo.toml" <<'TOML'
[package]
name = "trivial"
version = "0.1.0"
edition = "2021"
[workspace]
TOML
python3 - "$work/trivial/src/lib.rs" <<'PY'
import sys
out = []
for m in range(10):
    out.append(f"#[cfg(test)]\nmod m{m} {{")
    for t in range(100):
        out.append(f"    #[test]\n    fn t{t:03}() {{ assert_eq!(std::hint::black_box({t}) + 1, {t + 1}); }}")
    out.append("}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
export CARGO_TARGET_DIR=$work/target
(cd "$work/trivial" && cargo generate-lockfile --quiet && cargo nextest list >/dev/null 2>&1)
BINARY=$(cd "$work/trivial" && cargo test --no-run --message-format json 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]: print(m["executable"])' | head -1)
"$BINARY" --list --format terse | sed -n 's/: test$//p' > "$work/names"
TESTS=$(wc -l < "$work/names")
cat > "$work/project/layers.yaml" <<YAML
categories:
  tests:
    cwd: "$work/trivial"
    nextest: {filter: "all()"}
layers:
  - {name: bench, categories: [tests], fail_fast: disabled}
YAML

bare() {
    local t0 t1
    t0=$(date +%s%N)
    xargs -P2 -I{} "$BINARY" --exact {} --quiet < "$work/names" > /dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}
runner() {
    rm -rf "$work/project/.runner"
    (cd "$work/project" && "$RUNNER" --use-layers bench --jobs 2 --progress-mode simple >/dev/null 2>&1) || true
    python3 -c 'import json,glob,sys
run = sorted(glob.glob(sys.argv[1] + "/.runner/runs/*/"))[-1]
ms = [json.loads(l)["duration_ms"] for l in open(run + "events.jsonl") if "\"layer_finished\"" in l][-1]
s = json.load(open(run + "summary.json"))
c = s.get("runner_cost") or s.get("state", {}).get("runner_cost")
print(ms, c["user_ms"] + c["system_ms"], c["peak_rss_kb"])' "$work/project"
}

NEXTEST_BIN=$(command -v cargo-nextest)
nextest() {
    python3 bench/nextest_measure.py --cwd "$work/trivial" -- \
        "$NEXTEST_BIN" nextest run --test-threads 2 --no-fail-fast |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["self_cpu_s"] * 1000))'
}

runner >/dev/null; bare >/dev/null; nextest >/dev/null   # warm-up
b=(); r=(); cpu=(); rss=(); nx=()
for i in $(seq 1 "$REPEAT"); do
    bm=$(bare); read -r rm rc rk < <(runner)
    nm=$(nextest)
    b+=("$bm"); r+=("$rm"); cpu+=("$rc"); rss+=("$rk"); nx+=("$nm")
    echo "round $i: bare ${bm} ms, runner layer ${rm} ms, runner own CPU ${rc} ms, peak RSS ${rk} KiB, nextest own CPU ${nm} ms" >&2
done
python3 - "$TESTS" "${b[*]}" "${r[*]}" "${cpu[*]}" "${rss[*]}" "${nx[*]}" <<'PY'
import statistics as st, sys
n = int(sys.argv[1]); b, r, c, k, x = ([float(v) for v in a.split()] for a in sys.argv[2:7])
print(f"{n} tests, medians of {len(b)} alternating rounds")
print(f"bare xargs -P2 {st.median(b):.0f} ms   runner layer {st.median(r):.0f} ms   ratio {st.median(r) / st.median(b):.2f} (per round {[round(y / x, 2) for x, y in zip(b, r)]})")
print(f"runner own CPU {st.median(c):.0f} ms = {st.median(c) / n:.3f} ms per test   peak RSS {st.median(k) / 1024:.1f} MiB")
print(f"nextest own CPU {st.median(x):.0f} ms = {st.median(x) / n:.3f} ms per test   runner / nextest {st.median(c) / st.median(x):.2f} (per round {[round(q / p, 2) for p, q in zip(x, c)]})")
PY
