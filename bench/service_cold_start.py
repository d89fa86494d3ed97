#!/usr/bin/env python3
"""Cold start of a service, measured as a client sees it: a request to a scaled-to-zero
skiff service -> first response byte; and the same hello binary started with `crun run`
-> first response byte (polling its port, as nothing holds the request for it).
Runs alternate so machine noise hits both alike; prints medians, p90s and the ratio.

Usage: service_cold_start.py CRUN_BUNDLE CRUN_PORT NAME=INGRESS_PORT,API_SOCKET...
(the first skiff variant is the one ratios are given for)"""
import json, os, socket, statistics, subprocess, sys, time

N = int(os.environ.get("N", "30"))
WARMUP = 3
bundle, crun_port = sys.argv[1], int(sys.argv[2])
variants = []
for a in sys.argv[3:]:
    name, rest = a.split("=", 1)
    port, sock = rest.split(",", 1)
    variants.append((name, int(port), sock))

def api_get(api, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(api)
    s.sendall(f"GET {path} HTTP/1.1\r\nhost: skiff\r\nconnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])

def wait_scaled_to_zero(api):
    deadline = time.time() + 30
    while time.time() < deadline:
        d = api_get(api, "/v1/services/hello")
        if not any(i["state"] in ("starting", "ready", "stopping") for i in d["instances"]):
            return
        time.sleep(0.02)
    sys.exit("hello did not scale to zero")

def first_byte(port, host):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
    b = s.recv(1)
    rest = b
    while chunk := s.recv(65536):
        rest += chunk
    s.close()
    if not rest.startswith(b"HTTP/1.1 200"):
        sys.exit(f"bad answer: {rest[:200]!r}")
    return b

def skiff_once(ingress, api):
    wait_scaled_to_zero(api)
    time.sleep(0.1)  # let the last instance's teardown (and the next preparation) finish
    t0 = time.perf_counter()
    first_byte(ingress, "hello.localhost")
    return (time.perf_counter() - t0) * 1000

def crun_once(n):
    name = f"bench-hello-{os.getpid()}-{n}"
    t0 = time.perf_counter()
    p = subprocess.Popen(["crun", "run", "--bundle", bundle, name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            first_byte(crun_port, "localhost")
            break
        except (ConnectionRefusedError, ConnectionResetError):
            if p.poll() is not None:
                sys.exit("crun exited: " + p.stderr.read().decode(errors="replace")[-400:])
            time.sleep(0.0001)
    ms = (time.perf_counter() - t0) * 1000
    subprocess.run(["crun", "kill", name, "KILL"], stderr=subprocess.DEVNULL)
    p.wait()
    subprocess.run(["crun", "delete", "-f", name], stderr=subprocess.DEVNULL)
    return ms

def main():
    for i in range(WARMUP):
        for _, port, api in variants:
            skiff_once(port, api)
        crun_once(f"w{i}")
    times = {name: [] for name, _, _ in variants}
    cr = []
    for i in range(N):
        for name, port, api in variants:
            times[name].append(skiff_once(port, api))
        cr.append(crun_once(i))
    def row(name, xs):
        xs = sorted(xs)
        p90 = xs[int(len(xs) * 0.9) - 1]
        print(f"  {name:<58} median {statistics.median(xs):7.2f}   p90 {p90:7.2f}")
    print(f"request -> first response byte, {N} runs each (ms)")
    for name, _, _ in variants:
        row(name, times[name])
    row("crun run + first response (polling the port)", cr)
    for name, _, _ in variants:
        print(f"  ratio crun / {name}: {statistics.median(cr) / statistics.median(times[name]):.2f}x")

main()
