#!/usr/bin/env bash
# Memory of `cairn daemon`: RSS when idle, and after N job runs (default
# 100), to show it does not grow with the number of runs.
#
#   docs/benchmarks/daemon-memory.sh [RUNS]
#
# A daemon with three jobs on two local repositories — a backup of a small
# tree and a sync, each due every second (6-field cron), and a forget
# keeping the last 5 snapshots every 5 seconds, so the repository stays the
# same size as a real one under retention does — is sampled from /proc:
# VmRSS (resident now) and VmHWM (peak) after start, after the first runs,
# and every 25 runs. Writes a Markdown table to stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-100}
cargo build --release --quiet
BIN=$PWD/target/release/cairn
W=$(mktemp -d /tmp/cairn-daemon-mem.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/data"
for i in $(seq 1 200); do head -c 4096 /dev/urandom > "$W/data/f$i"; done
export CAIRN_PASSWORD=bench HOME=$W/home CAIRN_CONFIG=$W/cairn.toml
cat > "$CAIRN_CONFIG" <<TOML
[backends.a]
url = "$W/a"
[backends.b]
url = "$W/b"
[daemon]
history = "$W/history.sqlite"
status_interval = "5s"
[jobs.files]
schedule = "* * * * * *"
backup = ["$W/data"]
[jobs.copy]
schedule = "* * * * * *"
sync = true
[retention]
keep_last = 5
[jobs.retention]
schedule = "*/5 * * * * *"
forget = true
TOML
"$BIN" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null
"$BIN" daemon --listen 127.0.0.1:0 2>"$W/log" &
PID=$!
rss() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f | %.1f", r/1024, h/1024}' "/proc/$PID/status"; }
runs() { "$BIN" history --json -n 100000 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))'; }
sleep 0.5
echo "| runs recorded | RSS MiB | peak RSS MiB |"
echo "|---:|---:|---:|"
echo "| 0 (idle, just started) | $(rss) |"
next=1
while :; do
    n=$(runs)
    if ((n >= next)); then
        echo "| $n | $(rss) |"
        if ((next == 1)); then next=25; else next=$((next + 25)); fi
        ((n >= RUNS)) && break
    fi
    sleep 1
done
exit 0
