#!/usr/bin/env bash
# JUnit in and out at scale. Reports, for the release binary (wall time, the runner's own
# CPU and peak RSS, measured by bench/nextest_measure.py):
#   - import: one unit whose command copies a 20,000-case JUnit file (1% failing with
#     1 KiB tracebacks, 1% skipped) to {junit}: 20,000 test_case events, folded, written
#     back out with --junit;
#   - report: 1,000 `true` units with and without --junit (the cost of the report);
#   - merge: `runner merge-junit` of four copies of the 20,000-case report.
# Usage: bench/junit_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$PWD/target/release/runner
MEASURE="python3 $PWD/bench/nextest_measure.py"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/big.xml" <<'PY'
import sys
out = ['<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">']
tb = "x = compute()\n" * 70
for i in range(20000):
    cls, name = f"tests.test_mod{i // 100}", f"test_case_{i}"
    if i % 100 == 7:
        out.append(f'<testcase classname="{cls}" name="{name}" time="0.012"><failure message="assert {i} == 0">{tb}tests/test_mod{i // 100}.py:{i % 100 + 1}: AssertionError</failure></testcase>')
    elif i % 100 == 8:
        out.append(f'<testcase classname="{cls}" name="{name}" time="0"><skipped type="pytest.skip" message="later"/></testcase>')
    else:
        out.append(f'<testcase classname="{cls}" name="{name}" time="0.003"/>')
out.append("</testsuite></testsuites>")
open(sys.argv[1], "w").write("".join(out))
PY

mkdir -p "$work/import" "$work/units/t"
cat > "$work/import/layers.yaml" <<YAML
version: 1
categories:
  big: { command: "cp $work/big.xml {junit}; exit 1" }
layers:
  - { name: main, categories: [big] }
YAML
for i in $(seq 1 1000); do : > "$work/units/t/u$i.sh"; done
cat > "$work/units/layers.yaml" <<'YAML'
version: 1
categories:
  many: { command: "true {file}", files: ["t/*.sh"] }
layers:
  - { name: main, categories: [many] }
YAML

echo "import (20,000 cases, --junit):"
$MEASURE --cwd "$work/import" -- "$BIN" --use-layers main --progress-mode silent --junit "$work/import.xml"
ls -l "$work/import.xml" | awk '{print "  report bytes:", $5}'
grep -c '<testcase' "$work/import.xml" | sed 's/^/  testcases: /'

for junit in no yes; do
  echo "1,000 units, --junit $junit:"
  args=(--use-layers main --progress-mode silent -j 2)
  [ "$junit" = yes ] && args+=(--junit "$work/units.xml")
  for _ in 1 2 3; do
    $MEASURE --cwd "$work/units" -- "$BIN" "${args[@]}"
  done
done

for k in 1 2 3 4; do cp "$work/import.xml" "$work/shard-$k.xml"; done
echo "merge-junit of 4 x 20,000 cases:"
$MEASURE -- "$BIN" merge-junit "$work/merged.xml" "$work"/shard-*.xml
grep -c '<testcase' "$work/merged.xml" | sed 's/^/  testcases: /'
