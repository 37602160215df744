#!/usr/bin/env bash
# The floods of tests/hostile_limits.rs (8,000 idle gossip TCP connections, a 40 MiB push/pull,
# 60,000-character names, 3,000 idle control-socket connections, the descriptor limit), run
# against this build and, side by side, against an anchor build of muster given as $1 (for
# instance main before issue 13). Figures go to report/hostile-bench.md and report/hostile-bench.json.
# The anchor is expected to fail the tests' bounds: its figures are what the bounds fix.
set -euo pipefail
export MUSTER_FLOOD_CONNECTIONS="${MUSTER_FLOOD_CONNECTIONS:-8000}"
cd "$(dirname "$0")/../.."
anchor="${1:-}"
out=report
mkdir -p "$out"
limits="$(mktemp)"
trap 'rm -f "$limits"' EXIT
printf '[profile.default]\nslow-timeout = { period = "30s", terminate-after = 3 }\n' >"$limits"
run() { # label, binary or ""
  local log="/tmp/muster-hostile-$1.log"
  if [ -n "$2" ]; then
    # The anchor may never end a test (a flood it does not survive): 90 s each at most.
    MUSTER_UNDER_TEST="$2" cargo nextest run --test hostile_limits --no-capture --no-fail-fast \
      --config-file "$limits" \
      >"$log" 2>&1 || true
  else
    cargo nextest run --test hostile_limits --no-capture --no-fail-fast >"$log" 2>&1 || true
  fi
  { grep -E '^FIGURE ' "$log" || true; } | sed 's/^FIGURE //' | sort >"/tmp/muster-hostile-$1.fig"
  grep -cE '^\s+PASS ' "$log" >"/tmp/muster-hostile-$1.pass" || true
}
run this ""
[ -n "$anchor" ] && run anchor "$anchor"
python3 - "$out" "$anchor" <<'PY'
import json, sys
out, anchor = sys.argv[1], sys.argv[2]
def load(label):
    try:
        lines = open(f"/tmp/muster-hostile-{label}.fig").read().split("\n")
    except FileNotFoundError:
        return {}
    return dict(l.split(" = ", 1) for l in lines if " = " in l)
this, base = load("this"), load("anchor") if anchor else {}
keys = sorted(set(this) | set(base))
rows = ["| figure | this build | anchor |", "|---|---|---|"]
rows += [f"| {k} | {this.get(k, '-')} | {base.get(k, '-')} |" for k in keys]
passed = {l: open(f"/tmp/muster-hostile-{l}.pass").read().strip() for l in (["this"] + (["anchor"] if anchor else []))}
md = ["# Hostile peers: listener bounds (tests/bench/hostile.sh)", "",
      "RSS in KiB (VmRSS of the muster under test), times in ms, CPU as a share of one core over 2 s",
      "at a descriptor limit of 64 (`prlimit --nofile=64`). The anchor is " + (anchor or "not given") + ".",
      f"Tests of tests/hostile_limits.rs passed: this build {passed.get('this')} of 5, anchor {passed.get('anchor', '-')} of 5.", ""] + rows + [""]
open(f"{out}/hostile-bench.md", "w").write("\n".join(md))
json.dump({"this": this, "anchor": base, "passed": passed}, open(f"{out}/hostile-bench.json", "w"), indent=1)
print("\n".join(md))
PY
