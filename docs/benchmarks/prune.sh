#!/usr/bin/env bash
# forget + prune of a long history: cairn vs restic on the same data, in one run.
#
#   docs/benchmarks/prune.sh            # 1000 daily snapshots, 3 reps
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench-prune]  SNAPSHOTS [1000]  REPS [3]
#   CAIRN_BIN [target/release/cairn]  BUILD [1] (0: do not cargo build --release)
#   OUT [docs/benchmarks/results-prune-DATE.md]
#   REUSE [0] 1: keep the history of an earlier run in BENCH_DIR (same SNAPSHOTS)
#
# The history: a source of 100 files of 8 KiB that never change and 20
# files of 32 KiB, one of which is rewritten before each backup; snapshot i
# is dated i days before the last, so the policy below (keep 7 daily, 4
# weekly, 12 monthly, 2 yearly) forgets about 975 of 1000. Both tools then
# run forget and prune in one command (restic: `forget --prune`, cairn:
# `forget --prune --grace 0`), repacking packs more than 10% unused. Each
# rep starts from a copy of the same repository (the copy is not timed).
# Time and peak RSS come from GNU time; RSS per snapshot and per pack is
# cairn's peak RSS divided by the snapshots and packs before the prune.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench-prune}
SNAPSHOTS=${SNAPSHOTS:-1000}
REPS=${REPS:-3}
CAIRN=${CAIRN_BIN:-$ROOT/target/release/cairn}
OUT=${OUT:-$HERE/results-prune-$(date -u +%Y-%m-%d).md}
export CAIRN_PASSWORD=bench-pass RESTIC_PASSWORD=bench-pass
POLICY=(--keep-daily 7 --keep-weekly 4 --keep-monthly 12 --keep-yearly 2)

command -v restic >/dev/null || { echo "restic missing (apt-get install restic)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "GNU time missing (apt-get install time)" >&2; exit 2; }
if [[ ${BUILD:-1} == 1 ]]; then (cd "$ROOT" && cargo build --release --quiet); fi

if [[ ${REUSE:-0} == 1 && -d $BENCH_DIR/cairn-repo && -d $BENCH_DIR/restic-repo ]]; then
	cd "$BENCH_DIR"
else
	rm -rf "$BENCH_DIR"
	mkdir -p "$BENCH_DIR/src/same" "$BENCH_DIR/src/changing"
	cd "$BENCH_DIR"
	for i in $(seq 0 99); do head -c 8192 /dev/urandom >"src/same/s$i"; done
	for i in $(seq 0 19); do head -c 32768 /dev/urandom >"src/changing/c$i"; done

	"$CAIRN" --repo cairn-repo init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
	restic -r restic-repo init >/dev/null
	last=$(date -u +%s)
	echo "building $SNAPSHOTS snapshots per tool..."
	for i in $(seq 1 "$SNAPSHOTS"); do
		head -c 32768 /dev/urandom >"src/changing/c$((i % 20))"
		t=$(date -u -d "@$((last - (SNAPSHOTS - i) * 86400))" '+%Y-%m-%d %H:%M:%S')
		"$CAIRN" --repo cairn-repo --quiet backup --time "$t" src >/dev/null
		restic -r restic-repo --quiet backup --time "$t" src >/dev/null
	done
fi
cairn_packs=$(find cairn-repo/data -type f | wc -l)
restic_packs=$(find restic-repo/data -type f | wc -l)

measure() { # name -> "seconds rss_kib" of the command after it
	local log=$BENCH_DIR/time.log
	/usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$BENCH_DIR/err.log" || { cat "$BENCH_DIR/err.log" >&2; return 1; }
	awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,t,":"); s=(n==3)?t[1]*3600+t[2]*60+t[3]:t[1]*60+t[2]} /Maximum resident/{r=$2} END{printf "%.2f %d\n", s, r}' "$log"
}

rows=()
for rep in $(seq 1 "$REPS"); do
	rm -rf c r && cp -a cairn-repo c && cp -a restic-repo r
	read -r ct cr < <(measure "$CAIRN" --repo c forget "${POLICY[@]}" --prune --grace 0 --max-unused 10%)
	read -r rt rr < <(measure restic -r r forget "${POLICY[@]}" --prune --max-unused 10%)
	csize=$(du -sk c | cut -f1)
	rsize=$(du -sk r | cut -f1)
	left=$("$CAIRN" --repo c snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
	"$CAIRN" --repo c check --read-data >/dev/null
	rows+=("$rep $ct $cr $rt $rr $csize $rsize $left")
	echo "rep $rep: cairn ${ct}s ${cr} KiB, restic ${rt}s ${rr} KiB"
done

{
	echo "# forget + prune of $SNAPSHOTS snapshots: cairn vs restic ($(date -u +%Y-%m-%d))"
	echo
	echo "\`docs/benchmarks/prune.sh\` on this machine ($(nproc) cores), cairn $(git -C "$ROOT" rev-parse --short HEAD), $(restic version | cut -d' ' -f1-2)."
	echo "Before: cairn $cairn_packs packs ($(du -sh cairn-repo | cut -f1)), restic $restic_packs packs ($(du -sh restic-repo | cut -f1))."
	echo "Policy: ${POLICY[*]}; cairn \`forget --prune --grace 0 --max-unused 10%\`, restic \`forget --prune --max-unused 10%\`."
	echo
	echo "| rep | cairn s | cairn peak RSS MiB | restic s | restic peak RSS MiB | time ratio cairn/restic | RSS ratio | repo after KiB (cairn / restic) | snapshots left |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for row in "${rows[@]}"; do
		read -r rep ct cr rt rr cs rs left <<<"$row"
		awk -v rep="$rep" -v ct="$ct" -v cr="$cr" -v rt="$rt" -v rr="$rr" -v cs="$cs" -v rs="$rs" -v left="$left" \
			'BEGIN{printf "| %s | %.2f | %.1f | %.2f | %.1f | %.2f | %.2f | %d / %d | %d |\n", rep, ct, cr/1024, rt, rr/1024, ct/rt, cr/rr, cs, rs, left}'
	done
	read -r _ _ cr _ <<<"${rows[0]}"
	awk -v cr="$cr" -v s="$SNAPSHOTS" -v p="$cairn_packs" \
		'BEGIN{printf "\ncairn peak RSS per snapshot: %.1f KiB; per pack: %.1f KiB (first rep; includes the process baseline).\n", cr/s, cr/p}'
} >"$OUT"
cat "$OUT"
