#!/bin/sh
# bench.sh: one large raw TCP upload through intaked next to socat receiving
# the same file into a file, measured in the same run on the same disk, and
# the same upload over TLS (listen_tcp ... tls, intake --tls) next to plain.
#   scripts/bench.sh [SIZE_MIB] [RUNS] [tcp]   (defaults: 1024 MiB, 3 runs;
#                                              tcp: stop after the raw TCP table)
# Both sides end with the data fsynced: intake only answers STATUS after
# fsync + rename + directory fsync, so the baseline runs `sync FILE` too.
set -eu
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
ONLY=${3:-}
BUILD=${BUILD:-build}
command -v socat >/dev/null || { echo "bench: socat missing (make deps)" >&2; exit 1; }
[ -x "$BUILD/intaked" ] || { echo "bench: run make first" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/intake-bench.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
now() { date +%s.%N; }
rate() { awk -v s="$SIZE_MIB" -v a="$1" -v b="$2" 'BEGIN{printf "%.0f", s/(b-a)}'; }

echo "bench: writing a ${SIZE_MIB} MiB test file in $TMP"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$TMP/src.bin"

# A throwaway CA and server certificate (P-256) for the TLS listener.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=intake bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$TMP/srv.key" -out "$TMP/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$TMP/srv.ext"
openssl x509 -req -in "$TMP/srv.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -set_serial 1 \
    -days 1 -extfile "$TMP/srv.ext" -out "$TMP/srv.pem" 2>/dev/null

TCP=$(port); WS=$(port); TLS=$(port)
cat > "$TMP/intake.conf" <<CONF
workers 1
listen_tcp 127.0.0.1:$TCP
listen_tcp 127.0.0.1:$TLS tls
tls_certificate $TMP/srv.pem
tls_certificate_key $TMP/srv.key
listen_ws 127.0.0.1:$WS
scanner off
max_file_size 64G
min_free_space 0
log_level warn
pid_file $TMP/intaked.pid
spool_dir $TMP/spool
accept_dir $TMP/accepted
quarantine_dir $TMP/quarantine
CONF
"$BUILD/intaked" -c "$TMP/intake.conf" 2>"$TMP/error.log" &
PID=$!
sleep 0.5
WORKER=$(pgrep -P "$PID" | head -1)

printf '\n%-34s %10s %10s\n' "run" "MiB/s" "ratio"
for i in $(seq "$RUNS"); do
    # Baseline: socat into a file on the same disk, then fsync it.
    P=$(port)
    socat -b 262144 -u "TCP-LISTEN:$P,reuseaddr" "CREATE:$TMP/base.bin" &
    L=$!
    sleep 0.2
    sync   # start each run with no dirty pages from the one before
    t0=$(now)
    socat -b 262144 -u "FILE:$TMP/src.bin" "TCP:127.0.0.1:$P"
    wait "$L"
    sync "$TMP/base.bin"
    t1=$(now)
    base=$(rate "$t0" "$t1")
    rm -f "$TMP/base.bin"

    # intaked: the CLI waits for STATUS, i.e. until the file is durable in accept_dir.
    sync
    t0=$(now)
    "$BUILD/intake" -q "127.0.0.1:$TCP" "$TMP/src.bin"
    t1=$(now)
    ours=$(rate "$t0" "$t1")
    rm -f "$TMP/accepted/"*

    # The same over TLS (AES-GCM): decrypted into the worker's buffer, no splice.
    sync
    t0=$(now)
    "$BUILD/intake" -q --cacert "$TMP/ca.pem" "127.0.0.1:$TLS" "$TMP/src.bin"
    t1=$(now)
    tls=$(rate "$t0" "$t1")
    rm -f "$TMP/accepted/"*
    printf '%-34s %10s\n' "socat -b256K into a file (+fsync) #$i" "$base"
    printf '%-34s %10s %9s%%\n' "intaked raw TCP (intake CLI) #$i" "$ours" \
        "$(awk -v a="$ours" -v b="$base" 'BEGIN{printf "%.0f", 100*a/b}')"
    printf '%-34s %10s %9s%%  of raw TCP (goal >= 70%%)\n' "intaked raw TCP over TLS #$i" "$tls" \
        "$(awk -v a="$tls" -v b="$ours" 'BEGIN{printf "%.0f", 100*a/b}')"
done
HWM=$(awk '/VmHWM/{print $2" "$3}' "/proc/$WORKER/status")
echo
echo "worker peak RSS (VmHWM) after $RUNS uploads of ${SIZE_MIB} MiB: $HWM"
[ "$ONLY" = tcp ] && exit 0

# WebSocket next to raw TCP through the same kind of daemon.
kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""
/usr/bin/python3 scripts/bench_ws.py "$SIZE_MIB" "$RUNS"

# Scanning: uploads/s with the builtin scanner next to clamscan per file,
# and FILDES next to INSTREAM for one 100 MiB file.
/usr/bin/python3 scripts/bench_scan.py 2000 32
