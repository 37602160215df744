#!/usr/bin/env python3
"""User events and queries at scale, in the seeded simulator (tests/gossip_sim.rs, the real
codec and the real Serf layer): SIM_N nodes (default 1000) join one seed, then node 0 sends 5
user events and asks one query with acknowledgements, at 0 % and 5 % packet loss. Reports
deliveries, duplicates, the time until every node had every event, and the acknowledgements,
into report/gossip-events.md and .json.

Usage: tests/bench/events.py [--nodes N] [--out DIR]
"""
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = sys.argv[1:]


def arg(name, default):
    if name in ARGS:
        return type(default)(ARGS[ARGS.index(name) + 1])
    return default


N = arg("--nodes", 1000)
OUT = arg("--out", os.path.join(ROOT, "report"))

LINE = re.compile(
    r"events at scale: (\d+) nodes, loss ([\d.]+): 5 events delivered (\d+) times, (\d+) "
    r"duplicates, every node had all 5 after ([\d.]+) s; query acks (\d+) of (\d+), the last "
    r"after ([\d.]+) s \(([\d.]+) s to simulate\)")


def main():
    print(f"==> simulator: {N} nodes, user events and a query (release build)", flush=True)
    started = time.time()
    out = subprocess.run(
        ["cargo", "nextest", "run", "--cargo-profile", "release", "--test", "gossip_sim",
         "--no-capture", "-E", "test(user_events_and_queries_at_scale)"],
        cwd=ROOT, env={**os.environ, "SIM_N": str(N)}, capture_output=True, text=True,
        timeout=3600)
    text = out.stdout + out.stderr
    rows = []
    for m in LINE.finditer(text):
        rows.append({
            "nodes": int(m[1]), "loss": float(m[2]), "deliveries": int(m[3]),
            "duplicates": int(m[4]), "all_events_everywhere_s": float(m[5]),
            "acks": int(m[6]), "ack_last_s": float(m[8]), "cpu_s": float(m[9])})
    if out.returncode != 0 or len(rows) != 2:
        print(text[-4000:], file=sys.stderr)
        sys.exit("tests/bench/events.py: the simulator run failed")
    os.makedirs(OUT, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(os.path.join(OUT, "gossip-events.json"), "w") as f:
        json.dump({"when": when, "rows": rows, "wall_s": time.time() - started}, f, indent=2)
    lines = [
        "# User events and queries at scale (simulated)",
        "",
        f"`tests/bench/events.py` ({when}): `tests/gossip_sim.rs` "
        "`user_events_and_queries_at_scale` in a release build, through the real codec and "
        "Serf layer. After the mass join, node 0 sends 5 user events and asks one query with "
        "acknowledgements (LAN profile). Times are simulated; CPU is what simulating took.",
        "",
        "| nodes | loss | deliveries (5 events) | duplicates | every node had all 5 after | "
        "query acks | last ack after | CPU to simulate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nodes']} | {r['loss'] * 100:.0f} % | {r['deliveries']} | {r['duplicates']} "
            f"| {r['all_events_everywhere_s']:.2f} s | {r['acks']} of {r['nodes']} "
            f"| {r['ack_last_s']:.2f} s | {r['cpu_s']:.0f} s |")
    lines += ["", "An acknowledgement is one datagram sent once, as Serf's: under loss some are "
              "lost; the events themselves are gossiped until every node has them, once."]
    with open(os.path.join(OUT, "gossip-events.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


main()
