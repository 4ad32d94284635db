#!/usr/bin/env bash
# Everyday commands at scale, on a plan of 10,000 command units (one per file):
#  1. `--list` of the 10,000 units (load, glob, plan, history, print): target < 0.3 s;
#  2. `-E` parsing and matching on the same plan: `--list` with an expression that keeps
#     every unit (so the output is the same) against `--list` without: target < 5 %;
#  3. `--html` of a run of the 10,000 units (1 % failing, with output): its size,
#     target < 5 MB.
# Usage: bench/everyday.sh [RUNS]  (default 7; medians are printed).
#   RUNNER_BIN=path/to/runner bench/everyday.sh   measures that binary instead of a
#   fresh release build (e.g. a debug build: an upper bound).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
if [ -z "${RUNNER_BIN:-}" ]; then
    cargo build --release --quiet
fi
BIN=${RUNNER_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/runner}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

python3 - <<'PY'
import os
os.makedirs("t", exist_ok=True)
for i in range(10000):
    body = "echo 'assertion failed: expected 3, got 4'; exit 1\n" if i % 100 == 7 else ""
    with open(f"t/u{i:05}.sh", "w") as f:
        f.write(body)
open("layers.yaml", "w").write(
    'version: 1\ncategories:\n  c: { command: "sh {file}", files: "t/*.sh" }\n'
    "layers:\n  - name: one\n    fail_fast: disabled\n    categories: [c]\n")
PY


EXPR='all() & !test(=nope) & (layer(one) | category(~c)) & !(kind(nextest) | test(/^x{3}$/))'
[ "$("$BIN" --use-layers one --list --json | grep -c '"id"')" = 10000 ] || { echo "plan is not 10,000 units"; exit 1; }
[ "$("$BIN" --use-layers one --list --json -E "$EXPR" 2>/dev/null | grep -c '"id"')" = 10000 ] || { echo "the expression must keep every unit"; exit 1; }

# Wall time and the runner's own CPU time (user + system, from getrusage of the
# child: far less disturbed by other load on a shared machine than wall time).
BIN="$BIN" EXPR="$EXPR" RUNS="$RUNS" python3 - <<'PY'
import os, resource, statistics, subprocess, time
bin, expr, runs = os.environ["BIN"], os.environ["EXPR"], int(os.environ["RUNS"])
def one(args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([bin, "--use-layers", "one", "--list", *args],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu
plain, filtered = [], []
for _ in range(runs):  # interleaved: load on the machine hits both alike
    plain.append(one([]))
    filtered.append(one(["-E", expr]))
med = lambda xs, i: statistics.median(x[i] for x in xs)
print(f"list of 10,000 units: wall median {med(plain, 0):.3f} s "
      f"(min {min(x[0] for x in plain):.3f}, max {max(x[0] for x in plain):.3f}); "
      f"CPU median {med(plain, 1):.3f} s")
print(f"list with -E:         wall median {med(filtered, 0):.3f} s; CPU median {med(filtered, 1):.3f} s; "
      f"CPU ratio {med(filtered, 1) / med(plain, 1):.3f}, wall ratio {med(filtered, 0) / med(plain, 0):.3f}")
PY

start=$(date +%s.%N)
"$BIN" --use-layers one --jobs 2 --progress-mode silent --html report.html > /dev/null 2>&1 || true
end=$(date +%s.%N)
size=$(stat -c %s report.html)
printf 'run of 10,000 units (100 failing): %.1f s; HTML report %d bytes (%.2f MB)\n' \
    "$(echo "$end - $start" | bc -l)" "$size" "$(echo "$size / 1000000" | bc -l)"
grep -o 'class="bar ' report.html | wc -l | xargs printf 'timeline bars: %s\n'
