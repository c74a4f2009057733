#!/bin/sh
# Installs what intake needs to build and test, if anything is missing:
# Debian packages with apt-get, and the browser test's npm packages (pinned in
# tests/browser/package-lock.json) with npm ci. Idempotent: silent and fast
# when everything is present. Not root: prints the exact command and fails.
set -eu
cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config libev-dev libcjson-dev libssl-dev
      python3 python3-pytest python3-websockets socat curl clang libclang-rt-14-dev
      libsystemd-dev mandoc
      chromium nodejs nginx libnginx-mod-stream libclamav-dev clamav clamav-daemon clamdscan clamav-testfiles
      valgrind strace zip
      libnats-dev nats-server rclone jq"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
# npm: Debian's package, unless a newer npm is already on the machine.
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "intake: missing Debian packages:$missing" >&2
        echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
        exit 1
    fi
    echo "intake: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    # nginx and clamav-daemon would start system services on install: the
    # tests start their own, and a service failing to start (port 80 taken,
    # no ClamAV database) must not fail the install. policy-rc.d says no.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi
    trap '[ -n "$policy" ] && rm -f "$policy"' EXIT
    # Refresh the package lists only when an install fails on stale ones.
    if ! apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    fi
fi

if [ ! -f tests/browser/node_modules/playwright-core/package.json ] ||
   [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    echo "intake: installing the browser test's npm packages" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
