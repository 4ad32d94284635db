#!/usr/bin/env bash
# Detached background runs and services: how long `--queue-e2e` takes to return, how
# long a queued run takes to start and to finish a trivial layer (from its state.json
# times), and what a required service costs a run (a Python TCP server: started,
# probed, stopped) compared with the same run without it.
# Usage: bench/background_latency.sh [RUNS]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
cargo build --release --quiet
BIN=$PWD/target/release/runner
work=$(mktemp -d)
trap '"$BIN" --config "$work/layers.yaml" --kill-background x >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/store.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.close()
PY
cat > "$work/layers.yaml" <<YAML
services:
  store:
    start: "python3 store.py $port"
    ready: { tcp: "127.0.0.1:$port" }
categories:
  trivial: { command: "true" }
layers:
  - { name: plain, categories: [trivial] }
  - { name: with_service, categories: [trivial], required_services: [store] }
  - { name: e2e, background: true, categories: [trivial] }
YAML
mkdir -p "$work/agents"
echo "max_concurrent: 4" > "$work/agents/background_e2e.yaml"

python3 - "$BIN" "$work" "$RUNS" <<'PY'
import json, glob, statistics, subprocess, sys, time
from datetime import datetime
bin, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = ["--config", f"{work}/layers.yaml"]

def timed(args):
    t = time.perf_counter()
    out = subprocess.run([bin, *cfg, *args], capture_output=True, text=True, check=True)
    return (time.perf_counter() - t) * 1000, out.stdout

def stats(name, xs):
    print(f"{name}: median {statistics.median(xs):.1f} ms, min {min(xs):.1f} ms, max {max(xs):.1f} ms ({len(xs)} runs)")

ids, returns = [], []
for _ in range(runs):
    ms, out = timed(["--queue-e2e"])
    returns.append(ms)
    ids.append(out.strip().splitlines()[-1])
    time.sleep(0.3)  # let it finish: measure latency, not queueing
deadline = time.time() + 60
def states():
    return [json.load(open(f"{work}/.runner/background/{i}/state.json")) for i in ids]
while time.time() < deadline and any(s["status"] in ("queued", "running") for s in states()):
    time.sleep(0.1)
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000
stats("--queue-e2e returns", returns)
done = [s for s in states() if s["status"] == "passed"]
stats("queued -> running (worker up, slot taken)", [ts(s["started_at"]) - ts(s["created_at"]) for s in done])
stats("queued -> passed (1 trivial unit)", [ts(s["finished_at"]) - ts(s["created_at"]) for s in done])

plain = [timed(["--use-layers", "plain", "--progress-mode", "silent"])[0] for _ in range(runs)]
served = [timed(["--use-layers", "with_service", "--progress-mode", "silent"])[0] for _ in range(runs)]
stats("run without a service", plain)
stats("run with a started+stopped Python TCP service", served)
ev = []
for d in sorted(glob.glob(f"{work}/.runner/runs/*")):
    events = [json.loads(l) for l in open(f"{d}/events.jsonl")]
    t = {e["type"]: ts(e["ts"]) for e in events if e["type"].startswith("service_")}
    if "service_starting" in t and "service_stopped" in t:
        last = max(ts(e["ts"]) for e in events if e["type"] == "layer_finished")
        ev.append((t["service_ready"] - t["service_starting"], t["service_stopped"] - last))
stats("  service_starting -> service_ready", [a for a, _ in ev])
stats("  last layer_finished -> service_stopped", [b for _, b in ev])
PY
