#!/usr/bin/env bash
# Re-encryption throughput: `cairn key reencrypt` with 1 and 3 replicas vs
# `restic copy` into a new repository (new keys) of the same data, and the
# machine's read+write limit, in one run.
#
#   docs/benchmarks/reencrypt.sh
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench-reencrypt]  SIZE_MB [1000]  REPS [1]
#   CAIRN_BIN [target/release/cairn]  BUILD [1] (0: do not cargo build --release)
#   OUT [docs/benchmarks/results-reencrypt-DATE.md]
#
# The data is the "mixed" dataset of make-dataset.sh. Each measurement
# starts from a fresh backup (not timed) and, where the kernel lets us,
# with the page cache dropped. cairn: `key rotate` (not timed), then `key
# reencrypt` (timed: every pack, index file and snapshot read once and
# written under the new epoch to every replica holding it; the replicas
# are local directories on the same disk). restic: `init` of a new
# repository (new keys, not timed), then `copy --from-repo` (timed; it
# decrypts, re-chunks nothing, and re-encrypts every blob; one replica). The read+write limit is `cp -r`
# of the cairn repository's data directory plus `sync`. MB/s are 10^6
# bytes of stored pack data per second of wall time.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench-reencrypt}
REPS=${REPS:-1}
CAIRN=${CAIRN_BIN:-$ROOT/target/release/cairn}
OUT=${OUT:-$HERE/results-reencrypt-$(date -u +%Y-%m-%d).md}
export CAIRN_PASSWORD=bench-pass RESTIC_PASSWORD=bench-pass
export SIZE_MB=${SIZE_MB:-1000}

command -v restic >/dev/null || { echo "restic missing (apt-get install restic)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "GNU time missing (apt-get install time)" >&2; exit 2; }
if [[ ${BUILD:-1} == 1 ]]; then (cd "$ROOT" && cargo build --release --quiet); fi

mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
[[ -d mixed ]] || "$HERE/make-dataset.sh" mixed mixed >/dev/null

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

measure() { # command... -> "seconds rss_kib"
	local log=$BENCH_DIR/time.log
	drop_caches
	/usr/bin/time -v -o "$log" "$@" >"$BENCH_DIR/out.json" 2>"$BENCH_DIR/err.log" || { cat "$BENCH_DIR/err.log" >&2; return 1; }
	awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,t,":"); s=(n==3)?t[1]*3600+t[2]*60+t[3]:t[1]*60+t[2]} /Maximum resident/{r=$2} END{printf "%.2f %d\n", s, r}' "$log"
}

pack_mb() { du -sb --apparent-size "$1" | awk '{printf "%.1f", $1/1e6}'; }

rows=()
for rep in $(seq 1 "$REPS"); do
	for n in 1 3; do
		rm -rf c1 c2 c3
		repos=()
		for i in $(seq 1 "$n"); do repos+=(--repo "c$i"); done
		"$CAIRN" "${repos[@]}" --quiet init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
		"$CAIRN" "${repos[@]}" --quiet backup mixed >/dev/null
		"$CAIRN" "${repos[@]}" --quiet key rotate >/dev/null
		mb=$(pack_mb c1/data)
		read -r t rss < <(measure "$CAIRN" "${repos[@]}" --json key reencrypt)
		python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["reencrypt"]; assert r["complete"], r' "$BENCH_DIR/out.json"
		rows+=("cairn key reencrypt, $n replica(s)|$rep|$mb|$t|$rss")
		echo "rep $rep: cairn reencrypt x$n: ${t}s, ${rss} KiB, $mb MB per replica"
	done
	rm -rf r r2
	restic -r r init >/dev/null
	restic -r r --quiet backup mixed >/dev/null
	# A new repository: new keys and new chunker parameters (restic 0.14
	# takes --from-repo at init only to copy the chunker parameters).
	restic -r r2 init >/dev/null
	mb=$(pack_mb r/data)
	read -r t rss < <(measure restic -r r2 copy --from-repo r --from-password-command "echo bench-pass")
	rows+=("restic copy to a new repository|$rep|$mb|$t|$rss")
	echo "rep $rep: restic copy: ${t}s, ${rss} KiB, $mb MB"
	rm -rf cpy
	mb=$(pack_mb c1/data)
	read -r t rss < <(measure bash -c "cp -r c1/data cpy && sync")
	rows+=("read+write limit (cp -r + sync)|$rep|$mb|$t|$rss")
	echo "rep $rep: cp: ${t}s"
done

{
	echo "# Re-encryption throughput ($(date -u +%Y-%m-%d))"
	echo
	echo "Data: make-dataset.sh mixed, SIZE_MB=$SIZE_MB; $(nproc) cores; $(uname -r)."
	echo "cairn $("$CAIRN" --version | awk '{print $2}'), $(restic version | awk '{print $1, $2}')."
	echo "Every replica is a local directory on the same disk; page cache dropped before each timed step."
	echo
	echo "| step | rep | MB of packs (per replica) | seconds | MB/s (per replica) | MB/s written (all replicas) | peak RSS MiB |"
	echo "|---|---|---|---|---|---|---|"
	for row in "${rows[@]}"; do
		IFS='|' read -r name rep mb t rss <<<"$row"
		n=1
		[[ $name == *"3 replica"* ]] && n=3
		awk -v name="$name" -v rep="$rep" -v mb="$mb" -v t="$t" -v rss="$rss" -v n="$n" \
			'BEGIN{printf "| %s | %s | %.0f | %.1f | %.1f | %.1f | %.0f |\n", name, rep, mb, t, mb/t, n*mb/t, rss/1024}'
	done
} >"$OUT"
echo "wrote $OUT"
cat "$OUT"
