#!/usr/bin/env bash
# The runner's own cost: startup of `--show-layers` on the project's layers.yaml, and
# CPU time and peak memory of a run of N trivial command units (`true`).
# Usage: bench/spine_overhead.sh [N]   (default 500). Needs /usr/bin/time (Debian: time).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
cargo build --release --quiet
BIN=$PWD/target/release/runner
[ -x /usr/bin/time ] || { echo "install GNU time: apt-get install -y time" >&2; exit 2; }

echo "## runner --show-layers (project layers.yaml), 20 runs"
python3 - "$BIN" <<'PY'
import statistics, subprocess, sys, time
bin = sys.argv[1]
subprocess.run([bin, "--show-layers"], stdout=subprocess.DEVNULL, check=True)
xs = []
for _ in range(20):
    t = time.perf_counter()
    subprocess.run([bin, "--show-layers"], stdout=subprocess.DEVNULL, check=True)
    xs.append((time.perf_counter() - t) * 1000)
print(f"median {statistics.median(xs):.1f} ms, min {min(xs):.1f} ms, max {max(xs):.1f} ms")
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/u"
for i in $(seq 1 "$N"); do : > "$work/u/$i.sh"; done
cat > "$work/layers.yaml" <<YAML
categories:
  trivial: { command: "true", files: "u/*.sh" }
layers:
  - { name: l, categories: [trivial] }
YAML

echo
echo "## $N trivial units (true), --jobs 2, simple console to /dev/null"
for run in 1 2 3; do
  /usr/bin/time -v "$BIN" --config "$work/layers.yaml" --use-layers l --jobs 2 --progress-mode simple \
    >/dev/null 2>"$work/time.txt" || true
  wall=$(grep "Elapsed (wall clock)" "$work/time.txt" | awk '{print $NF}')
  user=$(grep "User time" "$work/time.txt" | awk '{print $NF}')
  sys=$(grep "System time" "$work/time.txt" | awk '{print $NF}')
  rss=$(grep "Maximum resident" "$work/time.txt" | awk '{print $NF}')
  echo "run $run: wall $wall, runner+children user ${user}s sys ${sys}s, runner peak RSS ${rss} KiB"
done
# /usr/bin/time counts the units too (the runner waits for them); the runner logs its
# own usage (RUSAGE_SELF) at the end of every run in logs/orchestration/.
python3 - "$work" <<'PY'
import glob, json, sys
rows = []
for f in glob.glob(f"{sys.argv[1]}/logs/orchestration/runner*.log"):
    for line in open(f):
        e = json.loads(line)
        if e.get("fields", {}).get("message") == "runner resource usage":
            rows.append(e["fields"])
for r in rows:
    print(f"runner itself: user {r['user_ms']:.0f} ms, system {r['system_ms']:.0f} ms, "
          f"peak RSS {r['max_rss_kb']} KiB")
PY
