#!/usr/bin/env bash
# Load on `cairn serve` over loopback while a backup runs: 200 concurrent
# clients each asking GET /api/v1/snapshots, and 20 concurrent downloads of
# a 16 MiB file, measured by a small Python asyncio client (no packages
# needed). Prints p50/p99/max latency per kind, errors, and the server's
# RSS (VmRSS sampled every 100 ms, and VmHWM) as Markdown.
#
#   docs/benchmarks/api-load.sh [BACKUP_MB] [MAX_ROUNDS]
#
# Rounds (200 + 20 requests at once) repeat while the backup runs, at
# least 3 and at most MAX_ROUNDS (default 30). Downloads name the small
# snapshot by id (the backup's new snapshot becomes `latest`).
#
# BIN=path/to/cairn uses that binary instead of building a release one.
# Every request goes to 127.0.0.1; the client's loops are bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
BACKUP_MB=${1:-300}
ROUNDS=${2:-30}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/cairn
fi
W=$(mktemp -d /tmp/cairn-api-load.XXXXXX)
PID=
trap 'kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
export CAIRN_PASSWORD=bench HOME=$W/home CAIRN_CONFIG=$W/cairn.toml
mkdir -p "$W/small" "$W/big"
for i in $(seq 1 50); do head -c 65536 /dev/urandom > "$W/small/f$i"; done
head -c $((16 << 20)) /dev/urandom > "$W/small/download.bin"
head -c 40 /dev/urandom | base64 > "$W/viewer.token"
cat > "$CAIRN_CONFIG" <<TOML
[backends.a]
url = "$W/a"
[backends.b]
url = "$W/b"
[daemon]
history = "$W/history.sqlite"
[[api.tokens]]
label = "bench"
role = "viewer"
token = { file = "$W/viewer.token" }
TOML
"$BIN" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null 2>&1
for i in 1 2 3 4 5; do "$BIN" backup "$W/small" >/dev/null 2>&1; done
SNAP=$("$BIN" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
"$BIN" serve --listen 127.0.0.1:0 2> "$W/serve.log" &
PID=$!
for _ in $(seq 1 100); do grep -q "serving the API on" "$W/serve.log" && break; sleep 0.1; done
BASE=$(grep -o 'http://127.0.0.1:[0-9]*' "$W/serve.log" | head -1)
for i in $(seq 1 $((BACKUP_MB / 50))); do head -c $((50 << 20)) /dev/urandom > "$W/big/f$i"; done
"$BIN" backup "$W/big" > "$W/backup.log" 2>&1 &
BACKUP=$!
sleep 1
python3 - "$BASE" "$(cat "$W/viewer.token")" "$PID" "$W/small/download.bin" "$ROUNDS" "$BACKUP" "$SNAP" <<'PY'
import asyncio, os, sys, time, urllib.parse
base, token, pid, path, rounds, backup, snap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
host, port = base[len("http://"):].split(":")
port = int(port)
rss = []
def sample():
    with open(f"/proc/{pid}/status") as f:
        d = dict(l.split(":", 1) for l in f)
    return int(d["VmRSS"].split()[0]), int(d["VmHWM"].split()[0])

async def get(target):
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(host, port)
    w.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    n = 0
    head = await r.readuntil(b"\r\n\r\n")
    code = int(head[9:12])
    while True:
        b = await r.read(1 << 16)
        if not b:
            break
        n += len(b)
    w.close()
    return code, time.perf_counter() - t0, n

async def sampler(stop):
    while not stop.is_set():
        rss.append(sample()[0])
        await asyncio.sleep(0.1)

def alive(p):
    try:
        os.kill(p, 0)
        return os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
    except OSError:
        return False

async def main():
    stop = asyncio.Event()
    s = asyncio.create_task(sampler(stop))
    snaps, files, errors, during = [], [], 0, 0
    file_target = f"/api/v1/snapshots/{snap}/file?path=" + urllib.parse.quote(path)
    done = 0
    while done < rounds and (done < 3 or alive(backup)):
        done += 1
        running = alive(backup)
        tasks = [get("/api/v1/snapshots") for _ in range(200)] + [get(file_target) for _ in range(20)]
        res = await asyncio.gather(*tasks, return_exceptions=True)
        for i, x in enumerate(res):
            if isinstance(x, Exception) or x[0] != 200:
                errors += 1
                continue
            (snaps if i < 200 else files).append(x[1])
        during += running
    stop.set()
    await s
    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else float("nan")
    print(f"| kind | requests | p50 ms | p99 ms | max ms |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    print(f"| GET /snapshots (200 concurrent) | {len(snaps)} | {pct(snaps,.5):.1f} | {pct(snaps,.99):.1f} | {max(snaps)*1000:.1f} |")
    print(f"| GET /file 16 MiB (20 concurrent) | {len(files)} | {pct(files,.5):.1f} | {pct(files,.99):.1f} | {max(files)*1000:.1f} |")
    print()
    print(f"errors (non-200 or failed): {errors}; rounds while the backup ran: {during} of {done}")
    now, hwm = sample()
    print(f"server RSS: max sampled {max(rss)/1024:.1f} MiB, peak (VmHWM) {hwm/1024:.1f} MiB, at the end {now/1024:.1f} MiB")
asyncio.run(main())
PY
wait "$BACKUP" && echo "backup: ok" || echo "backup: failed ($(tail -1 "$W/backup.log"))"
grep -ci "lock" "$W/serve.log" | sed 's/^/server log lines mentioning a lock: /' || true
