#!/usr/bin/env bash
# `restore --in-place` onto an empty directory against a plain restore of the same snapshot,
# per cairn binary, interleaved: wall, CPU and peak RSS. See README.md next to this file.
#
#   sudo docs/benchmarks/inplace.sh BIN [BIN...]     # as root: a loop-mounted ext4
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench]  FILES [30000]  REPS [2]  LOOP_DIO [on]  SEED [20240601]
# The dataset is `make-dataset.sh many-small` with FILES files (made once, kept in
# BENCH_DIR/data/many-small-FILES). The first binary makes the repository (weak key
# derivation: the open is not what is measured); every binary restores the same snapshot.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
FILES=${FILES:-30000} REPS=${REPS:-2} LOOP_DIO=${LOOP_DIO:-on}
export FILES SEED=${SEED:-20240601}
[[ $# -ge 1 ]] || { sed -n '2,11p' "$0"; exit 2; }
[[ $EUID == 0 ]] || { echo "run as root (loop mount)" >&2; exit 1; }

SRC=$BENCH_DIR/data/many-small-$FILES
[[ -d $SRC ]] || "$HERE/make-dataset.sh" many-small "$SRC" >&2
SRC=$(cd "$SRC" && pwd -P)
WORK=$BENCH_DIR/inplace MNT=$BENCH_DIR/inplace/mnt IMG=$BENCH_DIR/inplace/fs.ext4
export CAIRN_PASSWORD=bench XDG_CACHE_HOME=$WORK/cache XDG_CONFIG_HOME=$WORK/cfg
mkdir -p "$MNT"
cleanup() { umount "$MNT" 2>/dev/null || true; rm -f "$IMG"; }
trap cleanup EXIT
cleanup
need=$(du -sb "$SRC" | cut -f1)
truncate -s $(((need * 4 + (1 << 30)) >> 20 << 20)) "$IMG"
# Small files: an inode per 4 KiB (the default, one per 16 KiB, runs out
# with two restores of 300,000 files side by side).
mkfs.ext4 -q -F -O has_journal -i 4096 "$IMG"
dev=$(losetup --find --show --direct-io="$LOOP_DIO" "$IMG")
mount "$dev" "$MNT"
losetup -d "$dev"

"$1" -r "$MNT/r" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
"$1" -r "$MNT/r" --quiet backup "$SRC" >/dev/null
id=$("$1" -r "$MNT/r" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
echo "| binary | step | wall s | user s | sys s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for _ in $(seq "$REPS"); do
	for b in "$@"; do
		mkdir -p "$MNT/t"
		sync
		/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$b" -r "$MNT/r" --quiet restore "$id" --in-place "$MNT/t" >/dev/null
		read -r e u s m <"$WORK/time"
		echo "| $(basename "$b") | in-place onto empty | $e | $u | $s | $((m / 1024)) |"
		/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$b" -r "$MNT/r" --quiet restore "$id" --target "$MNT/p" >/dev/null
		read -r e u s m <"$WORK/time"
		echo "| $(basename "$b") | plain restore | $e | $u | $s | $((m / 1024)) |"
		rm -rf "$MNT/t" "$MNT/p"
		sync
		fstrim "$MNT" 2>/dev/null || true
	done
done
