#!/usr/bin/env python3
"""Run one command and print, as JSON, what it cost.

    nextest_measure.py [--cwd DIR] -- CMD ARGS...

wall_s      wall-clock seconds from spawn to exit
self_cpu_s  user + system CPU of the process itself (all its threads, not its children)
child_cpu_s user + system CPU of the descendants it waited for (for the runner: the tests
            and the cargo/nextest listing)
self_rss_kb the process's own peak RSS (VmHWM), sampled every 5 ms while it runs
exit        exit code

The self/children split comes from /proc/<pid>/stat read once the process has exited
but before it is reaped (waitid with WNOWAIT), so it is exact to the clock tick (10 ms).
"""
import json
import os
import subprocess
import sys
import threading
import time


def main():
    args = sys.argv[1:]
    cwd = None
    if args[:1] == ["--cwd"]:
        cwd, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    tick = os.sysconf("SC_CLK_TCK")
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = [0]
    done = threading.Event()

    def sample():
        path = f"/proc/{proc.pid}/status"
        while not done.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    wall = time.perf_counter() - start
    done.set()
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" : state is field 3 of stat(5), so utime (14) is index 11 here.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    code = proc.wait()
    print(
        json.dumps(
            {
                "wall_s": round(wall, 4),
                "self_cpu_s": (utime + stime) / tick,
                "child_cpu_s": (cutime + cstime) / tick,
                "self_rss_kb": peak[0],
                "exit": code,
            }
        )
    )


if __name__ == "__main__":
    main()
