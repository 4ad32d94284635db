#!/usr/bin/env bash
# History-driven scheduling against nextest's name order: wall clock, and the runner's
# makespan against its lower bound. Same tests, same machine, same slots (2), builds
# done beforehand, alternating runs.
#
#   bench/scheduling.sh [ROUNDS]    (default 5; medians are reported)
#
# Suites:
#   skewed  a generated crate: 200 tests of ~10 ms (t_000..t_199) and three long ones
#           sorted last by name (zz_0: 4 s, zz_1 and zz_2: 0.5 s). Name order runs the
#           short tests first and leaves zz_0 alone at the end; longest-first starts it
#           at once and fills the other slot with everything else. (Long tests that
#           split evenly over the slots, e.g. four of 2 s on two slots, leave nothing
#           to gain: name order is then already optimal.)
#   real    layered-runner's own library tests (`kind(lib)`), from a `git archive
#           HEAD` snapshot (a stable copy: the work tree may be mid-edit).
#
# For each suite: one warm-up of each tool (the runner's fills its history), then per
# round `cargo nextest run -E <filter> --test-threads 2` and `runner --use-layers bench
# --jobs 2` with one `nextest: {filter: <filter>}` category. Both include discovery (a
# no-op cargo build and the listing). Wall clock by bench/nextest_measure.py. The
# runner's makespan is its layer's `duration_ms` (first start to last finish); the lower
# bound is max(total work / 2, longest unit), from the same run's `test_finished` events.
# The slot time left idle is split in two: while units were still waiting to start
# (dispatch: the time between one unit's end and the next one's start, the same whatever
# the order) and after the last unit started (the tail, which the order decides).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-5}
SLOTS=2
MEASURE="python3 $ROOT/bench/nextest_measure.py"

cargo build --release --quiet --bin runner
RUNNER=$ROOT/target/release/runner
command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null

work=$(mktemp -d /tmp/scheduling-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=$work/target

# --- the suites --------------------------------------------------------------------
mkdir -p "$work/skewed/src"
cat > "$work/skewed/Cargo.toml" <<'TOML'
[package]
name = "skewed"
version = "0.1.0"
edition = "2021"
[workspace]
TOML
python3 - "$work/skewed/src/lib.rs" <<'PY'
import sys
out = ["#[cfg(test)]\nmod tests {",
       "    fn work(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)); }"]
for t in range(200):
    out.append(f"    #[test]\n    fn t_{t:03}() {{ work(10); }}")
for name, ms in [("zz_0", 4000), ("zz_1", 500), ("zz_2", 500)]:
    out.append(f"    #[test]\n    fn {name}() {{ work({ms}); }}")
out.append("}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
(cd "$work/skewed" && cargo generate-lockfile --quiet)

mkdir -p "$work/real"
git archive HEAD | tar -x -C "$work/real"

# suite name, crate dir, filter
SUITES=("skewed $work/skewed all()" "real $work/real kind(lib)")

for entry in "${SUITES[@]}"; do
  read -r name dir filter <<<"$entry"
  echo "building $name..." >&2
  (cd "$dir" && cargo nextest list -E "$filter" >/dev/null 2>"$work/build-$name.log") \
    || { cat "$work/build-$name.log" >&2; exit 1; }
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

# The runner's makespan, total work and longest unit of its newest run, as JSON.
makespan() {
  python3 - "$1" <<'PY'
import json, pathlib, sys
runs = sorted(pathlib.Path(sys.argv[1], ".runner", "runs").iterdir(),
              key=lambda d: json.loads(open(d / "events.jsonl").readline())["ts"])
events = [json.loads(l) for l in open(runs[-1] / "events.jsonl")]
finished = [e["duration_ms"] for e in events if e["type"] == "test_finished"]
layer = next(e for e in events if e["type"] == "layer_finished")
# Slot-time idle (2 slots) between the first start and the last end, before and after
# the last start, from the events' timestamps.
from datetime import datetime
at = lambda e: datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() * 1000
marks = sorted((at(e), 1 if e["type"] == "test_started" else -1)
               for e in events if e["type"] in ("test_started", "test_finished"))
last_start = max(t for t, d in marks if d == 1)
running, prev, dispatch, tail = 0, marks[0][0], 0.0, 0.0
for t, d in marks:
    idle = max(0, 2 - running) * (t - prev)
    if t <= last_start:
        dispatch += idle
    else:
        tail += idle
    running, prev = running + d, t
print(json.dumps({"makespan_ms": layer["duration_ms"], "work_ms": sum(finished),
                  "longest_ms": max(finished), "units": len(finished),
                  "dispatch_idle_ms": dispatch, "tail_idle_ms": tail}))
PY
}

# --- the measurements --------------------------------------------------------------
results=$work/results.jsonl
: > "$results"
for entry in "${SUITES[@]}"; do
  read -r name dir filter <<<"$entry"
  project=$work/project-$name
  # Warm-up: page cache, cargo's fingerprints, and the runner's history.
  $MEASURE --cwd "$dir" -- cargo nextest run -E "$filter" --no-fail-fast --test-threads $SLOTS >/dev/null
  $MEASURE --cwd "$project" -- "$RUNNER" --use-layers bench --jobs $SLOTS >/dev/null
  for round in $(seq 1 "$ROUNDS"); do
    echo "$name round $round/$ROUNDS" >&2
    n=$($MEASURE --cwd "$dir" -- cargo nextest run -E "$filter" --no-fail-fast --test-threads $SLOTS)
    echo "{\"suite\":\"$name\",\"tool\":\"nextest\",\"m\":$n}" >> "$results"
    r=$($MEASURE --cwd "$project" -- "$RUNNER" --use-layers bench --jobs $SLOTS)
    echo "{\"suite\":\"$name\",\"tool\":\"runner\",\"m\":$r,\"s\":$(makespan "$project")}" >> "$results"
  done
done

python3 - "$results" "$ROUNDS" "$SLOTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
slots = int(sys.argv[3])
med = statistics.median
print(f"median of {sys.argv[2]} alternating rounds, {slots} slots, {__import__('os').cpu_count()} CPUs\n")
print("| suite | tests | nextest wall | runner wall | ratio runner/nextest | runner makespan | lower bound | makespan / bound "
      "| idle between units (per unit) | idle in the tail | makespan less dispatch idle / bound |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for suite in dict.fromkeys(r["suite"] for r in rows):
    mine = [r for r in rows if r["suite"] == suite]
    bad = [r for r in mine if r["m"]["exit"] != 0]
    nw = med([r["m"]["wall_s"] for r in mine if r["tool"] == "nextest"])
    rw = med([r["m"]["wall_s"] for r in mine if r["tool"] == "runner"])
    s = [r["s"] for r in mine if r["tool"] == "runner"]
    span = med([x["makespan_ms"] for x in s]) / 1000
    bound = med([max(x["work_ms"] / slots, x["longest_ms"]) for x in s]) / 1000
    ratio = med([x["makespan_ms"] / max(x["work_ms"] / slots, x["longest_ms"]) for x in s])
    dispatch = med([x["dispatch_idle_ms"] for x in s]) / 1000
    tail = med([x["tail_idle_ms"] for x in s]) / 1000
    ordered = med([(x["makespan_ms"] - x["dispatch_idle_ms"] / slots)
                   / max(x["work_ms"] / slots, x["longest_ms"]) for x in s])
    note = f" ({len(bad)} non-zero exits)" if bad else ""
    print(f"| {suite}{note} | {s[0]['units']} | {nw:.2f} s | {rw:.2f} s | {rw / nw:.2f} | "
          f"{span:.2f} s | {bound:.2f} s | {ratio:.2f} | {dispatch:.2f} s ({1000 * dispatch / s[0]['units']:.1f} ms) "
          f"| {tail:.2f} s | {ordered:.2f} |")
PY
