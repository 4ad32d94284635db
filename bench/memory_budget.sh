#!/usr/bin/env bash
# Memory budgets that hold: a suite of mixed-size Python units (100 to 900 MiB of
# touched memory) under a global budget. Reports
#   - the peak total RSS of the tests, measured independently of the runner (a monitor
#     scanning /proc every 20 ms), against the budget: it must never exceed it;
#   - the makespan against a lower bound of any packing of the units as they ran
#     (max of: sum of estimate x duration / budget, sum of durations / slots, the longest
#     unit; durations from the run's own test_finished events, since touching hundreds
#     of MiB takes seconds on a VM);
#   - the sampler's own cost: the runner's CPU time (RUSAGE_SELF, logged at the end of
#     every run) with sampling on and off (RUNNER_DISABLE_SAMPLING=1), on this suite and
#     on 8 idle units, and the sampler's own timing (logged by the resource manager).
# Usage: bench/memory_budget.sh [BUDGET_MB]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-2000}
cargo build --release --quiet
BIN=$PWD/target/release/runner

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/bench_mem.py" <<'PY'
import sys, time
mb, hold = int(sys.argv[2]), float(sys.argv[3])
block = b"x" * (mb << 20)
time.sleep(hold)
PY

# name size_mb hold_s count
SUITE="s100 100 1.5 8
s300 300 2.0 6
s600 600 2.5 4
s900 900 3.0 2"

{
  echo "version: 1"
  echo "execution: { max_memory_mb: $BUDGET }"
  echo "categories:"
  while read -r name mb hold count; do
    mkdir -p "$work/$name"
    for i in $(seq 1 "$count"); do : > "$work/$name/$i"; done
    # The estimate covers the interpreter (~20 MiB) on top of the block.
    echo "  $name: { command: \"python3 bench_mem.py {file} $mb $hold\", files: \"$name/*\", min_memory_mb: $((mb + 20)) }"
  done <<< "$SUITE"
  echo "  idle: { command: \"sleep 8\", files: \"idle/*\" }"
  echo "layers:"
  echo "  - { name: mixed, execution_mode: parallel, categories: [s100, s300, s600, s900] }"
  echo "  - { name: idle, categories: [idle] }"
} > "$work/layers.yaml"
mkdir -p "$work/idle"
for i in $(seq 1 8); do : > "$work/idle/$i"; done

# Independent monitor: the sum of RSS of every live bench_mem.py, every 20 ms.
cat > "$work/monitor.py" <<'PY'
import os, signal, sys, time
page = os.sysconf("SC_PAGE_SIZE")
peak, stop = 0, False
def done(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, done)
while not stop:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if b"bench_mem.py" not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
            total += int(open(f"/proc/{pid}/statm").read().split()[1]) * page
        except OSError:
            pass
    peak = max(peak, total)
    time.sleep(0.02)
open(sys.argv[1], "w").write(str(peak >> 20))
PY

own_usage() { # the runner's RUSAGE_SELF and the sampler's timing, from the newest run's log
  python3 - "$work" <<'PY'
import glob, json, sys
usage, sampler = None, None
for f in sorted(glob.glob(f"{sys.argv[1]}/logs/orchestration/runner*.log")):
    for line in open(f):
        e = json.loads(line).get("fields", {})
        if e.get("message") == "runner resource usage":
            usage = e
        if e.get("message") == "resource sampler cost":
            sampler = e
cpu = usage["user_ms"] + usage["system_ms"] if usage else float("nan")
s = (f" (sampler: {sampler['samples']} samples, mean {sampler['mean_us']} us, "
     f"max {sampler['max_us']} us, total {sampler['total_ms']} ms)") if sampler else ""
print(f"{cpu:.0f}{s}")
PY
}

run_suite() { # layer, extra env -> prints makespan, peak RSS of tests, runner CPU
  local layer=$1; shift
  rm -rf "$work/logs" "$work/.runner"
  python3 "$work/monitor.py" "$work/peak.txt" & local mon=$!
  local t0 t1
  t0=$(date +%s.%N)
  env "$@" "$BIN" --config "$work/layers.yaml" --use-layers "$layer" --jobs 8 --progress-mode simple \
    > "$work/out.txt" 2>&1 || { cat "$work/out.txt"; exit 1; }
  t1=$(date +%s.%N)
  kill -TERM "$mon"; wait "$mon" || true
  local seen
  seen=$(python3 - "$work" "$BUDGET" <<'PY'
import glob, json, re, sys
work, budget = sys.argv[1], int(sys.argv[2])
est = {}
for line in open(f"{work}/layers.yaml"):
    m = re.match(r"\s+(\w+): .*min_memory_mb: (\d+)", line)
    if m:
        est[m.group(1)] = int(m.group(2))
peak, area, work_s, longest = 0, 0.0, 0.0, 0.0
for f in glob.glob(f"{work}/.runner/runs/*/events.jsonl"):
    for line in open(f):
        e = json.loads(line)
        if e.get("type") == "resource_sample":
            peak = max(peak, e["used_memory_mb"])
        if e.get("type") == "test_finished":
            d = e["duration_ms"] / 1000
            area += est.get(e["unit"].split("/")[1], 0) * d
            work_s += d
            longest = max(longest, d)
print(peak, f"{max(area / budget, work_s / 8, longest):.2f}")
PY
)
  echo "$(echo "$t1 - $t0" | bc) $(cat "$work/peak.txt") $seen $(own_usage)"
}

echo "## mixed suite: 8x100 + 6x300 + 4x600 + 2x900 MiB (held 1.5 to 3 s), budget $BUDGET MiB, --jobs 8"
for mode in on off; do
  for run in 1 2; do
    if [ $mode = on ]; then r=$(run_suite mixed); else r=$(run_suite mixed RUNNER_DISABLE_SAMPLING=1); fi
    read -r wall peak sampled bound cpu rest <<< "$r"
    printf 'sampling %-3s run %d: makespan %.2f s, packing bound %s s (%.2fx), peak RSS of tests %s MiB (budget %s; runner saw %s), runner CPU %s ms%s\n' \
      "$mode" "$run" "$wall" "$bound" "$(echo "$wall / $bound" | bc -l)" "$peak" "$BUDGET" "$sampled" "$cpu" "${rest:+ $rest}"
    [ "$peak" -le "$BUDGET" ] || echo "  !! budget exceeded"
  done
done

echo
echo "## sampler cost alone: 8 idle units (sleep 8) at once"
for mode in on off; do
  if [ $mode = on ]; then r=$(run_suite idle); else r=$(run_suite idle RUNNER_DISABLE_SAMPLING=1); fi
  read -r wall peak sampled bound cpu rest <<< "$r"
  printf 'sampling %-3s: wall %.2f s, runner CPU %s ms%s\n' "$mode" "$wall" "$cpu" "${rest:+ $rest}"
done
