#!/bin/sh
# bench.sh: one large raw TCP upload through intaked next to socat receiving
# the same file into a file, measured in the same run on the same disk.
#   scripts/bench.sh [SIZE_MIB] [RUNS]     (defaults: 1024 MiB, 3 runs)
# Both sides end with the data fsynced: intake only answers STATUS after
# fsync + rename + directory fsync, so the baseline runs `sync FILE` too.
set -eu
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
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

TCP=$(port); WS=$(port)
cat > "$TMP/intake.conf" <<CONF
workers 1
listen_tcp 127.0.0.1:$TCP
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
    printf '%-34s %10s\n' "socat -b256K into a file (+fsync) #$i" "$base"
    printf '%-34s %10s %9s%%\n' "intaked raw TCP (intake CLI) #$i" "$ours" \
        "$(awk -v a="$ours" -v b="$base" 'BEGIN{printf "%.0f", 100*a/b}')"
done
HWM=$(awk '/VmHWM/{print $2" "$3}' "/proc/$WORKER/status")
echo
echo "worker peak RSS (VmHWM) after $RUNS uploads of ${SIZE_MIB} MiB: $HWM"

# WebSocket next to raw TCP through the same kind of daemon.
kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""
/usr/bin/python3 scripts/bench_ws.py "$SIZE_MIB" "$RUNS"

# Scanning: uploads/s with the builtin scanner next to clamscan per file,
# and FILDES next to INSTREAM for one 100 MiB file.
/usr/bin/python3 scripts/bench_scan.py 2000 32
