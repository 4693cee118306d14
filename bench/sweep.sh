#!/usr/bin/env bash
# Sweep benchmark, printing ratios (not a pass/fail test):
#  - cold makespan / (sum of build CPU-seconds / cores + longest boot), goal <= 1.10
#  - share of time all cores are busy while kernel builds are running, goal >= 90 %
#    (user+system time; niced background work such as a gem5 build is excluded)
#  - warm no-op re-run time (every build reused, no make)
#  - kmatrix's own peak RSS
# Uses a fresh cache and CCACHE_DISABLE=1 so the cold run really compiles.
#   bench/sweep.sh            (the five QEMU machines, gcc)
set -euo pipefail
cd "$(dirname "$0")/.."
KM=${KM:-$PWD/target/release/kmatrix}
CORES=$(nproc)
work=$(mktemp -d /var/tmp/kmatrix-bench.XXXXXX)
export KMATRIX_CACHE_DIR=$work/cache CCACHE_DISABLE=1
cd "$work"
sampler() {  # time, non-idle jiffies (user+system+irq+softirq), total jiffies, running makes
  while :; do
    read -r _ u n s i w q sq _ < /proc/stat
    echo "$(date +%s.%N) $((u + s + q + sq)) $((u + n + s + i + w + q + sq)) $(pgrep -c -x make || true)"
    sleep 0.5
  done
}
# Unpack the source first (it is not part of the sweep's CPU budget): a
# config that cannot land stops right after unpacking and configuring.
echo CONFIG_VIRTIO_BLK=y > unpack.config
"$KM" build --arch x86_64 --fragment unpack.config >/dev/null 2>&1 || true
sampler > samples.txt & spid=$!
t0=$(date +%s.%N)
"$KM" sweep --filter toolchain=gcc --filter kernel=debian-6.1 --filter 'board=qemu-*' --results-dir cold > cold.txt 2>&1 || true
t1=$(date +%s.%N)
kill $spid
t2=$(date +%s.%N)
"$KM" sweep --filter toolchain=gcc --filter kernel=debian-6.1 --filter 'board=qemu-*' --results-dir warm > warm.txt 2>&1 || true
t3=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$t3" "$CORES" <<'PY'
import json, sys
t0, t1, t2, t3, cores = map(float, sys.argv[1:])
r = json.load(open("cold/results.json"))
builds = {}
for c in r["cells"]:
    if c["build_cpu_seconds"] is not None and not c["build_reused"]:
        builds[c["build"]] = c["build_cpu_seconds"]
boots = [c["boot_seconds"] or 0 for c in r["cells"]]
ideal = sum(builds.values()) / cores + max(boots)
makespan = t1 - t0
rows = [list(map(float, l.split())) for l in open("samples.txt") if len(l.split()) == 4]
busy = total = 0.0
for a, b in zip(rows, rows[1:]):
    if b[3] > 0 and b[2] > a[2]:          # a kernel build is running
        busy += b[1] - a[1]; total += b[2] - a[2]
w = json.load(open("warm/results.json"))
verdicts = [c["verdict"] for c in r["cells"]]
print(f"cells: {len(verdicts)} ({verdicts.count('pass')} pass), builds: {len(builds)}, cores: {int(cores)}")
print(f"sum of build CPU-seconds: {sum(builds.values()):.0f}, longest boot: {max(boots):.2f}s")
print(f"cold makespan: {makespan:.0f}s, ideal: {ideal:.0f}s, ratio: {makespan/ideal:.3f} (goal <= 1.10)")
print(f"cores busy while builds run: {100*busy/total:.1f}% (goal >= 90%)" if total else "no build samples")
print(f"warm no-op sweep: {t3-t2:.2f}s wall, all builds reused: {all(c['build_reused'] for c in w['cells'] if c['verdict']=='pass')}")
print(f"kmatrix peak RSS: cold {r['peak_rss_kib']/1024:.1f} MiB, warm {w['peak_rss_kib']/1024:.1f} MiB")
PY
echo "work dir: $work"
