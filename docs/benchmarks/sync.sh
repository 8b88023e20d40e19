#!/usr/bin/env bash
# Replicating a repository: `cairn sync` next to `restic copy` and a plain
# `cp -a` of the same repository, on the same data, local disk to local disk,
# in one run. (borg 1.2, the Debian version here, has no copy command;
# `borg transfer` arrives with borg 2.)
#
#   docs/benchmarks/sync.sh            # uses $BENCH_DIR/data/mixed (made if missing)
#
# Each tool first backs the dataset up into repository A (not timed), then
# copies everything to a new repository B (timed, /usr/bin/time -v; REPS runs,
# median wall time). cairn: `sync --to B` seeds the empty B and copies packs,
# index and snapshot as stored bytes. restic: `copy --from-repo A` into a B
# made with `init --copy-chunker-params` (decrypts and re-encrypts every blob).
# cp: `cp -a` of cairn's repository A followed by `sync -f` of B (the floor:
# moving the bytes without verifying them).
# Prints one Markdown table with ratios tool/cairn (above 1: cairn is faster).
#
# Environment: BENCH_DIR [/var/tmp/cairn-bench], REPS [3], CAIRN [target/release/cairn].
# Needs: restic (skipped if absent), GNU time, bc.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
REPS=${REPS:-3}
CAIRN=${CAIRN:-$root/target/release/cairn}
DATA=$BENCH_DIR/data/mixed
WORK=$BENCH_DIR/sync
export RESTIC_PASSWORD=bench RESTIC_FROM_PASSWORD=bench CAIRN_PASSWORD=bench
export RESTIC_CACHE_DIR=$WORK/cache/restic

[[ -x $CAIRN ]] || (cd "$root" && cargo build --release --quiet)
if [[ ! -d $DATA ]]; then
	mkdir -p "$BENCH_DIR/data"
	"$here/make-dataset.sh" mixed "$DATA"
fi
have() { command -v "$1" >/dev/null; }

rm -rf "$WORK" && mkdir -p "$WORK"
echo "# preparing source repositories (not timed)" >&2
"$CAIRN" init -q -r "$WORK/cairn-a" >/dev/null
"$CAIRN" backup -q -r "$WORK/cairn-a" "$DATA"
if have restic; then
	restic -q -r "$WORK/restic-a" init --repository-version 2 >/dev/null
	restic -q -r "$WORK/restic-a" backup --compression auto "$DATA" >/dev/null
fi

# time_run NAME SETUP COMMAND...: SETUP (a shell snippet) runs untimed
# before each repetition; prints "wall_s cpu_s maxrss_kib" of the median run.
time_run() {
	local name=$1 setup=$2
	shift 2
	local runs=()
	for ((i = 0; i < REPS; i++)); do
		bash -c "$setup"
		sync
		/usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/$name.err" ||
			{ cat "$WORK/$name.err" >&2; exit 1; }
		read -r wall user sys rss <"$WORK/time.txt"
		runs+=("$wall $(echo "$user + $sys" | bc) $rss")
	done
	printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(((REPS + 1) / 2))p"
}

size() { du -sb "$1" | cut -f1; }
results=()
read -r cw cc cr < <(time_run cairn "rm -rf '$WORK/cairn-b'" \
	"$CAIRN" sync -q -r "$WORK/cairn-a" -r "$WORK/cairn-b" --to "$WORK/cairn-b")
"$CAIRN" check -q -r "$WORK/cairn-b" --read-data
results+=("cairn sync|$cw|$cc|$cr|$(size "$WORK/cairn-b")")
if have restic; then
	read -r rw rc rr < <(time_run restic \
		"rm -rf '$WORK/restic-b'; restic -q -r '$WORK/restic-b' init --repository-version 2 --from-repo '$WORK/restic-a' --copy-chunker-params >/dev/null" \
		restic -q -r "$WORK/restic-b" copy --from-repo "$WORK/restic-a")
	results+=("restic copy|$rw|$rc|$rr|$(size "$WORK/restic-b")")
fi
read -r pw pc pr < <(time_run cp "rm -rf '$WORK/cp-b'" \
	bash -c "cp -a '$WORK/cairn-a' '$WORK/cp-b' && sync -f '$WORK/cp-b'")
results+=("cp -a (no verification)|$pw|$pc|$pr|$(size "$WORK/cp-b")")

echo "dataset: $(du -sb "$DATA" | cut -f1) bytes in $(find "$DATA" -type f | wc -l) files; REPS=$REPS (median); $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| copy A → B | wall s | CPU s | max RSS MiB | B bytes | wall / cairn |"
echo "|---|---|---|---|---|---|"
for r in "${results[@]}"; do
	IFS='|' read -r n w c m b <<<"$r"
	printf '| %s | %.2f | %.2f | %d | %s | %.2f |\n' "$n" "$w" "$c" $((m / 1024)) "$b" "$(echo "$w / $cw" | bc -l)"
done
