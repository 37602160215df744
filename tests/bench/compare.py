#!/usr/bin/env python3
"""muster's compose lab against the lab's own final stack (s6 + Serf + handlebars +
`haproxy -sf`, compose/baseline.yml), side by side in one run. Both labs are up at once, each
under its own compose project, network, subnet and loopback ports; every repetition runs each
scenario on both stacks, one after the other, the order alternating between repetitions.

Scenarios (the load is open loop, one new connection per request, 30 s timeout, through the
load balancer on 127.0.0.1 unless said otherwise; baseline.md's method):

  start      `docker-compose up --scale webapp=2` from one webapp, 200 req/s: seconds from the
             command (and from the container's StartedAt) to the first answer served by the
             new container; failed requests (E1)
  kill       `docker kill` of one of three webapps, 100 req/s from 3 s before: seconds to out
             of rotation (first of 20 consecutive good answers from the others) and failed
             requests (E2)
  stop       the same with `docker stop` (E3)
  scale      scale 1 -> 10 -> 1 with `docker-compose up --scale`, 100 req/s: failed requests
  lifecycle  with one webapp, 100 req/s: `docker-compose up -d --force-recreate webapp`;
             `docker-compose stop webapp`, 3 s, `start`; `docker restart` of the webapp;
             `docker restart` of ha: failed requests, and seconds from the command to the first
             of 20 consecutive good answers sent after it returned
  memory     idle RSS of ha, one webapp and the collector: the sum over the container's
             processes, read on the host from /proc (PIDs from `docker top`) (E5)
  images     `docker image inspect` Size of each image, and the bytes over the base image
  logs       100 req/s sent straight to a webapp (its address on the lab's network), each URL
             carrying a sequence number that the app's access log line shows; the collector
             restarted once (`docker restart`, or `docker kill` + `docker start`) meanwhile;
             lines lost and duplicated, counted in the collector's files

Writes report/compare.md, report/compare.json and report/compare-{times,failed,memory,
images,logs}.svg. No figure is a pass/fail threshold.

Builds the images first (images/build.sh and images/baseline/build.sh, tag MUSTER_IMAGE_TAG,
default "compare"); subnets 192.168.(190|189 - MUSTER_LAB_SUBNET_OFFSET + 60).0/24, ports
127.0.0.1:18201/18202 (muster) and 18211/18212 (lab). Takes every lab down at the end.

Usage: tests/bench/compare.py [--runs N] [--quick] [--stacks muster,lab] [--out DIR]
       [--no-build]
  --quick   one repetition, shorter loads (for development)
"""

import gzip
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labkit  # noqa: E402
import svgplot  # noqa: E402
from labkit import OpenLoad, docker, say, wait  # noqa: E402

ROOT = labkit.ROOT
ARGS = sys.argv[1:]
QUICK = "--quick" in ARGS


def arg(name, default):
    return type(default)(ARGS[ARGS.index(name) + 1]) if name in ARGS else default


RUNS = arg("--runs", 1 if QUICK else 3)
STACKS = arg("--stacks", "muster,lab").split(",")
OUT = Path(arg("--out", str(ROOT / "report")))
TAG = os.environ.get("MUSTER_IMAGE_TAG", "compare")
OFFSET = int(os.environ.get("MUSTER_LAB_SUBNET_OFFSET", "60"))
# Load windows (s): shorter with --quick.
AFTER = 12 if QUICK else 25
SEQ_SECONDS = 8 if QUICK else 12


def make_stacks():
    key_dir, key = labkit.gossip_key_file()
    common = {"MUSTER_IMAGE_TAG": TAG}
    stacks = {
        "muster": labkit.Stack("muster", "compose/docker-compose.yml", f"compare-muster-{TAG}",
                               250 - OFFSET, 18201, 18202,
                               {**common, "MUSTER_GOSSIP_KEY_FILE": str(key)}),
        "lab": labkit.Stack("lab", "compose/baseline.yml", f"compare-lab-{TAG}",
                            249 - OFFSET, 18211, 18212, common),
    }
    stacks["muster"].key_dir = key_dir
    stacks["muster"].base = "muster/base:bookworm"
    stacks["lab"].base = lab_base()
    return {k: v for k, v in stacks.items() if k in STACKS}


def lab_base():
    """The base image the lab's images are built on (the ARG BASE_IMAGE default of its
    Dockerfile, or the muster base)."""
    f = ROOT / "images/baseline/webapp/Dockerfile"
    if f.exists():
        for line in f.read_text().splitlines():
            if line.startswith("ARG BASE_IMAGE="):
                return os.environ.get("BASE_IMAGE", line.split("=", 1)[1].strip())
    return os.environ.get("BASE_IMAGE", "muster/base:bookworm")


def build(stacks):
    env = {**os.environ, "MUSTER_IMAGE_TAG": TAG}
    scripts = {"muster": "images/build.sh", "lab": "images/baseline/build.sh"}
    for name in stacks:
        say(f"building {name}'s images ({scripts[name]}, tag {TAG})")
        r = subprocess.run([str(ROOT / scripts[name])], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{scripts[name]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def up(stack):
    stack.compose("down", "-v", "-t", "5", check=False)
    stack.compose("up", "-d", "--scale", "webapp=1")
    if wait(f"{stack.name} serving", lambda: serving(stack), 120) is None:
        raise SystemExit(f"{stack.name}: the lab does not serve")


def serving(stack, n=10):
    load = OpenLoad(stack.http, 100, limit=n / 100, timeout=5)
    recs = load.finish(all_sent=True)
    return len(recs) >= n and all(OpenLoad.good(r) for r in recs)


def hosts_served(stack, seconds=1.0):
    load = OpenLoad(stack.http, 100, limit=seconds, timeout=5)
    return {r[3] for r in load.finish(all_sent=True) if OpenLoad.good(r)}


def settle(stack, n):
    """Waits until the load balancer serves from exactly n hosts (bounded)."""
    return wait(f"{stack.name}: {n} hosts served",
                lambda: len(hosts_served(stack)) == n, 60, step=0.5)


def failures(recs, since=None):
    return sum(1 for r in recs if not OpenLoad.good(r) and (since is None or r[0] >= since))


def kinds(recs):
    out = {}
    for r in recs:
        if not OpenLoad.good(r):
            k = r[4] or f"status {r[2]}"
            out[k] = out.get(k, 0) + 1
    return out


def details(recs, t0):
    """Failure kinds, when the failed requests were sent (s after t0) and the latency of
    every request sent after t0."""
    bad = [r[0] - t0 for r in recs if not OpenLoad.good(r)]
    lat = [r[1] * 1000 for r in recs if r[0] >= t0]
    return {"kinds": kinds(recs),
            "failed_sent_from_s": min(bad) if bad else None,
            "failed_sent_to_s": max(bad) if bad else None,
            "latency_p50_ms": labkit.pct(lat, 50), "latency_p99_ms": labkit.pct(lat, 99),
            "latency_max_ms": max(lat) if lat else None}


def new_container(stack, before):
    new = [c for c in stack.ids() if c not in before]
    return new[0] if new else None


def s_start(stack):
    """E1: one more webapp, from the command to its first answer through the LB."""
    # The scenario adds the second webapp: the one before may have left more or fewer.
    stack.scale(1)
    settle(stack, 1)
    before = set(stack.ids())
    load = OpenLoad(stack.http, 200, limit=40)
    time.sleep(2)
    t0 = time.time()
    stack.scale(2)
    cli = time.time() - t0
    new = new_container(stack, before)
    if new is None:
        load.finish()
        raise RuntimeError("docker-compose scale webapp=2 started no new container")
    host = labkit.hostname(new)
    started = stamp(docker("inspect", "-f", "{{.State.StartedAt}}", new))
    first = None
    end = time.time() + 30
    while time.time() < end and first is None:
        first = next((r[0] + r[1] for r in list(load.records) if r[3] == host and OpenLoad.good(r)),
                     None)
        time.sleep(0.05)
    time.sleep(3)
    recs = load.finish()
    row = {"cli_s": cli, "served_s": first - t0 if first else None,
           "started_to_served_s": first - started if first else None,
           "requests": len(recs), "failed": failures(recs), **details(recs, t0)}
    say(f"{stack.name} start: served after {fmt(row['served_s'])} s "
        f"(StartedAt +{fmt(row['started_to_served_s'])}), {row['failed']} failed of {len(recs)}")
    return row


def stamp(text):
    text = text.strip().rstrip("Z")
    if "." in text:
        head, frac = text.split(".")
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text + "+00:00").timestamp()


def fmt(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def victim_ready(stack):
    """Three webapps, the newest the victim, served and then 4 s more (E2's setup)."""
    before = set(stack.ids())
    stack.scale(3)
    victim = new_container(stack, before)
    host = labkit.hostname(victim)
    wait(f"{stack.name}: the victim served", lambda: host in hosts_served(stack), 40, step=0.2)
    time.sleep(4)
    return victim, host


def s_remove(stack, how):
    """E2/E3: `docker kill` or `docker stop` of one of three webapps under 100 req/s."""
    victim, host = victim_ready(stack)
    load = OpenLoad(stack.http, 100, limit=3 + AFTER)
    time.sleep(3)
    t0 = time.time()
    cmd = threading.Thread(target=docker, args=(how, victim), kwargs={"timeout": 30})
    cmd.start()
    end = t0 + AFTER
    # The whole window runs: records are written when a request ends, so a streak seen while
    # requests are in flight (one to a vanished server takes up to 20 s to fail) is not final.
    time.sleep(max(0.0, end - time.time()))
    recs = load.finish()
    cmd.join()
    out = labkit.out_of_rotation(recs, t0, host)
    before = [r for r in recs if r[0] < t0 and OpenLoad.good(r)]
    row = {"out_s": out - t0 if out else None, "requests": len(recs),
           "failed": failures(recs), **details(recs, t0),
           "victim_share_before": sum(r[3] == host for r in before) / max(1, len(before)),
           "window_s": recs[-1][0] - recs[0][0] if recs else 0}
    say(f"{stack.name} {how}: out of rotation after {fmt(row['out_s'])} s, "
        f"{row['failed']} failed of {len(recs)} {row['kinds']}")
    docker("rm", "-f", victim)
    return row


def s_scale(stack):
    """1 -> 10 -> 1 webapps with `docker-compose up --scale` under 100 req/s."""
    load = OpenLoad(stack.http, 100, limit=150)
    time.sleep(2)
    t0 = time.time()
    stack.scale(10)
    ids = stack.ids()
    hosts = {labkit.hostname(c) for c in ids}
    wait(f"{stack.name}: ten served",
         lambda: hosts <= {r[3] for r in list(load.records)[-400:] if OpenLoad.good(r)}, 60, 0.3)
    up10 = time.time() - t0
    time.sleep(3)
    t1 = time.time()
    stack.scale(1)
    left = {labkit.hostname(c) for c in stack.running()}
    wait(f"{stack.name}: one left", lambda: labkit.served_again(
        sorted(load.records), time.time() - 2, 100, left) is not None, 60, 0.5)
    down1 = time.time() - t1
    time.sleep(3)
    recs = load.finish()
    row = {"requests": len(recs), "failed": failures(recs), **details(recs, t0),
           "up_s": up10, "down_s": down1,
           "failed_scaling_up": sum(1 for r in recs if not OpenLoad.good(r) and r[0] < t1),
           "failed_scaling_down": failures(recs, t1)}
    say(f"{stack.name} scale 1->10->1: {row['failed']} failed of {len(recs)} "
        f"(up {row['failed_scaling_up']}, down {row['failed_scaling_down']}) {row['kinds']}")
    return row


def lifecycle_actions(stack):
    def recreate():
        # The compose file says `scale: 2`: without --scale the recreate brings up two.
        stack.compose("up", "-d", "--force-recreate", "--no-deps", "--scale", "webapp=1", "webapp")

    def stop_start():
        stack.compose("stop", "webapp")
        time.sleep(3)
        stack.compose("start", "webapp")

    def restart():
        docker("restart", stack.ids()[0], timeout=60)

    def restart_ha():
        docker("restart", stack.ids("ha")[0], timeout=60)

    return [("recreate", recreate), ("stop-start", stop_start), ("restart", restart),
            ("restart-ha", restart_ha)]


def s_lifecycle(stack, name, action):
    stack.scale(1)
    settle(stack, 1)
    webapps = len(stack.running("webapp"))
    if webapps != 1:
        raise RuntimeError(f"{stack.name} {name}: {webapps} webapps before a one-replica lifecycle")
    load = OpenLoad(stack.http, 100, limit=120)
    time.sleep(2)
    t0 = time.time()
    action()
    t1 = time.time()
    wait(f"{stack.name} {name}: served again",
         lambda: labkit.served_again(sorted(load.records), t1) is not None, 60, 0.2)
    time.sleep(3)
    recs = load.finish()
    back = labkit.served_again(recs, t1)
    row = {"requests": len(recs), "failed": failures(recs), **details(recs, t0),
           "command_s": t1 - t0, "served_again_s": back - t0 if back else None}
    say(f"{stack.name} {name}: {row['failed']} failed of {len(recs)}, served again after "
        f"{fmt(row['served_again_s'])} s {row['kinds']}")
    return row


def memory(stack):
    out = {}
    for service in ("ha", "webapp", "collector"):
        total, procs = labkit.rss_kib(stack.running(service)[0])
        out[service] = {"rss_kib": total, "procs": procs}
    say(f"{stack.name} idle RSS kB: " + ", ".join(f"{k} {v['rss_kib']}" for k, v in out.items()))
    return out


def images(stack):
    size = lambda img: int(docker("image", "inspect", "-f", "{{.Size}}", img) or 0)
    base = size(stack.base)
    out = {"base": stack.base, "base_bytes": base}
    for service in ("ha", "webapp", "collector"):
        cid = stack.ids(service)[0]
        img = docker("inspect", "-f", "{{.Config.Image}}", cid)
        s = size(img)
        out[service] = {"image": img, "bytes": s, "over_base": s - base}
    return out


def collector_seqs(stack, token):
    cid = stack.ids("collector")[0]
    r = subprocess.run(["docker", "exec", cid, "grep", "-rhoa", f"b={token}&s=[0-9]*",
                        "/var/log/remote"], capture_output=True, text=True, timeout=60)
    return [int(x.rsplit("=", 1)[1]) for x in r.stdout.split()]


def s_logs(stack, how):
    """Sequence-numbered lines from a webapp while the collector restarts once."""
    token = uuid.uuid4().hex[:10]
    web = stack.running()[0]
    load = OpenLoad(3000, 100, limit=SEQ_SECONDS, host=labkit.address(web),
                    path=lambda i: f"/?b={token}&s={i}", timeout=10)
    time.sleep(3)
    coll = stack.ids("collector")[0]
    t0 = time.time()
    if how == "restart":
        docker("restart", coll, timeout=60)
    else:
        docker("kill", coll)
        docker("start", coll)
    down = time.time() - t0
    recs = load.finish(all_sent=True)
    sent = {r[5] for r in recs if OpenLoad.good(r)}
    last = [None, time.time()]

    def stable():
        c = len(collector_seqs(stack, token))
        if c != last[0]:
            last[:] = [c, time.time()]
        return c >= len(sent) or time.time() - last[1] > 10
    wait(f"{stack.name}: lines delivered", stable, 60, 1.0)
    seqs = collector_seqs(stack, token)
    row = {"sent": len(recs), "answered": len(sent), "written": len(seqs),
           "lost": len(sent - set(seqs)), "duplicates": len(seqs) - len(set(seqs)),
           "command_s": down}
    say(f"{stack.name} collector {how}: {row['lost']} lost, {row['duplicates']} duplicated "
        f"of {row['answered']} answered requests")
    return row


def measured(res, stack, scenario, fn, *args):
    """Runs one scenario on one stack and keeps its row; one that cannot run (a container
    that is gone, a docker command that fails) is reported, not the end of the whole run."""
    try:
        res[stack.name][scenario].append(fn(stack, *args))
    except Exception as e:  # noqa: BLE001 (any failure of one scenario)
        say(f"{stack.name} {scenario}: not measured: {type(e).__name__}: {e}")


def repetition(stacks, rep, res):
    order = list(stacks.values())
    if rep % 2:
        order.reverse()
    time.sleep(10)
    for st in order:
        measured(res, st, "memory", memory)
    for st in order:
        measured(res, st, "start", s_start)
    for how in ("kill", "stop"):
        for st in order:
            measured(res, st, how, s_remove, how)
    for st in order:
        st.scale(1)
        settle(st, 1)
    for st in order:
        measured(res, st, "scale", s_scale)
    for st in order:
        settle(st, 1)
    for i, (name, _) in enumerate(lifecycle_actions(order[0])):
        for st in order:
            action = lifecycle_actions(st)[i][1]
            measured(res, st, name, s_lifecycle, name, action)
    for how in ("restart", "kill"):
        for st in order:
            measured(res, st, f"logs-{how}", s_logs, how)


def versions(stacks):
    v = {"docker": docker("version", "-f", "{{.Server.Version}}"),
         "docker-compose": subprocess.run(["docker-compose", "version", "--short"],
                                          capture_output=True, text=True).stdout.strip(),
         "muster commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                         capture_output=True, text=True).stdout.strip()}
    for st in stacks.values():
        ha = st.ids("ha")[0]
        v[f"{st.name} haproxy"] = docker("exec", ha, "haproxy", "-v").splitlines()[0]
        if st.name == "lab":
            v["lab serf"] = docker("exec", ha, "/opt/bin/serf", "version").splitlines()[0]
            v["lab packages (ha)"] = docker(
                "exec", ha, "dpkg-query", "-W", "-f", "${Package} ${Version}, ", "s6", "serf",
                "haproxy", "nodejs").rstrip(", ")
        else:
            v["muster"] = docker("exec", ha, "/usr/local/bin/muster", "--version")
    return v


def keep_logs(stack):
    """The load balancer's own log (docker logs, and the lab's Serf log) for reading what
    happened in a run: OUT/compare-ha-<stack>.log.gz."""
    ids = stack.ids("ha")
    if not ids:
        return
    r = subprocess.run(["docker", "logs", "-t", "--tail", "20000", ids[0]],
                       capture_output=True, text=True)
    text = r.stdout + r.stderr
    if stack.name == "lab":
        text += "\n--- /var/log/serf.log\n" + docker("exec", ids[0], "cat", "/var/log/serf.log")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"compare-ha-{stack.name}.log.gz").write_bytes(gzip.compress(text.encode()))


def machine():
    return {"cores": os.cpu_count(), "load": os.getloadavg(), "kernel": platform.release()}


SCENARIOS = ["start", "kill", "stop", "scale", "recreate", "stop-start", "restart",
             "restart-ha", "logs-restart", "logs-kill", "memory"]


def main():
    began = time.time()
    started = datetime.now(timezone.utc)
    m0 = machine()
    stacks = make_stacks()
    if "--no-build" not in ARGS:
        build(stacks)
    res = {name: {s: [] for s in SCENARIOS} for name in stacks}
    try:
        for st in stacks.values():
            up(st)
        say("both labs serving; 30 s idle before the first memory figures")
        time.sleep(15)
        info = {"versions": versions(stacks),
                "images": {n: images(st) for n, st in stacks.items()}}
        for rep in range(RUNS):
            say(f"repetition {rep + 1}/{RUNS}")
            repetition(stacks, rep, res)
            # Written after every repetition: a run cut short keeps what it measured.
            save(res, info, rep + 1, started, began, m0)
    finally:
        for st in stacks.values():
            keep_logs(st)
            st.compose("down", "-v", "-t", "10", check=False)


def save(res, info, done, started, began, m0):
    doc = {"started": started.isoformat(timespec="seconds"), "runs": done, "runs_asked": RUNS,
           "quick": QUICK, "command": " ".join(["tests/bench/compare.py", *ARGS]),
           "env": {"MUSTER_IMAGE_TAG": TAG, "MUSTER_LAB_SUBNET_OFFSET": str(OFFSET)},
           "machine_start": m0, "machine_end": machine(), "seconds": time.time() - began,
           **info, "results": res}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compare.json").write_text(json.dumps(doc, indent=1) + "\n")
    write(doc, OUT)


# (scenario, metric key, label, unit, plot)
METRICS = [
    ("start", "served_s", "start: command -> first answer from the new container", "s", "times"),
    ("start", "started_to_served_s", "start: container StartedAt -> first answer", "s", None),
    ("start", "failed", "start: failed requests (200 req/s)", "req", "failed"),
    ("kill", "out_s", "docker kill -> out of rotation", "s", "times"),
    ("kill", "failed", "docker kill: failed requests (100 req/s)", "req", "failed"),
    ("stop", "out_s", "docker stop -> out of rotation", "s", "times"),
    ("stop", "failed", "docker stop: failed requests (100 req/s)", "req", "failed"),
    ("scale", "failed", "scale 1 -> 10 -> 1: failed requests (100 req/s)", "req", "failed"),
    ("scale", "failed_scaling_up", "  of which while scaling up", "req", None),
    ("scale", "failed_scaling_down", "  of which while scaling down", "req", None),
    ("scale", "requests", "  requests sent", "req", None),
    ("recreate", "failed", "up -d --force-recreate webapp: failed requests", "req", "failed"),
    ("recreate", "served_again_s", "  command -> served again", "s", "times"),
    ("stop-start", "failed", "stop webapp, 3 s, start: failed requests", "req", "failed"),
    ("stop-start", "served_again_s", "  command -> served again", "s", "times"),
    ("restart", "failed", "docker restart webapp: failed requests", "req", "failed"),
    ("restart", "served_again_s", "  command -> served again", "s", "times"),
    ("restart-ha", "failed", "docker restart ha: failed requests", "req", "failed"),
    ("restart-ha", "served_again_s", "  command -> served again", "s", "times"),
    ("logs-restart", "lost", "collector docker restart: lines lost", "lines", "logs"),
    ("logs-restart", "duplicates", "  lines duplicated", "lines", None),
    ("logs-restart", "answered", "  lines sent (answered requests)", "lines", None),
    ("logs-kill", "lost", "collector docker kill + start: lines lost", "lines", "logs"),
    ("logs-kill", "duplicates", "  lines duplicated", "lines", None),
    ("logs-kill", "answered", "  lines sent (answered requests)", "lines", None),
]


def samples(res, stack, scenario, key):
    if stack not in res:
        return []
    if scenario == "memory":
        return [m[key]["rss_kib"] / 1024 for m in res[stack]["memory"]]
    return [r[key] for r in res[stack][scenario] if r.get(key) is not None]


def cell(xs, unit, total):
    if not xs:
        return f"none of {total} within the bound" if total else "–"
    d = 0 if unit in ("req", "lines") else 2
    med = labkit.median(xs)
    text = f"**{med:.{d}f}** ({min(xs):.{d}f}–{max(xs):.{d}f})"
    if len(xs) >= 10:
        text += f" p90 {labkit.pct(xs, 90):.{d}f}"
    if len(xs) < total:
        text += f"; {total - len(xs)} of {total} not within the bound"
    return text


def ratio(a, b):
    ma, mb = labkit.median(a), labkit.median(b)
    if ma is None or mb is None:
        return "–"
    if ma == 0:
        return "–" if mb == 0 else "∞ (muster 0)"
    return f"{mb / ma:.2f}"


def table(res):
    rows = ["| scenario | unit | muster | lab | lab/muster |", "|---|---|---|---|---|"]
    mem = [("memory", s, f"idle RSS, {s} (sum of its processes)", "MB", "memory")
           for s in ("ha", "webapp", "collector")]
    for scenario, key, label, unit, _ in METRICS + mem:
        m, b = samples(res, "muster", scenario, key), samples(res, "lab", scenario, key)
        n = {s: len(res.get(s, {}).get(scenario, [])) for s in ("muster", "lab")}
        rows.append(f"| {label} | {unit} | {cell(m, unit, n['muster'])} | "
                    f"{cell(b, unit, n['lab'])} | {ratio(m, b)} |")
    return "\n".join(rows)


def image_table(imgs):
    rows = ["| image | muster | lab | lab/muster |", "|---|---|---|---|"]
    mb = lambda v: f"{v / 1e6:.1f} MB"
    for svc in ("ha", "webapp", "collector"):
        for key, label in (("bytes", "size"), ("over_base", "over its base")):
            m = imgs.get("muster", {}).get(svc, {}).get(key)
            b = imgs.get("lab", {}).get(svc, {}).get(key)
            r = f"{b / m:.2f}" if m and b else "–"
            cells = " | ".join(mb(v) if v else "–" for v in (m, b))
            rows.append(f"| {svc} {label} | {cells} | {r} |")
    bases = ", ".join(f"{n}: {v['base']} {v['base_bytes'] / 1e6:.1f} MB" for n, v in imgs.items())
    return "\n".join(rows) + f"\n\nBase images: {bases}."


def plots(doc, out):
    res = doc["results"]
    groups = {}
    for scenario, key, label, unit, plot in METRICS:
        if plot:
            text = f"{scenario}: {label.strip()}" if label.startswith("  ") else label
            groups.setdefault(plot, []).append(
                (text, {s: samples(res, s, scenario, key) for s in ("muster", "lab")
                                 if s in res}))
    titles = {"times": ("Seconds to serve / to take out of rotation / to serve again", "s"),
              "failed": ("Failed requests per scenario (open-loop load)", "requests"),
              "logs": ("Log lines lost per collector restart", "lines")}
    for name, rows in groups.items():
        (out / f"compare-{name}.svg").write_text(svgplot.dots(*titles[name], rows))
    mem = [(s, {n: labkit.median(samples(res, n, "memory", s)) or 0 for n in res})
           for s in ("ha", "webapp", "collector")]
    (out / "compare-memory.svg").write_text(svgplot.bars("Idle RSS per container (median)",
                                                         "MB", mem))
    imgs = doc.get("images", {})
    groups = [(f"{svc} {label}", {n: imgs[n][svc][key] / 1e6 for n in imgs})
              for svc in ("ha", "webapp", "collector")
              for key, label in (("bytes", "image"), ("over_base", "over base"))]
    (out / "compare-images.svg").write_text(svgplot.bars("Image sizes", "MB", groups))


def reps_note(doc):
    asked = doc.get("runs_asked", doc["runs"])
    return f" of the {asked} asked (the run was cut short)" if asked != doc["runs"] else ""


def write(doc, out):
    out.mkdir(parents=True, exist_ok=True)
    m0, m1 = doc["machine_start"], doc["machine_end"]
    load = lambda m: ", ".join(f"{x:.2f}" for x in m["load"])
    vers = "\n".join(f"- {k}: {v}" for k, v in doc["versions"].items())
    plots(doc, out)
    md = f"""# {doc['started'][:10]}: muster's lab against the lab's own stack, side by side

- Date: {doc['started']} (run took {doc['seconds'] / 60:.1f} min)
- Machine: {m0['cores']} cores, kernel {m0['kernel']}; load average (1, 5, 15 min) at start
  {load(m0)}, at end {load(m1)}
- Command: `{' '.join(f'{k}={v}' for k, v in doc['env'].items())} {doc['command']}`
- Repetitions: {doc['runs']}{reps_note(doc)}, the stacks alternating inside each (muster first in odd ones)
{vers}

Values: **median** (min–max) over the repetitions; ratio = lab median / muster median.
"lab" = compose/baseline.yml (s6 + Serf + handlebars + `haproxy -sf`, the lab's scripts);
"muster" = compose/docker-compose.yml. Both labs were up at once, on their own networks.
Load: open loop, one new TCP connection per request, 30 s timeout, through 127.0.0.1 and
docker-proxy to ha:80; a request fails on a non-2xx, an error or the timeout. "Out of rotation"
and "served again" = send time of the first of 20 consecutive good answers (from the other
webapps for out of rotation) after the command. Lines lost = requests answered by the webapp
whose access-log line is missing in the collector's files.

{table(doc['results'])}

Image sizes (`docker image inspect` Size):

{image_table(doc.get('images', {}))}

Plots: compare-times.svg, compare-failed.svg, compare-logs.svg, compare-memory.svg,
compare-images.svg. Raw per-run rows (failure kinds, when the failed requests were sent,
latencies, per-process RSS) are in compare.json; the load balancers' logs of the run in
compare-ha-muster.log.gz and compare-ha-lab.log.gz.

Reading the figures:
- The lab stack here is compose/baseline.yml as built from Debian packages (its versions
  above: Debian's serf and s6, not the lab's serf 0.7.0 and s6 2.2), running the same app.js
  as muster's webapp, so only the orchestration differs. baseline.md's figures were taken with
  `docker run` on another day and the lab's own Express app; the method is the same, the
  stacks are not identical, so compare inside this file.
- A scenario's window ends a few seconds after the stack serves again (bounded: kill/stop
  {AFTER} s after the command, the lifecycles 60 s after the command returned); a figure that
  did not come within its bound is counted as such, not as a time.
- "Out of rotation" is what clients see: with `option redispatch` (muster's template) a
  request HAProxy still sends to the dead server is retried on another one and succeeds, so
  this can come before HAProxy drops the server.
- The host was shared with other work (load averages above); both stacks ran under the same
  conditions, alternating, but absolute times carry that noise.
"""
    (out / "compare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    if "--render" in ARGS:
        doc = json.loads(Path(arg("--render", "")).read_text())
        write(doc, OUT)
    else:
        main()
