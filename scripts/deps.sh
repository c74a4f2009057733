#!/bin/sh
# Installs the Debian packages intake needs to build and test, if any are missing.
# Idempotent: silent and fast when everything is present. Not root: prints the
# exact command to run and fails.
set -eu

PKGS="build-essential pkg-config libev-dev libcjson-dev libssl-dev
      python3 python3-pytest python3-websockets socat clang libclang-rt-14-dev"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "intake: missing Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "intake: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when an install fails on stale ones.
if ! apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
