#!/usr/bin/env bash
# Scale of plans and runs in layers, and how fast a big run stops:
#  1. 1,000 chained one-unit layers vs one layer of the same 1,000 units (`--jobs 1`),
#     and vs the same command lines run one after another by a shell loop: the runner's
#     overhead for layers, and in all;
#  2. --show-layers on 20,000 chained layers (load, validate, plan);
#  3. SIGTERM to a run of 20,000 chained layers after 4 s: seconds until it has exited
#     (its reports written);
#  4. hybrid mode, 2 slots, a fast layer beside a background layer with 4 units of 2 s:
#     when the fast unit starts after the run starts.
# Usage: bench/scale_layers.sh [RUNS]  (default 3; medians are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --quiet
BIN=$PWD/target/release/runner
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

python3 - <<'PY'
for n in (1000, 20000):
    out = ["version: 1", "categories:", '  c: { command: "true" }', "layers:"]
    for i in range(n):
        out.append(f"  - name: l{i}\n    categories: [c]\n    execution_order: {i}")
        if i:
            out.append(f"    depends_on: [l{i-1}]")
    open(f"chain{n}.yaml", "w").write("\n".join(out) + "\n")
import os
os.makedirs("t", exist_ok=True)
for i in range(1000):
    open(f"t/u{i:04}.t", "w").close()
open("flat1000.yaml", "w").write(
    'version: 1\ncategories:\n  c: { command: "true {file}", files: "t/*.t" }\n'
    "layers:\n  - name: one\n    categories: [c]\n")
open("hybrid.yaml", "w").write("""version: 1
categories:
  quick: { command: "true" }
  e2e_a: { command: "sleep 2" }
  e2e_b: { command: "sleep 2" }
  e2e_c: { command: "sleep 2" }
  e2e_d: { command: "sleep 2" }
layers:
  - name: fast
    categories: [quick]
  - name: e2e
    background: true
    execution_mode: parallel
    categories: [e2e_a, e2e_b, e2e_c, e2e_d]
""")
PY

python3 - "$BIN" "$RUNS" <<'PY'
import json, os, signal, statistics, subprocess, sys, time, glob
from datetime import datetime
bin, runs = sys.argv[1], int(sys.argv[2])

def wall(args):
    t = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t

def med(xs):
    return statistics.median(xs)

loop = [wall(["sh", "-c", "for i in $(seq 1000); do sh -c true; done"]) for _ in range(runs)]
chain, flat = [], []
for _ in range(runs):
    chain.append(wall([bin, "--config", "chain1000.yaml", "--use-layers", "--jobs", "1", "--progress-mode", "silent"]))
    flat.append(wall([bin, "--config", "flat1000.yaml", "--use-layers", "--jobs", "1", "--progress-mode", "silent"]))
print("## 1,000 one-unit layers in a chain")
print(f"shell loop of the same command lines: median {med(loop):.2f} s")
print(f"one layer of 1,000 units (--jobs 1):  median {med(flat):.2f} s")
print(f"1,000 chained layers (--jobs 1):      median {med(chain):.2f} s")
print(f"overhead of layers (chain - one layer): {med(chain) - med(flat):+.2f} s;"
      f" overhead in all (chain - shell loop): {med(chain) - med(loop):+.2f} s")

show = [wall([bin, "--config", "chain20000.yaml", "--show-layers"]) for _ in range(runs)]
print("\n## --show-layers on 20,000 chained layers")
print(f"median {med(show):.2f} s (min {min(show):.2f}, max {max(show):.2f})")

stops = []
for _ in range(runs):
    p = subprocess.Popen([bin, "--config", "chain20000.yaml", "--use-layers", "--progress-mode", "silent"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    t = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    rc = p.wait()
    stops.append(time.perf_counter() - t)
    assert rc == 130, rc
print("\n## SIGTERM to a run of 20,000 chained layers")
print(f"exited (130, reports written) after: median {med(stops):.2f} s (max {max(stops):.2f})")

lat = []
for _ in range(runs):
    subprocess.run([bin, "--config", "hybrid.yaml", "--execution-mode", "hybrid", "--jobs", "2",
                    "--progress-mode", "silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = sorted(glob.glob(".runner/runs/*/"), key=os.path.getmtime)[-1]
    ev = [json.loads(l) for l in open(run + "events.jsonl")]
    ts = lambda e: datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
    start = ts(ev[0])
    quick = next(e for e in ev if e["type"] == "test_started" and e["unit"] == "fast/quick/quick")
    lat.append((ts(quick) - start) * 1000)
print("\n## hybrid, 2 slots: the fast unit's start after run_started (4 background units of 2 s)")
print(f"median {med(lat):.0f} ms (max {max(lat):.0f} ms)")
PY
