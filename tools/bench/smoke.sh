#!/bin/bash
# ctest bench.smoke: every safemessenger-bench scenario at a tiny size
# against the real server (conf/bench.conf with port 0, in a temporary
# directory), checking that each JSON report parses and holds sane values,
# and that the server then exits 0 with no sanitizer report in its log.
# Usage: smoke.sh BENCH SERVER PLUGIN_DIR BENCH_CONF
set -u
bench=$1 server=$2 plugins=$3 conf=$4
dir=$(mktemp -d /tmp/smbench-smoke.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
    echo "bench.smoke: FAIL: $*" >&2
    echo "--- server log (tail)" >&2
    tail -n 30 "$dir/server.log" >&2
    exit 1
}

sed -e 's|^\( *port = \).*|\10;|' \
    -e "s|^\( *key_file = \).*|\1\"$dir/key.pem\";|" \
    -e "s|^\( *database = \).*|\1\"$dir/bench.db\";|" \
    -e "s|^\( *dir = \).*|\1\"$plugins\";|" \
    "$conf" > "$dir/bench.conf" || fail "cannot write the config"
grep -q '^ *port = 0;' "$dir/bench.conf" || fail "config: port not replaced"
grep -q "$dir/key.pem" "$dir/bench.conf" || fail "config: key_file not replaced"

"$server" -c "$dir/bench.conf" --port-file "$dir/port" > "$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    [ -s "$dir/port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "server exited at startup"
    sleep 0.1
done
[ -s "$dir/port" ] || fail "server did not write its port file in 30 s"
url="ws://127.0.0.1:$(cat "$dir/port")/"

# run NAME CHECK ARGS...: runs the bench, then the python CHECK on the
# report r (a dict); CHECK is a boolean expression.
run() {
    local name=$1 check=$2
    shift 2
    echo "== $name: $*"
    "$bench" "$@" --url "$url" --server-pid "$pid" --warmup 0.3 --quiet > "$dir/$name.json" 2> "$dir/$name.err"
    local rc=$?
    [ $rc -eq 0 ] || { cat "$dir/$name.err" "$dir/$name.json" >&2; fail "$name: exit status $rc"; }
    python3 - "$dir/$name.json" "$check" <<'EOF' || fail "$name: report check failed"
import json, sys
r = json.load(open(sys.argv[1]))
def threads_ok(t):
    # Every group, a total that is their sum, and the server's worker
    # threads by name (bench.conf has 2 workers).
    groups = ("sm-logic", "sm-io", "sm-worker", "other")
    return (all(t[g] >= 0 for g in groups) and abs(sum(t[g] for g in groups) - t["total"]) < 1e-6
            and {"sm-worker-0", "sm-worker-1"} <= set(t["threads"]))
res = r["results"]
ok = (r["ok"] is True and r["errors"]["total"] == 0 and r["interrupted"] is False
      and r["verification"]["verify_one_in"] >= 1 and eval(sys.argv[2]))
print(json.dumps(res, sort_keys=True)[:400])
sys.exit(0 if ok else 1)
EOF
}

run handshakes 'res["cpu"]["server_percent"] > 0 and res["handshakes"] > 0 and res["handshakes_per_s"] > 0 and res["latency_ms"]["p50"] > 0 and res["latency_ms"]["p99"] >= res["latency_ms"]["p50"]' \
    handshakes --connections 4 --duration 1.5
run logins 'res["logins"] > 0 and res["logins_per_s"] > 0 and res["latency_ms"]["p50"] > 0 and r["setup"]["ready"] == 5 and all(res["bystander"][p]["replies"] > 50 and res["bystander"][p]["latency_ms"]["p99"] > 0 for p in ("alone", "storm")) and res["bystander"]["rounds"] == 2 and res["bystander"]["p99_ratio"] > 0' \
    logins --connections 4 --duration 1.5 --bystander-rounds 2
run fanout 'res["deliveries"] > 0 and res["deliveries_per_s"] > 0 and res["messages_per_s"] > 0 and res["latency_ms"]["samples"] > 0 and res["latency_ms"]["p50"] > 0 and res["latency_ms"]["max"] >= res["latency_ms"]["p99"] and res["arrival_latency_ms"]["samples"] == res["latency_ms"]["samples"] and 0 < res["arrival_latency_ms"]["p50"] <= res["latency_ms"]["p50"] and res["arrival_latency_ms"]["max"] <= res["latency_ms"]["max"] and res["undelivered"] == 0 and r["verification"]["deliveries_unverified"] == 0 and threads_ok(res["cpu"]["server_threads_s"])' \
    fanout --rooms 2 --members 4 --senders 2 --duration 1.5
run fanout_sampled 'res["deliveries"] > 0 and res["latency_ms"]["samples"] > 0 and res["undelivered"] == 0 and r["verification"]["deliveries_verified"] > 0 and r["verification"]["deliveries_unverified"] > r["verification"]["deliveries_verified"]' \
    fanout --rooms 1 --members 6 --senders 2 --rate 200 --verify-one-in 3 --duration 1.5
run fanout_readers 'res["deliveries"] > 0 and res["undelivered"] == 0 and len(res["deliveries_by_reader"]) == 3 and min(res["deliveries_by_reader"]) > 0 and sum(res["deliveries_by_reader"]) == res["deliveries"] and res["latency_ms"]["samples"] == res["deliveries"] and res["arrival_latency_ms"]["samples"] == res["latency_ms"]["samples"] and 0 < res["arrival_latency_ms"]["p50"] <= res["latency_ms"]["p50"] and res["arrival_latency_ms"]["max"] <= res["latency_ms"]["max"] and r["verification"]["deliveries_verified"] >= res["deliveries"] and r["teardown"]["unclosed"] == 0 and r["parameters"]["readers"] == 3' \
    fanout --rooms 2 --members 6 --senders 2 --readers 3 --duration 1.5
run private 'res["online"]["messages_per_s"] > 0 and res["offline"]["messages_per_s"] > 0 and res["online"]["deliveries_per_s"] > 0 and res["online"]["delivery_latency_ms"]["p50"] > 0 and res["offline"]["rtt_ms"]["p50"] > 0 and res["online"]["wrong_online_flag"] == 0 and res["offline"]["wrong_online_flag"] == 0' \
    private --senders 2 --online 2 --offline 2 --duration 2
run idle 'res["sessions"] == 5 and res["alive_at_end"] == 5 and res["rss_before_kib"] > 0 and res["rss_after_kib"] > 0 and res["rss_end_kib"] > 0' \
    idle --connections 5 --duration 1

# --url repeated (the nodes of a cluster): connections go to the targets
# in turn. The same server twice here, so that every scenario still works:
# the spread is what is checked.
echo "== two targets"
"$bench" private --senders 2 --online 2 --offline 2 --duration 1 --warmup 0.3 --quiet \
    --url "$url" --url "ws://127.0.0.1:$(cat "$dir/port")/" > "$dir/two.json" 2> "$dir/two.err" \
    || { cat "$dir/two.err" >&2; fail "two targets: exit status $?"; }
python3 - "$dir/two.json" "$url" <<'EOF2' || fail "two targets: report check failed"
import json, sys
r = json.load(open(sys.argv[1]))
per = r["traffic"]["connections_per_target"]
ok = (r["ok"] is True and r["targets"] == [sys.argv[2], sys.argv[2]] and len(per) == 2
      and sum(per) == r["traffic"]["connections_opened"] and abs(per[0] - per[1]) <= 1 and min(per) > 0)
print(r["targets"], per)
sys.exit(0 if ok else 1)
EOF2
targets=()
for _ in $(seq 17); do targets+=(--url "$url"); done
"$bench" handshakes "${targets[@]}" --duration 1 > /dev/null 2>&1
[ $? -eq 2 ] || fail "17 --url were not refused"
"$bench" handshakes --url "$url" --url ws://10.0.0.1:8765/ --duration 1 > /dev/null 2>&1
[ $? -eq 2 ] || fail "a second, non-loopback target was not refused"
"$bench" handshakes --url "$url" --url "ws://[::1]:8765/" --duration 1 > /dev/null 2>&1
[ $? -eq 2 ] || fail "IPv4 and IPv6 targets together were not refused"

"$bench" private --readers 2 --url "$url" --duration 1 > /dev/null 2>&1
[ $? -eq 2 ] || fail "--readers outside fanout was not refused"

# The bench refuses anything but loopback and stops within its bounds.
"$bench" handshakes --url ws://10.0.0.1:8765/ --duration 1 > /dev/null 2>&1
[ $? -eq 2 ] || fail "a non-loopback target was not refused"
"$bench" handshakes --url "$url" --duration 301 > /dev/null 2>&1
[ $? -eq 2 ] || fail "--duration above the cap was not refused"

kill -0 "$pid" 2>/dev/null || fail "server died during the runs"

# The server must stop cleanly: exit 0 on SIGTERM (under the sanitizers
# that also means no leak at exit), within 10 s, and its whole log must be
# readable and free of sanitizer reports.
kill -TERM "$pid"
( sleep 10; kill -KILL "$pid" 2>/dev/null ) &
watchdog=$!
wait "$pid"
status=$?
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
pid=
[ $status -eq 0 ] || fail "server exited with status $status after SIGTERM (137: killed after 10 s)"
grep -a -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$dir/server.log"
case $? in
    0) fail "sanitizer report in the server log" ;;
    1) ;;
    *) fail "cannot read the server log" ;;
esac
echo "bench.smoke: all scenarios passed"
