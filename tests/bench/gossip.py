#!/usr/bin/env python3
"""Gossip benchmark: muster (profiles lan and local) beside Debian's real serf agent, in one
run, on 127.0.0.1, each in plaintext and encrypted (serf `-encrypt KEY`, muster `[gossip]
encrypt = "KEY"`, the same random 32-byte key, AES-256-GCM). For each kind, a cluster of N
agents (default 5) is started and measured:

  join    time from starting N-1 agents (seed already up) until every agent lists all N alive
  kill    time from `kill -9` of one agent until every survivor lists it failed
  leave   time from a graceful stop (serf: SIGINT, muster: SIGTERM) until all list it left
  rss     idle resident memory of one agent process (KiB)
  bytes   idle traffic per agent, bytes/s on loopback (UDP and TCP payload, tcpdump on the
          cluster's ports only), and packets/s per agent
  cpu     idle CPU of the agents (every thread's run time from /proc/PID/task/*/schedstat, in
          ns) over the same 10 s, per agent and per packet on the wire (each packet is sent by
          one agent and received by another: the figure is the cost of both ends)
  sealed  how many captured UDP datagrams open with the run's key (all of them when
          encrypted, none otherwise: the check that the run measured what it says)

Each scenario is repeated (default 3), the kinds alternating within each repetition so that
plaintext and encrypted runs see the same host load, and medians are reported. --quick runs
serf, muster-lan, muster-local and muster-local encrypted once with 3 agents. Then (not with --quick) the
simulator converges SIM_N nodes (default 1000) that all join one seed at once, through the real
codec, and its simulated time and CPU time are reported. Writes report/gossip-bench.md and
report/gossip-bench.json. No figure is a pass/fail threshold.

Usage: tests/bench/gossip.py [--runs N] [--nodes N] [--sim-nodes N] [--kinds K,K] [--quick]
                             [--out DIR]
"""

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import struct
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
ALL_KINDS = ["serf", "serf-enc", "muster-lan", "muster-lan-enc", "muster-local", "muster-local-enc"]
KINDS = arg("--kinds", "serf,muster-lan,muster-local,muster-local-enc" if QUICK
            else ",".join(ALL_KINDS)).split(",")
# One key for every encrypted cluster of the run (serf 0.9.4 takes 32-byte keys only).
KEY = os.urandom(32)
KEY_B64 = base64.b64encode(KEY).decode()
IDLE_S = 10


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
    try:
        import cryptography  # noqa: F401  (opens the captured datagrams with the run's key)
    except ImportError:
        missing.append("python3-cryptography")
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
        encrypted = kind.endswith("-enc")
        if kind.startswith("serf"):
            self.rpc = f"127.0.0.1:{free_port()}"
            argv = ["serf", "agent", "-node", name, "-bind", f"127.0.0.1:{self.port}",
                    "-rpc-addr", self.rpc, "-tag", "role=backend"]
            if seed_port:
                argv += ["-join", f"127.0.0.1:{seed_port}"]
            if encrypted:
                argv += ["-encrypt", KEY_B64]
        else:
            self.sock = f"{tmp}/{name}.sock"
            profile = kind.split("-")[1]
            join = f'join = ["127.0.0.1:{seed_port}"]' if seed_port else ""
            key = f'encrypt = "{KEY_B64}"' if encrypted else ""
            cfg = Path(tmp) / f"{name}.toml"
            cfg.write_text(f"""
[supervisor]
control_socket = "{self.sock}"
[gossip]
name = "{name}"
bind = "127.0.0.1:{self.port}"
{join}
{key}
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
        if self.kind.startswith("serf"):
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

    def cpu_ns(self):
        """{thread id: ns on CPU} of the agent's threads."""
        out = {}
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                out[task.name] = int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return out

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


class AgentGone(Exception):
    """An agent ended by itself (or by something outside the bench): the run measures nothing."""


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
        # Idle: memory, traffic and CPU.
        time.sleep(2)
        rss = agents[1].rss_kib()
        idle = idle_window(agents, tmp)
        gone = [a.name for a in agents if a.proc.poll() is not None]
        if gone:
            raise AgentGone(f"{', '.join(gone)} exited during the run")
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
        leaver.kill(signal.SIGINT if kind.startswith("serf") else signal.SIGTERM)
        left = until(lambda: all(a.members().get(leaver.name) == "left" for a in rest), 30)
        gone = [a.name for a in rest if a.proc.poll() is not None]
        if gone:
            raise AgentGone(f"{', '.join(gone)} exited during the run")
        return {"join_s": join, "kill_to_failed_s": kill, "leave_to_left_s": left,
                "rss_kib": rss, **idle}
    finally:
        for a in agents:
            a.cleanup()


def idle_window(agents, tmp):
    """IDLE_S seconds of an idle cluster: its traffic captured on loopback, its CPU read."""
    ports = " or ".join(f"port {a.port}" for a in agents)
    pcap = Path(tmp) / "idle.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "-w", str(pcap), ports],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # tcpdump attaches before the window starts (it creates the file once it has).
    until(lambda: pcap.exists() and pcap.stat().st_size >= 24, 5)
    time.sleep(0.2)
    cpu0 = [a.cpu_ns() for a in agents]
    t0 = time.monotonic()
    time.sleep(IDLE_S)
    cpu1 = [a.cpu_ns() for a in agents]
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    dump.terminate()
    dump.wait(timeout=5)
    packets, payload, udp, sealed = read_pcap(pcap)
    pcap.unlink()
    # Threads alive at both ends; one that ended in between loses its share (rare when idle).
    cpu = sum(after[t] - before.get(t, 0) for before, after in zip(cpu0, cpu1) for t in after)
    n = len(agents)
    if packets == 0:
        # Nothing captured (tcpdump did not attach in time): no figure rather than a zero.
        say("WARNING: the idle capture is empty; this run's idle figures are left out")
        return {"idle_bytes_per_node_s": None, "idle_packets_per_node_s": None,
                "idle_cpu_ms_per_node_s": round(cpu / 1e6 / elapsed / n, 3),
                "cpu_us_per_packet": None, "udp_datagrams": None, "udp_sealed_with_key": None,
                "sealed_as_configured": None}
    return {"idle_bytes_per_node_s": round(payload / elapsed / n, 1),
            "idle_packets_per_node_s": round(packets / elapsed / n, 2),
            "idle_cpu_ms_per_node_s": round(cpu / 1e6 / elapsed / n, 3),
            "cpu_us_per_packet": round(cpu / 1e3 / packets, 1) if packets else None,
            "udp_datagrams": udp, "udp_sealed_with_key": sealed,
            # Every datagram sealed with the key when the cluster is encrypted, none when not.
            "sealed_as_configured": udp > 0 and sealed == (udp if agents[0].kind.endswith("-enc") else 0)}


def read_pcap(path):
    """(packets, UDP + TCP payload bytes, UDP datagrams, datagrams the run's key opens) of a
    classic pcap file of loopback traffic (Ethernet frames, IPv4)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aes = AESGCM(KEY)
    data = path.read_bytes()
    if len(data) < 24:
        return 0, 0, 0, 0
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    at, packets, payload, udp, sealed = 24, 0, 0, 0, 0
    while at + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[at + 8:at + 12])[0]
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl, proto, total = (ip[0] & 15) * 4, ip[9], struct.unpack(">H", ip[2:4])[0]
        seg = ip[ihl:total]
        if proto == 17:
            body = seg[8:]
            udp += 1
            if len(body) >= 29 and body[0] in (0, 1):
                try:
                    aes.decrypt(body[1:13], body[13:], b"")
                    sealed += 1
                except Exception:
                    pass
        elif proto == 6:
            body = seg[(seg[12] >> 4) * 4:] if len(seg) >= 20 else b""
        else:
            continue
        packets += 1
        payload += len(body)
    return packets, payload, udp, sealed


def median(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def main():
    global MUSTER
    ensure_tools()
    MUSTER = muster_bin()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nodes": NODES,
               "runs": RUNS, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0],
               "idle_window_s": IDLE_S, "kinds": {}}
    runs = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        # Alternating: every kind once per repetition, so plaintext and encrypted runs of a
        # kind are seconds apart and see the same load.
        for r in range(RUNS):
            for kind in KINDS:
                for attempt in range(3):
                    say(f"{kind}: run {r + 1} of {RUNS}, {NODES} agents")
                    try:
                        runs[kind].append(one_run(kind, tmp, MUSTER))
                        break
                    except AgentGone as e:
                        say(f"WARNING {kind}: {e}; run again")
                        results["runs_repeated"] = results.get("runs_repeated", 0) + 1
    for kind, rs in runs.items():
        if not rs:
            continue
        results["kinds"][kind] = {
            "runs": rs,
            "median": {k: median([run[k] for run in rs]) for k in rs[0] if k != "sealed_as_configured"},
            # Every run with a capture sealed as configured (and at least one captured).
            "sealed_as_configured": all(run["sealed_as_configured"] is not False for run in rs)
            and any(run["sealed_as_configured"] for run in rs),
        }
        if not results["kinds"][kind]["sealed_as_configured"]:
            say(f"WARNING {kind}: not every run's datagrams were sealed as configured: "
                + ", ".join(f"{run['udp_sealed_with_key']} of {run['udp_datagrams']}" for run in rs))
    results["encryption_cost"] = cost(results["kinds"])
    if not QUICK:
        results["in_process"] = crypto_cost()
    if SIM_NODES:
        results["simulated"] = simulate(SIM_NODES)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gossip-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (OUT / "gossip-bench.md").write_text(md)
    print(md)


def crypto_cost(rounds=2000):
    """The CPU per datagram of a node taking serf's golden datagrams in plaintext and sealed
    (tests/gossip_encrypt.rs, release build), without the timers and system calls of a real
    agent around it."""
    import re
    say(f"in process: serf's datagrams into a plain and a keyed node, {rounds} rounds")
    out = subprocess.run(
        ["cargo", "nextest", "run", "--cargo-profile", "release", "--test", "gossip_encrypt",
         "--no-capture", "-E", "test(sealed_golden_datagrams_give_the_plaintext_view_and_their_cost_is_measured)"],
        cwd=ROOT, env={**os.environ, "CRYPTO_COST_ROUNDS": str(rounds)}, capture_output=True,
        text=True, timeout=1800)
    m = re.search(r"crypto cost: (\d+) datagrams of (\d+) bytes on average, (\d+) rounds: receive "
                  r"plaintext (\d+) ns, encrypted (\d+) ns per datagram; open (\d+) ns, seal (\d+) ns",
                  out.stdout + out.stderr)
    if not m:
        say("in-process cost gave no figure:\n" + (out.stdout + out.stderr)[-2000:])
        return None
    return {"datagrams": int(m[1]), "mean_bytes": int(m[2]), "rounds": int(m[3]),
            "receive_plain_ns": int(m[4]), "receive_encrypted_ns": int(m[5]),
            "open_ns": int(m[6]), "seal_ns": int(m[7])}


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
                  r"simulate\), (\d+) packets, (?:(\d+) push/pulls, )?(\d+) bytes/node/s",
                  out.stdout + out.stderr)
    if not m:
        say("simulator run gave no figure:\n" + (out.stdout + out.stderr)[-2000:])
        return None
    secs = lambda v, u: float(v) / (1000 if u == "ms" else 1)
    return {"nodes": int(m[1]), "converged_sim_s": secs(m[2], m[3]),
            "cpu_s": round(secs(m[4], m[5]), 1), "packets": int(m[6]),
            "push_pulls": int(m[7]) if m[7] else None, "bytes_per_node_s": int(m[8])}


def cost(kinds):
    """Each encrypted kind beside its plaintext one: ratios and differences of the medians."""
    out = {}
    for kind in kinds:
        plain = kinds.get(kind.removesuffix("-enc"))
        if not kind.endswith("-enc") or plain is None:
            continue
        p, e = plain["median"], kinds[kind]["median"]
        ratio = lambda k: round(e[k] / p[k], 2) if e[k] is not None and p[k] else None
        diff = lambda k: round(e[k] - p[k], 3) if e[k] is not None and p[k] is not None else None
        out[kind] = {"cpu_us_per_packet_ratio": ratio("cpu_us_per_packet"),
                     "idle_cpu_ratio": ratio("idle_cpu_ms_per_node_s"),
                     "bytes_per_node_s_ratio": ratio("idle_bytes_per_node_s"),
                     "kill_to_failed_diff_s": diff("kill_to_failed_s"),
                     "join_diff_s": diff("join_s")}
    return out


def render(r):
    lines = [
        "# Gossip benchmark: muster beside Debian's serf 0.9.4",
        "",
        f"Run {r['date']} by `tests/bench/gossip.py`: clusters of {r['nodes']} agents on 127.0.0.1, "
        f"{r['runs']} runs each, medians; {r['cores']} cores, load average at start "
        f"{r['load_avg_at_start']:.2f}"
        + (f"; {r['runs_repeated']} run(s) repeated because an agent exited during them"
           if r.get("runs_repeated") else "")
        + ". Times are seen through `serf members` / `muster members` "
        f"polled every {int(POLL * 1000)} ms, so they include up to that much polling delay.",
        "",
        "`-enc`: encrypted with one random 32-byte key (AES-256-GCM; serf `-encrypt`, muster "
        "`[gossip] encrypt`). Idle figures over "
        f"{r['idle_window_s']} s: bytes and packets on loopback (UDP and TCP payload), CPU = "
        "every agent thread's run time (schedstat), per agent per second and per packet "
        "(sender's and receiver's cost together; at idle, timers are a part of it). \"sealed\": "
        "captured datagrams the run's key opens (median of runs).",
        "",
        "| agent | join → all see all (s) | kill -9 → failed everywhere (s) | leave → left everywhere (s) | idle RSS (KiB) | idle bytes/s per node | packets/s per node | CPU ms/s per node | CPU µs per packet | datagrams sealed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cell = lambda x: "timeout" if x is None else str(x)
    for kind, v in r["kinds"].items():
        m = v["median"]
        lines.append(f"| {kind} | {cell(m['join_s'])} | {cell(m['kill_to_failed_s'])} | "
                     f"{cell(m['leave_to_left_s'])} | {cell(m['rss_kib'])} | {cell(m['idle_bytes_per_node_s'])} | "
                     f"{cell(m['idle_packets_per_node_s'])} | {cell(m['idle_cpu_ms_per_node_s'])} | "
                     f"{cell(m['cpu_us_per_packet'])} | {m['udp_sealed_with_key']} of {m['udp_datagrams']}"
                     f"{'' if v['sealed_as_configured'] else ' (NOT as configured)'} |")
    if r.get("encryption_cost"):
        lines += ["", "Cost of encryption (encrypted median ÷ plaintext median of the same agent and "
                  "profile; detection and join: encrypted − plaintext, s):", "",
                  "| agent | CPU per packet | CPU per node | bytes/s per node | kill -9 → failed | join |",
                  "|---|---|---|---|---|---|"]
        for kind, c in r["encryption_cost"].items():
            lines.append(f"| {kind} | ×{cell(c['cpu_us_per_packet_ratio'])} | ×{cell(c['idle_cpu_ratio'])} | "
                         f"×{cell(c['bytes_per_node_s_ratio'])} | {cell(c['kill_to_failed_diff_s'])} | "
                         f"{cell(c['join_diff_s'])} |")
    c = r.get("in_process")
    if c:
        lines += ["", f"In process (`tests/gossip_encrypt.rs`, release build, {c['rounds']} passes over "
                  f"serf's {c['datagrams']} captured datagrams of {c['mean_bytes']} bytes on average, "
                  f"AES-256-GCM): a node takes a datagram (decode, SWIM and Serf, its answers framed) "
                  f"in {c['receive_plain_ns']} ns in plaintext and {c['receive_encrypted_ns']} ns "
                  f"sealed (its answers sealed too); opening one costs {c['open_ns']} ns, sealing one "
                  f"{c['seal_ns']} ns. The agents' idle CPU per packet above also holds their timers, "
                  "system calls and polling."]
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
