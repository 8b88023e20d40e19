#!/usr/bin/env bash
# cairn vs restic vs borg on the same data, in one interleaved run. See README.md next to this file.
#
#   docs/benchmarks/run.sh                 # full run (installs what is missing, builds cairn)
#   docs/benchmarks/run.sh report CSV      # print the markdown tables again from a raw CSV
#
# Environment (defaults in brackets):
#   BENCH_DIR [/var/tmp/cairn-bench]  datasets (reused if present), repos, restores, caches, logs
#   DATASETS  [mixed many-small]      any of: mixed many-small one-big
#   TOOLS     [restic borg rustic cairn cairn-x3]   cairn-x3 = cairn writing to 3 repos in one run;
#             cairn-base = CAIRN_BASE_BIN (cairn of another commit), to measure a change before/after;
#             rustic = RUSTIC_BIN, else `cargo install rustic-rs --locked` once into
#             BENCH_DIR/tools/rustic (reused by later runs; ~25 min on 2 cores)
#   CAIRN_BASE_BIN []  the binary cairn-base runs;  RUSTIC_BIN [BENCH_DIR/tools/rustic/bin/rustic]
#   RESTORE_FS [loop as root, else dir]  loop = restores go to a fresh journaled ext4 image, loop-mounted
#   REPO_FS [loop as root, else dir]  loop = repositories live on another fresh journaled ext4 image
#   LOOP_DIO [on]  the loop devices' direct I/O to their images (off: buffered, cached twice)
#   REPS [2]  SIZE_MB [1000]  FILES [200000]  SEED [20240601]
#   COLD [0]  1 = drop the page cache before each 1st backup, restore and check
#   BUILD [1] 0 = do not run `cargo build --release`; CAIRN_BIN [target/release/cairn]
#   INSTALL [1] 0 = never apt-get install missing tools
#   STEP_TIMEOUT [5400] seconds per step; OUT_DIR [docs/benchmarks]; CAIRN_REPO_PREFIX [] (e.g. local:)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MKDS=$HERE/make-dataset.sh

PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

# --------------------------------------------------------------------------- report (python)

report() { # report CSV -> markdown tables on stdout
	"$PY" - "$1" <<'PYEOF'
import csv
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
OK = ("ok", "warn")


def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=None):
    if x is None:
        return "–"
    if nd is None:
        nd = 0 if abs(x) >= 100 else (1 if abs(x) >= 1 else 2)
    return f"{x:.{nd}f}"


def ratio_fmt(x):
    return "–" if x is None else f"{x:.2f}"


# index: (dataset, tool, step) -> list of rows; (dataset, rep, tool, step) -> row
by = defaultdict(list)
one = {}
for r in rows:
    by[(r["dataset"], r["tool"], r["step"])].append(r)
    one[(r["dataset"], r["rep"], r["tool"], r["step"])] = r
datasets = list(dict.fromkeys(r["dataset"] for r in rows))
tools = list(dict.fromkeys(r["tool"] for r in rows))
reps = sorted({r["rep"] for r in rows}, key=int)


def ok_rows(ds, tool, step):
    return [r for r in by[(ds, tool, step)] if r["status"] in OK]


def cell(ds, tool, step, key="wall_s", show_min=False):
    all_ = by[(ds, tool, step)]
    if not all_:
        return "–"
    good = ok_rows(ds, tool, step)
    if not good:
        return "FAILED"
    vals = [f(r[key]) for r in good]
    s = fmt(med(vals))
    if show_min and len(vals) > 1:
        s += f" ({fmt(min(vals))})"
    if len(good) < len(all_):
        s += f" [{len(all_) - len(good)}/{len(all_)} FAILED]"
    return s


def med_of(ds, tool, step, fn):
    return med([fn(r) for r in ok_rows(ds, tool, step)])


def cpu(r):
    return f(r["cpu_s"])


def rss(r):
    v = f(r["maxrss_kib"])
    return v / 1024 if v is not None else None


def mbps(r):
    w, b = f(r["wall_s"]), f(r["src_bytes"])
    return b / w / 1e6 if w and b else None


def repo_mb(r):
    v = f(r["repo_bytes"])
    return v / 1e6 if v is not None else None


def growth(ds, tool):
    out = []
    for rep in reps:
        a, b = one.get((ds, rep, tool, "backup2")), one.get((ds, rep, tool, "incr"))
        if a and b and a["status"] in OK and b["status"] in OK and f(a["repo_bytes"]) is not None \
                and f(b["repo_bytes"]) is not None:
            out.append((f(b["repo_bytes"]) - f(a["repo_bytes"])) / 1e6)
    return med(out)


def ratio(ds, tool, base, step, key="wall_s", base_step=None):
    out = []
    for rep in reps:
        a, b = one.get((ds, rep, tool, step)), one.get((ds, rep, base, base_step or step))
        if a and b and a["status"] in OK and b["status"] in OK and f(a[key]) and f(b[key]):
            out.append(f(a[key]) / f(b[key]))
    return med(out)


def verify(ds, tool):
    vs = [r["status"] for r in by[(ds, tool, "verify")]]
    if not vs:
        return "–"
    if all(v == "SKIPPED" for v in vs):
        return "–"
    bad = [v for v in vs if v != "ok"]
    return f"ok {len(vs)}/{len(vs)}" if not bad else f"**{len(bad)}/{len(vs)} not ok**"


out = []
p = out.append
main_tools = [t for t in tools if t != "cairn-x3"]
for ds in datasets:
    any_r = next((r for r in rows if r["dataset"] == ds and f(r["src_bytes"])), None)
    src_b = f(any_r["src_bytes"]) if any_r else None
    src_n = any_r["src_files"] if any_r else "?"
    p(f"### `{ds}` ({fmt(src_b / 1e9, 2) if src_b else '?'} GB, {src_n} files)\n")
    p("Median over reps (min in brackets for wall times); MB/s = source bytes / median wall; "
      "CPU = user+sys s; RSS = peak resident MiB; repo = `du -sb` after the 1st backup; "
      "growth = repo bytes added by the incremental; restore is followed by a timed `sync`.\n")
    p("| tool | init s | 1st backup s | MB/s | CPU s | RSS MiB | repo MB (% src) | no-change s | CPU s "
      "| RSS MiB | incr s | growth MB | restore s (+sync) | MB/s | RSS MiB | check s | RSS MiB | restore verified | n |")
    p("|" + "---|" * 19)
    for t in main_tools:
        rmb = med_of(ds, t, "backup1", repo_mb)
        pct = f" ({100 * rmb * 1e6 / src_b:.0f}%)" if rmb is not None and src_b else ""
        sync = med([f(r["wall_s"]) for r in ok_rows(ds, t, "sync")])
        rs = cell(ds, t, "restore", show_min=True)
        if sync is not None and rs not in ("–", "FAILED"):
            rs += f" (+{fmt(sync, 1)})"
        n = len(by[(ds, t, "backup1")])
        p(f"| {t} | {cell(ds, t, 'init')} | {cell(ds, t, 'backup1', show_min=True)} "
          f"| {fmt(med_of(ds, t, 'backup1', mbps))} | {fmt(med_of(ds, t, 'backup1', cpu))} "
          f"| {fmt(med_of(ds, t, 'backup1', rss))} | {fmt(rmb)}{pct} "
          f"| {cell(ds, t, 'backup2', show_min=True)} | {fmt(med_of(ds, t, 'backup2', cpu))} "
          f"| {fmt(med_of(ds, t, 'backup2', rss))} | {cell(ds, t, 'incr', show_min=True)} "
          f"| {fmt(growth(ds, t))} | {rs} | {fmt(med_of(ds, t, 'restore', mbps))} "
          f"| {fmt(med_of(ds, t, 'restore', rss))} | {cell(ds, t, 'check', show_min=True)} "
          f"| {fmt(med_of(ds, t, 'check', rss))} | {verify(ds, t)} | {n} |")
    p("")
    if "restic" in main_tools and len(main_tools) > 1:
        p(f"Ratio vs restic on `{ds}` (median of per-rep ratios, same interleaved rep; <1 = faster / smaller):\n")
        p("| tool | 1st backup wall | 1st backup CPU | no-change | incremental | restore | check | repo size | backup RSS |")
        p("|---|---|---|---|---|---|---|---|---|")
        for t in main_tools:
            if t == "restic":
                continue
            p(f"| {t} | {ratio_fmt(ratio(ds, t, 'restic', 'backup1'))} "
              f"| {ratio_fmt(ratio(ds, t, 'restic', 'backup1', 'cpu_s'))} "
              f"| {ratio_fmt(ratio(ds, t, 'restic', 'backup2'))} | {ratio_fmt(ratio(ds, t, 'restic', 'incr'))} "
              f"| {ratio_fmt(ratio(ds, t, 'restic', 'restore'))} | {ratio_fmt(ratio(ds, t, 'restic', 'check'))} "
              f"| {ratio_fmt(ratio(ds, t, 'restic', 'backup1', 'repo_bytes'))} "
              f"| {ratio_fmt(ratio(ds, t, 'restic', 'backup1', 'maxrss_kib'))} |")
        p("")
    if "cairn" in main_tools and "rustic" in main_tools:
        p(f"cairn vs rustic on `{ds}` (median of per-rep ratios, same interleaved rep; <1 = cairn faster / smaller):\n")
        p("| 1st backup wall | 1st backup CPU | no-change | incremental | restore | restore sys CPU | check | backup RSS |")
        p("|---|---|---|---|---|---|---|---|")
        p(f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'backup1'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'backup1', 'cpu_s'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'backup2'))} | {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'incr'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'restore'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'restore', 'sys_s'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'check'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'rustic', 'backup1', 'maxrss_kib'))} |")
        p("")
    if "cairn" in main_tools and "cairn-base" in main_tools:
        p(f"cairn vs cairn-base on `{ds}` (median of per-rep ratios, same interleaved rep; >1 = this build is slower):\n")
        p("| 1st backup wall | 1st backup CPU | no-change | incremental | restore | check | repo size | backup RSS |")
        p("|---|---|---|---|---|---|---|---|")
        p(f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'backup1'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'backup1', 'cpu_s'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'backup2'))} | {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'incr'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'restore'))} | {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'check'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'backup1', 'repo_bytes'))} "
          f"| {ratio_fmt(ratio(ds, 'cairn', 'cairn-base', 'backup1', 'maxrss_kib'))} |")
        p("")
    p(f"1st-backup wall s per rep on `{ds}` (1-min load average just before the step in brackets; "
      f"position in that rep's tool order in braces):\n")
    p("| tool | " + " | ".join(f"rep {x}" for x in reps) + " |")
    p("|---|" + "---|" * len(reps))
    for t in tools:
        cells = []
        for rep in reps:
            r = one.get((ds, rep, t, "backup1"))
            if not r:
                cells.append("–")
            elif r["status"] not in OK:
                cells.append(f"{r['status']} [{r['load1']}]")
            else:
                cells.append(f"{fmt(f(r['wall_s']))} [{r['load1']}] {{{r['order']}}}")
        p(f"| {t} | " + " | ".join(cells) + " |")
    p("")

if "cairn" in tools and "cairn-x3" in tools:
    p("### cairn: 1 vs 3 repositories in one run\n")
    p("Same source, same rep, run back to back in the rotated order; ratio = 3 repos / 1 repo "
      "(median of per-rep ratios). Repo MB for 3 repos is the sum of the three.\n")
    p("| dataset | step | 1 repo s | 3 repos s | wall ratio | CPU s 1 | CPU s 3 | CPU ratio "
      "| RSS MiB 1 | RSS MiB 3 | repo MB 1 | repo MB 3 |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ds in datasets:
        for step, name in (("init", "init"), ("backup1", "1st backup"), ("backup2", "no-change")):
            p(f"| {ds} | {name} | {cell(ds, 'cairn', step)} | {cell(ds, 'cairn-x3', step)} "
              f"| {ratio_fmt(ratio(ds, 'cairn-x3', 'cairn', step))} "
              f"| {fmt(med_of(ds, 'cairn', step, cpu))} | {fmt(med_of(ds, 'cairn-x3', step, cpu))} "
              f"| {ratio_fmt(ratio(ds, 'cairn-x3', 'cairn', step, 'cpu_s'))} "
              f"| {fmt(med_of(ds, 'cairn', step, rss))} | {fmt(med_of(ds, 'cairn-x3', step, rss))} "
              f"| {fmt(med_of(ds, 'cairn', step, repo_mb))} | {fmt(med_of(ds, 'cairn-x3', step, repo_mb))} |")
    p("")

bad = [r for r in rows if r["status"] not in OK]
p("### Failures and warnings\n")
if not bad:
    p("None: every step exited 0 and every restore matched the source.\n")
else:
    # one line per (tool, step, status, message), listing where it happened
    groups = defaultdict(list)
    for r in bad:
        msg = r["verify"] or r["note"]
        if " [log: " in msg:
            msg = msg[:msg.index(" [log: ")]
        # a tool that could not run at all (no binary, build failed) fails every step the same way
        step = "every step" if r["status"] == "FAILED" and r["rc"] == "" else r["step"]
        groups[(r["tool"], step, r["status"], msg)].append(r)
    p("| tool | step | status | where (rep/dataset) | message (logs: see below) |")
    p("|---|---|---|---|---|")
    for (tool, step, status, msg), rs in groups.items():
        where = ", ".join(dict.fromkeys(f"{r['rep']}/{r['dataset']}" for r in rs))
        p(f"| {tool} | {step} | {status} | {where} | {msg.replace('|', '/')} |")
    p("")
print("\n".join(out))
PYEOF
}

if [[ ${1:-} == report ]]; then
	[[ -f ${2:-} ]] || {
		echo "usage: $0 report RESULTS.csv" >&2
		exit 2
	}
	report "$2"
	exit 0
fi
[[ $# -eq 0 ]] || {
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# --------------------------------------------------------------------------- settings

BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-bench}
read -r -a DATASETS <<<"${DATASETS:-mixed many-small}"
read -r -a TOOLS <<<"${TOOLS:-restic borg rustic cairn cairn-x3}"
REPS=${REPS:-2}
COLD=${COLD:-0}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
STEP_TIMEOUT=${STEP_TIMEOUT:-5400}
OUT_DIR=${OUT_DIR:-$HERE}
CAIRN_BIN=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn}
CAIRN_REPO_PREFIX=${CAIRN_REPO_PREFIX:-}
RUSTIC_BIN=${RUSTIC_BIN:-$BENCH_DIR/tools/rustic/bin/rustic}
export SIZE_MB=${SIZE_MB:-1000} FILES=${FILES:-200000} SEED=${SEED:-20240601}

STAMP=$(date -u +%Y-%m-%d)
BASE=$OUT_DIR/results-$STAMP
[[ ! -e $BASE.md && ! -e $BASE.csv ]] || BASE=$OUT_DIR/results-$STAMP-$(date -u +%H%M%S)
CSV=$BASE.csv
MD=$BASE.md
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
LOG_DIR=$BENCH_DIR/logs/$RUN_ID
T_START=$(date +%s)

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	say "ERROR: $*"
	exit 1
}

mkdir -p "$BENCH_DIR"/{data,repos,restore,cache} "$LOG_DIR" "$OUT_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

# --------------------------------------------------------------------------- tools

declare -A AVAIL # tool -> "" (usable) or the reason it is not

install_missing() {
	local pkgs=()
	command -v restic >/dev/null || pkgs+=(restic)
	command -v borg >/dev/null || pkgs+=(borgbackup)
	[[ -x /usr/bin/time ]] || pkgs+=(time)
	command -v b3sum >/dev/null || pkgs+=(b3sum)
	command -v "$PY" >/dev/null || pkgs+=(python3)
	((${#pkgs[@]})) || return 0
	if [[ $INSTALL != 1 || $(id -u) != 0 ]]; then
		say "missing packages (not installing: INSTALL=$INSTALL, uid=$(id -u)): ${pkgs[*]}"
		return 0
	fi
	say "installing from Debian: ${pkgs[*]}"
	apt-get -o DPkg::Lock::Timeout=600 update -qq >"$LOG_DIR/apt.log" 2>&1 || true
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${pkgs[@]}" \
		>>"$LOG_DIR/apt.log" 2>&1 || say "apt-get install failed (see $LOG_DIR/apt.log)"
}

install_missing

# rustic is not packaged in Debian: built once from crates.io into BENCH_DIR and reused.
install_rustic() {
	[[ -x $RUSTIC_BIN ]] && return 0
	if [[ $INSTALL != 1 ]] || ! command -v cargo >/dev/null; then
		say "rustic missing at $RUSTIC_BIN (not installing: INSTALL=$INSTALL or no cargo)"
		return 0
	fi
	say "building rustic once: cargo install rustic-rs --locked (log: $LOG_DIR/rustic-install.log)"
	cargo install rustic-rs --locked --root "$BENCH_DIR/tools/rustic" >"$LOG_DIR/rustic-install.log" 2>&1 ||
		say "cargo install rustic-rs failed (see $LOG_DIR/rustic-install.log)"
	RUSTIC_BIN=$BENCH_DIR/tools/rustic/bin/rustic
}
[[ " ${TOOLS[*]} " == *" rustic "* ]] && install_rustic
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is required: apt-get install time"
command -v "$PY" >/dev/null || die "python3 is required"

CAIRN_BUILD_S=-
for t in "${TOOLS[@]}"; do
	case $t in
	restic) command -v restic >/dev/null && AVAIL[$t]= || AVAIL[$t]="restic not installed" ;;
	borg) command -v borg >/dev/null && AVAIL[$t]= || AVAIL[$t]="borg not installed" ;;
	rustic) [[ -x $RUSTIC_BIN ]] && AVAIL[$t]= || AVAIL[$t]="rustic not built (no $RUSTIC_BIN)" ;;
	cairn | cairn-x3) ;;
	cairn-base) [[ -x ${CAIRN_BASE_BIN:-} ]] && AVAIL[$t]= || AVAIL[$t]="CAIRN_BASE_BIN is not an executable" ;;
	*) die "unknown tool: $t (known: restic borg rustic cairn cairn-x3 cairn-base)" ;;
	esac
done

if [[ " ${TOOLS[*]} " == *" cairn"* ]]; then
	cairn_reason=
	if [[ $BUILD == 1 ]]; then
		say "building cairn: cargo build --release (log: $LOG_DIR/cargo-build.log)"
		b0=$(date +%s)
		if (cd "$ROOT" && cargo build --release) >"$LOG_DIR/cargo-build.log" 2>&1; then
			CAIRN_BUILD_S=$(($(date +%s) - b0))
		else
			CAIRN_BUILD_S=$(($(date +%s) - b0))
			cairn_reason="cargo build --release failed (see $LOG_DIR/cargo-build.log)"
			tail -n 20 "$LOG_DIR/cargo-build.log" >&2 || true
		fi
	fi
	if [[ -z $cairn_reason && ! -x $CAIRN_BIN ]]; then
		cairn_reason="no binary at $CAIRN_BIN"
	fi
	[[ -n $cairn_reason ]] && say "cairn unavailable: $cairn_reason"
	AVAIL[cairn]=$cairn_reason
	AVAIL[cairn-x3]=$cairn_reason
fi

# Tools' caches and config live under BENCH_DIR and are wiped between reps.
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench CAIRN_PASSWORD=bench RUSTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_CACHE_DIR=$BENCH_DIR/cache/restic BORG_BASE_DIR=$BENCH_DIR/cache/borg
export XDG_CACHE_HOME=$BENCH_DIR/cache/xdg XDG_CONFIG_HOME=$BENCH_DIR/cache/xdg-config

version_of() {
	case $1 in
	restic) restic version 2>/dev/null | head -n1 ;;
	borg) borg --version 2>/dev/null | head -n1 ;;
	rustic) "$RUSTIC_BIN" --version 2>/dev/null | head -n1 ;;
	cairn) "$CAIRN_BIN" --version 2>/dev/null | head -n1 ;;
	esac
}

# --------------------------------------------------------------------------- datasets

declare -A SRC_DIR SRC_FILES SRC_BYTES SRC_DIGEST

dataset_params() {
	case $1 in
	mixed | one-big) echo "kind=$1 seed=$SEED size_mb=$SIZE_MB" ;;
	many-small) echo "kind=$1 seed=$SEED files=$FILES" ;;
	*) die "unknown dataset: $1 (known: mixed many-small one-big)" ;;
	esac
}

field() { # field NAME "files=1 bytes=2 ..." -> value
	local re="(^| )$1=([^ ]*)"
	[[ $2 =~ $re ]] && echo "${BASH_REMATCH[2]}"
}

prepare_dataset() {
	local ds=$1 dir=$BENCH_DIR/data/$1 stamp=$BENCH_DIR/data/$1.stamp params line t0
	params=$(dataset_params "$ds")
	if [[ -d $dir.undo ]]; then
		say "$ds: found an interrupted mutate, undoing it"
		"$MKDS" unmutate "$dir" >/dev/null
	fi
	if [[ -f $stamp && $(head -n1 "$stamp") == "$params" && -d $dir ]]; then
		line=$(sed -n 2p "$stamp")
		say "$ds: reusing $dir ($line)"
	else
		rm -rf "$dir" "$dir.manifest" "$stamp"
		say "$ds: generating ($params)"
		t0=$(date +%s)
		line=$("$MKDS" "$ds" "$dir" 2>"$LOG_DIR/make-$ds.log" | tail -n1)
		printf '%s\n%s\ngenerated in %s s\n' "$params" "$line" "$(($(date +%s) - t0))" >"$stamp"
		say "$ds: $line ($(($(date +%s) - t0)) s)"
	fi
	SRC_DIR[$ds]=$dir
	SRC_FILES[$ds]=$(field files "$line")
	SRC_BYTES[$ds]=$(field bytes "$line")
	SRC_DIGEST[$ds]=$(field digest "$line")
}

# --------------------------------------------------------------------------- measuring

CSV_HEADER=run_id,start_utc,rep,dataset,tool,step,order,status,rc,wall_s,user_s,sys_s,cpu_s,maxrss_kib,src_files,src_bytes,repo_bytes,load1,verify,note
echo "$CSV_HEADER" >"$CSV"
DROP_WARNED=0

drop_caches() {
	sync
	if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		((DROP_WARNED)) || say "WARNING: cannot drop caches (not root?); COLD=1 runs are warm"
		DROP_WARNED=1
	fi
}

repo_size() { # tool -> bytes of its repo(s)
	local d=$BENCH_DIR/repos/$1
	if [[ -d $d ]]; then du -sb "$d" | cut -f1; else echo ""; fi
}

# csv_row REP DS TOOL STEP ORDER STATUS RC WALL USER SYS RSS REPO LOAD VERIFY NOTE START_UTC
csv_row() {
	local cpu=""
	[[ -n $9 && -n ${10} ]] && cpu=$(awk -v u="$9" -v s="${10}" 'BEGIN { printf "%.2f", u + s }')
	local note=${15//,/;}
	echo "$RUN_ID,${16},$1,$2,$3,$4,$5,$6,$7,$8,$9,${10},$cpu,${11},${SRC_FILES[$2]},${SRC_BYTES[$2]},${12},${13},${14},${note//$'\n'/ }" >>"$CSV"
}

# run_step REP DS TOOL STEP ORDER CWD -- CMD...
# Sets LAST_STATUS (ok | warn | FAILED(rc=N) | TIMEOUT | SKIPPED).
run_step() {
	local rep=$1 ds=$2 tool=$3 step=$4 order=$5 cwd=$6
	shift 7
	local log=$LOG_DIR/r$rep-$ds-$tool-$step.log tf load start rc=0 status wall="" user="" sys="" rss="" repo="" note=""
	start=$(date -u +%FT%TZ)
	if [[ -n ${AVAIL[$tool]:-} ]]; then
		LAST_STATUS=FAILED
		csv_row "$rep" "$ds" "$tool" "$step" "$order" FAILED "" "" "" "" "" "" "" "" "${AVAIL[$tool]}" "$start"
		say "  $tool $step: FAILED (${AVAIL[$tool]})"
		return 0
	fi
	if [[ $COLD == 1 && $step =~ ^(backup1|restore|check)$ ]]; then
		drop_caches
	fi
	[[ $step == sync ]] || sync # start every step with no dirty pages left by the previous one
	load=$(cut -d' ' -f1 /proc/loadavg)
	tf=$(mktemp)
	{
		printf '$'
		printf ' %q' "$@"
		printf '\n'
	} >"$log"
	(cd "$cwd" && exec /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout -k 30 "$STEP_TIMEOUT" "$@") >>"$log" 2>&1 || rc=$?
	read -r wall user sys rss < <(tail -n1 "$tf") || true
	rm -f "$tf"
	if ((rc == 0)); then
		status=ok
	elif ((rc == 1)) && [[ $tool == borg ]]; then
		status=warn # borg: rc 1 = warnings only (e.g. a file changed while read)
		note="borg warning: $(grep -m1 -v '^\$' "$log" | cut -c1-120)"
	elif ((rc == 124 || rc == 137)); then
		status=TIMEOUT
		note="timed out after ${STEP_TIMEOUT}s"
	else
		status="FAILED(rc=$rc)"
		note="$(tail -n1 "$log" | cut -c1-160) [log: $log]"
	fi
	[[ $step =~ ^(init|backup1|backup2|incr)$ ]] && repo=$(repo_size "$tool")
	LAST_STATUS=$status
	csv_row "$rep" "$ds" "$tool" "$step" "$order" "$status" "$rc" "$wall" "$user" "$sys" "$rss" "$repo" "$load" "" "$note" "$start"
	say "  $tool $step: $status wall=${wall}s cpu=${user}+${sys}s rss=${rss}KiB${repo:+ repo=${repo}B} load=$load"
}

# restored_root TARGET SRC -> the directory in TARGET that holds the restored SRC
restored_root() {
	local t=$1 src=$2 c
	for c in "$t$src" "$t/$(basename "$src")" "$t"; do
		if [[ -d $c ]]; then
			echo "$c"
			return 0
		fi
	done
	echo "$t"
}

# --------------------------------------------------------------------------- the commands

repo_args() { # cairn repo flags for cairn / cairn-x3
	local r=$BENCH_DIR/repos/$1
	if [[ $1 == cairn-x3 ]]; then
		echo "--repo ${CAIRN_REPO_PREFIX}$r/r1 --repo ${CAIRN_REPO_PREFIX}$r/r2 --repo ${CAIRN_REPO_PREFIX}$r/r3"
	else
		echo "--repo ${CAIRN_REPO_PREFIX}$r"
	fi
}

# do_step REP DS TOOL STEP ORDER
do_step() {
	local rep=$1 ds=$2 tool=$3 step=$4 order=$5 src=${SRC_DIR[$2]} R=$BENCH_DIR/repos/$3 cwd=$BENCH_DIR
	local T=$BENCH_DIR/restore/$3
	local -a ra
	read -r -a ra <<<"$(repo_args "$tool")"
	local cmd=() bin=$CAIRN_BIN
	[[ $tool == cairn-base ]] && bin=$CAIRN_BASE_BIN
	case $tool:$step in
	restic:init) cmd=(restic -r "$R" init --repository-version 2) ;;
	restic:backup*|restic:incr) cmd=(restic -r "$R" backup --compression auto "$src") ;;
	restic:restore) cmd=(restic -r "$R" restore latest --target "$T") ;;
	restic:check) cmd=(restic -r "$R" check --read-data) ;;
	borg:init) cmd=(borg init -e repokey "$R") ;;
	borg:backup*|borg:incr) cmd=(borg create --compression "zstd,3" "$R::$step" "$src") ;;
	borg:restore) cmd=(borg extract "$R::incr") cwd=$T ;;
	borg:check) cmd=(borg check --verify-data "$R") ;;
	rustic:init) cmd=("$RUSTIC_BIN" -r "$R" --no-progress init) ;;
	rustic:backup*|rustic:incr) cmd=("$RUSTIC_BIN" -r "$R" --no-progress backup "$src") ;;
	rustic:restore) cmd=("$RUSTIC_BIN" -r "$R" --no-progress restore latest "$T") ;;
	rustic:check) cmd=("$RUSTIC_BIN" -r "$R" --no-progress check --read-data) ;;
	cairn*:init) cmd=("$bin" init "${ra[@]}") ;;
	cairn*:backup*|cairn*:incr) cmd=("$bin" backup "${ra[@]}" "$src") ;;
	cairn:restore|cairn-base:restore) cmd=("$bin" restore latest --repo "${CAIRN_REPO_PREFIX}$R" --target "$T") ;;
	cairn:check|cairn-base:check) cmd=("$bin" check --read-data --repo "${CAIRN_REPO_PREFIX}$R") ;;
	*) die "no command for $tool $step" ;;
	esac
	if [[ $tool == cairn-x3 && $step == init ]]; then mkdir -p "$R"; fi
	if [[ $step == restore ]]; then
		rm -rf "$T"
		mkdir -p "$T"
	fi
	run_step "$rep" "$ds" "$tool" "$step" "$order" "$cwd" -- "${cmd[@]}"
	if [[ $step == restore ]]; then
		local verify status root got
		if [[ $LAST_STATUS == ok || $LAST_STATUS == warn ]]; then
			run_step "$rep" "$ds" "$tool" sync "$order" "$BENCH_DIR" -- sync
			root=$(restored_root "$T" "$src")
			got=$("$MKDS" digest "$root")
			if [[ $got == "$EXPECT" ]]; then
				status=ok verify="files+bytes+content match"
			else
				status=MISMATCH verify="restored $(cut -d' ' -f1-3 <<<"$got") from $root; want $(cut -d' ' -f1-3 <<<"$EXPECT")"
			fi
		else
			status=SKIPPED verify="restore failed"
		fi
		csv_row "$rep" "$ds" "$tool" verify "$order" "$status" "" "" "" "" "" "" "" "$verify" "" "$(date -u +%FT%TZ)"
		say "  $tool verify: $status ($verify)"
		rm -rf "$T"
	fi
}

steps_for() { # tool -> steps it runs
	if [[ $1 == cairn-x3 ]]; then echo "init backup1 backup2"; else echo "init backup1 backup2 incr restore check"; fi
}

runs_step() { [[ " $(steps_for "$1") " == *" $2 "* ]]; }

# --------------------------------------------------------------------------- machine info

machine_info() {
	local v
	echo "# Benchmark results: cairn vs restic vs borg ($STAMP)"
	echo
	echo "Produced by \`docs/benchmarks/run.sh\` (run id $RUN_ID). Raw per-step rows: \`$(basename "$CSV")\`."
	echo
	echo "## Machine, versions and parameters"
	echo
	echo "| what | value |"
	echo "|---|---|"
	echo "| cpu | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') × $(nproc) (nproc) |"
	echo "| memory | $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
	echo "| kernel | $(uname -r) |"
	echo "| os | $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null) |"
	echo "| bench dir | \`$BENCH_DIR\` on $(df -PTh "$BENCH_DIR" | awk 'NR==2 { print $1 " (" $2 "), " $5 " free" }') |"
	echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
	for t in restic borg rustic; do
		v=$(version_of $t || true)
		echo "| $t | ${v:-not installed} |"
	done
	if [[ -z ${AVAIL[cairn]-x} ]]; then
		v=$(version_of cairn || true)
		echo "| cairn | ${v:-?} (\`$CAIRN_BIN\`, release build: ${CAIRN_BUILD_S} s) |"
	else
		echo "| cairn | unavailable: ${AVAIL[cairn]-not in TOOLS} |"
	fi
	echo "| cairn source | $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (dirty tree)') |"
	echo "| GNU time | $(/usr/bin/time --version 2>&1 | head -n1) |"
	echo "| hasher | $(b3sum --version 2>/dev/null || echo 'sha256sum (no b3sum)') |"
	echo "| reps | $REPS, tool order rotated each rep: ${TOOLS[*]} |"
	echo "| cache | $([[ $COLD == 1 ]] && echo 'COLD=1: page cache dropped before each 1st backup, restore and check' || echo 'warm (one cat pass over each dataset before rep 1)') |"
	echo "| restores to | $([[ $RESTORE_FS == loop ]] && echo "a fresh journaled ext4 image, loop-mounted (direct I/O $LOOP_DIO)" || echo "$BENCH_DIR/restore (a plain directory)") |"
	echo "| repositories on | $([[ $REPO_FS == loop ]] && echo "another fresh journaled ext4 image, loop-mounted (direct I/O $LOOP_DIO)" || echo "$BENCH_DIR/repos (a plain directory)") |"
	[[ -n ${CAIRN_BASE_BIN:-} ]] && echo "| cairn-base | \`$CAIRN_BASE_BIN\`: $("$CAIRN_BASE_BIN" --version 2>/dev/null | head -n1) |"
	echo "| tool flags | restic: \`backup --compression auto\` (repo v2); borg: \`init -e repokey\`, \`create --compression zstd,3\`; rustic and cairn: defaults |"
	echo
	echo "| dataset | files | bytes | digest ($(command -v b3sum >/dev/null && echo BLAKE3 || echo SHA-256) of manifest) | parameters |"
	echo "|---|---|---|---|---|"
	for ds in "${DATASETS[@]}"; do
		echo "| $ds | ${SRC_FILES[$ds]} | ${SRC_BYTES[$ds]} | \`${SRC_DIGEST[$ds]:0:16}…\` | $(dataset_params "$ds") |"
	done
	echo
}

# --------------------------------------------------------------------------- main

for ds in "${DATASETS[@]}"; do prepare_dataset "$ds"; done

on_exit() { # leave no dataset mutated behind an interrupted run
	local d
	for d in "${DATASETS[@]}"; do
		if [[ -d ${SRC_DIR[$d]:-/nonexistent}.undo ]]; then
			say "undoing the mutation of $d"
			"$MKDS" unmutate "${SRC_DIR[$d]}" >/dev/null 2>&1 || say "WARNING: could not unmutate $d"
		fi
	done
}
trap on_exit EXIT

need=0
for ds in "${DATASETS[@]}"; do need=$((need + SRC_BYTES[$ds])); done
avail=$(df -PB1 "$BENCH_DIR" | awk 'NR==2 { print $4 }')
if ((avail < need * 4)); then
	say "WARNING: $((avail / 1000000)) MB free in $BENCH_DIR; the run may need ~$((need * 4 / 1000000)) MB"
fi

if [[ $COLD != 1 ]]; then
	for ds in "${DATASETS[@]}"; do
		say "$ds: warming the page cache (one cat pass)"
		find "${SRC_DIR[$ds]}" -type f -print0 | xargs -0 -r cat >/dev/null
	done
fi

# Restores write to a fresh journaled ext4: the root file system here may
# have no journal, and creating files soon after deleting many is then slow
# for every tool, which would measure the disk, not the tool.
# Repositories likewise: how fast the disk takes new files right after a
# previous rep's were deleted varied fourfold between minutes on the root
# file system, which the 3-replica figure (3x the files) felt most.
# The loop devices do direct I/O to their image (LOOP_DIO=on): a buffered
# loop device caches every block twice, once above it and once in the
# image file's pages, and copies it between the two, which a real disk
# does not; that made writing 3 replicas look costlier than it is.
LOOP_DIO=${LOOP_DIO:-on}
RESTORE_FS=${RESTORE_FS:-$([[ $EUID == 0 ]] && echo loop || echo dir)}
REPO_FS=${REPO_FS:-$([[ $EUID == 0 ]] && echo loop || echo dir)}
LOOPS=()
loop_mount() { # loop_mount NAME BYTES: a fresh journaled ext4 on BENCH_DIR/NAME
	local dir=$BENCH_DIR/$1 img=$BENCH_DIR/$1.ext4
	mountpoint -q "$dir" && umount "$dir"
	rm -f "$img"
	mkdir -p "$dir"
	truncate -s $(($2 >> 20 << 20)) "$img" # whole MiB: losetup warns about a partial sector
	mkfs.ext4 -q -F -O has_journal "$img"
	local dev
	dev=$(losetup --find --show --direct-io="$LOOP_DIO" "$img") && mount "$dev" "$dir" ||
		die "cannot loop-mount $img (run as root, or RESTORE_FS=dir REPO_FS=dir)"
	# Detached now, the device goes away by itself when unmounted.
	losetup -d "$dev"
	[[ " ${LOOPS[*]} " == *" $1 "* ]] || LOOPS+=("$1")
	say "$1 on a fresh journaled ext4 ($img)"
}
unmount_loops() {
	local l
	for l in "${LOOPS[@]}"; do
		umount "$BENCH_DIR/$l" 2>/dev/null
		rm -f "$BENCH_DIR/$l.ext4"
	done
}
[[ $RESTORE_FS == loop ]] && loop_mount restore $((need * 3 + (1 << 30)))
REPO_BYTES=$((need * 6 + (1 << 30)))
[[ $REPO_FS == loop ]] && loop_mount repos $REPO_BYTES
((${#LOOPS[@]} == 0)) || trap 'on_exit; unmount_loops' EXIT

machine_info >"$MD"

for ((rep = 1; rep <= REPS; rep++)); do
	n=${#TOOLS[@]}
	order=()
	for ((i = 0; i < n; i++)); do order+=("${TOOLS[(i + rep - 1) % n]}"); done
	for ds in "${DATASETS[@]}"; do
		say "rep $rep/$REPS, $ds: order ${order[*]}"
		rm -rf "${BENCH_DIR:?}"/repos/* "${BENCH_DIR:?}"/restore/* "${BENCH_DIR:?}"/cache/*
		# Each rep's repositories start on a new file system, not on the
		# blocks the previous rep just freed.
		[[ $REPO_FS == loop ]] && loop_mount repos $REPO_BYTES
		EXPECT=$("$MKDS" digest "${SRC_DIR[$ds]}")
		[[ $EXPECT == *"digest=${SRC_DIGEST[$ds]}"* ]] || say "WARNING: $ds digest changed since generation: $EXPECT"
		for step in init backup1 backup2; do
			pos=0
			for t in "${order[@]}"; do
				pos=$((pos + 1))
				if runs_step "$t" "$step"; then do_step "$rep" "$ds" "$t" "$step" "$pos"; fi
			done
		done
		say "  mutating $ds"
		EXPECT=$("$MKDS" mutate "${SRC_DIR[$ds]}" 2>"$LOG_DIR/r$rep-$ds-mutate.log")
		for step in incr restore; do
			pos=0
			for t in "${order[@]}"; do
				pos=$((pos + 1))
				if runs_step "$t" "$step"; then do_step "$rep" "$ds" "$t" "$step" "$pos"; fi
			done
		done
		say "  unmutating $ds"
		got=$("$MKDS" unmutate "${SRC_DIR[$ds]}" 2>/dev/null)
		[[ $got == *"digest=${SRC_DIGEST[$ds]}"* ]] || die "$ds: unmutate did not restore the original digest ($got)"
		pos=0
		for t in "${order[@]}"; do
			pos=$((pos + 1))
			if runs_step "$t" check; then do_step "$rep" "$ds" "$t" check "$pos"; fi
		done
	done
done
rm -rf "${BENCH_DIR:?}"/repos/* "${BENCH_DIR:?}"/restore/* "${BENCH_DIR:?}"/cache/*

{
	echo "## Results"
	echo
	report "$CSV"
	echo "Total wall time of the run: $(($(date +%s) - T_START)) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "Logs of every step: \`$LOG_DIR\`."
} >>"$MD"

cat "$MD"
say "wrote $MD and $CSV"
