#!/usr/bin/env bash
# Where a first backup's CPU goes, stage by stage, next to what each stage
# can do on one thread of this machine.
#
#   docs/benchmarks/stages.sh DATASET_DIR [REPS]
#
# 1. `cargo bench --bench stages -- DATASET_DIR 256`: the single-thread
#    limit of each pure stage (FastCDC, keyed BLAKE3, zstd-3, AES-256-GCM,
#    pack sealing) on the first 256 MB of the dataset, in GB/s and s/GB.
# 2. REPS (default 2) first backups of DATASET_DIR into a fresh local
#    repository with `cairn backup --profile-stages`, under /usr/bin/time:
#    thread-seconds per stage, s/GB, GB/s per thread, the process's CPU.
#
# Environment: CAIRN_BIN [target/release/cairn, built if missing],
# WORK [/var/tmp/cairn-stages] (repositories; removed at the end).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=${1:?usage: stages.sh DATASET_DIR [REPS]}
REPS=${2:-2}
WORK=${WORK:-/var/tmp/cairn-stages}
CAIRN_BIN=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn}

if [[ ! -x $CAIRN_BIN ]]; then
	(cd "$ROOT" && cargo build --release --bin cairn)
fi
mkdir -p "$WORK/home"
trap 'rm -rf "$WORK"' EXIT
# cairn's key cache and config stay in WORK; cargo keeps the real HOME.
cairn() { CAIRN_PASSWORD=bench HOME=$WORK/home "$CAIRN_BIN" "$@"; }

echo "## Stage limits, one thread (cargo bench --bench stages -- $DIR 256)"
echo
(cd "$ROOT" && cargo bench -q --bench stages -- "$DIR" 256) | awk -F'\t' '
	NR == 1 { print "| " $1 " | " $2 " | " $3 " |"; print "|---|---:|---:|"; next }
	{ print "| " $1 " | " $2 " | " $3 " |" }'
echo
for ((rep = 1; rep <= REPS; rep++)); do
	rm -rf "$WORK/repo"
	cairn init --repo "$WORK/repo" >/dev/null
	echo "## First backup, rep $rep ($CAIRN_BIN backup --profile-stages)"
	echo
	echo '```'
	CAIRN_PASSWORD=bench HOME=$WORK/home /usr/bin/time -f 'wall %e s, user %U s, sys %S s, peak RSS %M KiB' \
		"$CAIRN_BIN" backup --repo "$WORK/repo" --profile-stages "$DIR" 2>&1 |
		sed -n '/^Read /p; /^Stage profile/,$p'
	echo '```'
	echo
done
