#!/usr/bin/env python3
"""Times "start" -> the sandboxed process's first line of output, for commands given as
JSON lists on the command line, N runs each, interleaved so machine noise hits both alike.
Prints each command's median and p90 and the ratio of medians to the first command."""
import json, os, statistics, subprocess, sys, time

N = int(os.environ.get("N", "30"))
WARMUP = 3

def once(cmd):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline()
    t1 = time.perf_counter()
    rest, err = p.communicate()
    if line.strip() != b"ready" or p.returncode != 0:
        sys.exit(f"{cmd[0]} failed (exit {p.returncode}): {line!r} {err.decode(errors='replace')[-400:]}")
    return (t1 - t0) * 1000.0

def main():
    named = [(a.split("=", 1)[0], json.loads(a.split("=", 1)[1])) for a in sys.argv[1:]]
    for _ in range(WARMUP):
        for _, cmd in named:
            once(cmd)
    times = {name: [] for name, _ in named}
    for _ in range(N):
        for name, cmd in named:
            times[name].append(once(cmd))
    base = statistics.median(times[named[0][0]])
    print(f"time from start to first line of output, {N} runs each (ms)")
    print(f"{'runtime':<22} {'median':>8} {'p90':>8} {'ratio':>7}")
    for name, _ in named:
        t = sorted(times[name])
        med = statistics.median(t)
        p90 = t[int(len(t) * 0.9) - 1]
        print(f"{name:<22} {med:8.2f} {p90:8.2f} {med / base:7.2f}")

main()
