#!/usr/bin/env bash
# `cairn copy` against `backup` and `restore` of the same data on the same
# machine (docs/copy.md). One run: backup, copy into a second repository,
# restore, and `key rotate --reencrypt` of the first for comparison; then the incremental case: mutate, backup, copy.
#
#   BENCH_DIR=/var/tmp/copybench SIZE_MB=500 CAIRN_BIN=target/release/cairn docs/benchmarks/copy.sh
#
# Prints one line per step: wall time, peak RSS (from /usr/bin/time), user
# and system CPU, and the load average when the step ended.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/copybench}
CAIRN_BIN=$(realpath "${CAIRN_BIN:-target/release/cairn}")
export SIZE_MB=${SIZE_MB:-500}
export HOME=$BENCH_DIR/home
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
if [[ ! -f data.manifest ]]; then
	bash "$HERE/make-dataset.sh" mixed "$BENCH_DIR/data"
fi
bash "$HERE/make-dataset.sh" unmutate data >/dev/null 2>&1 || true
rm -rf A Bt R home
CAIRN_PASSWORD=pa "$CAIRN_BIN" -r A init -q --kdf-memory-kib 8192 --kdf-iterations 1
CAIRN_PASSWORD=pb "$CAIRN_BIN" -r Bt init -q --kdf-memory-kib 8192 --kdf-iterations 1
step() {
	local name=$1
	shift
	/usr/bin/time -f "%e %M %U %S" -o "$name.time" "$@" >"$name.out" 2>&1
	read -r e m u s <"$name.time"
	echo "$name wall=${e}s rss=${m}KB user=${u}s sys=${s}s load=$(cut -d' ' -f1 /proc/loadavg)"
}
step backup env CAIRN_PASSWORD=pa "$CAIRN_BIN" -r A backup -q data
step copy env CAIRN_PASSWORD=pa CAIRN_TO_PASSWORD=pb "$CAIRN_BIN" -r A copy --to Bt
step restore env CAIRN_PASSWORD=pa "$CAIRN_BIN" -r A restore latest -q --target R
step reencrypt env CAIRN_PASSWORD=pa "$CAIRN_BIN" -r A key rotate --reencrypt
bash "$HERE/make-dataset.sh" mutate data >/dev/null 2>&1
step backup2 env CAIRN_PASSWORD=pa "$CAIRN_BIN" -r A backup -q data
step copy2 env CAIRN_PASSWORD=pa CAIRN_TO_PASSWORD=pb "$CAIRN_BIN" -r A copy --to Bt
bash "$HERE/make-dataset.sh" unmutate data >/dev/null 2>&1
cat copy.out copy2.out
