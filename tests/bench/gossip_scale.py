#!/usr/bin/env python3
"""Gossip at scale, in the seeded simulator (tests/common/sim.rs, every packet through the real
codec): runs the ignored test tests/gossip_scale.rs in a release build, twice in parallel (one
process for muster, one for the model of Serf: the same simulator with memberlist's admission
and push/pull scaling, `swim::Config::memberlist_model`, LAN timings), and writes
report/gossip-scale.md, report/gossip-scale.json and four SVG plots in report/:
gossip-scale-convergence.svg, gossip-scale-detection.svg, gossip-scale-bytes.svg and
gossip-scale-mass-join.svg.

Each point: a cluster of N nodes that converged long ago (every node starts from one shared
converged view: N joins would cost N² messages) under the given packet loss; bytes per node per
second over 10 s of steady state; one new node joins node 0: time until it lists every node
alive and every node lists it, and bytes per node per second meanwhile; false failure verdicts
until then; 5 s later one old node killed: time to the first survivor's verdict and to every
survivor's; CPU seconds and peak memory. A point whose projected CPU time exceeds the budget, or
whose projected peak memory exceeds --rss-limit (8,000 MB: two points run at once), is skipped (listed as
such); one that runs past the budget is cut short. The mass join (every node joins node 0 at
the same instant) samples the fraction of complete views every 10 ms for 2 s, then every 100 ms.

Usage: tests/bench/gossip_scale.py [--sizes 10,30,...] [--losses 0,5,10,20] [--budget CPU_S]
       [--rss-limit MB] [--mass-join N] [--models muster,serf] [--append]
       [--from-output DIR]   (DIR: reuse muster.out and serf.out of a run)
  --rss-limit MB  most peak memory a point may be projected to need (default 8000; the models
                  run at once, so two such points may be resident together)
  --mass-join 0   no mass join; --models: which models to run (each in its own process)
  --append        add this run's points to target/gossip-scale/*.out (e.g. large sizes run one
                  model at a time with a higher --rss-limit) and write the report from all
"""

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import svgplot  # noqa: E402


if "--help" in sys.argv or "-h" in sys.argv:
    print(__doc__)
    sys.exit(0)


def arg(name, default):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


SIZES = arg("--sizes", "10,30,100,300,1000,3000,10000")
LOSSES = arg("--losses", "0,5,10,20")
BUDGET = arg("--budget", "900")
MASS = arg("--mass-join", "1000")
FROM = arg("--from-output", None)
RSS = arg("--rss-limit", "8000")
MODELS = arg("--models", "muster,serf").split(",")
APPEND = "--append" in sys.argv


def binary():
    out = subprocess.run(["cargo", "test", "--release", "--test", "gossip_scale", "--no-run",
                          "--message-format=json"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    for line in out.stdout.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and \
                m["target"]["name"] == "gossip_scale":
            return m["executable"]
    raise SystemExit("no gossip_scale binary")


def run_all(outdir):
    exe = binary()
    procs = []
    for model in MODELS:
        args = f"--model {model} --sizes {SIZES} --losses {LOSSES} --budget {BUDGET} --rss-limit {RSS}"
        if MASS != "0":
            args += f" --mass-join {MASS}"
        f = open(os.path.join(outdir, f"{model}.out"), "a" if APPEND else "w")
        procs.append(subprocess.Popen([exe, "--ignored", "--nocapture"], stdout=f,
                                      stderr=subprocess.DEVNULL, cwd=ROOT,
                                      env={**os.environ, "GOSSIP_SCALE": args}))
    for p in procs:
        p.wait()


def read(outdir):
    rows = []
    for model in ("muster", "serf"):
        path = os.path.join(outdir, f"{model}.out")
        if os.path.exists(path):
            rows += [json.loads(l) for l in open(path) if l.startswith("{")]
    # With --append a point may come twice, or once skipped and later run: the last run counts.
    key = lambda r: (r["kind"] if r["kind"] == "mass_join" else "point", r["model"],  # noqa: E731
                     r["nodes"], r.get("loss"))
    last = {key(r): r for r in rows}
    return [r for r in rows if last[key(r)] is r]


def series(points, model, key):
    out = []
    for loss in sorted({p["loss"] for p in points}):
        pts = [(p["nodes"], p[key]) for p in points
               if p["model"] == model and p["loss"] == loss and p.get(key) is not None]
        if pts:
            out.append((f"{model} {loss * 100:.0f} %", sorted(pts)))
    return out


def plots(points, mass):
    svg = {}
    both = lambda key: series(points, "muster", key) + series(points, "serf", key)  # noqa: E731
    svg["gossip-scale-convergence.svg"] = svgplot.lines(
        "One node joins N: it lists all, all list it", "nodes", "simulated s",
        both("converged_s"), logx=True)
    svg["gossip-scale-detection.svg"] = svgplot.lines(
        "One node killed: every survivor sees it failed", "nodes", "simulated s",
        both("detect_all_s"), logx=True)
    zero = [p for p in points if p["loss"] == 0]
    svg["gossip-scale-bytes.svg"] = svgplot.lines(
        "Bytes per node per second (UDP + push/pull), 0 % loss", "nodes", "bytes/s per node",
        [(f"{m} {k.split('_')[0]}", sorted((p["nodes"], p[k]) for p in zero
                                           if p["model"] == m and p.get(k) is not None))
         for m in ("muster", "serf") for k in ("join_bytes_per_node_s", "steady_bytes_per_node_s")],
        logx=True, logy=True)
    svg["gossip-scale-mass-join.svg"] = svgplot.lines(
        f"Mass join of {MASS} nodes: fraction of complete views", "simulated s", "fraction",
        [(m["model"], [tuple(x) for x in m["series"]]) for m in mass])
    for name, text in svg.items():
        with open(os.path.join(ROOT, "report", name), "w") as f:
            f.write(text)
    return list(svg)


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"


NOTES = """- The sweep starts every cluster converged (`Sim::settled`): each node's two member maps
  (failure detector and Serf) are rolls (`gossip::roll`) cloned from one shared view: a
  shared base map and each node's own changes beside it, so a node holds only the records it
  changed. A converged cluster of 10,000 nodes holds 10⁸ node-member pairs: about 180 GB as
  private maps (1.8 KB per pair, measured before), about 540 MB shared. Joining them one by
  one instead would cost about 3 N² datagrams (see the mass join). Packet loss makes nodes
  suspect and refute each other, and a record a node changed is its own: memory then grows
  with the square of the size again (see the peak RSS column). Points with a "queued" figure
  ran on the base-and-changes roll; the rest on the persistent B-tree before it (a change
  copied its 64-slot leaf), with the same results but more memory and CPU (3,000 nodes at
  10 %: 1,965 MB and 250 CPU-s then, 1,304 MB and 158 CPU-s now).
- "Converged" for the join: the newcomer lists every node alive and every node lists the
  newcomer alive (the rest of each view was complete already; false verdicts are counted
  apart). muster admits a new name only once it has answered a probe, at most
  `new_members_per_second` (1,000) a second, so a newcomer's own view of 3,000 or 10,000
  members takes 2 or 9 s; the Serf model takes the names a push/pull brings at once.
- Bytes per node per second: UDP and push/pull streams, both ways, divided by the nodes. Above
  32 members both models stretch the push/pull period (and muster its periodic re-join) as
  memberlist's `pushPullScale` does (×6 at 1,000 nodes, ×10 at 10,000), and only about 32
  members exchange state with a stranger that probes them: otherwise a newcomer in a cluster
  of 10,000 would receive 10,000 full states (600 KB each) within a second, and every node
  would send 40 KB/s of push/pulls. A settled cluster without news runs the same probes and
  push/pulls in both models, so their steady-state bytes are equal (the two lines of the plot
  lie on each other). The join's bytes are over the join's own time (0.1 s when it is done at
  the first check), so a join that completes at once shows as a burst.
- Detection is bounded below by Lifeguard's suspicion timeout, suspicion_mult × log10(N) ×
  probe interval (4 × 4 × 1 s = 16 s at 10,000 before confirmations shorten it), so it grows
  with the logarithm of the size.
- Queued: the broadcasts waiting in each node's queue at the end of the 10 s of steady state
  (at most one per member they are about), averaged over the nodes. Under loss every node
  makes news (suspicions and their refutations) at a rate that grows with the loss, and every
  piece of news goes to every node, so the news each node must pass on grows with the size,
  while what one node can pass on is fixed: 3 packets of 1,400 bytes every 200 ms (21 KB/s).
  Where the steady bytes reach that, the queue grows instead of draining: at 10 %, 5 queued
  at 1,000 nodes, 39 at 3,000 (374 at 6,000 and 599 at 10,000 in runs of 2026-12-03 cut
  short, not in the table); at 20 %, 8 at 300 and 409 at 1,000, the point
  where refutations come too late and both models declare healthy nodes dead (about 1,500
  false failures) and never settle. Serf's memberlist queues the same way (no limit, newest
  first): the Serf model queues exactly as much at every point of the table, and saturates at
  the same points. This bounds the sweep: 10,000
  nodes at 10 % and 3,000 or more at 20 % are past it, and their every-node queues of news
  about every member outgrow this machine's memory (10,000 at 10 % reached 17 GB after 16
  minutes and was stopped; cut short at 400 CPU-s it had used 9.8 GB, 33 KB/s per node of
  steady traffic against the 21 KB/s a node can send).
- The simulator has no bandwidth or CPU limit: times are what the protocol allows.
"""


def markdown(rows, meta, svgs):
    points = [r for r in rows if r["kind"] == "point"]
    mass = [r for r in rows if r["kind"] == "mass_join"]
    skipped = [r for r in rows if r["kind"] == "skipped"]
    lines = [
        "# Gossip at scale (simulator)", "",
        f"Run {meta['date']} on {meta['machine']}, {meta['cores']} cores, load average at start "
        f"{meta['load']}; commit {meta['commit']}; `{meta['command']}`, {meta['wall_s']:.0f} s of "
        "wall time (muster and the Serf model in two processes at once).", "",
        "The seeded simulator of `tests/common/sim.rs` (0.3 ms one way, no bandwidth or CPU limit, "
        "every datagram through the real codec); `muster`: the node as shipped (LAN profile, every "
        "new name must answer a probe first, new names passed on in push/pulls, extra push/pulls "
        "after joining); `serf`: the same simulator with `memberlist_model` (a name gossip or a "
        "push/pull announces is a member at once, no extra push/pulls) and the same LAN timings. "
        "Mass join: every node joins node 0 at the same instant, complete = every node lists every "
        "other node alive in its own view. Sweep: a converged cluster, one node joins, one is "
        "killed (checked every 100 ms and 50 ms).", "",
        "## Mass join", "",
        "| model | nodes | every view complete (simulated s) | Serf views agree | packets | "
        "UDP bytes | push/pull bytes | false failures | CPU s |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in mass:
        lines.append(f"| {m['model']} | {m['nodes']} | {fmt(m['converged_s'])} | "
                     f"{m['serf_views_agree']} | {m['packets']} | {m['bytes']} | "
                     f"{m['stream_bytes']} | {m['false_failures']} | {m['cpu_s']} |")
    lines += ["", "![mass join](gossip-scale-mass-join.svg)", "", "## Sweep", "",
              "| model | nodes | loss | join converged (s) | join B/node/s | steady B/node/s | "
              "queued | false failures | first verdict (s) | all survivors (s) | packets | CPU s | "
              "peak RSS (MB) | cut short |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["model"], p["loss"], p["nodes"])):
        lines.append(
            f"| {p['model']} | {p['nodes']} | {p['loss'] * 100:.0f} % | {fmt(p['converged_s'])} | "
            f"{fmt(p['join_bytes_per_node_s'])} | {fmt(p['steady_bytes_per_node_s'])} | "
            f"{fmt(p.get('queued_per_node'))} | "
            f"{fmt(p['false_failures'])} | {fmt(p['detect_first_s'])} | {fmt(p['detect_all_s'])} | "
            f"{p['packets']} | {p['cpu_s']} | {p.get('peak_rss_mb', '—')} | {p['cut_short']} |")
    if skipped:
        lines += ["", "Skipped (projected CPU seconds above the run's budget per point, or "
                  "projected peak memory above its limit, each from the previous size's figure × "
                  "(size ratio)²): " +
                  "; ".join(f"{s['model']} {s['nodes']} nodes at {s['loss'] * 100:.0f} % "
                            f"({s['projected_cpu_s']} s, {s.get('projected_rss_mb', '?')} MB)"
                            for s in skipped) + "."]
    lines += [""] + [f"![{s}]({s})" for s in svgs if s != "gossip-scale-mass-join.svg"]
    lines += ["", "## Reading it", "", NOTES]
    return "\n".join(lines) + "\n"


def main():
    started = time.time()
    load = os.getloadavg()[0]
    outdir = FROM or os.path.join(ROOT, "target", "gossip-scale")
    if not FROM:
        os.makedirs(outdir, exist_ok=True)
        run_all(outdir)
    rows = read(outdir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": platform.machine(), "cores": os.cpu_count(), "load": f"{load:.2f}",
            "commit": commit, "command": " ".join(["tests/bench/gossip_scale.py"] + sys.argv[1:]),
            "wall_s": time.time() - started}
    svgs = plots([r for r in rows if r["kind"] == "point"],
                 [r for r in rows if r["kind"] == "mass_join"])
    with open(os.path.join(ROOT, "report", "gossip-scale.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(ROOT, "report", "gossip-scale.md"), "w") as f:
        f.write(markdown(rows, meta, svgs))


if __name__ == "__main__":
    main()
