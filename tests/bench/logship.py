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
  restarts  lost and duplicated lines when the collector is restarted five times while one
            million lines go through (tests/logship.rs's test, run with those settings)

Writes report/logship-bench.md and report/logship-bench.json. No figure is a pass/fail
threshold. Usage: tests/bench/logship.py [--lines N] [--quick] [--out DIR]
"""

import json
import os
import re
import shutil
import signal
import socket
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


def connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
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
    limit = 120 if QUICK else 300
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


def restarts():
    say("collector restarted 5 times during 1,000,000 lines (tests/logship.rs)")
    r = subprocess.run(
        ["cargo", "nextest", "run", "--cargo-profile", "release", "--test", "logship",
         "--no-capture", "-E", "test(collector_restarts_mid_stream_lose_nothing)"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "LOGSHIP_LINES": "1000000", "LOGSHIP_RESTARTS": "5"})
    m = re.search(r"(\d+) lines, (\d+) collector restarts: 0 lost, (\d+) duplicates .*resent=(\d+)",
                  r.stdout + r.stderr)
    if not m or r.returncode != 0:
        say("restart test failed or gave no figure:\n" + (r.stdout + r.stderr)[-3000:])
        return {"passed": False}
    return {"passed": True, "lines": int(m[1]), "restarts": int(m[2]), "lost": 0,
            "duplicates": int(m[3]), "resent": int(m[4])}


def main():
    ensure_tools()
    muster = muster_bin()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
           "load_avg_at_start": os.getloadavg()[0], "quick": QUICK}
    with tempfile.TemporaryDirectory() as tmp:
        say(f"rate: {LINES} lines")
        res["rate"] = rate(tmp, muster)
        say("memory with the collector down")
        res["memory"] = memory(tmp, muster)
    if not QUICK:
        res["restarts"] = restarts()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "logship-bench.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (OUT / "logship-bench.md").write_text(md)
    print(md)


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
    rs = r.get("restarts")
    if rs:
        lines += ["", "Collector restarts (SIGTERM and start again, 300 ms apart) while lines flow:", ""]
        if rs.get("passed"):
            lines.append(f"{rs['lines']:,} lines, {rs['restarts']} restarts: **0 lost**, "
                         f"{rs['duplicates']} duplicates (each carries its boot id and sequence number, "
                         f"so they can be removed), {rs['resent']} lines resent.")
        else:
            lines.append("the restart test FAILED in this run (see the script's output).")
    lines += ["", "Goals (issue \"Log shipping\"): 100,000 lines/s or more over RELP; memory bounded "
              "by the configured queue while the collector is down; 0 lines lost per collector "
              "restart.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
