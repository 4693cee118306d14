#!/usr/bin/env bash
# QEMU and gem5 side by side: boot-to-marker and wall time of
# `kmatrix boot --check` per machine pair, and the gem5/QEMU ratio. aarch64
# is one kernel on both; on x86_64 the kernels differ (gem5-x86 links its
# initramfs in and needs 64BIT/ACPI/no-i8042 options), same source. Medians
# of N runs (gem5 boots take minutes: N defaults to 1). Needs gem5 recorded
# (`kmatrix emulator build gem5 ...`) or KMATRIX_GEM5 for each ISA.
#   N=3 PAIRS="qemu-aarch64-virt:gem5-arm" bench/gem5-vs-qemu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KM=${KM:-target/release/kmatrix}
N=${N:-1}
. bench/lib.sh
measure() { # board -> "marker wall"
  local marker=() wall=() o t0 t1
  $KM build --board "$1" >/dev/null   # builds if needed, outside the timing
  for _ in $(seq "$N"); do
    t0=$(now); o=$($KM boot --board "$1" --check); t1=$(now)
    grep -q '^PASS' <<<"$o" || { echo "$1 did not pass: $o" >&2; exit 1; }
    marker+=("$(grep -o 'boot to marker [0-9.]*' <<<"$o" | awk '{print $4}')")
    wall+=("$(echo "$t1 - $t0" | bc)")
  done
  echo "$(printf '%s\n' "${marker[@]}" | median) $(printf '%s\n' "${wall[@]}" | median)"
}
printf '%-22s %-10s %10s %10s %10s %10s %9s\n' qemu gem5 q_marker_s g_marker_s q_wall_s g_wall_s ratio
for pair in ${PAIRS:-qemu-aarch64-virt:gem5-arm qemu-x86_64-pc:gem5-x86}; do
  q=${pair%%:*}; g=${pair##*:}
  read -r qm qw < <(measure "$q")
  read -r gm gw < <(measure "$g")
  printf '%-22s %-10s %10.2f %10.2f %10.2f %10.2f %9.1f\n' "$q" "$g" "$qm" "$gm" "$qw" "$gw" "$(echo "$gm / $qm" | bc -l)"
done
