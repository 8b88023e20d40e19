#!/usr/bin/env bash
# Peak RSS of `cairn serve` while it streams a directory archive (GET
# /api/v1/snapshots/latest/archive), per cairn binary: the whole snapshot as tar, the same as
# zip (refused: more than 65,535 entries), and one subdirectory as zip. See README.md next to
# this file.
#
#   docs/benchmarks/archive.sh BIN [BIN...]
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench]  FILES [300000]  PORT [9199]  SEED [20240601]
# The dataset is `make-dataset.sh many-small` with FILES files (made once, kept in
# BENCH_DIR/data/many-small-FILES). The first binary makes the repository (weak key
# derivation); every binary serves it in turn. Archives are written to BENCH_DIR/archive and
# compared across binaries (cmp): the bytes must not depend on the binary.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
FILES=${FILES:-300000} PORT=${PORT:-9199}
export FILES SEED=${SEED:-20240601}
[[ $# -ge 1 ]] || { sed -n '2,14p' "$0"; exit 2; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

SRC=$BENCH_DIR/data/many-small-$FILES
[[ -d $SRC ]] || "$HERE/make-dataset.sh" many-small "$SRC" >&2
SRC=$(cd "$SRC" && pwd -P)
WORK=$BENCH_DIR/archive
rm -rf "$WORK"
mkdir -p "$WORK"
export CAIRN_PASSWORD=bench XDG_CACHE_HOME=$WORK/cache XDG_CONFIG_HOME=$WORK/cfg
"$1" -r "$WORK/repo" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
"$1" -r "$WORK/repo" --quiet backup "$SRC" >/dev/null
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
chmod 600 "$WORK/token"
cat >"$WORK/cairn.toml" <<EOF
[backends.local]
url = "$WORK/repo"

[api]
[[api.tokens]]
label = "bench"
role = "viewer"
token = { file = "$WORK/token" }
EOF
sub=$(find "$SRC" -mindepth 1 -maxdepth 1 -type d | sort | head -1)

# one BIN FORMAT PATH NAME: serve, download once, print a table row
one() {
	local b=$1 format=$2 path=$3 name=$4 pid base start end code hwm
	"$b" --config "$WORK/cairn.toml" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/v1/openapi.json" && break
		sleep 0.1
	done
	base=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	start=$(date +%s.%N)
	code=$(curl -s -o "$WORK/$(basename "$b").$name" -w '%{http_code}' \
		-H "Authorization: Bearer $(cat "$WORK/token")" \
		"http://127.0.0.1:$PORT/api/v1/snapshots/latest/archive?path=$path&format=$format")
	end=$(date +%s.%N)
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	printf '| %s | %s | %s | %d | %.1f | %d | %d |\n' "$(basename "$b")" "$name" "$code" \
		$(($(stat -c %s "$WORK/$(basename "$b").$name") / 1000000)) "$(echo "$end - $start" | bc)" \
		$((base / 1024)) $((hwm / 1024))
}

echo "| binary | archive | HTTP | MB | s | RSS before MiB | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for b in "$@"; do
	one "$b" tar "$SRC" all.tar
	one "$b" zip "$SRC" all.zip
	one "$b" zip "$sub" sub.zip
done
for name in all.tar sub.zip; do
	for b in "${@:2}"; do
		cmp -s "$WORK/$(basename "$1").$name" "$WORK/$(basename "$b").$name" ||
			echo "$name: $(basename "$b") differs from $(basename "$1")"
	done
done
