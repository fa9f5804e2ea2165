#!/usr/bin/env bash
# Overhead benchmark: prints ratios against a plain baseline measured in the same run (never
# absolute speed claims: these machines are shared and noisy). Each case runs ROUNDS times,
# plain and under nettrap interleaved, and the medians are compared.
#
#   bash benches/overhead.sh            # ROUNDS=15 by default
#
# Cases:
#   spawn    1000 x posix_spawn(/bin/true) + wait   (start-up cost of the shim in every process),
#            beside an empty preloaded library (what loading any library costs)
#   connect  20,000 loopback TCP connects to a listener (per-call cost of the interception),
#            under each engine (preload, seccomp, auto), under strace, and under a naive
#            preloaded shim built here from a few lines of C (dlsym + one 64-byte write() per
#            connect: the simplest tool that records calls), for comparison
#   paired   the targets that name a baseline other than plain, measured against it directly,
#            round by round: spawn under preload against the empty library, and the connects
#            under preload and auto against the naive shim; and the connects pinned to one CPU
#            (taskset), where the storm's two speeds on two CPUs do not mix into the ratio
#   syscalls 200,000 x (open+read+close+getppid), no network call: what the seccomp filter
#            costs the system calls it does not trap (target: < 2%)
#   adapter  3000 empty unittest tests under nettrap with the Python runner adapter against the
#            same run with `--runner none`: what knowing every test costs per test
#   lookups  50 unittest tests that each look up a name no resolver answers (the offline-CI
#            hang: a private resolv.conf points at a loopback "resolver" that reads and never
#            answers, `timeout:1 attempts:1`), plain against `nettrap run --deny-dns`, all inside
#            its own user, network and mount namespace (`unshare -rmn`). The plain run waits out
#            the resolver timeout in every test (about 1 s each, so it runs once, not ROUNDS
#            times: its time is the timeouts'); DNS_TESTS=N changes the number of tests.
#   report   the report step alone (decode the event log, attribute, build, render, write) of a
#            run of REPORT_CALLS (1,000,000) refused loopback connects over REPORT_TESTS (10,000)
#            tests, as `NETTRAP_TIMINGS=1` prints it: wall time and peak RSS of nettrap (target:
#            < 2 s and < 200 MB). Runs once, inside `unshare -rn`.
# and, where valgrind is installed, the same two costs as user-space instruction counts
# (callgrind), which do not depend on what else the machine is doing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-15}
cargo build --release --quiet
NETTRAP=$PWD/target/release/nettrap
OUT=$PWD/target/bench-fixtures
make -s -C fixtures/c OUT="$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# spread: the interquartile range over the median, in percent
spread() { sort -n | awk '{a[NR]=$1} END {q1=a[int((NR+3)/4)]; q3=a[int((3*NR+3)/4)]; m=a[int((NR+1)/2)]; printf "%.0f", m ? 100*(q3-q1)/m : 0}'; }

# The baselines built here: an empty preloaded library, and a naive recording shim.
cat >"$WORK/empty.c" <<'C'
void nettrap_bench_empty(void) {}
C
cat >"$WORK/naive.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int log_fd = -1;
__attribute__((constructor)) static void init(void) {
    real_connect = dlsym(RTLD_NEXT, "connect");
    const char *path = getenv("NAIVE_LOG");
    if (path) log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    char rec[64] = {0};
    memcpy(rec, addr, len < sizeof rec ? len : sizeof rec);
    if (log_fd >= 0) write(log_fd, rec, sizeof rec);
    return real_connect(fd, addr, len);
}
C
cc -shared -fPIC -O2 -o "$WORK/libempty.so" "$WORK/empty.c"
cc -shared -fPIC -O2 -o "$WORK/libnaive.so" "$WORK/naive.c" -ldl
EMPTY=(env LD_PRELOAD="$WORK/libempty.so")
NAIVE=(env NAIVE_LOG="$WORK/naive.log" LD_PRELOAD="$WORK/libnaive.so")

# time_ns CMD... : wall time of one run, in ns
time_ns() { local t0; t0=$(now); "$@" >/dev/null 2>&1; echo $(($(now) - t0)); }

# bench NAME WRAPPER... :: CMD...: CMD plain against CMD under WRAPPER, interleaved
bench() {
  local name=$1; shift
  local wrapper=()
  while [ "$1" != :: ]; do wrapper+=("$1"); shift; done
  shift
  local plain=() under=()
  for _ in $(seq "$ROUNDS"); do
    plain+=("$(time_ns "$@")")
    under+=("$(time_ns "${wrapper[@]}" "$@")")
  done
  local p u ps us
  p=$(printf '%s\n' "${plain[@]}" | median)
  u=$(printf '%s\n' "${under[@]}" | median)
  ps=$(printf '%s\n' "${plain[@]}" | spread)
  us=$(printf '%s\n' "${under[@]}" | spread)
  rm -f "$WORK/naive.log"
  awk -v n="$name" -v p="$p" -v u="$u" -v ps="$ps" -v us="$us" \
    'BEGIN { printf "%-44s plain %8.1f ms +-%2d%%   wrapped %8.1f ms +-%2d%%   ratio %.3f\n", n, p/1e6, ps/2, u/1e6, us/2, u/p }'
}
nettrap() { echo "$NETTRAP" run --quiet --report "$WORK/r.json" --engine "$1" --; }

echo "nettrap overhead, medians of $ROUNDS interleaved rounds (ratio = wrapped / plain)"
# shellcheck disable=SC2046
{
bench "spawn 1000 x /bin/true: empty library" "${EMPTY[@]}" :: "$OUT/spawn_loop" 1000 /bin/true
bench "spawn 1000 x /bin/true: preload"     $(nettrap preload) :: "$OUT/spawn_loop" 1000 /bin/true
bench "spawn 1000 x /bin/true: auto"        $(nettrap auto) :: "$OUT/spawn_loop" 1000 /bin/true
bench "20000 connects: naive shim (1 write)" "${NAIVE[@]}" :: "$OUT/connect_loop" 20000 0
bench "20000 connects: preload"             $(nettrap preload) :: "$OUT/connect_loop" 20000 0
bench "20000 connects: seccomp"             $(nettrap seccomp) :: "$OUT/connect_loop" 20000 0
bench "20000 connects: auto"                $(nettrap auto) :: "$OUT/connect_loop" 20000 0
if command -v strace >/dev/null; then
bench "20000 connects: strace -f -e connect" strace -f -o /dev/null -e trace=connect :: "$OUT/connect_loop" 20000 0
fi
bench "200000 x open/read/close: seccomp"   $(nettrap seccomp) :: "$OUT/syscall_loop" 200000
}

# Two of issue 10's targets compare nettrap with a baseline wrapper, not with plain: each is
# measured here directly, the two commands interleaved round by round (a slow stretch of the
# machine then slows both), as the median of the per-round ratios with their spread.
# pair NAME A... :: B...: A against B
pair() {
  local name=$1; shift
  local a=() b=()
  while [ "$1" != :: ]; do a+=("$1"); shift; done
  shift
  b=("$@")
  local ratios=()
  for _ in $(seq "$ROUNDS"); do
    local ta tb
    ta=$(time_ns "${a[@]}")
    tb=$(time_ns "${b[@]}")
    ratios+=("$(awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.6f", a/b }')")
  done
  rm -f "$WORK/naive.log"
  local r rs
  r=$(printf '%s\n' "${ratios[@]}" | median)
  rs=$(printf '%s\n' "${ratios[@]}" | spread)
  awk -v n="$name" -v r="$r" -v rs="$rs" 'BEGIN { printf "%-60s ratio %.3f +-%d%% (paired rounds)\n", n, r, rs/2 }'
}
echo "the same, paired against the baseline each target names (ratio = nettrap / baseline)"
# shellcheck disable=SC2046
{
pair "spawn 1000 x /bin/true: preload / empty library" $(nettrap preload) "$OUT/spawn_loop" 1000 /bin/true :: "${EMPTY[@]}" "$OUT/spawn_loop" 1000 /bin/true
pair "20000 connects: preload / naive shim" $(nettrap preload) "$OUT/connect_loop" 20000 0 :: "${NAIVE[@]}" "$OUT/connect_loop" 20000 0
pair "20000 connects: auto / naive shim" $(nettrap auto) "$OUT/connect_loop" 20000 0 :: "${NAIVE[@]}" "$OUT/connect_loop" 20000 0
# On two CPUs the storm runs in one of two speeds (the connecting and the accepting thread on
# one CPU or on two: ~7 or ~10 us a connect), which no wrapper chooses; pinned to one CPU
# (nettrap's launcher too), each round runs the same way and the per-connect cost shows.
if command -v taskset >/dev/null; then
pair "20000 connects, one CPU: preload / plain" taskset -c 0 $(nettrap preload) "$OUT/connect_loop" 20000 0 :: taskset -c 0 "$OUT/connect_loop" 20000 0
pair "20000 connects, one CPU: naive shim / plain" taskset -c 0 "${NAIVE[@]}" "$OUT/connect_loop" 20000 0 :: taskset -c 0 "$OUT/connect_loop" 20000 0
pair "20000 connects, one CPU: preload / naive shim" taskset -c 0 $(nettrap preload) "$OUT/connect_loop" 20000 0 :: taskset -c 0 "${NAIVE[@]}" "$OUT/connect_loop" 20000 0
fi
}

# What the program itself pays: the CPU time of the connecting process alone (its rusage, read
# by a small parent that runs it), plain and under each shim, interleaved. nettrap's launcher
# and its report step (made after the command, from the log) are not in it; the wall ratios
# above include them.
RUSAGE_PY='import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(int((r.ru_utime + r.ru_stime) * 1e9))'
(
  plain=() naive=() shim=()
  for _ in $(seq "$ROUNDS"); do
    plain+=("$(python3 -c "$RUSAGE_PY" "$OUT/connect_loop" 20000 0)")
    naive+=("$("${NAIVE[@]}" python3 -c "$RUSAGE_PY" "$OUT/connect_loop" 20000 0)")
    shim+=("$($(nettrap preload) python3 -c "$RUSAGE_PY" "$OUT/connect_loop" 20000 0)")
  done
  p=$(printf '%s\n' "${plain[@]}" | median)
  v=$(printf '%s\n' "${naive[@]}" | median)
  u=$(printf '%s\n' "${shim[@]}" | median)
  rm -f "$WORK/naive.log"
  awk -v p="$p" -v v="$v" -v u="$u" 'BEGIN { printf "%-44s plain %8.1f ms   naive shim %.3f   nettrap preload %.3f   (CPU time, ratio to plain)\n", "20000 connects: the program'"'"'s own CPU", p/1e6, v/p, u/p }'
)

# The Python adapter: the baseline is nettrap itself without adapters, so the ratio is the
# adapter's own cost (3000 empty tests: the worst case, a real test takes milliseconds).
python3 - "$WORK/test_empty.py" <<'PY'
import sys
lines = ["import unittest", "class T(unittest.TestCase):"]
lines += ["    def test_%d(self): pass" % i for i in range(3000)]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
(
  cd "$WORK"
  base=() with=()
  for _ in $(seq "$ROUNDS"); do
    base+=("$(time_ns "$NETTRAP" run -q --report r.json --runner none -- python3 -m unittest -q test_empty)")
    with+=("$(time_ns "$NETTRAP" run -q --report r.json -- python3 -m unittest -q test_empty)")
  done
  p=$(printf '%s\n' "${base[@]}" | median)
  u=$(printf '%s\n' "${with[@]}" | median)
  awk -v n="3000 empty unittest tests: adapter" -v p="$p" -v u="$u" \
    'BEGIN { printf "%-44s none  %8.1f ms   adapter %8.1f ms   ratio %.3f  (+%.0f us per test)\n", n, p/1e6, u/1e6, u/p, (u-p)/3e6 }'
)

# Lookups in an offline job: every test waits out the resolver's timeout, unless nettrap denies
# the lookups (`--deny-dns`) and they fail at once. The ratio is plain / --deny-dns (large).
DNS_TESTS=${DNS_TESTS:-50}
run_help=$("$NETTRAP" run --help 2>&1 || true)
if [[ $run_help != *--deny-dns* ]]; then
  echo "$DNS_TESTS lookups, hanging resolver: skipped (this nettrap has no \`run --deny-dns\`)"
elif ! unshare -rmn true 2>/dev/null; then
  echo "$DNS_TESTS lookups, hanging resolver: skipped (\`unshare -rmn\` is not available here)"
else
  python3 - "$WORK/test_lookups.py" "$DNS_TESTS" <<'PY'
import sys
lines = ["import socket, unittest", "class T(unittest.TestCase):"]
for i in range(int(sys.argv[2])):
    lines += [
        "    def test_%d(self):" % i,
        "        try:",
        "            socket.getaddrinfo('api.unknown.example', 443)",
        "        except OSError:",
        "            pass",
    ]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$WORK/resolv.conf"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' >"$WORK/hosts"
  cat >"$WORK/lookups.sh" <<'SH'
# Runs inside `unshare -rmn`: loopback only, a private resolver configuration, and a "resolver"
# on 127.0.0.1:53 that reads every query and never answers.
set -eu
cd "$WORK"
ip link set lo up
mount --bind "$WORK/resolv.conf" /etc/resolv.conf
mount --bind "$WORK/hosts" /etc/hosts
python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    s.recv(4096)
' &
resolver=$!
trap 'kill "$resolver"' EXIT
sleep 0.2
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ns() { local t0; t0=$(now); "$@" >/dev/null 2>&1 || true; echo $(($(now) - t0)); }
p=$(time_ns python3 -m unittest -q test_lookups)
under=()
for _ in $(seq "$ROUNDS"); do
  under+=("$(time_ns "$NETTRAP" run -q --report r.json --deny-dns -- python3 -m unittest -q test_lookups)")
done
u=$(printf '%s\n' "${under[@]}" | median)
awk -v n="$DNS_TESTS tests x 1 lookup, hanging resolver" -v p="$p" -v u="$u" \
  'BEGIN { printf "%-44s plain %8.1f ms   deny-dns %7.1f ms   ratio %.0f (plain / --deny-dns)\n", n, p/1e6, u/1e6, p/u }'
# What the last run's report says: the lookups were denied, one per test.
python3 - r.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
tests = [t for t in r["tests"] if any(c["syscall"] == "lookup" and c["verdict"] == "denied" for c in t["calls"])]
n = sum(c["count"] for t in r["tests"] for c in t["calls"] if c["syscall"] == "lookup" and c["verdict"] == "denied")
print("%-44s %d denied lookups in %d of %d tests" % ("", n, len(tests), len(r["tests"])))
PY
SH
  WORK=$WORK NETTRAP=$NETTRAP ROUNDS=$ROUNDS DNS_TESTS=$DNS_TESTS unshare -rmn bash "$WORK/lookups.sh"
fi

# The report step of a large run: REPORT_CALLS connects over REPORT_TESTS tests (many_calls
# sets NETTRAP_TEST per test), refused on loopback in a private network namespace.
REPORT_CALLS=${REPORT_CALLS:-1000000}
REPORT_TESTS=${REPORT_TESTS:-10000}
thousands() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
report_name="report step, $(thousands "$REPORT_CALLS") calls over $(thousands "$REPORT_TESTS") tests"
if ! unshare -rn true 2>/dev/null; then
  echo "$report_name: skipped (\`unshare -rn\` is not available here)"
else
  line=$(cd "$WORK" && NETTRAP_TIMINGS=1 unshare -rn sh -c 'ip link set lo up; exec "$@"' sh \
    "$NETTRAP" run -q --report r.json --engine preload -- "$OUT/many_calls" "$REPORT_CALLS" "$REPORT_TESTS" 2>&1 >/dev/null |
    sed -n 's/^nettrap: report step: \([0-9]*\) ms, peak RSS \([0-9.]*\) MB$/\1 \2/p')
  if [ -z "$line" ]; then
    echo "$report_name: failed (no \`nettrap: report step\` line)"
  else
    read -r ms mb <<<"$line"
    printf '%-44s %6s ms, peak RSS %6s MB   (target < 1000 ms, < 100 MB)\n' "$report_name" "$ms" "$mb"
  fi
fi

if command -v valgrind >/dev/null; then
  echo "user-space instructions (callgrind; repeatable on a noisy machine):"
  # instr [nettrap|empty|naive] CMD...: instructions the command itself executes
  instr() {
    local pre=()
    case $1 in
      nettrap) shift; pre=("$NETTRAP" run --quiet --report "$WORK/r.json" --engine preload --) ;;
      empty) shift; pre=("${EMPTY[@]}") ;;
      naive) shift; pre=("${NAIVE[@]}") ;;
    esac
    "${pre[@]}" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  }
  p=$(instr /bin/true); e=$(instr empty /bin/true); u=$(instr nettrap /bin/true)
  # The empty library again, inside a nettrap run (its environment, which the adapters need,
  # costs the loader a little in every process too): what the shim itself adds.
  ee=$("$NETTRAP" run --quiet --report "$WORK/r.json" --engine preload -- env LD_PRELOAD="$WORK/libempty.so" \
    valgrind --tool=callgrind --callgrind-out-file=/dev/null /bin/true 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  awk -v p="$p" -v e="$e" -v u="$u" 'BEGIN { printf "%-34s plain %7d   empty library +%d   nettrap +%d   (nettrap - empty: +%d per process start)\n", "start-up of /bin/true", p, e-p, u-p, u-e }'
  awk -v e="$e" -v ee="$ee" -v u="$u" 'BEGIN { printf "%-34s the shim +%d over the empty library in the same environment (nettrap'"'"'s variables: +%d)\n", "", u-ee, ee-e }'
  p=$(instr "$OUT/connect_loop" 2000 0); v=$(instr naive "$OUT/connect_loop" 2000 0); u=$(instr nettrap "$OUT/connect_loop" 2000 0)
  awk -v p="$p" -v v="$v" -v u="$u" 'BEGIN { printf "%-34s naive shim +%d   nettrap +%d   per connect\n", "2000 loopback connects", (v-p)/2000, (u-p)/2000 }'
fi
