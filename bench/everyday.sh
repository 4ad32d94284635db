#!/usr/bin/env bash
# Everyday commands at scale, on a plan of 10,000 command units (one per file):
#  1. `--list` of the 10,000 units (load, glob, plan, history, print): target < 0.3 s;
#  2. `-E` parsing and matching on the same plan: `--list` with an expression that keeps
#     every unit (so the output is the same) against `--list` without: target < 5 %;
#  3. `--html` of a run of the 10,000 units (1 % failing, with output): its size,
#     target < 5 MB.
# Usage: bench/everyday.sh [RUNS]  (default 7; medians are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/runner
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

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
timed() { # prints seconds of one invocation of "$@" (stdout discarded)
    local s e
    s=$(date +%s.%N); "$@" > /dev/null 2>&1 || true; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}

EXPR='all() & !test(=nope) & (layer(one) | category(~c)) & !(kind(nextest) | test(/^x{3}$/))'
[ "$("$BIN" --use-layers one --list --json | grep -c '"id"')" = 10000 ] || { echo "plan is not 10,000 units"; exit 1; }
[ "$("$BIN" --use-layers one --list --json -E "$EXPR" | grep -c '"id"')" = 10000 ] || { echo "the expression must keep every unit"; exit 1; }

plain=(); filtered=()
for _ in $(seq "$RUNS"); do
    # Interleaved, so that load on the machine hits both alike.
    plain+=("$(timed "$BIN" --use-layers one --list)")
    filtered+=("$(timed "$BIN" --use-layers one --list -E "$EXPR")")
done
p=$(printf '%s\n' "${plain[@]}" | median)
f=$(printf '%s\n' "${filtered[@]}" | median)
printf 'list of 10,000 units: median %.3f s (min %.3f, max %.3f)\n' "$p" \
    "$(printf '%s\n' "${plain[@]}" | sort -n | head -1)" "$(printf '%s\n' "${plain[@]}" | sort -n | tail -1)"
printf 'list with -E:          median %.3f s; ratio %.3f\n' "$f" "$(echo "$f / $p" | bc -l)"

start=$(date +%s.%N)
"$BIN" --use-layers one --jobs 2 --progress-mode silent --html report.html > /dev/null 2>&1 || true
end=$(date +%s.%N)
size=$(stat -c %s report.html)
printf 'run of 10,000 units (100 failing): %.1f s; HTML report %d bytes (%.2f MB)\n' \
    "$(echo "$end - $start" | bc -l)" "$size" "$(echo "$size / 1000000" | bc -l)"
grep -c 'class="bar ' report.html | xargs printf 'timeline bars: %s\n'
