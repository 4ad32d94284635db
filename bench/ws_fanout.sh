#!/usr/bin/env bash
# WebSocket fan-out: 100 clients follow a run of 2,000 fast units.
# Reports, for the release binary:
#   - event latency, emit (`ts`, ms precision) to client receive, p50/p99/max over
#     every event of every client (examples/ws_fanout.rs, one process, 100 connections);
#   - the run's wall-clock (the 2,000-unit layer's duration_ms) without a server,
#     with the server and no client, with 100 clients, and with 100 clients at nice 19
#     (they only get CPU the run leaves, as viewers on other machines would); the
#     ratios to the server-only run;
#   - the clients' own CPU time (one process for all of them);
#   - the runner's own CPU time (user + system, its threads only) and peak RSS (VmHWM)
#     in each case (bench/nextest_measure.py).
# The clients run on the same machine: on a small one they compete with the run for
# CPU, which the wall-clock ratio includes and the runner's CPU time does not.
# Latencies are those of the normal-priority clients.
# Each configuration runs REPEAT times (default 3), interleaved; medians are shown.
# A `gate` layer holds the run until the clients are connected, so the measured layer
# is streamed live from its first event.
# Usage: bench/ws_fanout.sh [CLIENTS] [UNITS] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-100}
UNITS=${2:-2000}
REPEAT=${3:-3}
cargo build --release --quiet
cargo build --release --quiet --example ws_fanout
BIN=$PWD/target/release/runner
CLIENT=$PWD/target/release/examples/ws_fanout
MEASURE="python3 $PWD/bench/nextest_measure.py"

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

# run MODE: none | server | clients | niced. Prints "layer_ms rss_kb cpu_s [client json]".
run() {
    local mode=$1 args=() out client_json=""
    # Earlier runs stay in .runner/: deleting thousands of log files between runs makes
    # the next run's file creation slower (ext4 inode reuse), which is noise here.
    rm -f "$work/p/gate"
    local before
    before=$(ls "$work/p/.runner/runs" 2>/dev/null | wc -l || true)
    case $mode in
        none) args=(--websocket-addr off) ;;
        *) args=(--websocket-addr 127.0.0.1:0) ;;
    esac
    $MEASURE --cwd "$work/p" -- "$BIN" --use-layers --progress-mode simple "${args[@]}" > "$work/measure.json" &
    local measure=$!
    if [ "$mode" = clients ] || [ "$mode" = niced ]; then
        local url="" i=0
        while [ -z "$url" ]; do
            url=$(python3 -c 'import json,glob,sys
runs = sorted(glob.glob(sys.argv[1] + "/.runner/runs/*/run.json"))
if len(runs) > int(sys.argv[2]): print(json.load(open(runs[-1])).get("progress_url", ""))' "$work/p" "$before" 2>/dev/null || true)
            i=$((i + 1)); [ $i -gt 2000 ] && { echo "no progress_url" >&2; exit 1; }
            sleep 0.005
        done
        local nice=0
        [ "$mode" = niced ] && nice=19
        client_json=$(/usr/bin/time -f '%U %S' -o "$work/client_time" nice -n $nice "$CLIENT" "${url/http:/ws:}ws" "$CLIENTS" "$work/p/gate")
        client_json=$(python3 -c 'import json,sys
j = json.loads(sys.argv[1]); u, s = open(sys.argv[2]).read().split()[-2:]
j["client_cpu_s"] = round(float(u) + float(s), 2); print(json.dumps(j, separators=(",", ":")))' "$client_json" "$work/client_time")
    else
        sleep 0.2; : > "$work/p/gate"
    fi
    wait "$measure"
    local layer_ms rss cpu
    layer_ms=$(python3 -c 'import json,glob,sys
for f in sorted(glob.glob(sys.argv[1] + "/.runner/runs/*/events.jsonl"))[-1:]:
    for l in open(f):
        e = json.loads(l)
        if e["type"] == "layer_finished" and e["layer"] == "main": print(e["duration_ms"])' "$work/p")
    rss=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["self_rss_kb"])' "$work/measure.json")
    cpu=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["self_cpu_s"])' "$work/measure.json")
    echo "$layer_ms $rss $cpu $client_json"
}

declare -A ms rss cpu
lat=()
for r in $(seq 1 "$REPEAT"); do
    for mode in none server clients niced; do
        read -r m k c j < <(run $mode)
        ms[$mode]+="$m "
        rss[$mode]+="$k "
        cpu[$mode]+="$c "
        [ "$mode" = clients ] && lat+=("$j")
        echo "run $r $mode: layer ${m} ms, runner CPU ${c} s, peak RSS ${k} KiB ${j:-}" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in none server clients niced; do
    printf '%-8s layer wall-clock median %6s ms   runner CPU median %6s s   peak RSS median %7s KiB\n' "$mode" \
        "$(echo "${ms[$mode]}" | median)" "$(echo "${cpu[$mode]}" | median)" "$(echo "${rss[$mode]}" | median)"
done
python3 - "$(echo "${ms[server]}" | median)" "$(echo "${ms[clients]}" | median)" "$(echo "${ms[none]}" | median)" "$(echo "${ms[niced]}" | median)" "${lat[@]}" <<'PY'
import json, statistics, sys
server, clients, none, niced = (float(x) for x in sys.argv[1:5])
runs = [json.loads(j) for j in sys.argv[5:]]
print(f"ratio clients/server-only {clients / server:.3f}   niced clients/server-only {niced / server:.3f}   server-only/no-server {server / none:.3f}")
print(f"clients' own CPU median {statistics.median(r['client_cpu_s'] for r in runs)} s")
for k in ("latency_ms_p50", "latency_ms_p99", "latency_ms_max"):
    print(f"{k:15s} median over runs {statistics.median(r[k] for r in runs):7.3f}   per run {[r[k] for r in runs]}")
print(f"events per client {runs[0]['events_min']}..{runs[0]['events_max']}, gaps {sum(r['gaps'] for r in runs)}, resyncs {sum(r['resyncs'] for r in runs)}")
PY
