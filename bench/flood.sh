#!/usr/bin/env bash
# Console flood: kmatrix's peak RSS and console throughput while a guest
# prints BYTES (default 1 GiB) without ever finishing; the goal is a peak
# RSS <= 64 MiB and a TIMEOUT verdict. Uses the fast tier's fake kernel tree
# and fake emulator (tests/fixtures), so it needs only make and the host gcc.
#   BYTES=1073741824 bench/flood.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KM=${KM:-$PWD/target/release/kmatrix}
BYTES=${BYTES:-1073741824}
. bench/lib.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -czf "$work/fake-linux.tar.gz" -C tests/fixtures fake-linux
mkdir -p "$work/boards"
sed -e "s|^binary = .*|binary = \"$PWD/tests/fixtures/fake-qemu\"|" \
    -e "s|^cmdline = \"\(.*\)\"|cmdline = \"\1 fake.boot=flood fake.flood_bytes=$BYTES\"|" \
    boards/qemu-x86_64-pc.toml > "$work/boards/fake-flood.toml"
export KMATRIX_CACHE_DIR="$work/cache"
cd "$work"
"$KM" build --board fake-flood --source fake-linux.tar.gz >/dev/null
t0=$(now)
"$KM" boot --board fake-flood --source fake-linux.tar.gz --check --no-output-timeout 3 > out.txt 2>&1 &
pid=$!
peak=0
while [ -r /proc/$pid/status ]; do
  v=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
  [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
  sleep 0.05
done
wait $pid || true
t1=$(now)
verdict=$(awk 'NR==1 {print $1}' out.txt)
secs=$(echo "$t1 - $t0 - 3" | bc)   # minus the 3 s of silence that ends it
printf '%-12s %10s %10s %12s %12s %10s\n' verdict bytes seconds MiB/s peak_RSS_KiB rss/64MiB
printf '%-12s %10d %10.2f %12.0f %12d %10.3f\n' "$verdict" "$BYTES" "$secs" "$(echo "$BYTES / 1048576 / $secs" | bc -l)" "$peak" "$(echo "$peak / 65536" | bc -l)"
