#!/bin/sh
# bench.sh: issue 12's first figure. One large raw TCP upload through intaked
# (scanner off, 1 worker; the intake CLI sends it with sendfile and waits for
# STATUS, which comes after sha256 + fsync + rename + directory fsync) next
# to `socat -b 1M` receiving the same file into a file on the same disk,
# then `sync FILE` (an fsync), in the same run. Also the same upload over
# TLS (listen_tcp ... tls, intake --tls) next to plain raw TCP.
#   scripts/bench.sh [SIZE_MIB] [RUNS] [tcp]   (defaults: 1024 MiB, 3 runs;
#                                   BENCH_QUICK=1: 256 MiB, 2 runs;
#                                   tcp: no TLS column)
# Every run starts with `sync`, so no run pays for the previous one's pages.
set -eu
cd "$(dirname "$0")/.."
case "${BENCH_QUICK:-0}" in 0|"") Q=0 ;; *) Q=1 ;; esac
if [ "$Q" = 1 ]; then SIZE_MIB=${1:-256}; RUNS=${2:-2}; else SIZE_MIB=${1:-1024}; RUNS=${2:-3}; fi
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
log_level error
pid_file $TMP/intaked.pid
spool_dir $TMP/spool
accept_dir $TMP/accepted
quarantine_dir $TMP/quarantine
CONF
"$BUILD/intaked" -c "$TMP/intake.conf" 2>"$TMP/error.log" &
PID=$!
sleep 0.5
WORKER=$(pgrep -P "$PID" | head -1)

echo
echo "== figure 1: a raw TCP upload next to socat (${SIZE_MIB} MiB, $RUNS runs$( [ "$Q" = 1 ] && echo ', BENCH_QUICK: quick settings'))"
echo "   intaked: intake CLI (sendfile) -> STATUS (sha256 + fsync + rename + dir fsync), scanner off, 1 worker"
echo "   baseline: socat -b 1M TCP-LISTEN -> CREATE:file, then sync FILE; same disk, same run"
echo "   machine: load average $(cut -d' ' -f1-3 /proc/loadavg)$( [ -r /proc/pressure/io ] && head -1 /proc/pressure/io | sed 's/.*avg10=\([^ ]*\).*/, I\/O pressure \1%/')"
printf '%-5s %14s %14s %8s' "run" "socat MiB/s" "intaked MiB/s" "ratio"
[ "$ONLY" = tcp ] || printf ' %12s %8s' "TLS MiB/s" "TLS/TCP"
echo
RATIOS=""; TLSR=""; OURS=""; BASE=""; TLSV=""
for i in $(seq "$RUNS"); do
    # Baseline: socat into a file on the same disk, then fsync it.
    P=$(port)
    socat -b 1048576 -u "TCP-LISTEN:$P,reuseaddr" "CREATE:$TMP/base.bin" &
    L=$!
    sleep 0.2
    sync   # start each run with no dirty pages from the one before
    t0=$(now)
    socat -b 1048576 -u "FILE:$TMP/src.bin" "TCP:127.0.0.1:$P"
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
    r=$(awk -v a="$ours" -v b="$base" 'BEGIN{printf "%.2f", a/b}')
    RATIOS="$RATIOS $r"; OURS="$OURS $ours"; BASE="$BASE $base"
    printf '%-5s %14s %14s %8s' "#$i" "$base" "$ours" "$r"

    if [ "$ONLY" != tcp ]; then
        # The same over TLS (AES-GCM): decrypted into the worker's buffer, no splice.
        sync
        t0=$(now)
        "$BUILD/intake" -q --cacert "$TMP/ca.pem" "127.0.0.1:$TLS" "$TMP/src.bin"
        t1=$(now)
        tls=$(rate "$t0" "$t1")
        rm -f "$TMP/accepted/"*
        tr=$(awk -v a="$tls" -v b="$ours" 'BEGIN{printf "%.2f", a/b}')
        TLSR="$TLSR $tr"; TLSV="$TLSV $tls"
        printf ' %12s %8s' "$tls" "$tr"
    fi
    echo
done
HWM=$(awk '/VmHWM/{print $2" "$3}' "/proc/$WORKER/status")
# median (min-max) of a list of numbers
stats() { echo "$1" | tr ' ' '\n' | grep . | sort -n |
    awk -v f="$2" '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2;
        printf f " (" f "-" f ")", m, v[1], v[NR]}'; }
med() { stats "$1" "%.0f" | cut -d' ' -f1; }
echo "figure: ${SIZE_MIB} MiB raw TCP through intaked: $(med "$OURS") MiB/s (baseline socat -b 1M + fsync: $(med "$BASE") MiB/s, ratio $(stats "$RATIOS" %.2f)) median (range) of $RUNS runs  [issue 12 goal: >= 0.9]"
[ "$ONLY" = tcp ] || echo "figure: ${SIZE_MIB} MiB raw TCP over TLS: $(med "$TLSV") MiB/s (baseline plain raw TCP, same daemon: $(med "$OURS") MiB/s, ratio $(stats "$TLSR" %.2f))  [issue 9 goal: >= 0.7]"
echo "worker peak RSS (VmHWM) after these uploads: $HWM"
