#!/usr/bin/env bash
# First backup at several zstd levels against restic, in one interleaved run: how far a
# change of cairn's default level would move the first-backup ratio, and what it costs in
# repository size. See README.md next to this file ("Compression level and the 3x target").
#
#   sudo docs/benchmarks/levels.sh          # as root: repositories on a loop-mounted ext4
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench]   datasets (made by make-dataset.sh if missing)
#   DATASET [mixed]  LEVELS [3 2 1 0]  REPS [3]  LOOP_DIO [on]
#   CAIRN_BIN [target/release/cairn]   (not built here: `cargo build --release` first)
# Every cairn repository is made by `cairn init --compression L` with the default key
# derivation; restic runs `backup --compression auto` on a v2 repository, as run.sh does.
# Prints one line per backup and a median table (wall, CPU, repository bytes, ratio of
# wall to restic's median) as markdown on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
DATASET=${DATASET:-mixed}
read -r -a LEVELS <<<"${LEVELS:-3 2 1 0}"
REPS=${REPS:-3}
LOOP_DIO=${LOOP_DIO:-on}
CAIRN_BIN=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn}
export SIZE_MB=${SIZE_MB:-1000} FILES=${FILES:-200000} SEED=${SEED:-20240601}

[[ $EUID == 0 ]] || { echo "run as root (loop mount)" >&2; exit 1; }
[[ -x $CAIRN_BIN ]] || { echo "no cairn binary at $CAIRN_BIN" >&2; exit 1; }
command -v restic >/dev/null || { echo "restic not installed (apt-get install restic)" >&2; exit 1; }

SRC=$BENCH_DIR/data/$DATASET
[[ -d $SRC ]] || "$HERE/make-dataset.sh" "$DATASET" "$SRC" >&2
WORK=$BENCH_DIR/levels
MNT=$WORK/mnt IMG=$WORK/repos.ext4 ROWS=$WORK/rows
mkdir -p "$MNT"
export RESTIC_PASSWORD=bench CAIRN_PASSWORD=bench
export RESTIC_CACHE_DIR=$WORK/cache/restic XDG_CACHE_HOME=$WORK/cache/xdg XDG_CONFIG_HOME=$WORK/cache/cfg

cleanup() { umount "$MNT" 2>/dev/null || true; rm -f "$IMG"; }
trap cleanup EXIT
cleanup
truncate -s 8G "$IMG"
mkfs.ext4 -q -F -O has_journal "$IMG"
dev=$(losetup --find --show --direct-io="$LOOP_DIO" "$IMG")
mount "$dev" "$MNT"
losetup -d "$dev"

: >"$ROWS"
tools=(restic)
for l in "${LEVELS[@]}"; do tools+=("cairn-z$l"); done
for rep in $(seq "$REPS"); do
	for t in "${tools[@]}"; do
		R=$MNT/$t
		rm -rf "$R" "$WORK/cache"
		case $t in
		restic)
			restic -r "$R" init --repository-version 2 >/dev/null
			cmd=(restic -r "$R" backup --compression auto --quiet "$SRC") ;;
		cairn-z*)
			"$CAIRN_BIN" -r "$R" init --compression "${t#cairn-z}" >/dev/null
			cmd=("$CAIRN_BIN" -r "$R" --quiet backup "$SRC") ;;
		esac
		sync
		sleep 1
		/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "${cmd[@]}" >/dev/null
		read -r e u s m <"$WORK/time"
		bytes=$(du -sb "$R" | cut -f1)
		echo "$rep $t $e $(echo "$u + $s" | bc) $((m / 1024)) $bytes" | tee -a "$ROWS" >&2
		rm -rf "$R"
		fstrim "$MNT" 2>/dev/null || true
	done
done

python3 - "$ROWS" "$DATASET" "$(du -sb "$SRC" | cut -f1)" <<'PYEOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    rep, tool, wall, cpu, rss, size = line.split()
    rows[tool].append((int(rep), float(wall), float(cpu), int(rss), int(size)))
src = int(sys.argv[3])
restic = {r[0]: r[1] for r in rows["restic"]}
print(f"First backup of `{sys.argv[2]}` ({src / 1e9:.2f} GB), medians of {len(restic)} reps:\n")
print("| tool | wall s (min-max) | MB/s | CPU s | RSS MiB | repo MB | repo vs restic | wall vs restic |")
print("|---|---|---|---|---|---|---|---|")
rsize = statistics.median(r[4] for r in rows["restic"])
for tool, rs in rows.items():
    wall = statistics.median(r[1] for r in rs)
    ratio = statistics.median(r[1] / restic[r[0]] for r in rs)
    size = statistics.median(r[4] for r in rs)
    print(f"| {tool} | {wall:.2f} ({min(r[1] for r in rs):.2f}-{max(r[1] for r in rs):.2f}) "
          f"| {src / 1e6 / wall:.0f} | {statistics.median(r[2] for r in rs):.2f} "
          f"| {statistics.median(r[3] for r in rs):.0f} | {size / 1e6:.1f} | {size / rsize:.3f} "
          f"| {ratio:.2f} ({1 / ratio:.2f}x) |")
PYEOF
