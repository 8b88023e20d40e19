#!/usr/bin/env bash
# Replication over real latency (issue 15, item 7): a first backup to S3
# (moto) and SFTP (OpenSSH) across a link with 50 ms RTT and a rate cap,
# next to the same backup across the same rate cap without the delay.
#
#   docs/benchmarks/latency.sh          # as root (network namespace, tc, TUN)
#
# The script makes a network namespace NS with a point-to-point link to the
# host namespace on a private /30 (HOST_IP here, NS_IP there), runs moto
# (S3, authentication on, as scripts/test-servers does it) and its own
# OpenSSH sshd inside it, and runs cairn here against NS_IP. Existing host
# interfaces are never touched; everything it made is removed on exit, and a
# leftover of a killed run is removed first.
#
# The link: two TUN devices (clat0 here, clat1 in NS) joined by
# latency-link.c (compiled into BENCH_DIR), which delays every packet by
# DELAY_MS one way. `tc qdisc ... tbf rate RATE` on both TUN devices caps
# the rate. (The kernel this was written on has no sch_netem, so `tc netem`
# was not available; tbf and htb are.) Cases, interleaved, REPS times:
#   cap    RATE, delay 0
#   delay  RATE, DELAY_MS each way (2 x DELAY_MS RTT)
# Each run: fresh repository (`init`, not timed; moto is restarted for every
# S3 run so its memory stays flat), then the first backup of the dataset
# with default settings under `/usr/bin/time -v`.
#
# First it measures the link itself (LINK_MB over 1 and 4 TCP streams, a
# Python client, per case) and prints that. Then per-run lines on stderr,
# every run in BENCH_DIR/latency.csv (with the MB that crossed the link
# towards the servers), and on stdout one Markdown table:
# binary, backend, case, median wall s, MB/s (dataset MB = 10^6 B / wall),
# ratio delay/cap and PASS/FAIL against 0.8.
#
# Environment: BENCH_DIR [/var/tmp/cairn-lat], SIZE_MB [300] (dataset
# `make-dataset.sh mixed`, made once in BENCH_DIR/data), REPS [2],
# RATE [200mbit], DELAY_MS [25], BACKENDS ["s3 sftp"], LINK_MB [100] (0: skip
# the link measurement), CAIRN [target/release/cairn], or CAIRNS="name=path
# name=path" to compare binaries in the same run (interleaved), BACKUP_ARGS
# (extra backup flags, default none), MOTO_HTTP [waitress] (or werkzeug:
# moto_server as is, one TCP connection per request, see below), NS
# [cairn-lat], HOST_IP [10.203.0.1],
# NS_IP [10.203.0.2]. Needs: root, ip, tc, cc, sshd, GNU time, the venv of
# scripts/test-servers (run `scripts/test-servers start s3 sftp` once).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/cairn-lat}
SIZE_MB=${SIZE_MB:-300}
REPS=${REPS:-2}
RATE=${RATE:-200mbit}
DELAY_MS=${DELAY_MS:-25}
BACKENDS=${BACKENDS:-s3 sftp}
LINK_MB=${LINK_MB:-100}
NS=${NS:-cairn-lat}
HOST_IP=${HOST_IP:-10.203.0.1}
NS_IP=${NS_IP:-10.203.0.2}
CAIRNS=${CAIRNS:-cairn=${CAIRN:-$root/target/release/cairn}}
BACKUP_ARGS=${BACKUP_ARGS:-}
MOTO_HTTP=${MOTO_HTTP:-waitress}
TS_STATE=${CAIRN_TEST_SERVERS_DIR:-${HOME:-/root}/.cache/cairn-test-servers}
VENV=$TS_STATE/venv
DATA=$BENCH_DIR/data/mixed-$SIZE_MB
WORK=$BENCH_DIR/work
S3_PORT=9000
SFTP_PORT=2222
BUCKET=cairn-bench
HTUN=clat0
NTUN=clat1
export CAIRN_PASSWORD=bench

log() { echo "latency: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}
[[ $(id -u) -eq 0 ]] || die "needs root (network namespace, tc, TUN devices)"
for c in ip tc cc /usr/sbin/sshd ssh-keygen /usr/bin/time; do
	command -v "$c" >/dev/null || die "$c not found"
done
[[ -x $VENV/bin/moto_server ]] || die "no moto in $VENV: run scripts/test-servers start s3 sftp once"
for spec in $CAIRNS; do
	[[ -x ${spec#*=} ]] || die "cairn binary ${spec#*=} not found (CAIRN or CAIRNS)"
done

# ------------------------------------------------------------ the link

LINK_PID=
# Everything this script made, in reverse order; safe to run at any point
# and more than once.
cleanup() {
	[[ -n $LINK_PID ]] && kill "$LINK_PID" 2>/dev/null && wait "$LINK_PID" 2>/dev/null
	LINK_PID=
	if [[ -e /var/run/netns/$NS ]]; then
		# Only processes inside our namespace: the servers this script ran.
		local pids
		pids=$(ip netns pids "$NS" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			# shellcheck disable=SC2086
			kill $pids 2>/dev/null || true
			sleep 0.5
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null || true
		fi
		ip netns del "$NS" 2>/dev/null || true
	fi
	# Our TUN device (persistent until deleted); its peer went with the namespace.
	if ip link show "$HTUN" >/dev/null 2>&1; then ip link del "$HTUN" 2>/dev/null || true; fi
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup # a leftover of a killed run

mkdir -p "$BENCH_DIR" "$WORK"
cc -O2 -Wall -o "$BENCH_DIR/latency-link" "$here/latency-link.c"

log "namespace $NS: $HOST_IP <-> $NS_IP, rate $RATE, delay ${DELAY_MS} ms each way in case delay"
ip netns add "$NS"
ip tuntap add dev "$HTUN" mode tun
ip netns exec "$NS" ip tuntap add dev "$NTUN" mode tun
ip addr add "$HOST_IP/30" dev "$HTUN"
ip link set "$HTUN" up
ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NTUN"
ip netns exec "$NS" ip link set "$NTUN" up
ip netns exec "$NS" ip link set lo up
# The rate cap on both ends; the queue holds up to 50 ms at RATE (about one
# bandwidth-delay product of the delayed link, like netem's default queue).
tc qdisc add dev "$HTUN" root tbf rate "$RATE" burst 64kb latency 50ms
ip netns exec "$NS" tc qdisc add dev "$NTUN" root tbf rate "$RATE" burst 64kb latency 50ms

# set_case cap|delay: (re)start the delay line with that case's delay.
set_case() {
	local d=0
	[[ $1 == delay ]] && d=$DELAY_MS
	if [[ -n $LINK_PID ]]; then
		kill "$LINK_PID" && wait "$LINK_PID" 2>/dev/null || true
	fi
	"$BENCH_DIR/latency-link" "$HTUN" "/var/run/netns/$NS" "$NTUN" "$d" 2>>"$WORK/link.log" &
	LINK_PID=$!
	sleep 0.3
}

# ------------------------------------------------------------ link measurement

cat >"$WORK/tput.py" <<'EOF'
# tput.py server PORT | client HOST PORT MB STREAMS: TCP bulk send, one line of figures
import socket, sys, threading, time
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(64)
    def h(c):
        while c.recv(1 << 20): pass
        c.sendall(b"k"); c.close()
    while True:
        c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
host, port, mb, n = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
t = time.monotonic(); socket.create_connection((host, port)).close(); rtt = time.monotonic() - t
per, buf = int(mb * 1e6 / n), b"\0" * (1 << 16)
def send():
    c = socket.create_connection((host, port)); left = per
    while left > 0: left -= c.send(buf[:min(left, len(buf))])
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
t = time.monotonic(); ts = [threading.Thread(target=send) for _ in range(n)]
[x.start() for x in ts]; [x.join() for x in ts]; dt = time.monotonic() - t
print(f"connect {rtt*1000:.1f} ms, {n} stream(s), {mb:.0f} MB in {dt:.2f} s = {mb/dt:.1f} MB/s ({mb*8/dt:.0f} Mbit/s)")
EOF
if ((LINK_MB > 0)); then
	ip netns exec "$NS" python3 "$WORK/tput.py" server 5001 >/dev/null 2>&1 &
	tput_pid=$!
	sleep 1
	echo "## Link ($RATE; delay case ${DELAY_MS} ms each way)"
	echo
	for case in cap delay; do
		set_case "$case"
		for n in 1 4; do
			echo "- $case: $(python3 "$WORK/tput.py" client "$NS_IP" 5001 "$LINK_MB" "$n")"
		done
	done
	echo
	kill "$tput_pid" 2>/dev/null || true
fi

# ------------------------------------------------------------ servers in the namespace

# moto's own server (werkzeug) answers every request with "Connection:
# close", so each S3 request would pay a TCP handshake (and each 16 MiB PUT a
# slow start) that real S3, which keeps connections alive, does not. With
# MOTO_HTTP=waitress (the default) the same moto application is served by
# waitress (PyPI, pure Python, installed into the venv if missing), which
# keeps connections alive; MOTO_HTTP=werkzeug runs moto_server as is.
if [[ " $BACKENDS " == *" s3 "* && $MOTO_HTTP == waitress ]]; then
	if ! "$VENV/bin/python" -c 'import waitress' 2>/dev/null; then
		log "pip install waitress (into $VENV)"
		"$VENV/bin/python" -m pip install -q --disable-pip-version-check waitress >&2
	fi
	cat >"$WORK/moto-waitress.py" <<'EOF'
import os, sys
port = int(sys.argv[1])
os.environ.setdefault("MOTO_PORT", str(port))
import waitress
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
waitress.serve(DomainDispatcherApplication(create_backend_app), host="0.0.0.0", port=port,
               threads=16, connection_limit=200, channel_timeout=300, ident="moto")
EOF
fi

MOTO_PID=
S3_ID=
S3_SECRET=
# A fresh moto for every S3 run: it keeps objects in memory.
start_moto() {
	if [[ -n $MOTO_PID ]]; then
		kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null || true
	fi
	mkdir -p "$WORK/s3"
	# Four free requests (user, key, policy, bucket); signatures and IAM
	# policies are checked from then on (as in scripts/test-servers).
	if [[ $MOTO_HTTP == waitress ]]; then
		INITIAL_NO_AUTH_ACTION_COUNT=4 ip netns exec "$NS" \
			"$VENV/bin/python" "$WORK/moto-waitress.py" "$S3_PORT" >>"$WORK/moto.log" 2>&1 &
	else
		INITIAL_NO_AUTH_ACTION_COUNT=4 ip netns exec "$NS" \
			"$VENV/bin/moto_server" -H 0.0.0.0 -p "$S3_PORT" >>"$WORK/moto.log" 2>&1 &
	fi
	MOTO_PID=$!
	for _ in $(seq 150); do
		ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$S3_PORT" 2>/dev/null && break
		sleep 0.2
	done
	# Provisioned from inside the namespace over its loopback (not shaped).
	ip netns exec "$NS" "$VENV/bin/python" - "$S3_PORT" "$BUCKET" "$WORK/s3/credentials" <<'EOF'
import json, sys, boto3
port, bucket, out = sys.argv[1:]
kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="cairn")
key = iam.create_access_key(UserName="cairn")["AccessKey"]
iam.put_user_policy(UserName="cairn", PolicyName="s3-all", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}]}))
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
kw.update(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
boto3.client("s3", **kw).head_bucket(Bucket=bucket)  # authenticated now
with open(out, "w") as f:
    f.write(f"{key['AccessKeyId']}\n{key['SecretAccessKey']}\n")
EOF
	{ read -r S3_ID && read -r S3_SECRET; } <"$WORK/s3/credentials"
}

SSH_DIR=$WORK/sftp
start_sshd() {
	local user
	user=$(id -un)
	mkdir -p "$SSH_DIR" "$WORK/sftp-root" /run/sshd
	[[ -f $SSH_DIR/ssh_host_ed25519_key ]] ||
		ssh-keygen -q -t ed25519 -N '' -C cairn-lat-host -f "$SSH_DIR/ssh_host_ed25519_key" </dev/null
	[[ -f $SSH_DIR/id_ed25519 ]] ||
		ssh-keygen -q -t ed25519 -N '' -C cairn-lat-client -f "$SSH_DIR/id_ed25519" </dev/null
	cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys_$user"
	echo "[$NS_IP]:$SFTP_PORT $(cut -d' ' -f1,2 "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$SSH_DIR/known_hosts"
	cat >"$SSH_DIR/sshd_config" <<EOF
ListenAddress 0.0.0.0
Port $SFTP_PORT
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile $SSH_DIR/authorized_keys_%u
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers $user
Subsystem sftp internal-sftp
MaxStartups 100
MaxSessions 100
LogLevel INFO
EOF
	/usr/sbin/sshd -t -f "$SSH_DIR/sshd_config"
	ip netns exec "$NS" /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config" >>"$WORK/sshd.log" 2>&1 &
	for _ in $(seq 50); do
		ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$SFTP_PORT" 2>/dev/null && return 0
		sleep 0.2
	done
	die "sshd did not start (log: $WORK/sshd.log)"
}
[[ " $BACKENDS " == *" sftp "* ]] && start_sshd

# ------------------------------------------------------------ dataset

if [[ ! -f $DATA.manifest ]]; then
	log "making the dataset $DATA (SIZE_MB=$SIZE_MB)"
	rm -rf "$DATA"
	mkdir -p "$(dirname "$DATA")"
	SIZE_MB=$SIZE_MB "$here/make-dataset.sh" mixed "$DATA" >&2
fi
DATA_BYTES=$(du -sb --apparent-size "$DATA" | cut -f1)
log "dataset $DATA: $DATA_BYTES bytes"

# ------------------------------------------------------------ runs

# wall_s FILE: the wall time `time -v` wrote, in seconds.
wall_s() {
	awk -F': ' '/Elapsed \(wall clock\)/ {
		n = split($2, p, ":"); s = 0
		for (i = 1; i <= n; i++) s = s * 60 + p[i]
		print s }' "$1"
}

CSV=$BENCH_DIR/latency.csv
echo "binary,backend,case,rep,wall_s,mb_s,max_rss_kib,sent_mb" >"$CSV"
# Bytes that left the host over the link so far (the tbf counter of clat0).
sent_bytes() { tc -s qdisc show dev "$HTUN" | awk '/Sent/ { print $2; exit }'; }
run_one() { # BIN_NAME BIN BACKEND CASE REP
	local name=$1 bin=$2 backend=$3 case=$4 rep=$5 url env=()
	case $backend in
	s3)
		start_moto
		url="s3://$BUCKET/$name-$case-$rep"
		env=(AWS_ENDPOINT="http://$NS_IP:$S3_PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
			AWS_ACCESS_KEY_ID="$S3_ID" AWS_SECRET_ACCESS_KEY="$S3_SECRET")
		;;
	sftp)
		rm -rf "$WORK/sftp-root/repo"
		url="sftp://$(id -un)@$NS_IP:$SFTP_PORT$WORK/sftp-root/repo"
		env=(CAIRN_SFTP_KEY="$SSH_DIR/id_ed25519" CAIRN_SFTP_KNOWN_HOSTS="$SSH_DIR/known_hosts")
		;;
	esac
	set_case "$case"
	local cache=$WORK/home
	rm -rf "$cache" && mkdir -p "$cache"
	env "${env[@]}" HOME="$cache" XDG_CACHE_HOME="$cache/.cache" "$bin" init -q -r "$url" >/dev/null 2>"$WORK/init.err" ||
		{ cat "$WORK/init.err" >&2; die "init of $url failed"; }
	sync
	local sent0
	sent0=$(sent_bytes)
	# shellcheck disable=SC2086 # BACKUP_ARGS are words
	env "${env[@]}" HOME="$cache" XDG_CACHE_HOME="$cache/.cache" \
		/usr/bin/time -v -o "$WORK/time.txt" "$bin" backup -q -r "$url" $BACKUP_ARGS "$DATA" \
		>/dev/null 2>"$WORK/backup.err" || { cat "$WORK/backup.err" "$WORK/time.txt" >&2; die "backup to $url failed"; }
	local wall rss mbs sent
	sent=$((($(sent_bytes) - sent0) / 1000000))
	wall=$(wall_s "$WORK/time.txt")
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
	mbs=$(awk -v b="$DATA_BYTES" -v w="$wall" 'BEGIN { printf "%.1f", b / 1e6 / w }')
	echo "$name,$backend,$case,$rep,$wall,$mbs,$rss,$sent" >>"$CSV"
	log "$name $backend $case rep $rep: ${wall} s, $mbs MB/s, max RSS $rss KiB, $sent MB sent"
	[[ $backend == sftp ]] && rm -rf "$WORK/sftp-root/repo"
	return 0
}

for ((rep = 1; rep <= REPS; rep++)); do
	for backend in $BACKENDS; do
		for case in cap delay; do
			for spec in $CAIRNS; do
				run_one "${spec%%=*}" "${spec#*=}" "$backend" "$case" "$rep"
			done
		done
	done
done
[[ -n $MOTO_PID ]] && { kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null || true; }

# ------------------------------------------------------------ table

echo "## First backup of mixed-$SIZE_MB ($((DATA_BYTES / 1000000)) MB), $RATE, RTT $((2 * DELAY_MS)) ms in case delay, $REPS reps (median)"
echo
echo "| binary | backend | case | wall s | MB/s | delay/cap | >= 0.8 |"
echo "|---|---|---|---:|---:|---:|---|"
awk -F, -v bytes="$DATA_BYTES" 'NR > 1 { k = $1 SUBSEP $2 SUBSEP $3; n[k]++; w[k, n[k]] = $5; order[k] = $1 "," $2 "," $3 }
function median(k,    i, j, t, a, m) {
	m = n[k]; for (i = 1; i <= m; i++) a[i] = w[k, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
	for (k in n) med[k] = median(k)
	for (k in n) {
		split(k, p, SUBSEP)
		if (p[3] != "cap") continue
		for (c = 1; c <= 2; c++) {
			kk = p[1] SUBSEP p[2] SUBSEP (c == 1 ? "cap" : "delay")
			if (!(kk in med)) continue
			mbs = bytes / 1e6 / med[kk]
			ratio = ""; verdict = ""
			if (c == 2) { r = med[k] / med[kk]; ratio = sprintf("%.2f", r); verdict = r >= 0.8 ? "PASS" : "FAIL" }
			printf "| %s | %s | %s | %.1f | %.1f | %s | %s |\n", p[1], p[2], (c == 1 ? "cap" : "delay"), med[kk], mbs, ratio, verdict
		}
	}
}' "$CSV" | sort -t'|' -k2,2 -k3,3 -k4,4
echo
echo "(every run: $CSV; link log: $WORK/link.log)"
