#!/usr/bin/env python3
"""The hold benchmark (issue 12): the everyday lifecycles of a single-replica app in the compose
lab, under a bounded load through the load balancer (4 keep-alive clients, no cookies, no
retries, every non-200 and every error counted):

  recreate   `docker-compose up -d --force-recreate --scale webapp=1 webapp` of the only webapp
  stop-start `docker-compose stop webapp`, 3 s, `docker-compose start webapp`
  restart    `docker restart` of the only webapp
  lb         `docker restart` of the load balancer (its listening gap, probed every 2 ms)
  scale      scale 1 -> 3 -> 1 (for contrast)
  both       2 webapps, both replaced: `docker-compose up -d --force-recreate --scale
             webapp=2 webapp` (the last server in service leaves while replacements start)

compose/docker-compose.yml says `scale: 2` for webapp: every `up` here names its scale, and
each row checks first that the number of webapp containers running is the one it is about
(it stops the benchmark otherwise).

For each: failed requests, and the latency HAProxy's hold added to the requests it held
(requests slower than HELD_MS; added = their time minus the median of the calm requests):
p50, p99, max. The hold's own counters (the stats page's /hold) are read after each row.

Beside them, in the same run:
  sf         the lab's way of restarting HAProxy, `haproxy -f cfg -sf OLDPID`, in a container of
             the ha image, its listening gap probed the same way (20 reloads)
  cost       requests/s and p99 through HAProxy with the shipped template's hold rules and
             without them (the template before the hold), servers in service, wrk (or the
             Python clients when wrk is missing), alternating, 6 rounds each (3 with --quick)

Writes report/hold-bench.md and report/hold-bench.json. No figure is a pass/fail threshold.
Usage: tests/bench/hold.py [--quick] [--out DIR]
"""

import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = sys.argv[1:]
QUICK = "--quick" in ARGS
OUT = Path(ARGS[ARGS.index("--out") + 1]) if "--out" in ARGS else ROOT / "report"
TAG = os.environ.get("MUSTER_IMAGE_TAG", "dev")
PROJECT = f"muster-hold-bench-{TAG}"
HELD_MS = 150


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HTTP = free_port()
STATS = free_port()


def gossip_key_file():
    """A random gossip key for the lab (mode 600, in a directory removed at exit): the lab is
    encrypted, as compose/lab makes it."""
    d = tempfile.TemporaryDirectory(prefix="muster-bench-key-")
    path = Path(d.name) / "gossip.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return d, path


KEY_DIR, KEY_FILE = gossip_key_file()
ENV = {**os.environ, "MUSTER_HTTP_PORT": str(HTTP), "MUSTER_STATS_PORT": str(STATS),
       "MUSTER_NETWORK": f"{PROJECT}-heig", "MUSTER_SUBNET": "192.168.230.0/24",
       "MUSTER_HA_IP": "192.168.230.42",
       "MUSTER_GOSSIP_KEY_FILE": str(KEY_FILE)}


def compose(*args):
    return subprocess.run(["docker-compose", "-p", PROJECT, "-f", "compose/docker-compose.yml",
                           *args], cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)


def docker(*args, check=False):
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=check).stdout.strip()


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait(what, cond, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def hold_stats():
    """The hold's counters of backend `nodes` (the stats page's /hold); zeros when absent."""
    names = ["held", "released", "timed_out", "pages", "episodes", "longest_ms", "waiting"]
    try:
        status, body = get(STATS, "/hold")
    except OSError:
        return dict.fromkeys(names, 0)
    for line in body.splitlines()[1:]:
        w = line.split()
        if w and w[0] == "nodes":
            return dict(zip(names, map(int, w[1:])))
    return dict.fromkeys(names, 0)


class Load:
    """Keep-alive clients (no cookies, no retries): every request's time, every failure."""

    def __init__(self, port, conns=4, pause=0.005):
        self.port = port
        self.times = []
        self.failed = 0
        self.errors = []
        self.stop = False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(pause,), daemon=True)
                        for _ in range(conns)]
        for t in self.threads:
            t.start()

    def client(self, pause):
        c = None
        while not self.stop:
            t0 = time.monotonic()
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    c = None
                err = None if r.status == 200 else f"status {r.status}"
            except (OSError, http.client.HTTPException) as e:
                if c:
                    c.close()
                c = None
                err = repr(e)
            dt = time.monotonic() - t0
            with self.lock:
                if err:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append(f"{time.strftime('%H:%M:%S')} {err}")
                else:
                    self.times.append(dt)
            time.sleep(pause)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()
        return self


class Gap(threading.Thread):
    """Asks HAProxy's stats port every 2 ms (a published port accepts even when nothing
    listens behind it, so an HTTP answer is the test); the longest span without one."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = False
        self.last_ok = None
        self.longest = 0.0

    def run(self):
        while not self.stop:
            t = time.monotonic()
            ok = False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"HEAD /hold HTTP/1.0\r\n\r\n")
                    ok = s.recv(12).startswith(b"HTTP/")
            except OSError:
                pass
            if ok:
                if self.last_ok is not None:
                    self.longest = max(self.longest, t - self.last_ok)
                self.last_ok = time.monotonic()
            time.sleep(0.002)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def running_webapps():
    """The ids of the lab's webapp containers that are running."""
    return docker("ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                  "--filter", "label=com.docker.compose.service=webapp").split()


def hosts_served(n=40):
    """The webapps (their `host`) that answered n cookie-less requests."""
    hosts = set()
    for _ in range(n):
        try:
            status, body = get(HTTP)
            if status == 200:
                hosts.add(json.loads(body).get("host"))
        except (OSError, ValueError):
            pass
    return hosts


def settled(webapps):
    """Waits until exactly `webapps` webapp containers run and each answers through the load
    balancer; stops the benchmark when the number running is not that."""
    wait(f"{webapps} webapps served", lambda: len(hosts_served()) == webapps, 90)
    ids = running_webapps()
    if len(ids) != webapps:
        raise SystemExit(f"{len(ids)} webapp containers run ({ids}), the row is about {webapps}")


def row(name, action, settle, webapps=1):
    """With `webapps` webapps running and served, runs `action` under load; waits `settle` s
    after it; the row's figures."""
    settled(webapps)
    before = hold_stats()
    load = Load(HTTP)
    time.sleep(2)
    t0 = time.time()
    extra = action() or {}
    time.sleep(settle)
    load.finish()
    after = hold_stats()
    calm = [t for t in load.times if t * 1000 < HELD_MS]
    base = statistics.median(calm) if calm else 0.0
    held = [(t - base) * 1000 for t in load.times if t * 1000 >= HELD_MS]
    r = {"row": name, "webapps": webapps, "requests": len(load.times) + load.failed, "failed": load.failed,
         "errors": load.errors, "calm_p50_ms": base * 1000, "held": len(held),
         "added_p50_ms": pct(held, 50), "added_p99_ms": pct(held, 99),
         "added_max_ms": max(held) if held else None, "seconds": time.time() - t0,
         # HAProxy's counters start again when the load balancer restarts.
         "hold": {k: after[k] - (0 if after["episodes"] < before["episodes"] else before[k])
                  for k in ("held", "released", "timed_out", "pages", "episodes")}, **extra}
    say(f"{name}: {r['failed']} failed of {r['requests']}, {r['held']} held "
        f"(added p50 {r['added_p50_ms']}, max {r['added_max_ms']} ms) {extra}")
    return r


def webapp_id():
    ids = running_webapps()
    if len(ids) != 1:
        raise SystemExit(f"{len(ids)} webapp containers run ({ids}), not one")
    return ids[0]


def serving():
    return get(HTTP)[0] == 200


def lab_rows():
    rows = []
    rows.append(row("docker-compose up -d --force-recreate webapp (the only one)",
                    lambda: compose("up", "-d", "--force-recreate", "--no-deps", "--scale",
                                    "webapp=1", "webapp") and None, 6))

    def stop_start():
        compose("stop", "webapp")
        if running_webapps():
            raise SystemExit(f"webapps still run after stop: {running_webapps()}")
        time.sleep(3)
        compose("start", "webapp")
        if len(running_webapps()) != 1:
            raise SystemExit(f"start gave {len(running_webapps())} webapps, not one")
    rows.append(row("docker-compose stop webapp, 3 s, start", stop_start, 6))
    rows.append(row("docker restart of the only webapp",
                    lambda: docker("restart", webapp_id()) and None, 6))

    def lb():
        ha = compose("ps", "-q", "ha").stdout.split()[0]
        gap = Gap(STATS)
        gap.start()
        time.sleep(0.5)
        docker("restart", ha)
        wait("the load balancer back", serving, 60)
        time.sleep(1)
        gap.stop = True
        gap.join()
        return {"gap_ms": round(gap.longest * 1000, 1)}
    rows.append(row("docker restart ha (the load balancer)", lb, 3))

    def scale():
        compose("up", "-d", "--no-recreate", "--scale", "webapp=3")
        time.sleep(8)
        compose("up", "-d", "--no-recreate", "--scale", "webapp=1")
    rows.append(row("scale 1 -> 3 -> 1", scale, 6))

    compose("up", "-d", "--no-recreate", "--scale", "webapp=2")
    rows.append(row("2 webapps, both replaced (docker-compose up -d --force-recreate)",
                    lambda: compose("up", "-d", "--force-recreate", "--no-deps", "--scale",
                                    "webapp=2", "webapp") and None, 6, webapps=2))
    return rows


APP_CFG = """global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend app
    bind 127.0.0.1:3000
    http-request return status 200 content-type text/plain string ok
"""


def lb_cfg(hold, port=80, stats=1936):
    """The shipped template with one server in service, with or without the hold's lines."""
    text = (ROOT / "haproxy/haproxy.cfg.hbs").read_text()
    lines = []
    skip = False
    for line in text.splitlines():
        if line.startswith("{{#each"):
            lines.append("    server web 127.0.0.1:3000 id 1")
            skip = True
            continue
        if skip:
            skip = not line.startswith("{{/each")
            continue
        if not hold and ("muster_hold" in line or "lua-load" in line):
            continue
        lines.append(line)
    out = "\n".join(lines).replace("{{hold_timeout_ms}}", "15000")
    out = out.replace("/etc/haproxy/", "/x/").replace("/run/haproxy/", "/tmp/")
    out = out.replace("bind *:80", f"bind *:{port}").replace("bind *:1936", f"bind *:{stats}")
    out = out.replace("    log stdout format raw local0 info\n", "")
    return out.replace("    option httplog\n", "").replace("    log global\n", "") + "\n"


class Box:
    """A container of the ha image with these files in /x, ports published on loopback."""

    def __init__(self, name, files, ports):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix="muster-hold-"))
        for f, text in files.items():
            (self.dir / f).write_text(text)
        for f in ("muster-hold.lua", "starting.html"):
            shutil.copy(ROOT / "haproxy" / f, self.dir / f)
        os.chmod(self.dir, 0o755)
        docker("rm", "-f", name)
        pub = sum((["-p", f"127.0.0.1:{h}:{c}"] for h, c in ports), [])
        docker("run", "-d", "--name", name, "--cpus", "1", *pub, "-v", f"{self.dir}:/x",
               "--entrypoint", "sleep", f"muster/ha:{TAG}", "3600", check=True)

    def sh(self, cmd):
        return subprocess.run(["docker", "exec", self.name, "sh", "-c", cmd],
                              capture_output=True, text=True)

    def end(self):
        docker("rm", "-f", self.name)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_sf():
    """The lab's reload: `haproxy -f cfg -sf OLD`, its listening gap."""
    port, stats = free_port(), free_port()
    box = Box(f"{PROJECT}-sf", {"app.cfg": APP_CFG, "lb.cfg": lb_cfg(False)},
              [(port, 80), (stats, 1936)])
    try:
        box.sh("haproxy -D -f /x/app.cfg -p /tmp/app.pid; haproxy -D -f /x/lb.cfg -p /tmp/lb.pid")
        wait("the -sf haproxy", lambda: get(port)[0] == 200, 20)
        gaps = []
        load = Load(port)
        for _ in range(5 if QUICK else 20):
            gap = Gap(stats)
            gap.start()
            time.sleep(0.3)
            box.sh("haproxy -D -f /x/lb.cfg -p /tmp/lb.pid -sf $(cat /tmp/lb.pid)")
            time.sleep(0.5)
            gap.stop = True
            gap.join()
            gaps.append(gap.longest * 1000)
        load.finish()
        r = {"reloads": len(gaps), "gap_ms_p50": pct(gaps, 50), "gap_ms_max": max(gaps),
             "requests": len(load.times) + load.failed, "failed": load.failed}
        say(f"haproxy -sf: {r}")
        return r
    finally:
        box.end()


def bench_cost():
    """Requests/s and p99 with and without the hold's rules, servers in service."""
    hold_port, plain_port = free_port(), free_port()
    files = {"app.cfg": APP_CFG, "hold.cfg": lb_cfg(True, 8081, 8091),
             "plain.cfg": lb_cfg(False, 8082, 8092)}
    box = Box(f"{PROJECT}-cost", files, [(hold_port, 8081), (plain_port, 8082)])
    wrk = shutil.which("wrk")
    try:
        box.sh("haproxy -D -f /x/app.cfg; haproxy -D -f /x/hold.cfg; haproxy -D -f /x/plain.cfg")
        for p in (hold_port, plain_port):
            wait("the cost haproxies", lambda: get(p)[0] == 200, 20)
        res = {"hold": [], "plain": []}
        for _ in range(3 if QUICK else 6):
            for name, p in (("hold", hold_port), ("plain", plain_port)):
                res[name].append(measure(wrk, p))
        out = {"tool": "wrk -t2 -c4 -d5s --latency" if wrk else "4 Python keep-alive clients, 5 s"}
        for name, xs in res.items():
            out[name] = {"rps": statistics.median(x["rps"] for x in xs),
                         "p99_ms": statistics.median(x["p99_ms"] for x in xs),
                         "non_200": sum(x["non_200"] for x in xs), "rounds": xs}
        say(f"cost: {out['hold']['rps']:.0f} vs {out['plain']['rps']:.0f} req/s, "
            f"p99 {out['hold']['p99_ms']:.2f} vs {out['plain']['p99_ms']:.2f} ms")
        return out
    finally:
        box.end()


def measure(wrk, port):
    if wrk:
        out = subprocess.run([wrk, "-t2", "-c4", "-d5s", "--latency",
                              f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
        rps = float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1])
        p99 = next(l for l in out.splitlines() if l.strip().startswith("99%")).split()[1]
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        unit = next(u for u in ("us", "ms", "s") if p99.endswith(u))
        non = next((int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l), 0)
        return {"rps": rps, "p99_ms": float(p99[:-len(unit)]) * scale[unit], "non_200": non}
    load = Load(port, pause=0)
    time.sleep(5)
    load.finish()
    return {"rps": len(load.times) / 5, "p99_ms": pct(load.times, 99) * 1000,
            "non_200": load.failed}


def main():
    say(f"building images (images/build.sh, tag {TAG})")
    subprocess.run([str(ROOT / "images/build.sh")], check=True, stdout=subprocess.DEVNULL)
    compose("down", "-v", "-t", "5")
    try:
        compose("up", "-d", "--scale", "webapp=1")
        wait("the lab serving", serving, 90)
        rows = lab_rows()
    finally:
        compose("down", "-v", "-t", "5")
    sf = bench_sf()
    cost = bench_cost()
    result = {"rows": rows, "haproxy_sf": sf, "cost": cost, "held_ms": HELD_MS}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hold-bench.json").write_text(json.dumps(result, indent=2) + "\n")
    f = lambda x: "–" if x is None else f"{x:.0f}"
    table = "\n".join(
        f"| {r['row']} | {r['requests']} | **{r['failed']}** | {r['held']} | {f(r['added_p50_ms'])}"
        f" | {f(r['added_p99_ms'])} | {f(r['added_max_ms'])} | {r['hold']['held']} / "
        f"{r['hold']['timed_out']} | {r.get('gap_ms', '')} |" for r in rows)
    md = f"""# Hold benchmark (issue 12)

`tests/bench/hold.py` in the compose lab on this machine (2 cores, shared), one webapp
(two in the last row; each row checks first that exactly that many run), 4 keep-alive clients (no cookies, no retries, every non-200 and every error counted).
"held" = requests slower than {HELD_MS} ms; their added latency is their time minus the
median of the other requests. "hold counters" = what HAProxy's hold counted (stats page /hold):
requests held / timed out.

| what the user did | requests | failed | held | added p50 ms | p99 ms | max ms | hold counters | listening gap ms |
|---|---|---|---|---|---|---|---|---|
{table}

The lab's way of restarting HAProxy, `haproxy -f cfg -sf OLDPID` in a container of the ha
image, {sf['reloads']} times under the same load: longest listening gap p50
{sf['gap_ms_p50']:.1f} ms, max {sf['gap_ms_max']:.1f} ms; {sf['failed']} failed of
{sf['requests']} requests. (A reload keeps the old process's sockets; a container restart
cannot: its gap is bounded by Docker stopping and starting the container, muster's start and
HAProxy's own start.)

Cost of the hold while a server is in service ({cost['tool']}, alternating, {len(cost['hold']['rounds'])} rounds each, medians):

| template | requests/s | p99 ms | non-200 |
|---|---|---|---|
| with the hold (shipped) | {cost['hold']['rps']:.0f} | {cost['hold']['p99_ms']:.2f} | {cost['hold']['non_200']} |
| without it (the template before) | {cost['plain']['rps']:.0f} | {cost['plain']['p99_ms']:.2f} | {cost['plain']['non_200']} |
"""
    (OUT / "hold-bench.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
