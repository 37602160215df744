#!/usr/bin/env python3
"""Log-shipping benchmark: muster shipping a service's lines to Debian's rsyslog (imrelp) on
127.0.0.1, in one run:

  rate      lines/s from muster's start until the collector has written every line, for N
            lines (default 1,000,000) written as fast as the service can; beside it, the
            same service under muster without shipping (its output to /dev/null), and
            rsyslog's own `omrelp` forwarding the same lines from one rsyslog to another,
            as anchors
  memory    muster's RSS while the collector is down and the service has written more than
            the queue holds, for queue sizes 10,000 and 100,000 lines (policy `block`)
  collector the lab collector's configuration (images/collector/rsyslog.conf, its ruleset
            queue Direct: a line is written before it is acknowledged) beside the one before
            (acknowledged once in the in-memory main queue), run by rsyslogd on loopback:
            lines/s through RELP (alternating runs, medians), and `kill -9` restarts of
            rsyslogd under load, lines lost and duplicated counted by the sequence numbers
            in the lines; beside them the fsync'd disk queue's lines/s (a short window)
  lab       (not with --quick) the same kills in the compose lab: the collector container
            `docker kill -s KILL` and `docker start` 10 times while muster on the host ships
            to it, the image as built and the image with the configuration before (its own
            compose project and subnet 192.168.(228 - MUSTER_LAB_SUBNET_OFFSET).0/24; the
            images of MUSTER_IMAGE_TAG, built first by images/build.sh)
  restarts  (not with --quick) lost and duplicated lines when the collector is restarted
            five times while one million lines go through (tests/logship.rs's test)

Writes report/logship-bench.md and report/logship-bench.json. No throughput figure is a
pass/fail threshold; the script exits 1 when the shipped collector configuration lost a line
in a kill scenario (that is a claim of the image, not a figure). --quick (tests/run) keeps to
loopback and smaller counts.
Usage: tests/bench/logship.py [--lines N] [--quick] [--out DIR]
"""

import json
import os
import re
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


LINES = arg("--lines", 100_000 if QUICK else 1_000_000)
OUT = Path(arg("--out", str(ROOT / "report")))
MUSTER = None  # set by main()


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools():
    if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists():
        say("installing rsyslog rsyslog-relp")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "rsyslog", "rsyslog-relp"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)


def muster_bin():
    say("building muster (release)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    return str(ROOT / "target/release/muster")


class Rsyslog:
    """rsyslogd in the foreground: imrelp on a port, every message to a file; optionally it
    forwards everything to another collector with omrelp instead."""

    def __init__(self, tmp, name, forward_to=None, imtcp=False):
        self.dir = Path(tmp) / name
        (self.dir / "work").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tcp = free_port() if imtcp else None
        self.out = self.dir / "out.log"
        action = (f'action(type="omrelp" target="127.0.0.1" port="{forward_to}" windowSize="1024")'
                  if forward_to else
                  f'action(type="omfile" file="{self.out}" template="RSYSLOG_SyslogProtocol23Format")')
        tcp = (f'module(load="imtcp")\ninput(type="imtcp" port="{self.tcp}" address="127.0.0.1" '
               f'ruleset="r")' if imtcp else "")
        omrelp = 'module(load="omrelp")' if forward_to else ""
        (self.dir / "rsyslog.conf").write_text(f"""
global(workDirectory="{self.dir}/work" maxMessageSize="64k")
module(load="imrelp")
{omrelp}
input(type="imrelp" port="{self.port}" address="127.0.0.1" ruleset="r" maxDataSize="64k")
{tcp}
ruleset(name="r") {{ {action} }}
""")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/sbin/rsyslogd", "-n", "-f", str(self.dir / "rsyslog.conf"), "-i",
             str(self.dir / "pid")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda: connectable(self.port), 20)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def lines(self):
        try:
            with open(self.out, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0


def connectable(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def until(cond, limit, step=0.02):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return time.monotonic() - start
        time.sleep(step)
    return None


PRODUCER = ("import sys\nw = sys.stdout.write\nfor i in range({n}): "
            "w('GET /api/students %d 200 0.512 ms - 1234\\n' % i)\nsys.stdout.flush()\n")


def config(tmp, name, body, n, linger):
    path = Path(tmp) / f"{name}.toml"
    script = PRODUCER.format(n=n) + f"import time\ntime.sleep({linger})\n"
    path.write_text(f"""
[supervisor]
control_socket = false
{body}
[services.app]
main = true
command = ["python3", "-c", '''{script}''']
""")
    return str(path)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rate(tmp, muster):
    """Lines/s: muster start → every line written by the collector."""
    results = {}
    col = Rsyslog(tmp, "rate")
    cfg = config(tmp, "rate", f'[logship]\ntarget = "127.0.0.1:{col.port}"\nhostname = "bench"',
                 LINES, 600)
    t0 = time.monotonic()
    p = subprocess.Popen([muster, "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    took = until(lambda: col.lines() >= LINES, 600, 0.05)
    peak = rss_kib(p.pid)
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(30)
    col.stop()
    results["muster_relp"] = {"lines": LINES, "seconds": round(took, 3) if took else None,
                              "lines_per_s": round(LINES / took) if took else None,
                              "rss_kib_at_end": peak}
    # The same producer under muster without shipping: what the service alone costs.
    cfg = config(tmp, "bare", "", LINES, 0)
    t0 = time.monotonic()
    subprocess.run([muster, "--config", cfg], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    bare = time.monotonic() - t0
    results["muster_no_shipping"] = {"lines": LINES, "seconds": round(bare, 3),
                                     "lines_per_s": round(LINES / bare)}
    # Anchor: rsyslog's omrelp forwarding to an imrelp collector, fed over plain TCP by
    # muster (protocol = "tcp"), so both ends are rsyslog's own RELP.
    final = Rsyslog(tmp, "omrelp-final")
    relay = Rsyslog(tmp, "omrelp-relay", forward_to=final.port, imtcp=True)
    cfg = config(tmp, "anchor", f'[logship]\ntarget = "127.0.0.1:{relay.tcp}"\nprotocol = "tcp"\n'
                 f'hostname = "bench"', LINES, 600)
    t0 = time.monotonic()
    p = subprocess.Popen([muster, "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    limit = 15 if QUICK else 300
    took = until(lambda: final.lines() >= LINES, limit, 0.05)
    got = final.lines()
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(30)
    relay.stop()
    final.stop()
    results["rsyslog_omrelp"] = {"lines": LINES, "seconds": round(took, 3) if took else None,
                                 "lines_per_s": round(LINES / took) if took else None,
                                 "delivered_within_limit": got, "limit_s": limit}
    return results


def memory(tmp, muster):
    """RSS with the collector down, the queue full and the service blocked."""
    out = {}
    for queue in (10_000, 100_000):
        col = Rsyslog(tmp, f"mem{queue}")
        col.stop()
        n = queue * 3
        cfg = config(tmp, f"mem{queue}", f'[logship]\ntarget = "127.0.0.1:{col.port}"\n'
                     f'queue = {queue}', n, 600)
        p = subprocess.Popen([muster, "--config", cfg], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(5)
        rss = rss_kib(p.pid)
        time.sleep(2)
        rss2 = rss_kib(p.pid)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        # Lines are ~45 bytes of text plus the queue's own bookkeeping per line.
        out[str(queue)] = {"written_by_service": n, "rss_kib": rss, "rss_kib_2s_later": rss2}
    return out


# The lab collector's configuration, as shipped, and the variants it is measured against: the
# shipped ruleset line is replaced by each variant's lines.
COLLECTOR_CONF = ROOT / "images/collector/rsyslog.conf"
SHIPPED_RULESET = 'ruleset(name="remote" queue.type="Direct")'
VARIANTS = {
    "durable": SHIPPED_RULESET,
    # The configuration before issue 17: acknowledged once in the in-memory main queue.
    "memory": 'main_queue(queue.type="LinkedList" queue.filename="mainq" '
              'queue.saveOnShutdown="on")\nruleset(name="remote")',
    # A disk queue written and fsync'd, its bookkeeping too, before every acknowledgement.
    "fsync": 'ruleset(name="remote" queue.type="Disk" queue.filename="remote" '
             'queue.checkpointInterval="1" queue.syncQueueFiles="on")',
}


def collector_conf(variant, work=None, logs=None, relp=None, tcp=None):
    text = COLLECTOR_CONF.read_text()
    if SHIPPED_RULESET not in text:
        raise SystemExit(f"{COLLECTOR_CONF} has no `{SHIPPED_RULESET}`: update this benchmark")
    text = text.replace(SHIPPED_RULESET, VARIANTS[variant])
    if work:
        text = text.replace("/var/spool/rsyslog", work).replace("/var/log/remote", logs)
    if relp:
        text = text.replace('port="2514"', f'port="{relp}" address="127.0.0.1"')
        text = text.replace('port="1514"', f'port="{tcp}" address="127.0.0.1"')
    return text


SEQ = re.compile(rb" line (\d+) GET ")


def seq_count(data, n):
    """Lost (of 0..n-1) and duplicated lines in what the collector wrote."""
    seen = [int(x) for x in SEQ.findall(data)]
    unique = set(seen)
    return {"written": len(seen), "lost": n - len(unique & set(range(n))),
            "duplicates": len(seen) - len(unique)}


class Collector:
    """rsyslogd on loopback with the lab collector's configuration (a variant of it); the
    lines of host `bench`, app `app` land in logs/bench/app.log."""

    def __init__(self, tmp, name, variant):
        self.dir = Path(tmp) / name
        for d in ("work", "logs"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.port, tcp = free_port(), free_port()
        (self.dir / "rsyslog.conf").write_text(collector_conf(
            variant, str(self.dir / "work"), str(self.dir / "logs"), self.port, tcp))
        self.out = self.dir / "logs/bench/app.log"
        self.proc = None
        self.counted = (0, 0)
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["/usr/sbin/rsyslogd", "-n", "-f", str(self.dir / "rsyslog.conf"), "-i",
             str(self.dir / "pid")], stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "rsyslogd.err", "ab"))
        if until(lambda: connectable(self.port), 20) is None:
            raise SystemExit(f"rsyslogd did not listen: {self.dir / 'rsyslogd.err'}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def lines(self):
        """Lines in the file, read on from where the last call stopped."""
        offset, count = self.counted
        try:
            with open(self.out, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self.counted = (offset + len(data), count + data.count(b"\n"))
        return self.counted[1]


RATED = ("import sys, time\nw = sys.stdout.write\nn, rate, i, t0 = {n}, {rate}, 0, "
         "time.monotonic()\nwhile i < n:\n    k = min(n, i + max(1, rate // 100))\n"
         "    while i < k:\n        w('GET /api/students line %d GET 200 0.5 ms\\n' % i)\n"
         "        i += 1\n    sys.stdout.flush()\n    d = t0 + i / rate - time.monotonic()\n"
         "    if d > 0:\n        time.sleep(d)\ntime.sleep(3600)\n")
FAST = ("import sys\nw = sys.stdout.write\nfor i in range({n}): "
        "w('GET /api/students line %d GET 200 0.5 ms\\n' % i)\nsys.stdout.flush()\n"
        "import time\ntime.sleep(3600)\n")


def shipper(tmp, name, target, script, ack_timeout="5s"):
    """muster shipping `script`'s lines to `target`; a queue that holds them all, `block`."""
    path = Path(tmp) / f"{name}.toml"
    path.write_text(f"""
[supervisor]
control_socket = false
[logship]
target = "{target}"
hostname = "bench"
when_full = "block"
queue = 2000000
queue_bytes = 1000000000
ack_timeout = "{ack_timeout}"
[services.app]
main = true
command = ["python3", "-c", '''{script}''']
""")
    return subprocess.Popen([MUSTER, "--config", str(path)], stdout=subprocess.DEVNULL,
                            stderr=open(Path(tmp) / f"{name}.muster.err", "wb"),
                            start_new_session=True)


def end(p):
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def collector_rate(tmp, variant, n, i):
    col = Collector(tmp, f"cost-{variant}-{i}", variant)
    t0 = time.monotonic()
    p = shipper(tmp, f"cost-{variant}-{i}", f"127.0.0.1:{col.port}", FAST.format(n=n))
    try:
        took = until(lambda: col.lines() >= n, 300, 0.05)
    finally:
        end(p)
        col.stop()
    return round(n / took) if took else None


def collector_cost(tmp):
    """lines/s through RELP into each configuration, alternating, medians; fsync: a window."""
    n = 100_000 if QUICK else 500_000
    rounds = 2 if QUICK else 5
    runs = {"durable": [], "memory": []}
    for i in range(rounds):
        for variant in runs:
            runs[variant].append(collector_rate(tmp, variant, n, i))
            say(f"collector {variant} round {i + 1}: {runs[variant][-1]} lines/s")
    out = {v: {"lines": n, "runs": xs, "lines_per_s_median":
               round(statistics.median(x for x in xs if x)) if any(xs) else None}
           for v, xs in runs.items()}
    # The fsync'd disk queue is ~1,000 times slower: lines written in a fixed window (a long
    # ack_timeout, so muster waits for it rather than reconnecting).
    window = 5 if QUICK else 20
    col = Collector(tmp, "cost-fsync", "fsync")
    p = shipper(tmp, "cost-fsync", f"127.0.0.1:{col.port}", FAST.format(n=n), "600s")
    time.sleep(window)
    written = seq_count(col.out.read_bytes() if col.out.exists() else b"", n)["written"]
    end(p)
    col.stop()
    out["fsync"] = {"window_s": window, "written": written,
                    "lines_per_s": round(written / window)}
    say(f"collector fsync: {written} lines in {window} s")
    return out


def drain(count, n, quiet_s):
    """Waits until `count()` reaches n or stops growing for quiet_s seconds."""
    last, since = -1, time.monotonic()
    while True:
        c = count()
        if c >= n:
            return
        if c != last:
            last, since = c, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.25)


def kills_local(tmp, variant, kills, n, rate, gap):
    """rsyslogd SIGKILLed and started again `kills` times, `gap` s apart, while muster ships
    n lines written at `rate` lines/s."""
    col = Collector(tmp, f"kill-{variant}", variant)
    p = shipper(tmp, f"kill-{variant}", f"127.0.0.1:{col.port}", RATED.format(n=n, rate=rate))
    try:
        for _ in range(kills):
            time.sleep(gap)
            col.kill9()
            time.sleep(0.2)
            col.start()
        drain(col.lines, n, 10)
        res = seq_count(col.out.read_bytes(), n)
    finally:
        end(p)
        col.stop()
    res.update({"lines": n, "kills": kills, "rate": rate})
    say(f"kill -9 x{kills}, {variant}: {res}")
    return res


LAB_SUBNET = 228 - int(os.environ.get("MUSTER_LAB_SUBNET_OFFSET", "0"))
LAB_IP = f"192.168.{LAB_SUBNET}.50"


def lab_compose(project, override, *args):
    env = {**os.environ, "MUSTER_NETWORK": f"{project}-heig",
           "MUSTER_SUBNET": f"192.168.{LAB_SUBNET}.0/24", "MUSTER_HA_IP": f"192.168.{LAB_SUBNET}.42"}
    return subprocess.run(["docker-compose", "-p", project, "-f", "compose/docker-compose.yml",
                           "-f", str(override), *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)


def kills_lab(tmp, variant, kills, n, rate, gap):
    """The compose lab's collector container killed (SIGKILL) and started `kills` times while
    muster on the host ships n lines to it; the image as built, or with a variant's config."""
    tag = os.environ.get("MUSTER_IMAGE_TAG", "dev")
    project = f"muster-logship-bench-{tag}"
    override = Path(tmp) / f"lab-{variant}.yml"
    mount = ""
    if variant != "durable":
        conf = Path(tmp) / f"lab-{variant}.conf"
        conf.write_text(collector_conf(variant))
        conf.chmod(0o644)
        mount = f"    volumes:\n      - {conf}:/etc/rsyslog.conf:ro\n"
    override.write_text(f'version: "2.4"\nservices:\n  collector:\n{mount}'
                        f"    networks:\n      heig:\n        ipv4_address: {LAB_IP}\n")
    lab_compose(project, override, "down", "-v", "-t", "5")
    try:
        lab_compose(project, override, "up", "-d", "collector")
        cid = lab_compose(project, override, "ps", "-q", "collector").stdout.split()[0]
        if until(lambda: connectable(2514, LAB_IP), 60) is None:
            raise SystemExit("the lab's collector did not listen")
        p = shipper(tmp, f"lab-{variant}", f"{LAB_IP}:2514", RATED.format(n=n, rate=rate))
        downs = []
        path = "/var/log/remote/bench/app.log"
        count = lambda: int(docker("exec", cid, "sh", "-c", f"wc -l < {path} 2>/dev/null") or 0)
        try:
            for _ in range(kills):
                time.sleep(gap)
                t0 = time.monotonic()
                docker("kill", "-s", "KILL", cid)
                docker("start", cid)
                until(lambda: connectable(2514, LAB_IP), 60)
                downs.append(time.monotonic() - t0)
            drain(count, n, 15)
            data = subprocess.run(["docker", "exec", cid, "cat", path], capture_output=True,
                                  check=True).stdout
        finally:
            end(p)
        res = seq_count(data, n)
    finally:
        lab_compose(project, override, "down", "-v", "-t", "5")
    res.update({"lines": n, "kills": kills, "rate": rate,
                "down_s_median": round(statistics.median(downs), 2)})
    say(f"lab: docker kill -s KILL x{kills}, {variant}: {res}")
    return res


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout.strip()


def restarts():
    say("collector restarted 5 times during 1,000,000 lines (tests/logship.rs)")
    r = subprocess.run(
        ["cargo", "nextest", "run", "--cargo-profile", "release", "--test", "logship",
         "--no-capture", "-E", "test(collector_restarts_mid_stream_lose_nothing)"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "LOGSHIP_LINES": "1000000", "LOGSHIP_RESTARTS": "5"})
    m = re.search(r"(\d+) lines, (\d+) collector restarts: 0 lost, (\d+) duplicates .*resent=(\d+)",
                  r.stdout + r.stderr)
    failed = re.search(r"panicked at [^\n]*\n([^\n]*)", r.stdout + r.stderr)
    out = {"passed": r.returncode == 0, "failure": failed[1] if failed else None}
    if r.returncode != 0:
        say("restart test failed:\n" + (r.stdout + r.stderr)[-3000:])
    if m:
        # The figure is printed before the test's last assertions: kept when one of those
        # failed, beside the failure.
        out.update({"lines": int(m[1]), "restarts": int(m[2]), "lost": 0,
                    "duplicates": int(m[3]), "resent": int(m[4])})
        e = re.search(r"(\d+) episodes", m.string[m.end():m.end() + 200])
        if e:
            out["episodes"] = int(e[1])
    return out


def main():
    global MUSTER
    ensure_tools()
    muster = MUSTER = muster_bin()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
           "load_avg_at_start": os.getloadavg()[0], "quick": QUICK}
    with tempfile.TemporaryDirectory() as tmp:
        say(f"rate: {LINES} lines")
        res["rate"] = rate(tmp, muster)
        say("memory with the collector down")
        res["memory"] = memory(tmp, muster)
        say("the collector's configurations: lines/s")
        res["collector"] = collector_cost(tmp)
        kills, n = (5, 300_000) if QUICK else (10, 1_000_000)
        say(f"kill -9 of rsyslogd x{kills} on loopback")
        res["kills_local"] = {v: kills_local(tmp, v, kills, n, 100_000, 0.6)
                              for v in ("durable", "memory")}
        if not QUICK:
            say("building the lab's images (images/build.sh)")
            subprocess.run([str(ROOT / "images/build.sh")], check=True, stdout=subprocess.DEVNULL)
            say("the compose lab: docker kill -s KILL of the collector x10")
            res["kills_lab"] = {v: kills_lab(tmp, v, 10, 600_000, 20_000, 2.5)
                                for v in ("durable", "memory")}
    if not QUICK:
        res["restarts"] = restarts()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "logship-bench.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (OUT / "logship-bench.md").write_text(md)
    print(md)
    lost = [k["lost"] for k in (res["kills_local"]["durable"],
                                 res.get("kills_lab", {}).get("durable", {"lost": 0}))]
    if any(lost):
        say(f"the shipped collector configuration lost lines under kill -9: {lost}")
        sys.exit(1)


def collector_section(r, cell):
    c = r["collector"]
    d, m, f = c["durable"], c["memory"], c["fsync"]
    out = [
        "", "The lab collector's configuration (`images/collector/rsyslog.conf`) on loopback: "
        "**durable** = as shipped, ruleset queue `Direct` (omfile has written a line before "
        "imrelp acknowledges it); **memory** = the configuration before (acknowledged once in the "
        "in-memory main queue); **fsync** = a disk queue fsync'd with its bookkeeping at every "
        "message (`queue.syncQueueFiles`, `queue.checkpointInterval=1`). muster ships a service "
        "writing as fast as it can; lines/s from muster's start until the collector wrote the last "
        f"line, {len(d['runs'])} runs each, alternating, medians.", "",
        "| collector configuration | lines per run | runs (lines/s) | median lines/s |",
        "|---|---|---|---|",
    ]
    for name, v in (("durable (shipped)", d), ("memory (before)", m)):
        out.append(f"| {name} | {v['lines']:,} | {', '.join(cell(x) for x in v['runs'])} | "
                   f"**{cell(v['lines_per_s_median'])}** |")
    out.append(f"| fsync'd disk queue | {f['window_s']} s window | {f['written']:,} lines written | "
               f"{cell(f['lines_per_s'])} |")
    out += ["", "`kill -9` restarts of the collector while lines flow (muster: queue holding "
            "everything, `when_full = \"block\"`); lost = sequence numbers never written, "
            "duplicates = written more than once:", "",
            "| where | configuration | kills | lines | lost | duplicates |", "|---|---|---|---|---|---|"]
    rows = [("loopback, rsyslogd SIGKILL", r["kills_local"])]
    if r.get("kills_lab"):
        rows.append(("compose lab, `docker kill -s KILL` + `docker start`", r["kills_lab"]))
    for where, ks in rows:
        for name, k in ks.items():
            out.append(f"| {where} | {name} | {k['kills']} | {k['lines']:,} | **{k['lost']:,}** | "
                       f"{k['duplicates']:,} |")
    if r.get("kills_lab"):
        k = r["kills_lab"]["durable"]
        out += ["", f"In the lab the service wrote {k['rate']:,} lines/s; a kill and start of the "
                f"container took {k['down_s_median']} s (median) until RELP answered again."]
    return out


def render(r):
    rt = r["rate"]
    cell = lambda v: "timeout" if v is None else f"{v:,}" if isinstance(v, int) else str(v)
    lines = [
        "# Log-shipping benchmark: muster to Debian's rsyslog over RELP",
        "",
        f"Run {r['date']} by `tests/bench/logship.py` on {r['cores']} cores, load average at start "
        f"{r['load_avg_at_start']:.2f}; everything on 127.0.0.1, sender and collector sharing the "
        "cores. Lines are ~45 bytes (an access-log line).",
        "",
        "| path | lines | seconds | lines/s |",
        "|---|---|---|---|",
        f"| muster → rsyslog imrelp (file) | {cell(rt['muster_relp']['lines'])} | "
        f"{cell(rt['muster_relp']['seconds'])} | **{cell(rt['muster_relp']['lines_per_s'])}** |",
        f"| the service under muster, no shipping | {cell(rt['muster_no_shipping']['lines'])} | "
        f"{cell(rt['muster_no_shipping']['seconds'])} | {cell(rt['muster_no_shipping']['lines_per_s'])} |",
        f"| anchor: rsyslog omrelp (window 1024) → rsyslog imrelp | {cell(rt['rsyslog_omrelp']['lines'])} | "
        f"{cell(rt['rsyslog_omrelp']['seconds'])} | {cell(rt['rsyslog_omrelp']['lines_per_s'])} |",
        "",
        f"The anchor row: muster sends over plain TCP to a first rsyslog, which forwards with its own "
        f"`omrelp` to a second one; {cell(rt['rsyslog_omrelp']['delivered_within_limit'])} lines had "
        f"arrived within its {rt['rsyslog_omrelp']['limit_s']} s limit.",
        "",
        "Memory with the collector down (policy `block`; the service wrote three times the queue):",
        "",
        "| queue (lines) | muster RSS (KiB) | 2 s later |",
        "|---|---|---|",
    ]
    for q, m in r["memory"].items():
        lines.append(f"| {int(q):,} | {m['rss_kib']:,} | {m['rss_kib_2s_later']:,} |")
    lines += collector_section(r, cell)
    rs = r.get("restarts")
    if rs:
        when = f" (run again at {rs['run_at']})" if rs.get("run_at") else ""
        lines += ["", f"Collector restarts (SIGTERM and start again, 300 ms apart) while lines flow "
                  f"(muster: `when_full = \"block\"`, the test's own){when}:",
                  ""]
        if "lines" in rs:
            lines.append(f"{rs['lines']:,} lines, {rs['restarts']} restarts: **0 lost**, "
                         f"{rs['duplicates']} duplicates (each carries its boot id and sequence number, "
                         f"so they can be removed), {rs['resent']} lines resent.")
            if "episodes" in rs:
                lines.append(f"muster logged {rs['episodes']} \"collector unavailable\" episodes, each "
                             "ended by \"collector back\": a restart that falls while muster waits "
                             "out its reconnect back-off finds no connection to break and belongs to "
                             "the episode already open.")
        if not rs.get("passed"):
            lines.append(f"The restart test FAILED in this run: `{rs.get('failure')}`.")
    lines += ["", "Goals (issue \"Log shipping\"): 100,000 lines/s or more over RELP; memory bounded "
              "by the configured queue while the collector is down; 0 lines lost per collector "
              "restart.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
