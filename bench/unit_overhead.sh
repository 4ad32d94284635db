#!/usr/bin/env bash
# Per-unit overhead against the physical limit: N command units `true {file}` run by the
# runner (--jobs 2) against the same command lines started by a bare `xargs -P2`,
# alternating (runner, xargs, runner, xargs, ...), R rounds. Prints each run's wall,
# whole-tree CPU (user+sys of everything) and peak RSS from GNU time, the runner's own
# cost from summary.json (runner_cost), and the medians and ratios.
# Usage: bench/unit_overhead.sh [N] [R]   (defaults 10000 and 3). Needs /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
R=${2:-3}
BIN=${RUNNER_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/runner
fi
[ -x /usr/bin/time ] || { echo "install GNU time: apt-get install -y time" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/u"
for i in $(seq 1 "$N"); do : > "$work/u/$i.sh"; done
(cd "$work" && ls u | sed 's|^|u/|' > files.txt)
cat > "$work/layers.yaml" <<YAML
categories:
  trivial: { command: "true {file}", files: "u/*.sh" }
layers:
  - { name: l, categories: [trivial] }
YAML

# One measured command: prints "wall cpu rss_kb steal%". steal% is the share of the
# machine's CPU time the hypervisor gave to other guests while it ran (from /proc/stat):
# on a shared VM, rounds with a high steal are slowed by something else.
measure() {
  local before after
  before=$(head -1 /proc/stat)
  /usr/bin/time -f "%e %U %S %M" -o "$work/t.txt" "$@" >/dev/null 2>&1 || true
  after=$(head -1 /proc/stat)
  awk -v a="$before" -v b="$after" '{
    split(a, x); split(b, y); total = 0
    for (i = 2; i <= 9; i++) total += y[i] - x[i]
    printf "%s %.2f %s %.0f\n", $1, $2 + $3, $4, total ? 100 * (y[9] - x[9]) / total : 0
  }' "$work/t.txt"
}

: > "$work/runner.txt"
: > "$work/xargs.txt"
for r in $(seq 1 "$R"); do
  rm -rf "$work/.runner"
  (cd "$work" && measure "$BIN" --config layers.yaml --use-layers l --jobs 2 --progress-mode silent) \
    | tee -a "$work/runner.txt" | sed "s/^/runner round $r: wall cpu rss_kb steal% = /"
  python3 - "$work" >> "$work/own.txt" <<'PY'
import glob, json, sys
s = json.load(open(glob.glob(f"{sys.argv[1]}/.runner/runs/*/summary.json")[0]))
c = s.get("runner_cost", {})
print(c.get("user_ms", 0) + c.get("system_ms", 0), c.get("peak_rss_kb", 0))
PY
  tail -1 "$work/own.txt" | sed "s/^/runner round $r: own cpu_ms peak_rss_kb = /"
  (cd "$work" && measure sh -c 'xargs -P2 -I{} sh -c "true {}" < files.txt') \
    | tee -a "$work/xargs.txt" | sed "s/^/xargs  round $r: wall cpu rss_kb steal% = /"
done

python3 - "$work" "$N" <<'PY'
import statistics as st, sys
w, n = sys.argv[1], int(sys.argv[2])
rows = lambda f: [list(map(float, l.split())) for l in open(f"{w}/{f}") if l.strip()]
a, b, own = rows("runner.txt"), rows("xargs.txt"), rows("own.txt")
med = lambda xs, i: st.median(x[i] for x in xs)
print(f"median wall: runner {med(a,0):.2f}s, xargs {med(b,0):.2f}s, ratio {med(a,0)/med(b,0):.2f}")
print(f"median whole-tree cpu: runner {med(a,1):.2f}s, xargs {med(b,1):.2f}s, ratio {med(a,1)/med(b,1):.2f}")
print(f"runner peak RSS (median): {med(a,2)/1024:.1f} MiB")
print(f"runner own cpu (median): {med(own,0):.0f} ms = {med(own,0)/n:.3f} ms per unit")
print(f"CPU steal while measuring (max of the rounds): runner {max(x[3] for x in a):.0f}%, xargs {max(x[3] for x in b):.0f}%")
PY
