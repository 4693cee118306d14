#!/usr/bin/env bash
# Boot overhead: `kmatrix boot --check` wall time against the bare emulator
# command on the same artefacts (kernel, initramfs), per arch. Medians of N
# runs; prints the ratio. Kernels must already be built (warm cache).
#   N=5 ARCHES="x86_64 aarch64" bench/boot-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KM=${KM:-target/release/kmatrix}
N=${N:-5}
. bench/lib.sh
printf '%-10s %10s %10s %10s %8s\n' arch marker_s kmatrix_s bare_s ratio
for arch in ${ARCHES:-x86_64 aarch64 arm mips64 mips64el}; do
  out=$($KM boot --arch "$arch" --check)          # warm-up; builds if needed
  log=$(awk '/^console log:/ {print $3}' <<<"$out")
  # The first console-log line is the exact argv kmatrix ran, shell-quoted.
  cmd=$(head -1 "$log" | sed 's/^# //')
  km=(); bare=(); marker=()
  for _ in $(seq "$N"); do
    t0=$(now); o=$($KM boot --arch "$arch" --check); t1=$(now)
    km+=("$(echo "$t1 - $t0" | bc)")
    marker+=("$(grep -o 'boot to marker [0-9.]*' <<<"$o" | awk '{print $4}')")
    t0=$(now); eval "$cmd" >/dev/null 2>&1 </dev/null || true; t1=$(now)
    bare+=("$(echo "$t1 - $t0" | bc)")
  done
  mk=$(printf '%s\n' "${km[@]}" | median); mb=$(printf '%s\n' "${bare[@]}" | median); mm=$(printf '%s\n' "${marker[@]}" | median)
  printf '%-10s %10.2f %10.2f %10.2f %8.3f\n' "$arch" "$mm" "$mk" "$mb" "$(echo "$mk / $mb" | bc -l)"
done
