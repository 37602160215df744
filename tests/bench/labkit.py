"""Shared pieces for the benchmarks that drive a compose lab (imported by tests/bench/compare.py;
not a script): a `Stack` (one compose project on its own network, subnet and loopback ports),
an open-loop HTTP load that records every request, host-side memory of a container, and the
small statistics the reports print.
"""

import asyncio
import base64
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def say(msg):
    print(f"==> {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def docker(*args, check=False, timeout=120):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def wait(what, cond, limit=60, step=0.05):
    """Polls `cond` until it is true; the seconds it took, or None after `limit` s."""
    start = time.time()
    while time.time() - start < limit:
        try:
            if cond():
                return time.time() - start
        except OSError:
            pass
        time.sleep(step)
    say(f"timed out after {limit} s waiting for {what}")
    return None


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def gossip_key_file():
    """A random gossip key (mode 600) in a directory removed at exit."""
    d = tempfile.TemporaryDirectory(prefix="muster-bench-key-")
    path = Path(d.name) / "gossip.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return d, path


class Stack:
    """One compose lab: its own project, network, /24 subnet (HA at .42) and loopback ports."""

    def __init__(self, name, compose_file, project, subnet, http, stats, env=None):
        self.name = name
        self.file = compose_file
        self.project = project
        self.http = http
        self.stats = stats
        self.subnet = subnet
        self.env = {**os.environ, "MUSTER_HTTP_PORT": f"127.0.0.1:{http}",
                    "MUSTER_STATS_PORT": f"127.0.0.1:{stats}",
                    "MUSTER_NETWORK": f"{project}-heig",
                    "MUSTER_SUBNET": f"192.168.{subnet}.0/24",
                    "MUSTER_HA_IP": f"192.168.{subnet}.42", **(env or {})}

    def compose(self, *args, check=True, timeout=180):
        r = subprocess.run(["docker-compose", "-p", self.project, "-f", self.file, *args],
                           cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"{self.name}: docker-compose {' '.join(args)}: {r.stderr[-2000:]}")
        return r

    def ids(self, service="webapp"):
        return self.compose("ps", "-q", service).stdout.split()

    def running(self, service="webapp"):
        """Ids of the service's running containers."""
        ids = self.ids(service)
        if not ids:
            return []
        out = docker("inspect", "-f", "{{.Id}} {{.State.Running}}", *ids)
        return [line.split()[0] for line in out.splitlines() if line.endswith("true")]

    def scale(self, n):
        return self.compose("up", "-d", "--no-recreate", "--no-deps", "--scale", f"webapp={n}",
                            "webapp")


def hostname(cid):
    return docker("inspect", "-f", "{{.Config.Hostname}}", cid)


def address(cid, wait=30):
    """The container's address on its network, waiting up to `wait` s for it to have one (a
    container that is restarting has none)."""
    end = time.time() + wait
    while True:
        ips = docker("inspect", "-f",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", cid).split()
        if ips or time.time() > end:
            break
        time.sleep(0.5)
    if not ips:
        raise RuntimeError(f"container {cid[:12]} has no address after {wait} s")
    return ips[0]


HOST = re.compile(rb'"host":"([^"]+)"')


class OpenLoad:
    """An open-loop load: request i is sent at start + i / rate, each on a new TCP connection
    (`GET path(i) HTTP/1.1`, `Connection: close`), whatever happened to the ones before; at
    most `limit` s of sending. Records (sent, seconds taken, status or 0, serving host or None,
    error or None, i) for every request. A request fails on a non-2xx, an error, an empty answer
    or the timeout."""

    def __init__(self, port, rate, limit=120, host="127.0.0.1", path=lambda i: "/",
                 timeout=30.0):
        self.port, self.rate, self.limit, self.host = port, rate, limit, host
        self.path, self.timeout = path, timeout
        self.records = []
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.send(),), daemon=True)
        self.thread.start()

    async def one(self, i):
        sent = time.time()
        status, host, err = 0, None, None
        try:
            data = await asyncio.wait_for(self.exchange(i), self.timeout)
            head = data.split(b"\r\n", 1)[0].split()
            status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
            m = HOST.search(data)
            host = m.group(1).decode() if m else None
            if not data:
                err = "empty answer"
        except asyncio.TimeoutError:
            err = "timeout"
        except (OSError, ValueError) as e:
            err = type(e).__name__
        self.records.append((sent, time.time() - sent, status, host, err, i))

    async def exchange(self, i):
        r, w = await asyncio.open_connection(self.host, self.port)
        try:
            w.write(f"GET {self.path(i)} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                    .encode())
            await w.drain()
            return await r.read()
        finally:
            w.close()

    async def send(self):
        start = time.time()
        tasks = []
        i = 0
        while not self.stopping and time.time() - start < self.limit:
            due = start + i / self.rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.one(i)))
            i += 1
        if tasks:
            await asyncio.wait(tasks)

    def finish(self, all_sent=False):
        """Stops sending (or, with all_sent, lets the `limit` s of sending run out); waits for
        the requests in flight (each bounded by the timeout)."""
        self.stopping = not all_sent
        self.thread.join(self.timeout + 10 + (self.limit if all_sent else 0))
        return sorted(self.records)

    @staticmethod
    def good(rec):
        return rec[4] is None and 200 <= rec[2] < 300


def out_of_rotation(records, t0, victim, run=20):
    """Send time of the first of `run` consecutive requests after t0 that all succeeded from
    a host other than the victim (baseline.md E2's rule); None when there is none."""
    streak = []
    for rec in records:
        if rec[0] < t0:
            continue
        if OpenLoad.good(rec) and rec[3] != victim:
            streak.append(rec[0])
            if len(streak) == run:
                return streak[0]
        else:
            streak = []
    return None


def served_again(records, t0, run=20, hosts=None):
    """Send time of the first of `run` consecutive good requests after t0 (from `hosts` when
    given)."""
    streak = []
    for rec in records:
        if rec[0] < t0:
            continue
        if OpenLoad.good(rec) and (hosts is None or rec[3] in hosts):
            streak.append(rec[0])
            if len(streak) == run:
                return streak[0]
        else:
            streak = []
    return None


def rss_kib(cid):
    """Sum of VmRSS of the container's processes, read on the host (`docker top` lists their
    host PIDs; nothing runs inside the container), and the per-process figures."""
    out = docker("top", cid, "-eo", "pid,comm")
    procs = []
    for line in out.splitlines()[1:]:
        pid, _, comm = line.strip().partition(" ")
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        procs.append((comm.strip(), int(m.group(1)) if m else 0))
    return sum(k for _, k in procs), procs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
