#!/usr/bin/env bash
# The `pytest:` kind against pytest-xdist on real suites from PyPI sdists.
#
# Downloads (never committed) attrs 26.1.0 and toolz 1.2.0 sdists and, into a virtualenv,
# pytest, pytest-xdist, hypothesis and the suites' test dependencies. Then per suite:
#   1. equality: per-test outcomes (passed / failed / skipped / xfailed; xpassed counts as
#      passed, errors as failed) of plain serial `pytest` against the runner's events,
#      id by id, and pytest's own summary counts;
#   2. timing, alternating rounds: `pytest -n 2` against `runner --jobs 2` on a first
#      run (no `.runner/`: no history, no collection cache) and with history (after a
#      previous run); wall time, the runner's own CPU (bench/nextest_measure.py) per test.
# Usage: bench/pytest_xdist.sh [ROUNDS]   (default 3; BENCH_DIR keeps the downloads, default
#        /tmp/runner-bench-pytest; SUITES="toolz-1.2.0" runs one suite)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet
BIN=$TARGET/release/runner
MEASURE=$PWD/bench/nextest_measure.py
PLUGIN=$PWD/src/discover/pytest/plugin.py
WORK=${BENCH_DIR:-/tmp/runner-bench-pytest}
mkdir -p "$WORK/sdists"
cd "$WORK"
if [ ! -x venv/bin/python ]; then
    python3 -m venv venv
fi
venv/bin/pip install --quiet --disable-pip-version-check pytest pytest-xdist hypothesis pympler cloudpickle
venv/bin/pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
    attrs==26.1.0 toolz==1.2.0 -d sdists
for s in attrs-26.1.0 toolz-1.2.0; do
    [ -d "src-$s" ] || { mkdir -p "src-$s" && tar xzf "sdists/$s.tar.gz" -C "src-$s" --strip-components 1; }
done
venv/bin/pip install --quiet --disable-pip-version-check ./src-attrs-26.1.0 ./src-toolz-1.2.0
mkdir -p plugin && cp "$PLUGIN" plugin/_layered_runner_pytest.py

venv/bin/python - "$BIN" "$MEASURE" "$WORK" "$ROUNDS" <<'PY'
import json, os, re, shutil, statistics, subprocess, sys
bin, measure, work, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
py = f"{work}/venv/bin/python"
suites = os.environ.get("SUITES", "attrs-26.1.0 toolz-1.2.0").split()

def fresh(suite):
    """A scratch copy of the suite with a layers.yaml for the pytest kind."""
    d = f"{work}/run-{suite}"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(f"{work}/src-{suite}", d)
    with open(f"{d}/layers.yaml", "w") as f:
        f.write(f"categories:\n  py:\n    pytest: {{ python: {py} }}\n"
                "layers:\n  - { name: py, categories: [py] }\n")
    return d

def cost(cmd, cwd):
    out = subprocess.run([sys.executable, measure, "--cwd", cwd, "--", *cmd],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

def norm(outcome):
    return {"xpassed": "passed", "error": "failed"}.get(outcome, outcome)

def baseline(d):
    """Plain serial pytest; the plugin only records each test's outcome."""
    events = f"{d}/baseline.jsonl"
    env = dict(os.environ, PYTHONPATH=f"{work}/plugin", RUNNER_PYTEST_EVENTS=events)
    out = subprocess.run([py, "-m", "pytest", "-q", "-p", "_layered_runner_pytest",
                          "-p", "no:cacheprovider"], cwd=d, env=env, capture_output=True, text=True)
    got = {}
    for line in open(events):
        e = json.loads(line)
        if e["e"] == "done":
            got[e["id"]] = norm(e["outcome"])
    summary = [l for l in out.stdout.splitlines() if re.search(r"\d+ (passed|failed)", l)][-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", summary)}
    return got, counts

def runner_outcomes(d):
    runs = sorted(os.listdir(f"{d}/.runner/runs"))
    got = {}
    for line in open(f"{d}/.runner/runs/{runs[-1]}/events.jsonl"):
        e = json.loads(line)
        unit = e.get("unit", "")
        if not unit.startswith("py/py/"):
            continue
        tid = unit[len("py/py/"):]
        if e["type"] == "test_finished" and not e["will_retry"]:
            got[tid] = "passed" if e["outcome"] == "passed" else "failed"
        elif e["type"] == "test_skipped":
            got[tid] = e["reason"].split(":")[0]
    return got

def tally(outcomes):
    c = {}
    for o in outcomes.values():
        c[o] = c.get(o, 0) + 1
    return c

for suite in suites:
    d = fresh(suite)
    base, counts = baseline(d)
    subprocess.run([bin, "--use-layers", "py", "--jobs", "2", "--progress-mode", "simple"],
                   cwd=d, capture_output=True)
    mine = runner_outcomes(d)
    diff = {k: (base.get(k), mine.get(k)) for k in set(base) | set(mine) if base.get(k) != mine.get(k)}
    print(f"## {suite}: {len(base)} tests; pytest says {counts}")
    print(f"   plain pytest: {tally(base)}; runner: {tally(mine)}; "
          f"{'identical, id by id' if not diff else f'{len(diff)} DIFFERENT: {sorted(diff.items())[:10]}'}")

    times = {"xdist": [], "first": [], "history": []}
    cpu = {"first": [], "history": []}
    for r in range(rounds):
        order = ["xdist", "first", "history"] if r % 2 == 0 else ["history", "first", "xdist"]
        for what in order:
            if what == "xdist":
                m = cost([py, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider"], d)
            else:
                if what == "first":
                    shutil.rmtree(f"{d}/.runner", ignore_errors=True)
                m = cost([bin, "--use-layers", "py", "--jobs", "2", "--progress-mode", "simple"], d)
                # A first run leaves history (and the collection) for the next "history" run.
                cpu[what].append(m["self_cpu_s"])
            times[what].append(m["wall_s"])
        print(f"   round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(base)
    print(f"   medians of {rounds}: pytest -n 2 {med['xdist']:.2f}s; runner first run {med['first']:.2f}s "
          f"({med['first'] / med['xdist']:.2f}x); with history {med['history']:.2f}s "
          f"({med['history'] / med['xdist']:.2f}x)")
    print(f"   runner's own CPU per test: first {1000 * statistics.median(cpu['first']) / n:.3f} ms, "
          f"history {1000 * statistics.median(cpu['history']) / n:.3f} ms")
PY
