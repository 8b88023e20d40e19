#!/usr/bin/env bash
# What a large index costs: a repository whose index describes BLOBS blobs
# (default 10 million, about 10 TB at 1 MiB chunks; the packs themselves
# are not written), then a no-change backup and `check` (without
# --read-data) with their peak RSS, against the same on a repository of
# 1000 blobs. The difference divided by the blob count is the index's cost
# per blob.
#
#   docs/benchmarks/index-scale.sh [BLOBS]
#
# SPARSE_PACKS (default 1) makes every indexed pack exist as a sparse file
# of its size, so `check` sees a whole repository; 0 leaves them out, and
# `check` then reports every pack missing (and holds those findings).
#
# restic cannot load this index: it is cairn's format. A restic repository
# of the same size would need 10 TB of data to be backed up first, or its
# own index files forged with its keys; neither is done here.
set -euo pipefail
cd "$(dirname "$0")/../.."
BLOBS=${1:-10000000}
W=${CAIRN_BENCH_DIR:-/var/tmp/cairn-index-scale}
rm -rf "$W"
mkdir -p "$W/src"
trap 'rm -rf "$W"' EXIT
echo "small file" > "$W/src/a"
cargo build --release --quiet
cargo build --release --quiet --bench index_scale
T=${CARGO_TARGET_DIR:-$PWD/target}
GEN=$(ls -t "$T"/release/deps/index_scale-* | grep -v '\.d$' | head -1)
BIN=$T/release/cairn
export CAIRN_PASSWORD=bench HOME=$W/home SPARSE_PACKS=${SPARSE_PACKS:-1}
peak() { # peak RSS in MiB of a command
    /usr/bin/time -f '%M' -o "$W/time" "$@" >/dev/null 2>"$W/err" || true
    tail -1 "$W/time" | awk '{printf "%.1f", $1/1024}'
}
echo "| blobs | index files on disk | backup (no change) peak RSS MiB | check peak RSS MiB | check s |"
echo "|---:|---:|---:|---:|---:|"
for n in 1000 "$BLOBS"; do
    repo=$W/repo-$n
    start=$(date +%s.%N)
    "$GEN" "$repo" "$n" >/dev/null
    gen=$(echo "$(date +%s.%N) - $start" | bc)
    "$BIN" -r "$repo" backup "$W/src" >/dev/null 2>&1
    b=$(peak "$BIN" -r "$repo" backup "$W/src")
    start=$(date +%s.%N)
    c=$(peak "$BIN" -r "$repo" check)
    t=$(printf "%.2f" "$(echo "$(date +%s.%N) - $start" | bc)")
    size=$(du -sh "$repo/index" | cut -f1)
    echo "| $n | $size | $b | $c | $t |"
    echo "generated in ${gen}s" >&2
    rm -rf "$repo"
done
