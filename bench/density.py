#!/usr/bin/env python3
"""The measuring half of bench/density: deploys N hello services on a running daemon,
calls each once from zero, measures what the idle instances cost, calls each again from
idle, and times `skiff ls`. Prints one block of figures.

Usage: density.py SKIFF N INGRESS_PORT DAEMON_PID"""
import glob, http.client, os, statistics, subprocess, sys, time

skiff, n, port, daemon = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no MemAvailable in /proc/meminfo")


BREAKDOWN = ("AnonPages", "PageTables", "KernelStack", "SUnreclaim", "SReclaimable", "Shmem", "Percpu")


def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def slabs():
    """Bytes in each slab cache (/proc/slabinfo: active objects times object size)."""
    out = {}
    try:
        lines = open("/proc/slabinfo").read().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        out[f[0]] = out.get(f[0], 0) + int(f[2]) * int(f[3])
    return out


def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def pss_by_name(procs):
    """Proportional set size summed by process name (comm), with counts."""
    sums = {}
    for pid in procs:
        try:
            name = open(f"/proc/{pid}/comm").read().strip()
            pss = 0
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
        except OSError:
            continue
        total, count = sums.get(name, (0, 0))
        sums[name] = (total + pss, count + 1)
    return sums


def cgroup_bytes(procs):
    """The memory use (kernel memory included) of the cgroups the daemon's processes
    are in (instances and prepared sandboxes each have their own), and how many."""
    dirs = set()
    for pid in procs:
        try:
            lines = open(f"/proc/{pid}/cgroup").read().splitlines()
        except OSError:
            continue
        own = dict((l.split(":", 2)[1], l.split(":", 2)[2]) for l in lines)
        if "memory" in own:
            dirs.add(f"/sys/fs/cgroup/memory{own['memory']}/memory.usage_in_bytes")
        else:
            dirs.add(f"/sys/fs/cgroup{own.get('', '/')}/memory.current")
    files = [d for d in dirs if "/skiff/" in d and os.path.exists(d)]
    return sum(int(open(p).read()) for p in files), len(files)


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def descendants(pid):
    kids = {}
    for task in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(task).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(task.split("/")[2]))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def call_all(label):
    """Calls each service once, in turn; latencies in ms."""
    lat = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(n):
        start = time.perf_counter()
        conn.request("GET", "/", headers={"Host": f"hello-{i}.localhost"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"{label}: hello-{i} answered {resp.status}")
        lat.append((time.perf_counter() - start) * 1000)
    conn.close()
    return lat


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(*args):
    done = subprocess.run([skiff, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"skiff {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


before = mem_available()
info_before = meminfo()
slabs_before = slabs()
start = time.perf_counter()
for i in range(n):
    run("deploy", f"hello-{i}", "--image", "hello", "--idle-timeout", "60m")
deployed = time.perf_counter() - start
cold = call_all("from zero")
# An idle revision with a ready instance lets its prepared sandbox go a minute after its
# last request (skiff-control/src/warm.rs): wait for that, as an idle machine would be.
deadline = time.monotonic() + 180
while any(comm(p) == "skiff-sandbox" for p in descendants(daemon)):
    if time.monotonic() > deadline:
        raise SystemExit("prepared sandboxes still there 3 minutes after the last request")
    time.sleep(1)
time.sleep(2)  # not a readiness wait: lets idle instances settle before memory is read
after = mem_available()
info_after = meminfo()
slabs_after = slabs()
procs = descendants(daemon)
pss = pss_by_name(procs)
used, cgroups = cgroup_bytes(procs)
def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


cpu_before, wall_before = cpu_seconds(daemon), time.monotonic()
time.sleep(5)  # a measuring window, not a readiness wait: what the idle daemon spends
idle_cpu = (cpu_seconds(daemon) - cpu_before) / (time.monotonic() - wall_before)
idle = call_all("from idle")
ls = []
for _ in range(5):
    t = time.perf_counter()
    run("ls")
    ls.append((time.perf_counter() - t) * 1000)
rss_all = sum(status(p, "VmRSS") for p in procs if os.path.exists(f"/proc/{p}"))
mib = 1 << 20
print(f"N = {n} services, {cgroups} cgroups (instances and prepared sandboxes); deployed in {deployed:.1f} s ({deployed / n * 1000:.1f} ms each)")
print(f"  per service (an idle instance), all-in: MemAvailable drop {(before - after) / n / mib:.2f} MiB; cgroups' usage {used / n / mib:.2f} MiB")
print("  of it (KiB per service, /proc/meminfo deltas): " + ", ".join(
    f"{k} {(info_after[k] - info_before[k]) / n / 1024:.0f}" for k in BREAKDOWN if k in info_after))
grown = sorted(((slabs_after[k] - slabs_before.get(k, 0), k) for k in slabs_after), reverse=True)
print("  slab caches that grew most (KiB per service): " + ", ".join(
    f"{k} {b / n / 1024:.0f}" for b, k in grown[:10]))
print("  processes' PSS (KiB each): " + ", ".join(
    f"{name} x{count} {total / count / 1024:.0f}" for name, (total, count) in sorted(pss.items())))
print(f"  daemon: RSS {status(daemon, 'VmRSS') / 1024:.0f} MiB, {status(daemon, 'Threads')} threads, {len(os.listdir(f'/proc/{daemon}/fd'))} descriptors; {len(procs)} processes under it (RSS sum {rss_all / 1024:.0f} MiB)")
loops = [t for t in os.listdir(f"/proc/{daemon}/task") if comm(f"{daemon}/task/{t}") == "skiff-logs"]
loop_fds = sum(len(os.listdir(f"/proc/{daemon}/task/{t}/fd")) for t in loops)
print(f"  log pump loops (descriptor tables of their own): {len(loops)} threads, {loop_fds} descriptors")
print(f"  daemon CPU while all are idle: {idle_cpu * 100:.1f} % of a core")
print(f"  call each once from zero: p50 {pct(cold, 0.5):.2f} ms, p99 {pct(cold, 0.99):.2f} ms, all {sum(cold) / 1000:.2f} s")
print(f"  call each once from idle: p50 {pct(idle, 0.5):.2f} ms, p99 {pct(idle, 0.99):.2f} ms, all {sum(idle) / 1000:.2f} s")
print(f"  skiff ls: median {statistics.median(ls):.0f} ms (5 runs)")
