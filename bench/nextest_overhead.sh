#!/usr/bin/env bash
# The nextest unit kind against nextest itself: the same tests, the same machine, the
# same parallelism (the CPU count for both), alternating runs, builds done beforehand.
#
#   bench/nextest_overhead.sh [ROUNDS]    (default 5; medians are reported)
#
# Suites:
#   trivial  a generated crate with 1,000 trivial tests (one lib, ten modules)
#   real     layered-runner's own library tests, from a `git archive HEAD` snapshot
#            (a stable copy: the work tree may be mid-edit)
#   crate    a crate from crates.io: regex-syntax 0.8.5's library tests (no dependencies;
#            its published source is downloaded from static.crates.io)
#
# For each suite and round: `cargo nextest run -E <filter>` then `runner --use-layers
# bench` with one `nextest: {filter: <filter>}` category. Both include their discovery
# (a no-op cargo build and the listing) and print one line per test to /dev/null.
# Measured with bench/nextest_measure.py: wall clock for both; for the runner, its own
# CPU (not its children's) and its own peak RSS. The tests' CPU is the runner's
# children's CPU minus that of a `cargo nextest list` of the same filter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-5}
MEASURE="python3 $ROOT/bench/nextest_measure.py"

cargo build --release --quiet --bin runner
RUNNER=$ROOT/target/release/runner
command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null

work=$(mktemp -d /tmp/nextest-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=$work/target

# --- the suites --------------------------------------------------------------------
mkdir -p "$work/trivial/src"
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
(cd "$work/trivial" && cargo generate-lockfile --quiet)

mkdir -p "$work/real"
git archive HEAD | tar -x -C "$work/real"

curl -sSfL "https://static.crates.io/crates/regex-syntax/regex-syntax-0.8.5.crate" \
  | tar -xz -C "$work"
(cd "$work/regex-syntax-0.8.5" && printf '\n[workspace]\n' >> Cargo.toml && cargo generate-lockfile --quiet)

# suite name, crate dir, filter
SUITES=("trivial $work/trivial all()" "real $work/real kind(lib)" "crate $work/regex-syntax-0.8.5 kind(lib)")

for entry in "${SUITES[@]}"; do
  read -r name dir filter <<<"$entry"
  echo "building $name..." >&2
  (cd "$dir" && cargo nextest list -E "$filter" >/dev/null 2>"$work/build-$name.log") \
    || { cat "$work/build-$name.log" >&2; exit 1; }
  (cd "$dir" && cargo nextest list -E "$filter" 2>/dev/null | grep -c .) > "$work/count-$name"
  mkdir -p "$work/project-$name"
  cat > "$work/project-$name/layers.yaml" <<YAML
categories:
  tests:
    cwd: "$dir"
    nextest: {filter: "$filter"}
layers:
  - {name: bench, categories: [tests], fail_fast: disabled}
YAML
done

# --- the measurements --------------------------------------------------------------
results=$work/results.jsonl
: > "$results"
for entry in "${SUITES[@]}"; do
  read -r name dir filter <<<"$entry"
  # One warm-up of each (page cache, cargo's fingerprints).
  $MEASURE --cwd "$dir" -- cargo nextest run -E "$filter" --no-fail-fast >/dev/null
  $MEASURE --cwd "$work/project-$name" -- "$RUNNER" --use-layers bench >/dev/null
  for round in $(seq 1 "$ROUNDS"); do
    echo "$name round $round/$ROUNDS" >&2
    n=$($MEASURE --cwd "$dir" -- cargo nextest run -E "$filter" --no-fail-fast)
    echo "{\"suite\":\"$name\",\"tool\":\"nextest\",\"m\":$n}" >> "$results"
    rm -rf "$work/project-$name/.runner" "$work/project-$name/logs"
    r=$($MEASURE --cwd "$work/project-$name" -- "$RUNNER" --use-layers bench)
    echo "{\"suite\":\"$name\",\"tool\":\"runner\",\"m\":$r}" >> "$results"
    l=$($MEASURE --cwd "$dir" -- cargo nextest list -E "$filter" --message-format json --run-ignored all)
    echo "{\"suite\":\"$name\",\"tool\":\"list\",\"m\":$l}" >> "$results"
  done
done

python3 - "$results" "$ROUNDS" "$work" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
counts = lambda suite: open(f"{sys.argv[3]}/count-{suite}").read().strip()
med = lambda xs: statistics.median(xs)
print(f"median of {sys.argv[2]} alternating rounds, {__import__('os').cpu_count()} CPUs\n")
print("| suite | tests | nextest wall | runner wall | ratio runner/nextest | runner CPU (own) | tests' CPU | runner CPU / tests' CPU | runner peak RSS |")
print("|---|---|---|---|---|---|---|---|---|")
for suite in dict.fromkeys(r["suite"] for r in rows):
    get = lambda tool, k: [r["m"][k] for r in rows if r["suite"] == suite and r["tool"] == tool]
    bad = [r for r in rows if r["suite"] == suite and r["tool"] != "list" and r["m"]["exit"] != 0]
    nw, rw = med(get("nextest", "wall_s")), med(get("runner", "wall_s"))
    own = med(get("runner", "self_cpu_s"))
    tests_cpu = med(get("runner", "child_cpu_s")) - med(
        [a + b for a, b in zip(get("list", "self_cpu_s"), get("list", "child_cpu_s"))])
    rss = med(get("runner", "self_rss_kb")) / 1024
    count = counts(suite)
    note = f" ({len(bad)} non-zero exits)" if bad else ""
    print(f"| {suite}{note} | {count} | {nw:.2f} s | {rw:.2f} s | {rw / nw:.2f} | {own:.2f} s | "
          f"{tests_cpu:.2f} s | {100 * own / tests_cpu:.1f} % | {rss:.1f} MiB |")
PY
