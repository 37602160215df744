#!/usr/bin/env bash
# PID-1 benchmark: muster side by side with tini (`tini -s --`), tini-static, dumb-init and
# s6-svscan, all in one run on the same machine. The machine this runs on is shared and noisy:
# compare the ratios within one run, not absolute numbers across runs.
#
# Measures, for each init:
#   1. wall time of `INIT -- true` (spawn, reap, exit): one hyperfine -N invocation for all;
#   2. idle RSS and PSS of the init's own processes (children excluded), 1 s after its
#      services are up and again 5 s later, and idle wake-ups (context switches of all its
#      threads over those 5 s): muster with three services, tini/dumb-init with one child,
#      s6-svscan with three service dirs (s6-svscan + its three s6-supervise summed);
#   3. binary size and linkage;
#   4. SIGTERM -> exit latency with a `sleep` child (median of 20 runs).
# Prints a table and writes report/pid1-bench.md and report/pid1-bench.json.
# It reports; it never fails on a figure. The goals are printed beside the figures.
#
# Usage: tests/bench/pid1.sh [--quick] [--runs N] [--stop-runs N] [--idle SECONDS] [--out DIR]
#   --quick       100 hyperfine runs instead of 1000, 5 SIGTERM runs, 2 s idle window
#   MUSTER_BIN=…  measure this binary instead of building the static release binary
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=1000 STOP_RUNS=20 IDLE=5 WARMUP=50 OUT=$ROOT/report QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 RUNS=100 STOP_RUNS=5 IDLE=2 ;;
    --runs) RUNS=$2; shift ;;
    --stop-runs) STOP_RUNS=$2; shift ;;
    --idle) IDLE=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pid1.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'pid1.sh: %s\n' "$*" >&2; exit 1; }

# --- processes we start, and how they are always cleaned up -----------------------------

STARTED=()           # root PIDs of everything started in the background
TMP=$(mktemp -d /tmp/pid1-bench.XXXXXX)

# Children of PID (of any of its threads), one per line.
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d' || true; }
# PID's descendants, parents before children.
descendants() { local c; for c in $(children "$1"); do echo "$c"; descendants "$c"; done; }
comm() { cat /proc/"$1"/comm 2>/dev/null || true; }

# SIGKILL a process and all its descendants, by PID (not by process group: tini and muster put
# their child in a group of its own). Stop the tree first so nothing in it forks or restarts a
# service while it is being killed, then kill everything found.
kill_tree() {
  local root=$1 all prev="" i
  [ -d /proc/"$root" ] || return 0
  for i in 1 2 3 4 5; do
    all="$root $(descendants "$root" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -STOP $all 2>/dev/null || true
    [ "$all" = "$prev" ] && break
    prev=$all
  done
  # shellcheck disable=SC2086
  kill -KILL $all 2>/dev/null || true
  wait "$root" 2>/dev/null || true
}

cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill_tree "$p"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Microseconds since the epoch, from bash's own clock: no fork inside a timed window.
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# Polls until "$@" succeeds, for at most $1 seconds.
wait_until() {
  local limit=$1; shift
  local deadline=$(( $(now_us) + limit * 1000000 ))
  until "$@"; do
    [ "$(now_us)" -lt "$deadline" ] || return 1
    sleep 0.01
  done
}

# Starts "$@" in the background with output discarded; sets START_PID.
start() {
  "$@" </dev/null >/dev/null 2>&1 &
  START_PID=$!
  STARTED+=("$START_PID")
}

# True when PID has at least N descendants that are `sleep` (the services are up and exec'd).
sleeps_up() {
  local pid=$1 n=$2 count=0 d
  for d in $(descendants "$pid"); do [ "$(comm "$d")" = sleep ] && count=$((count + 1)); done
  [ "$count" -ge "$n" ]
}

# The init's own processes: PID and its descendants that are not the `sleep` services.
own_processes() {
  local d
  echo "$1"
  for d in $(descendants "$1"); do [ "$(comm "$d")" = sleep ] || echo "$d"; done
}

# --- tools -------------------------------------------------------------------------------

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v tini >/dev/null || need+=(tini)
command -v dumb-init >/dev/null || need+=(dumb-init)
command -v s6-svscan >/dev/null || need+=(s6)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${need[@]}" >/dev/null
fi
TINI=$(command -v tini)
TINI_STATIC=$(command -v tini-static || true)
DUMB=$(command -v dumb-init)
S6_SVSCAN=$(command -v s6-svscan)
S6_SUPERVISE=$(command -v s6-supervise || true)

if [ -n "${MUSTER_BIN:-}" ]; then
  MUSTER=$(realpath "$MUSTER_BIN")
else
  say "building the static release binary"
  RUSTFLAGS="-C target-feature=+crt-static" timeout 1800 \
    cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu
  MUSTER=$ROOT/target/x86_64-unknown-linux-gnu/release/muster
fi
[ -x "$MUSTER" ] || die "no muster binary at $MUSTER"
# A stub that exits at once would make every figure meaningless: check that it runs a child.
rc=0; timeout 10 "$MUSTER" -- sh -c 'exit 3' >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || die "$MUSTER -- sh -c 'exit 3' exited $rc, not 3: muster does not run a child yet"

# --- facts about this run ----------------------------------------------------------------

DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
NPROC=$(nproc)
KERNEL=$(uname -r)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SOURCE=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
MUSTER_VERSION=$("$MUSTER" version 2>/dev/null | head -1 | sed "s/^muster //" || true)
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
VERSIONS=$(jq -n --arg muster "$MUSTER_VERSION ($SOURCE)" --arg tini "$(pkgver tini)" \
  --arg dumb "$(pkgver dumb-init)" --arg s6 "$(pkgver s6)" --arg hf "$(pkgver hyperfine)" \
  '{muster: $muster, tini: $tini, "dumb-init": $dumb, s6: $s6, hyperfine: $hf}')
say "muster $MUSTER_VERSION ($SOURCE), $NPROC cores, kernel $KERNEL, load $LOAD_START"

# --- 1. INIT -- true ---------------------------------------------------------------------

say "1. \`INIT -- true\`: hyperfine, $RUNS runs and $WARMUP warm-up runs each"
names=(muster tini)
cmds=("$(printf '%q' "$MUSTER") -- true" "$TINI -s -- true")
if [ -n "$TINI_STATIC" ]; then names+=(tini-static); cmds+=("$TINI_STATIC -s -- true"); fi
names+=(dumb-init true)
cmds+=("$DUMB true" "$(command -v true)")
hf=(hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic --export-json "$TMP/hf.json")
for i in "${!names[@]}"; do hf+=(-n "${names[$i]}" "${cmds[$i]}"); done
HF_COMMAND=$(for a in "${hf[@]}"; do
  case $a in *[[:space:]]*) printf "'%s' " "$a" ;; *) printf '%s ' "$a" ;; esac
done | sed 's/ $//; s|'"$TMP"'/hf.json|hf.json|')
# Bounded: about 2 ms a run; a hang must not stall the benchmark for ever.
timeout --kill-after=10 $(( 120 + RUNS * ${#names[@]} / 10 )) "${hf[@]}" >&2 \
  || die "hyperfine failed or timed out"
TRUE_JSON=$(jq '[.results[] | {key: .command, value: {
    median_ms: (.median * 1000000 | round / 1000), mean_ms: (.mean * 1000000 | round / 1000),
    min_ms: (.min * 1000000 | round / 1000), stddev_ms: (.stddev * 1000000 | round / 1000)}}]
  | from_entries' "$TMP/hf.json")
ratio() { jq -r --arg a "$1" --arg b "$2" --arg k "$3" \
  'if .[$b] then (.[$a][$k] / .[$b][$k] * 100 | round / 100) else null end' <<<"$TRUE_JSON"; }
R_MED=$(ratio muster tini median_ms)
R_MEAN=$(ratio muster tini mean_ms)
R_MIN=$(ratio muster tini min_ms)
R_STATIC=$(ratio muster tini-static median_ms)

# --- 2. idle memory and wake-ups ---------------------------------------------------------

# Sum of a /proc/PID/status field (kB) over the given PIDs.
status_sum() {
  local field=$1 p v total=0; shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f {print $2}' /proc/"$p"/status 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
pss_sum() {
  local p v total=0
  for p in "$@"; do
    v=$(awk '$1 == "Pss:" {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# Voluntary + involuntary context switches of every thread of the given PIDs.
switches() {
  local p total=0 v
  for p in "$@"; do
    v=$(cat /proc/"$p"/task/*/status 2>/dev/null \
      | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s + 0}')
    total=$((total + v))
  done
  echo "$total"
}
threads() { local p total=0; for p in "$@"; do total=$((total + $(ls /proc/"$p"/task | wc -l))); done; echo "$total"; }

s6_scandir() {  # DIR N: a scan directory with N services running `sleep 1000`
  local i
  for i in $(seq 1 "$2"); do
    mkdir -p "$1/svc$i"
    printf '#!/bin/sh\nexec sleep 1000\n' >"$1/svc$i/run"
    chmod 755 "$1/svc$i/run"
  done
}
three_services_config() {  # FILE SOCKET
  {
    printf '[supervisor]\ncontrol_socket = "%s"\n' "$2"
    printf '[services.s%d]\ncommand = ["sleep", "1000"]\n' 1 2 3
  } >"$1"
}

IDLE_JSON='[]'
idle() {  # LABEL SERVICES ARGV...
  local label=$1 n=$2; shift 2
  start "$@"
  local pid=$START_PID
  wait_until 15 sleeps_up "$pid" "$n" || die "$label: its $n sleep service(s) did not start in 15 s"
  sleep 1
  local own; mapfile -t own < <(own_processes "$pid")
  local rss1 pss1 sw1 rss2 pss2 sw2 thr
  rss1=$(status_sum VmRSS "${own[@]}"); pss1=$(pss_sum "${own[@]}"); sw1=$(switches "${own[@]}")
  thr=$(threads "${own[@]}")
  sleep "$IDLE"
  rss2=$(status_sum VmRSS "${own[@]}"); pss2=$(pss_sum "${own[@]}"); sw2=$(switches "${own[@]}")
  local comms; comms=$(for p in "${own[@]}"; do comm "$p"; done | sort | uniq -c | awk '{printf "%s%s×%s", (NR > 1 ? " + " : ""), $2, $1}')
  kill_tree "$pid"
  IDLE_JSON=$(jq --arg lbl "$label" --arg procs "$comms" --argjson n "${#own[@]}" \
    --argjson thr "$thr" --argjson services "$n" --argjson rss1 "$rss1" --argjson pss1 "$pss1" \
    --argjson rss2 "$rss2" --argjson pss2 "$pss2" --argjson sw "$((sw2 - sw1))" --argjson idle "$IDLE" \
    '. + [{init: $lbl, services: $services, processes: $n, process_names: $procs, threads: $thr,
           rss_kib_1s: $rss1, pss_kib_1s: $pss1, rss_kib_later: $rss2, pss_kib_later: $pss2,
           idle_s: $idle, ctxt_switches: $sw, wakeups_per_s: ($sw / $idle * 100 | round / 100)}]' \
    <<<"$IDLE_JSON")
}

say "2. idle memory 1 s after start and ${IDLE} s later, wake-ups over those ${IDLE} s"
three_services_config "$TMP/three.toml" "$TMP/control.sock"
idle "muster --config (3 services)" 3 "$MUSTER" --config "$TMP/three.toml"
idle "tini -s (1 child)" 1 "$TINI" -s -- sleep 1000
[ -z "$TINI_STATIC" ] || idle "tini-static -s (1 child)" 1 "$TINI_STATIC" -s -- sleep 1000
idle "dumb-init (1 child)" 1 "$DUMB" sleep 1000
s6_scandir "$TMP/scan-idle" 3
idle "s6-svscan + 3 s6-supervise" 3 "$S6_SVSCAN" "$TMP/scan-idle"
idle "muster -- (1 child)" 1 "$MUSTER" -- sleep 1000

# --- 3. binary sizes ---------------------------------------------------------------------

say "3. binary sizes"
SIZE_JSON='[]'
size_of() {  # NAME PATH
  local bytes link desc=""
  bytes=$(stat -L -c %s "$2")
  # ldd (libc-bin, always present) says "statically linked" / "not a dynamic executable".
  case $(ldd "$2" 2>&1 || true) in
    *"statically linked"*|*"not a dynamic executable"*) link=static ;;
    *) link=dynamic ;;
  esac
  command -v file >/dev/null && desc=$(file -bL "$2" | cut -d, -f1-2,4 | sed 's/ *$//')
  SIZE_JSON=$(jq --arg name "$1" --arg path "$2" --argjson bytes "$bytes" --arg link "$link" \
    --arg file "$desc" '. + [{binary: $name, path: $path, bytes: $bytes, linkage: $link, file: $file}]' \
    <<<"$SIZE_JSON")
}
size_of muster "$MUSTER"
size_of tini "$TINI"
[ -z "$TINI_STATIC" ] || size_of tini-static "$TINI_STATIC"
size_of dumb-init "$DUMB"
size_of s6-svscan "$S6_SVSCAN"
[ -z "$S6_SUPERVISE" ] || size_of s6-supervise "$S6_SUPERVISE"

# --- 4. SIGTERM -> exit ------------------------------------------------------------------

say "4. SIGTERM -> exit, $STOP_RUNS runs each"
STOP_JSON='[]'
stop_latency() {  # LABEL SERVICES SETUP ARGV...   (SETUP: command run before each start, or :)
  local label=$1 n=$2 setup=$3; shift 3
  local samples=() codes=() left=0 r pid rc t0 t1 wd kids k
  for r in $(seq 1 "$STOP_RUNS"); do
    $setup
    start "$@"
    pid=$START_PID
    wait_until 15 sleeps_up "$pid" "$n" || die "$label: its services did not start in 15 s"
    mapfile -t kids < <(descendants "$pid")
    sleep 0.05
    # Watchdog: an init that ignores SIGTERM is killed after 15 s, so `wait` is bounded.
    { sleep 15; kill -KILL "$pid" 2>/dev/null; } &
    wd=$!; STARTED+=("$wd")
    rc=0
    t0=$(now_us)
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    t1=$(now_us)
    kill_tree "$wd"
    samples+=("$((t1 - t0))")
    codes+=("$rc")
    # Anything the init left running (the runsvdir failure mode) is counted, then killed.
    for k in "${kids[@]}"; do
      if [ -d /proc/"$k" ] && ! grep -q '^State:.*Z' /proc/"$k"/status 2>/dev/null; then
        left=$((left + 1)); kill -KILL "$k" 2>/dev/null || true
      fi
    done
  done
  local codes_s; codes_s=$(printf '%s\n' "${codes[@]}" | sort -n | uniq | paste -sd, -)
  STOP_JSON=$(printf '%s\n' "${samples[@]}" | jq -s --arg lbl "$label" --arg codes "$codes_s" \
    --argjson left "$left" --argjson prev "$STOP_JSON" '
    sort as $s | ($s | length) as $n
    | (if $n % 2 == 1 then $s[($n - 1) / 2] else ($s[$n / 2 - 1] + $s[$n / 2]) / 2 end) as $med
    | $prev + [{init: $lbl, runs: $n, median_ms: ($med / 10 | round / 100),
        min_ms: ($s[0] / 10 | round / 100), max_ms: ($s[-1] / 10 | round / 100),
        exit_codes: $codes, processes_left_running: $left}]')
}
fresh_scandir() { rm -rf "$TMP/scan-stop"; s6_scandir "$TMP/scan-stop" 3; }
stop_latency "muster -- sleep" 1 : "$MUSTER" -- sleep 1000
stop_latency "tini -s -- sleep" 1 : "$TINI" -s -- sleep 1000
[ -z "$TINI_STATIC" ] || stop_latency "tini-static -s -- sleep" 1 : "$TINI_STATIC" -s -- sleep 1000
stop_latency "dumb-init sleep" 1 : "$DUMB" sleep 1000
stop_latency "muster --config (3 services)" 3 : "$MUSTER" --config "$TMP/three.toml"
stop_latency "s6-svscan (3 services)" 3 fresh_scandir "$S6_SVSCAN" "$TMP/scan-stop"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- goals and report --------------------------------------------------------------------

MUSTER_IDLE_RSS=$(jq '.[0].rss_kib_1s' <<<"$IDLE_JSON")
MUSTER_IDLE_RSS_LATER=$(jq '.[0].rss_kib_later' <<<"$IDLE_JSON")
MAX_RSS=$(( MUSTER_IDLE_RSS > MUSTER_IDLE_RSS_LATER ? MUSTER_IDLE_RSS : MUSTER_IDLE_RSS_LATER ))
GOAL_TRUE=$(awk -v r="$R_MED" 'BEGIN {print (r <= 1.5) ? "met" : "missed"}')
GOAL_RSS=$([ "$MAX_RSS" -le 3072 ] && echo met || echo missed)

mkdir -p "$OUT"
jq -n --arg date "$DATE" --argjson nproc "$NPROC" --arg kernel "$KERNEL" --arg cpu "$CPU" \
  --arg load_start "$LOAD_START" --arg load_end "$LOAD_END" --arg source "$SOURCE" \
  --arg muster "$MUSTER" --argjson versions "$VERSIONS" --argjson quick "$QUICK" \
  --arg hf "$HF_COMMAND" --argjson runs "$RUNS" --argjson warmup "$WARMUP" \
  --argjson true_results "$TRUE_JSON" --arg rmed "$R_MED" --arg rmean "$R_MEAN" \
  --arg rmin "$R_MIN" --arg rstatic "$R_STATIC" --argjson idle "$IDLE_JSON" \
  --argjson size "$SIZE_JSON" --argjson stop "$STOP_JSON" \
  --arg goal_true "$GOAL_TRUE" --arg goal_rss "$GOAL_RSS" --argjson max_rss "$MAX_RSS" '
  def num: if . == "null" or . == "" then null else tonumber end;
  {date: $date, script: "tests/bench/pid1.sh", quick: ($quick == 1),
   machine: {nproc: $nproc, kernel: $kernel, cpu: $cpu,
             loadavg_start: $load_start, loadavg_end: $load_end},
   muster_binary: $muster, versions: $versions,
   init_true: {command: $hf, runs: $runs, warmup: $warmup, results: $true_results,
     muster_over_tini: {median: ($rmed | num), mean: ($rmean | num), min: ($rmin | num)},
     muster_over_tini_static_median: ($rstatic | num)},
   idle: $idle, size: $size, sigterm_to_exit: $stop,
   goals: {
     muster_true_within_1_5x_tini: {goal: "muster -- true median <= 1.5 x tini -s -- true",
       ratio: ($rmed | num), result: $goal_true},
     muster_idle_rss_3_services: {goal: "muster idle RSS with three services <= 3 MiB (3072 KiB)",
       rss_kib: $max_rss, result: $goal_rss}}}' >"$OUT/pid1-bench.json"

# Markdown and the plain table are both rendered from the JSON just written.
J=$OUT/pid1-bench.json
{
  jq -r '"# PID-1 benchmark: muster beside tini, dumb-init and s6",
    "",
    "Run \(.date) by `tests/bench/pid1.sh`\(if .quick then " (--quick)" else "" end) on \(.machine.nproc) cores (`nproc`), kernel \(.machine.kernel) (`uname -r`), \(.machine.cpu); load average \(.machine.loadavg_start) at start, \(.machine.loadavg_end) at the end.",
    "The machine is shared and noisy: every init was measured in this same run, so read the ratios rather than the absolute times.",
    "",
    "Versions: muster \(.versions.muster); tini \(.versions.tini), dumb-init \(.versions["dumb-init"]), s6 \(.versions.s6), hyperfine \(.versions.hyperfine) (Debian packages).",
    "",
    "## Goals",
    "",
    "| goal | figure | result |",
    "|---|---|---|",
    "| `muster -- true` within 1.5x of `tini -s -- true` (median) | \(.goals.muster_true_within_1_5x_tini.ratio)x | \(.goals.muster_true_within_1_5x_tini.result) |",
    "| idle RSS of muster supervising three services ≤ 3 MiB (3072 KiB) | \(.goals.muster_idle_rss_3_services.rss_kib) KiB | \(.goals.muster_idle_rss_3_services.result) |",
    "",
    "No figure here is a pass/fail test; the goals are reported, not enforced.",
    "",
    "## 1. `INIT -- true`: spawn, reap, exit",
    "",
    "One hyperfine invocation for all commands (hyperfine runs each command'"'"'s \(.init_true.runs) runs as one block, in the order below):",
    "",
    "```",
    .init_true.command,
    "```",
    "",
    "| command | median ms | mean ms | min ms | stddev ms | median / tini |",
    "|---|---|---|---|---|---|",
    (.init_true.results as $r | $r | to_entries[] |
      "| \(.key) | \(.value.median_ms) | \(.value.mean_ms) | \(.value.min_ms) | \(.value.stddev_ms) | \(.value.median_ms / $r.tini.median_ms * 100 | round / 100)x |"),
    "",
    "muster / tini: median **\(.init_true.muster_over_tini.median)x**, mean \(.init_true.muster_over_tini.mean)x, min \(.init_true.muster_over_tini.min)x. muster / tini-static (both static): \(.init_true.muster_over_tini_static_median)x (median). `true` is the bare command without an init.",
    "",
    "## 2. Idle: the init'"'"'s own processes, children excluded",
    "",
    "RSS from `/proc/PID/status`, PSS from `/proc/PID/smaps_rollup`, summed over the init'"'"'s processes (its `sleep` services excluded), read 1 s after the services were running and again \(.idle[0].idle_s) s later. Wake-ups = voluntary + involuntary context switches of all their threads (`/proc/PID/task/*/status`) over those \(.idle[0].idle_s) s. muster'"'"'s configuration: three `[services.sN] command = [\"sleep\", \"1000\"]` plus a control socket in a temporary directory (the default configuration opens one too).",
    "",
    "| init | processes | threads | RSS KiB at 1 s | PSS KiB at 1 s | RSS KiB \(.idle[0].idle_s) s later | PSS KiB \(.idle[0].idle_s) s later | wake-ups/s |",
    "|---|---|---|---|---|---|---|---|",
    (.idle[] | "| \(.init) | \(.process_names) | \(.threads) | \(.rss_kib_1s) | \(.pss_kib_1s) | \(.rss_kib_later) | \(.pss_kib_later) | \(.wakeups_per_s) |"),
    "",
    "For a dynamic binary, RSS counts the shared libc pages in full and PSS only its share; a static binary has RSS ≈ PSS.",
    "",
    "## 3. Binary size",
    "",
    "| binary | bytes | MiB | linkage (`ldd`) | `file` |",
    "|---|---|---|---|---|",
    (.size[] | "| \(.binary) | \(.bytes) | \(.bytes / 1048576 * 100 | round / 100) | \(.linkage) | \(.file) |"),
    "",
    "s6 binaries also load libskarnet.so and libs6.so.",
    "",
    "## 4. SIGTERM → exit",
    "",
    "`kill -TERM` to the init once its `sleep` child(ren) ran for 50 ms; time from just before the `kill` to the return of bash'"'"'s `wait` (clock: bash'"'"'s `$EPOCHREALTIME`, so no process is forked inside the timed window).",
    "",
    "| init | runs | median ms | min ms | max ms | exit code(s) | processes left running |",
    "|---|---|---|---|---|---|---|",
    (.sigterm_to_exit[] | "| \(.init) | \(.runs) | \(.median_ms) | \(.min_ms) | \(.max_ms) | \(.exit_codes) | \(.processes_left_running) |"),
    "",
    "Figures in machine-readable form: `report/pid1-bench.json`."' "$J"
} >"$OUT/pid1-bench.md"

# The human-readable table on stdout.
jq -r '
  def pad(n): tostring | . + (" " * ([n - length, 0] | max));
  "PID-1 benchmark, \(.date), \(.machine.nproc) cores, kernel \(.machine.kernel), load \(.machine.loadavg_start) -> \(.machine.loadavg_end)",
  "",
  "INIT -- true (hyperfine -N, \(.init_true.runs) runs)     median ms  mean ms  min ms",
  (.init_true.results | to_entries[] | "  \(.key | pad(40)) \(.value.median_ms | pad(10)) \(.value.mean_ms | pad(8)) \(.value.min_ms)"),
  "  muster / tini: median \(.init_true.muster_over_tini.median)x, mean \(.init_true.muster_over_tini.mean)x, min \(.init_true.muster_over_tini.min)x   (goal <= 1.5x: \(.goals.muster_true_within_1_5x_tini.result))",
  "",
  "Idle (init only)                           RSS@1s  PSS@1s  RSS later  PSS later  thr  wakeups/s",
  (.idle[] | "  \(.init | pad(40)) \(.rss_kib_1s | pad(7)) \(.pss_kib_1s | pad(7)) \(.rss_kib_later | pad(10)) \(.pss_kib_later | pad(10)) \(.threads | pad(4)) \(.wakeups_per_s)"),
  "  (KiB; muster with three services: goal <= 3072 KiB RSS: \(.goals.muster_idle_rss_3_services.result))",
  "",
  "Binary                                     bytes      linkage",
  (.size[] | "  \(.binary | pad(40)) \(.bytes | pad(10)) \(.linkage)"),
  "",
  "SIGTERM -> exit                            median ms  min ms  max ms  exit  left",
  (.sigterm_to_exit[] | "  \(.init | pad(40)) \(.median_ms | pad(10)) \(.min_ms | pad(7)) \(.max_ms | pad(7)) \(.exit_codes | pad(5)) \(.processes_left_running)"),
  "",
  "written: report/pid1-bench.md, report/pid1-bench.json"' "$J" | sed "s|report/|$OUT/|g"
