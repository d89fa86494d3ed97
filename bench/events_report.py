#!/usr/bin/env python3
"""Reads skiff's database after bench/events: waits (up to LIMIT seconds) until no
invocation is pending or being delivered, then prints how many were delivered or dead,
the delivered rate end to end (first accepted -> last delivered), and the latency from
acceptance to delivery (p50, p99).

Usage: events_report.py DATABASE LIMIT_SECONDS"""
import sqlite3, sys, time

db, limit = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
deadline = time.time() + limit
while True:
    open_ = conn.execute(
        "SELECT count(*) FROM invocations WHERE state IN ('pending', 'delivering')"
    ).fetchone()[0]
    if open_ == 0:
        break
    if time.time() > deadline:
        sys.exit(f"{open_} invocations still open after {limit:.0f} s")
    time.sleep(0.2)
counts = dict(conn.execute("SELECT state, count(*) FROM invocations GROUP BY state"))
first, last = conn.execute(
    "SELECT min(created_ms), max(finished_ms) FROM invocations WHERE state = 'delivered'"
).fetchone()
lat = sorted(
    r[0]
    for r in conn.execute(
        "SELECT finished_ms - created_ms FROM invocations WHERE state = 'delivered'"
    )
)
delivered = counts.get("delivered", 0)
if not delivered:
    sys.exit(f"nothing delivered: {counts}")
span = max(last - first, 1) / 1000
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"delivered {delivered}, dead {counts.get('dead', 0)}")
print(f"end to end: {delivered / span:.0f} invocations/s delivered (first accepted -> last delivered, {span:.2f} s)")
print(f"accepted -> delivered latency: p50 {pick(0.5)} ms, p99 {pick(0.99)} ms")
