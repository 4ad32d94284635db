#!/usr/bin/env bash
# 100 WebSocket viewers against none: what live fan-out costs a run.
# A run of UNITS `true` units (2 slots), once with the progress server and VIEWERS
# clients following it (one process, examples/ws_fanout.rs, every client reading every
# event until `run_finished`), once with the server and no client; alternating, REPEAT
# rounds (default 3), medians. A `gate` layer holds the run until every viewer has its
# snapshot, so the measured layer is streamed live from its first event. Wall-clock is
# the UNITS layer's `duration_ms`; the viewers run on the same machine, so their CPU
# competes with the units' (the ratio includes it).
# VIEWER_NICE=19 runs the viewers at that nice level (they then get only the CPU the
# run leaves, as viewers on other machines would). The viewers' own CPU is printed.
# The viewers ask for batches (`batch=1`, one message per server tick), as the built-in
# viewer and `runner watch` do; VIEWER_BATCH=0 makes them take one message per event.
# Usage: bench/viewers.sh [VIEWERS] [UNITS] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
VIEWERS=${1:-100}
UNITS=${2:-2000}
REPEAT=${3:-3}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${RUNNER_BIN:-}" ]; then
    cargo build --release --quiet
    cargo build --release --quiet --example ws_fanout
fi
BIN=${RUNNER_BIN:-$TARGET/release/runner}
CLIENT=${CLIENT_BIN:-$TARGET/release/examples/ws_fanout}
[ -x "$CLIENT" ] || { echo "no viewer client at $CLIENT: cargo build --release --example ws_fanout" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/p/t"
for i in $(seq 1 "$UNITS"); do : > "$work/p/t/u$i.sh"; done
cat > "$work/p/layers.yaml" <<'YAML'
version: 1
categories:
  gate: { command: "while [ ! -e gate ]; do sleep 0.01; done" }
  many: { command: "true {file}", files: ["t/*.sh"] }
layers:
  - { name: gate, categories: [gate] }
  - { name: main, categories: [many] }
YAML

latest() { ls -d "$work"/p/.runner/runs/*/ 2>/dev/null | sort | tail -1; }

# run MODE (none | viewers): prints "layer_ms runner_cpu_ms events_per_viewer resyncs p50_ms p99_ms viewers_cpu_s".
run() {
    local mode=$1 before
    rm -f "$work/p/gate"
    before=$(ls "$work/p/.runner/runs" 2>/dev/null | wc -l || true)
    (cd "$work/p" && "$BIN" --use-layers --progress-mode simple --websocket-addr 127.0.0.1:0 >/dev/null 2>&1) &
    local pid=$! url="" i=0 stats="- 0 - - -"
    while [ -z "$url" ]; do
        url=$(python3 -c 'import json,glob,sys
runs = sorted(glob.glob(sys.argv[1] + "/.runner/runs/*/run.json"))
if len(runs) > int(sys.argv[2]): print(json.load(open(runs[-1])).get("progress_url", ""))' "$work/p" "$before" 2>/dev/null || true)
        i=$((i + 1)); [ $i -gt 2000 ] && { echo "no progress_url" >&2; exit 1; }
        sleep 0.005
    done
    if [ "$mode" = viewers ]; then
        stats=$(/usr/bin/time -f '%U %S' -o "$work/client_time" nice -n "${VIEWER_NICE:-0}" \
            "$CLIENT" "${url/http:/ws:}ws$query" "$VIEWERS" "$work/p/gate" | python3 -c 'import json,sys
j = json.load(sys.stdin); u, s = open(sys.argv[1]).read().split()[-2:]
print(j["events_min"], j["resyncs"], j["latency_ms_p50"], j["latency_ms_p99"], round(float(u) + float(s), 2))' "$work/client_time")
    else
        sleep 0.2; : > "$work/p/gate"
    fi
    wait "$pid" || true
    local ms
    ms=$(python3 -c 'import json,sys
c = json.load(open(sys.argv[1] + "summary.json")).get("runner_cost") or {}
for l in open(sys.argv[1] + "events.jsonl"):
    e = json.loads(l)
    if e["type"] == "layer_finished" and e["layer"] == "main":
        print(e["duration_ms"], c.get("user_ms", 0) + c.get("system_ms", 0))' "$(latest)")
    echo "$ms $stats"
}

query=""
[ "${VIEWER_BATCH:-1}" = 1 ] && query="?batch=1"
none=(); viewers=(); none_cpu=(); viewers_cpu=()
for r in $(seq 1 "$REPEAT"); do
    read -r m mc _ _ _ _ _ < <(run none); none+=("$m"); none_cpu+=("$mc")
    read -r v vc ev rs p50 p99 cpu < <(run viewers); viewers+=("$v"); viewers_cpu+=("$vc")
    echo "round $r: no viewers ${m} ms (runner CPU ${mc} ms), $VIEWERS viewers ${v} ms (runner CPU ${vc} ms; events per viewer $ev, resyncs $rs, latency p50 $p50 ms p99 $p99 ms, viewers' CPU $cpu s)" >&2
done
python3 - "${none[*]}" "${viewers[*]}" "${none_cpu[*]}" "${viewers_cpu[*]}" <<'PY'
import statistics, sys
none, viewers, none_cpu, viewers_cpu = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"runner's own CPU: no viewers median {statistics.median(none_cpu):.0f} ms, viewers median {statistics.median(viewers_cpu):.0f} ms")
ratios = [v / n for n, v in zip(none, viewers)]
print(f"no viewers: median {statistics.median(none):.0f} ms  {none}")
print(f"viewers:    median {statistics.median(viewers):.0f} ms  {viewers}")
print(f"ratio of medians {statistics.median(viewers) / statistics.median(none):.3f}; per round {[round(r, 3) for r in ratios]}")
PY
