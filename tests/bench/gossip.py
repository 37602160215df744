#!/usr/bin/env python3
"""Gossip benchmark: muster (profiles lan and local) beside Debian's real serf agent, in one
run, on 127.0.0.1. For each kind, a cluster of N agents (default 5) is started and measured:

  join    time from starting N-1 agents (seed already up) until every agent lists all N alive
  kill    time from `kill -9` of one agent until every survivor lists it failed
  leave   time from a graceful stop (serf: SIGINT, muster: SIGTERM) until all list it left
  rss     idle resident memory of one agent process (KiB)
  bytes   idle traffic per agent, bytes/s on loopback (tcpdump, the cluster's ports only)

Each scenario is repeated (default 3) and medians are reported. Then (not with --quick) the
simulator converges SIM_N nodes (default 1000) that all join one seed at once, through the real
codec, and its simulated time and CPU time are reported. Writes report/gossip-bench.md and
report/gossip-bench.json. No figure is a pass/fail threshold.

Usage: tests/bench/gossip.py [--runs N] [--nodes N] [--sim-nodes N] [--quick] [--out DIR]
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = sys.argv[1:]
QUICK = "--quick" in ARGS


def arg(name, default):
    return type(default)(ARGS[ARGS.index(name) + 1]) if name in ARGS else default


RUNS = arg("--runs", 1 if QUICK else 3)
NODES = arg("--nodes", 3 if QUICK else 5)
SIM_NODES = arg("--sim-nodes", 0 if QUICK else 1000)
OUT = Path(arg("--out", str(ROOT / "report")))
POLL = 0.05


def say(*a):
    print("==>", *a, flush=True)


def free_port():
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def ensure_tools():
    missing = [p for c, p in {"serf": "serf", "tcpdump": "tcpdump"}.items() if shutil.which(c) is None]
    if missing:
        say("installing", " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def muster_bin():
    if os.environ.get("MUSTER_BIN"):
        return os.environ["MUSTER_BIN"]
    say("building static muster")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                    "--target", "x86_64-unknown-linux-gnu"], cwd=ROOT, check=True,
                   env={**os.environ, "RUSTFLAGS": "-C target-feature=+crt-static"})
    return str(ROOT / "target/x86_64-unknown-linux-gnu/release/muster")


class Agent:
    """One agent (serf or muster) on 127.0.0.1."""

    def __init__(self, kind, name, seed_port, tmp, muster):
        self.kind, self.name, self.port = kind, name, free_port()
        if kind == "serf":
            self.rpc = f"127.0.0.1:{free_port()}"
            argv = ["serf", "agent", "-node", name, "-bind", f"127.0.0.1:{self.port}",
                    "-rpc-addr", self.rpc, "-tag", "role=backend"]
            if seed_port:
                argv += ["-join", f"127.0.0.1:{seed_port}"]
        else:
            self.sock = f"{tmp}/{name}.sock"
            profile = kind.split("-")[1]
            join = f'join = ["127.0.0.1:{seed_port}"]' if seed_port else ""
            cfg = Path(tmp) / f"{name}.toml"
            cfg.write_text(f"""
[supervisor]
control_socket = "{self.sock}"
[gossip]
name = "{name}"
bind = "127.0.0.1:{self.port}"
{join}
tags = {{ role = "backend" }}
profile = "{profile}"
[services.main]
main = true
command = ["sleep", "100000"]
""")
            argv = [muster, "--config", str(cfg)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def members(self):
        """{name: status} as this agent sees it (empty if it does not answer)."""
        if self.kind == "serf":
            argv = ["serf", "members", "-rpc-addr", self.rpc]
        else:
            argv = [MUSTER, "members", "--socket", self.sock]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
        except subprocess.TimeoutExpired:
            return {}
        rows = {}
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 3:
                rows[f[0]] = f[2]
        return rows

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def descendants(self):
        """PIDs of every process below the agent (muster's services lead groups of their own,
        so killing the agent's group alone would leave them running)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    kids = [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    kids = []
                found += kids
                todo += kids
        return found

    def kill(self, sig):
        # A kill -9 of muster in a container takes its services with it (the PID namespace
        # ends); on loopback, do the same by hand so no service outlives the run.
        below = self.descendants() if sig == signal.SIGKILL else []
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self):
        below = self.descendants()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def until(cond, limit):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > limit:
            return None
        time.sleep(POLL)
    return time.monotonic() - start


def one_run(kind, tmp, muster):
    agents = [Agent(kind, f"{kind}-0", None, tmp, muster)]
    try:
        until(lambda: agents[0].members().get(agents[0].name) == "alive", 10)
        t0 = time.monotonic()
        for i in range(1, NODES):
            agents.append(Agent(kind, f"{kind}-{i}", agents[0].port, tmp, muster))
        names = {a.name for a in agents}
        all_alive = lambda: all(
            {n for n, s in a.members().items() if s == "alive"} >= names for a in agents)
        joined = until(all_alive, 30)
        join = None if joined is None else time.monotonic() - t0
        # Idle: memory and traffic.
        time.sleep(2)
        rss = agents[1].rss_kib()
        ports = " or ".join(f"port {a.port}" for a in agents)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-q", "-l", ports],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(10)
        dump.terminate()
        out, _ = dump.communicate(timeout=5)
        total = 0
        for line in out.splitlines():
            if "length" in line:
                try:
                    total += int(line.rsplit("length", 1)[1].split()[0].strip(":,"))
                except ValueError:
                    pass
        bytes_per_node = total / 10 / NODES
        # kill -9 of the last agent.
        victim = agents[-1]
        survivors = agents[:-1]
        t0 = time.monotonic()
        victim.kill(signal.SIGKILL)
        kill = until(lambda: all(a.members().get(victim.name) == "failed" for a in survivors), 60)
        # Graceful leave of another one.
        leaver = agents[-2]
        rest = agents[:-2]
        t0 = time.monotonic()
        leaver.kill(signal.SIGINT if kind == "serf" else signal.SIGTERM)
        left = until(lambda: all(a.members().get(leaver.name) == "left" for a in rest), 30)
        return {"join_s": join, "kill_to_failed_s": kill, "leave_to_left_s": left,
                "rss_kib": rss, "idle_bytes_per_node_s": round(bytes_per_node, 1)}
    finally:
        for a in agents:
            a.cleanup()


def median(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def main():
    global MUSTER
    ensure_tools()
    MUSTER = muster_bin()
    kinds = ["serf", "muster-lan", "muster-local"]
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nodes": NODES,
               "runs": RUNS, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0],
               "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            runs = []
            for r in range(RUNS):
                say(f"{kind}: run {r + 1} of {RUNS}, {NODES} agents")
                runs.append(one_run(kind, tmp, MUSTER))
            results["kinds"][kind] = {
                "runs": runs,
                "median": {k: median([run[k] for run in runs]) for k in runs[0]},
            }
    if SIM_NODES:
        results["simulated"] = simulate(SIM_NODES)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gossip-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (OUT / "gossip-bench.md").write_text(md)
    print(md)


def simulate(n):
    """Runs tests/gossip_sim.rs's mass join with n nodes (release build) and reads its line."""
    import re
    say(f"simulator: {n} nodes join one seed at once")
    out = subprocess.run(
        ["cargo", "nextest", "run", "--cargo-profile", "release", "--test", "gossip_sim",
         "--no-capture", "-E", "test(many_nodes_converge_after_joins)"],
        cwd=ROOT, env={**os.environ, "SIM_N": str(n)}, capture_output=True, text=True,
        timeout=1800)
    m = re.search(r"(\d+) nodes converged in ([\d.]+)(ms|s) of simulated time \(([\d.]+)(ms|s) to "
                  r"simulate\), (\d+) packets, (\d+) bytes/node/s", out.stdout + out.stderr)
    if not m:
        say("simulator run gave no figure:\n" + (out.stdout + out.stderr)[-2000:])
        return None
    secs = lambda v, u: float(v) / (1000 if u == "ms" else 1)
    return {"nodes": int(m[1]), "converged_sim_s": secs(m[2], m[3]),
            "cpu_s": round(secs(m[4], m[5]), 1), "packets": int(m[6]),
            "bytes_per_node_s": int(m[7])}


def render(r):
    lines = [
        "# Gossip benchmark: muster beside Debian's serf 0.9.4",
        "",
        f"Run {r['date']} by `tests/bench/gossip.py`: clusters of {r['nodes']} agents on 127.0.0.1, "
        f"{r['runs']} runs each, medians; {r['cores']} cores, load average at start "
        f"{r['load_avg_at_start']:.2f}. Times are seen through `serf members` / `muster members` "
        f"polled every {int(POLL * 1000)} ms, so they include up to that much polling delay.",
        "",
        "| agent | join → all see all (s) | kill -9 → failed everywhere (s) | leave → left everywhere (s) | idle RSS (KiB) | idle bytes/s per node |",
        "|---|---|---|---|---|---|",
    ]
    for kind, v in r["kinds"].items():
        m = v["median"]
        cell = lambda x: "timeout" if x is None else str(x)
        lines.append(f"| {kind} | {cell(m['join_s'])} | {cell(m['kill_to_failed_s'])} | "
                     f"{cell(m['leave_to_left_s'])} | {cell(m['rss_kib'])} | {cell(m['idle_bytes_per_node_s'])} |")
    sim = r.get("simulated")
    if sim:
        lines += ["", f"Simulator (`tests/gossip_sim.rs`, LAN timings, every packet through the real "
                  f"codec): {sim['nodes']} nodes joining one seed at the same instant converge "
                  f"(every node lists every other alive) in {sim['converged_sim_s']} s of simulated "
                  f"time; {sim['packets']} packets, {sim['bytes_per_node_s']} bytes/s per node "
                  f"during the join; {sim['cpu_s']} s of CPU to simulate."]
    lines += ["", "Goals (issue \"Membership\"): kill -9 → failed p50 1.5 s or less with the `local` "
              "profile (Serf 5.7 s), idle RSS 3 MiB or less per agent (Serf 12–15 MB).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
