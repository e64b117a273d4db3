#!/bin/bash
# services.redis_owner: a private Redis started with SM_SERVICE_OWNER=PID
# goes, and its directory with it, once PID is gone without stopping it
# (what a suite killed at its ctest timeout leaves: nothing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/sm-redis-owner.XXXXXX)
rmdir "$dir"
sleep 60 &
owner=$!
SM_SERVICE_OWNER=$owner "$here/redis-instance" start "$dir" >/dev/null
pid=$(cat "$dir/redis.pid")
kill -0 "$pid" || { echo "FAIL: redis-server did not start"; exit 1; }
sleep 1.5
kill -0 "$pid" || { echo "FAIL: redis-server ended while its owner runs"; exit 1; }
kill "$owner"
wait "$owner" 2>/dev/null || true
for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    echo "FAIL: redis-server $pid outlived its owner by 8 s"
    "$here/redis-instance" stop "$dir" >/dev/null
    exit 1
fi
for _ in $(seq 20); do [ -e "$dir" ] || break; sleep 0.1; done
[ ! -e "$dir" ] || { echo "FAIL: $dir left behind"; exit 1; }
echo "ok: redis-server $pid ended with its owner, $dir removed"
