#!/usr/bin/env bash
# A kernel git working tree as a nightly's kernel: commit, sweep (cold, no
# ccache), change one file and commit, sweep again. Prints both nights'
# build times and their ratio (the second build is make's incremental one in
# the same build directory), and the history kmatrix kept.
#   bench/git-incremental.sh [board]     (default qemu-arm-versatilepb)
# Needs an unpacked 6.1 tree: it unpacks Debian's linux-source-6.1 into a
# fresh cache first. Everything lives under /var/tmp/kmatrix-bench.*.
set -euo pipefail
cd "$(dirname "$0")/.."
KM=${KM:-$PWD/target/release/kmatrix}
BOARD=${1:-qemu-arm-versatilepb}
work=$(mktemp -d /var/tmp/kmatrix-bench.XXXXXX)
export KMATRIX_CACHE_DIR=$work/cache CCACHE_DISABLE=1
cd "$work"
tar -xf /usr/src/linux-source-6.1.tar.xz
tree=$work/linux-source-6.1
git -C "$tree" init -q
# -f: Debian's linux-source .gitignore ignores everything at the top level
# ("/*", for its packaging repository).
git -C "$tree" add -A -f
git -C "$tree" -c user.name=bench -c user.email=bench@example.org commit -qm "linux-source-6.1 as shipped"
cat > matrix.toml <<TOML
boards = ["$BOARD"]
toolchains = ["gcc"]
kernels = ["tree"]
configs = ["tiny"]
[kernel.tree]
path = "$tree"
[config.tiny]
TOML
night() { "$KM" sweep -j"$(nproc)" --history "$work/nightly" > "night$1.txt" 2>&1 || true; tail -4 "night$1.txt"; }
night 1
# One file changes, as in a night with a small diff.
sed -i 's|pr_notice("%s", linux_banner);|pr_notice("%s", linux_banner); pr_notice("kmatrix bench: patched\\n");|' "$tree/init/main.c"
git -C "$tree" -c user.name=bench -c user.email=bench@example.org commit -qam "init: one more line"
sleep 1
night 2
"$KM" history --history "$work/nightly"
field() { python3 -c "import json,sys,glob; r=json.load(open(sorted(glob.glob('$work/nightly/*/results.json'))[$1])); print(r['cells'][0]['$2'])"; }
cold=$(field 0 build_seconds); warm=$(field 1 build_seconds)
cold_cpu=$(field 0 build_cpu_seconds); warm_cpu=$(field 1 build_cpu_seconds)
echo "build seconds: cold $cold, after a one-file commit $warm; ratio $(python3 -c "print(round($warm/$cold, 3))")"
# CPU seconds hardly depend on what else the machine runs; wall seconds do.
echo "build CPU seconds: cold $cold_cpu, after a one-file commit $warm_cpu; ratio $(python3 -c "print(round($warm_cpu/$cold_cpu, 3))")"
grep -h "kmatrix bench: patched" "$work"/nightly/*/logs/*.console.log | head -1 || echo "the patched line is not in the second console log"
echo "work dir: $work (remove it when done)"
