#!/usr/bin/env python3
"""PID-1 benchmark: muster side by side with tini, tini-static, dumb-init and s6-svscan, in one
run on the same machine (it is shared and noisy: compare the ratios, not the absolute numbers).

Measures, for each init:
  1. wall time of `INIT -- true` (spawn, reap, exit) with hyperfine, interleaved in one call;
  2. idle memory of the init process itself (RSS and PSS, children excluded) while it
     supervises three `sleep` services (muster, s6-svscan) or one child (tini, dumb-init);
  3. idle wake-ups (context switches of the init over 5 s);
  4. SIGTERM -> exit latency with a `sleep` child;
  5. binary size and linkage.
Writes report/pid1-bench.md and report/pid1-bench.json, and prints the table.

Usage: tests/bench/pid1.py [--quick] [--out DIR]    (MUSTER_BIN=path to skip the build)
No figure here is a pass/fail threshold: the goals are printed beside the figures.
"""

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICK = "--quick" in sys.argv
OUT = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else ROOT / "report"
RUNS = 100 if QUICK else 1000
STOP_RUNS = 5 if QUICK else 20
IDLE_SECONDS = 2 if QUICK else 5


def say(*a):
    print("==>", *a, flush=True)


def ensure_tools():
    need = {"hyperfine": "hyperfine", "tini": "tini", "dumb-init": "dumb-init", "s6-svscan": "s6"}
    missing = [pkg for cmd, pkg in need.items() if shutil.which(cmd) is None]
    if missing:
        say("installing", " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                       stdout=subprocess.DEVNULL)


def muster_bin():
    if os.environ.get("MUSTER_BIN"):
        return os.environ["MUSTER_BIN"]
    say("building static muster")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet",
                    "--target", "x86_64-unknown-linux-gnu"], cwd=ROOT, check=True,
                   env={**os.environ, "RUSTFLAGS": "-C target-feature=+crt-static"})
    return str(ROOT / "target/x86_64-unknown-linux-gnu/release/muster")


def status_fields(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def memory_kib(pid):
    rss = int(status_fields(pid)["VmRSS"].split()[0])
    pss = None
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def switches(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        f = status_fields(f"{pid}/task/{task.name}")
        total += int(f["voluntary_ctxt_switches"]) + int(f["nonvoluntary_ctxt_switches"])
    return total


def children(pid):
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_until(cond, limit=10.0):
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


def s6_scandir(tmp, n):
    scan = Path(tmp) / "scan"
    for i in range(n):
        d = scan / f"svc{i}"
        d.mkdir(parents=True)
        run = d / "run"
        run.write_text("#!/bin/sh\nexec sleep 1000\n")
        run.chmod(0o755)
    return str(scan)


def idle(name, argv, init_processes):
    """Starts an init, waits for its services, and measures its own processes at rest."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(children(p.pid)) >= 1)
        time.sleep(1.0)
        pids = init_processes(p.pid)
        mem = [memory_kib(x) for x in pids]
        before = sum(switches(x) for x in pids)
        time.sleep(IDLE_SECONDS)
        after = sum(switches(x) for x in pids)
        return {
            "init": name,
            "processes": len(pids),
            "rss_kib": sum(m[0] for m in mem),
            "pss_kib": sum(m[1] or 0 for m in mem),
            "wakeups_per_s": round((after - before) / IDLE_SECONDS, 2),
        }
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_latency(argv):
    """Median milliseconds from SIGTERM to the init's exit, with a `sleep` child."""
    samples = []
    for _ in range(STOP_RUNS):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: len(children(p.pid)) >= 1)
        time.sleep(0.05)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=15)
        samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 2), code


def linkage(path):
    # ldd (from libc-bin, always present) says so for a binary with no dynamic loader.
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    text = out.stdout + out.stderr
    return "static" if "statically linked" in text or "not a dynamic" in text else "dynamic"


def main():
    ensure_tools()
    muster = muster_bin()
    tini, tini_static, dumb = shutil.which("tini"), shutil.which("tini-static"), shutil.which("dumb-init")
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                           "load_avg_at_start": os.getloadavg()}}

    say(f"start-to-exit of `INIT -- true`, {RUNS} runs each (hyperfine)")
    cmds = {"muster": f"{muster} -- true", "tini": f"{tini} -s -- true",
            "dumb-init": f"{dumb} true"}
    if tini_static:
        cmds["tini-static"] = f"{tini_static} -s -- true"
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "hf.json"
        hf = ["hyperfine", "-N", "--warmup", "50", "--runs", str(RUNS), "--export-json", str(export)]
        for name, c in cmds.items():
            hf += ["-n", name, c]
        subprocess.run(hf, check=True, stdout=subprocess.DEVNULL)
        data = json.loads(export.read_text())
    start = {}
    for r in data["results"]:
        start[r["command"]] = {"median_ms": round(r["median"] * 1000, 3),
                               "mean_ms": round(r["mean"] * 1000, 3),
                               "min_ms": round(r["min"] * 1000, 3)}
    ratio = start["muster"]["median_ms"] / start["tini"]["median_ms"]
    results["true"] = {"runs": RUNS, "results": start, "muster_over_tini_median": round(ratio, 2)}

    say(f"idle memory and wake-ups ({IDLE_SECONDS} s)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "three.toml"
        cfg.write_text("".join(f'[services.s{i}]\ncommand = ["sleep", "1000"]\n' for i in range(3)))
        only = lambda pid: [pid]
        s6_all = lambda pid: [pid] + children(pid)
        idles = [
            idle("muster (3 services)", [muster, "--config", str(cfg)], only),
            idle("tini (1 child)", [tini, "-s", "--", "sleep", "1000"], only),
            idle("dumb-init (1 child)", [dumb, "sleep", "1000"], only),
            idle("s6-svscan + 3 s6-supervise", ["s6-svscan", s6_scandir(tmp, 3)], s6_all),
        ]
        if tini_static:
            idles.insert(2, idle("tini-static (1 child)", [tini_static, "-s", "--", "sleep", "1000"], only))
    results["idle"] = idles

    say(f"SIGTERM -> exit, {STOP_RUNS} runs each")
    stops = {}
    for name, argv in {"muster": [muster, "--", "sleep", "1000"],
                       "tini": [tini, "-s", "--", "sleep", "1000"],
                       "dumb-init": [dumb, "sleep", "1000"]}.items():
        ms, code = stop_latency(argv)
        stops[name] = {"median_ms": ms, "exit_code": code}
    results["sigterm_to_exit"] = stops

    sizes = {}
    for name, path in {"muster": muster, "tini": tini, "tini-static": tini_static,
                       "dumb-init": dumb}.items():
        if path:
            sizes[name] = {"bytes": os.path.getsize(path), "linkage": linkage(path)}
    results["size"] = sizes

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pid1-bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    (OUT / "pid1-bench.md").write_text(md)
    print(md)


def render(r):
    lines = [
        "# PID-1 benchmark: muster beside tini, dumb-init and s6",
        "",
        f"Run {r['date']} by `tests/bench/pid1.py` on {r['machine']['cores']} cores, kernel "
        f"{r['machine']['kernel']}, load average at start {r['machine']['load_avg_at_start'][0]:.2f}. "
        "All inits measured in the same run; the machine is shared, so compare ratios.",
        "",
        f"## `INIT -- true` (hyperfine -N, {r['true']['runs']} runs, 50 warm-up)",
        "",
        "| init | median ms | mean ms | min ms |",
        "|---|---|---|---|",
    ]
    for name, v in r["true"]["results"].items():
        lines.append(f"| {name} | {v['median_ms']} | {v['mean_ms']} | {v['min_ms']} |")
    lines += ["", f"muster / tini (median): **{r['true']['muster_over_tini_median']}x** (goal: 1.5x or less)", "",
              "## Idle, 1 s after start (the init's own processes only)", "",
              "| init | processes | RSS KiB | PSS KiB | wake-ups/s |", "|---|---|---|---|---|"]
    for v in r["idle"]:
        lines.append(f"| {v['init']} | {v['processes']} | {v['rss_kib']} | {v['pss_kib']} | {v['wakeups_per_s']} |")
    lines += ["", "Goal: muster supervising three services at 3 MiB (3072 KiB) RSS or less.", "",
              "## SIGTERM to exit, `sleep` child", "", "| init | median ms | exit code |", "|---|---|---|"]
    for name, v in r["sigterm_to_exit"].items():
        lines.append(f"| {name} | {v['median_ms']} | {v['exit_code']} |")
    lines += ["", "## Binary size", "", "| binary | bytes | linkage |", "|---|---|---|"]
    for name, v in r["size"].items():
        lines.append(f"| {name} | {v['bytes']:,} | {v['linkage']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
