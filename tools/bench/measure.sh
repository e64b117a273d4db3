#!/bin/bash
# Runs one benchmark several times, each against a fresh server, and
# prints the medians (docs/BENCHMARKS.md shows how it was used).
#
# Usage: tools/bench/measure.sh BUILD_DIR OUT_DIR NAME RUNS SCENARIO [bench options...]
#
# BUILD_DIR: a Release build (-DCMAKE_BUILD_TYPE=Release -DSM_SANITIZE=OFF).
# SM_SERVER_BUILD=DIR takes the server and plugins from another build (to
# compare a server change with the same bench); SM_BENCH_CONF=FILE uses
# another configuration instead of conf/bench.conf. SM_BENCH_ARGON2=shipped
# replaces bench.conf's weak argon2id cost with the parameters shipped in
# conf/safemessenger.conf (argon2_memory_kib, argon2_passes, argon2_lanes;
# allow_weak_argon2 = false), every other bench setting kept: what a login
# storm costs on a production server (docs/BENCHMARKS.md (b)).
# For each run: a new data directory and database, conf/bench.conf with
# port 0, the server started, `safemessenger-bench SCENARIO options
# --server-pid PID` run (report in OUT_DIR/NAME.<i>.json, progress in
# .err), the server stopped. Before the runs, the ceiling the scenario is
# compared with is measured in the same session (OUT_DIR/NAME.ceiling.txt):
# `openssl speed -seconds 3 -multi 2 rsa2048` for handshakes and logins,
# `openssl speed -seconds 3 -bytes 1024 -evp aes-256-gcm` for the others.
# SM_BENCH_SYSCALLS=SECONDS (needs perf and the syscalls tracepoints, i.e.
# root or perf_event_paranoid -1): once the bench reports its measure
# phase, counts the server's sendto/write/writev calls for that many
# seconds (perf stat, all its threads) and the deliveries in the same
# window (safemessenger_deliveries_total from /metrics), in
# OUT_DIR/NAME.<i>.syscalls; the summary adds syscalls per delivery.
# SM_BENCH_POSTGRESQL=CONNINFO runs the server on PostgreSQL (issue 14):
# each run in a new schema of that database (the role must be allowed to
# create one), storage.backend "postgresql" instead of the SQLite file;
# pg_stat_database's commits and rows written from the server's start to
# the bench's end go to OUT_DIR/NAME.<i>.pgstat, and the summary divides
# them by the messages the report counts (private: both phases; the
# setup's registrations, one commit each, are included). The schema is
# dropped after the run.
# SM_BENCH_REDIS=URL (needs SM_BENCH_POSTGRESQL) runs the server as a
# cluster node on that Redis (a redis:// URL; a private one:
# tests/services/redis-instance start DIR), and SM_BENCH_NODES=N (2..8)
# runs N such nodes on this machine (issue 14): each a server on the
# run's schema, with cluster.node n1..nN and a prefix of the run's own,
# started one after the other; the bench gets one --url per node (its
# connections go to them in turn) and --server-pid of node 1 (its CPU
# figures are node 1's alone); the server logs are NAME.<i>.server.log
# (node 1) and NAME.<i>.server<n>.log.
# SM_BENCH_CEILING=0 skips the ceiling (tools/bench/compare-io-threads.sh
# calls this script once per run).
#
# Per-thread CPU of the server: right before and right after each bench
# run, each thread's name and utime + stime (/proc/PID/task/*/comm and
# stat) go to OUT_DIR/NAME.<i>.threads-before / -after ("tid ticks comm"
# lines after a "pid PID" line); the summary gives the whole run's CPU
# seconds per thread group: sm-logic, sm-io (sm-io-*), sm-worker
# (sm-worker-*), other (a server whose threads have no such names yet:
# its main thread counts as sm-logic). The bench's report has the same
# groups over the measured interval alone (cpu.server_threads_s), and for
# reports with deliveries (fanout; private: its online half) the summary
# adds the logic thread's and the whole server's CPU microseconds per
# delivery over that interval and their ratio. Medians and each run's
# figures also go to OUT_DIR/NAME.summary.json.
set -u
[ $# -ge 5 ] || { sed -n '2,50p' "$0" >&2; exit 2; }
nodes=${SM_BENCH_NODES:-1}
case $nodes in
    1) ;;
    [2-8]) [ -n "${SM_BENCH_REDIS:-}" ] \
               || { echo "SM_BENCH_NODES needs SM_BENCH_REDIS" >&2; exit 2; } ;;
    *) echo "SM_BENCH_NODES is 1..8" >&2; exit 2 ;;
esac
[ -z "${SM_BENCH_REDIS:-}" ] || [ -n "${SM_BENCH_POSTGRESQL:-}" ] \
    || { echo "SM_BENCH_REDIS (a cluster) needs SM_BENCH_POSTGRESQL" >&2; exit 2; }
build=$1 out=$2 name=$3 runs=$4 scenario=$5
shift 5
src=$(cd "$(dirname "$0")/../.." && pwd)
server_build=${SM_SERVER_BUILD:-$build}
# The generated configuration lives elsewhere: paths in it must be absolute.
build=$(cd "$build" && pwd) && server_build=$(cd "$server_build" && pwd) \
    || { echo "no build directory $build / $server_build" >&2; exit 2; }
conf=${SM_BENCH_CONF:-$src/conf/bench.conf}
mkdir -p "$out"
argon2=()
case ${SM_BENCH_ARGON2:-bench} in
    bench) ;;
    shipped)
        shipped() {
            sed -n "s/^ *$1 = \([0-9]*\);.*/\1/p" "$src/conf/safemessenger.conf" | head -n 1
        }
        m=$(shipped argon2_memory_kib) t=$(shipped argon2_passes) l=$(shipped argon2_lanes)
        [ -n "$m" ] && [ -n "$t" ] && [ -n "$l" ] \
            || { echo "no argon2 parameters in conf/safemessenger.conf" >&2; exit 2; }
        argon2=(-e "s|^\( *allow_weak_argon2 = \).*|\1false;|"
                -e "/^ *argon2_lanes = /d"
                -e "s|^\( *argon2_memory_kib = \).*|\1$m;|"
                -e "s|^\( *argon2_passes = \).*|\1$t;\n  argon2_lanes = $l;|")
        echo "argon2id as shipped: m = $m KiB, t = $t, lanes = $l" >&2 ;;
    *) echo "SM_BENCH_ARGON2 is 'bench' or 'shipped'" >&2; exit 2 ;;
esac
ulimit -n "$(ulimit -Hn)"

rm -f "$out/$name.ceiling.txt"
case ${SM_BENCH_CEILING:-1}:$scenario in
    0:*) ;;
    *:handshakes|*:logins) openssl speed -seconds 3 -multi 2 rsa2048 > "$out/$name.ceiling.txt" 2>&1 ;;
    *) openssl speed -seconds 3 -bytes 1024 -evp aes-256-gcm > "$out/$name.ceiling.txt" 2>&1 ;;
esac

pid=
others=()   # the other nodes' pids (SM_BENCH_NODES)
data=
bench=
stop_server() {
    # An interrupted script leaves no bench behind either (it reports and
    # exits on SIGTERM).
    if [ -n "$bench" ] && kill -0 "$bench" 2>/dev/null; then
        kill -TERM "$bench"
        wait "$bench" 2>/dev/null
    fi
    bench=
    local p
    for p in $pid "${others[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p"
            for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null
    done
    others=()
    pid=
    [ -n "$data" ] && rm -rf "$data"
    data=
}
trap stop_server EXIT
# A signal must end the script through its EXIT trap, which stops the server.
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# "pid PID", then one "tid ticks comm" line per thread of PID (ticks:
# utime + stime, fields 14 and 15 of stat counted after the last ')').
thread_ticks() {
    local t comm stat f
    echo "pid $1"
    for t in /proc/"$1"/task/*; do
        read -r comm < "$t/comm" 2>/dev/null || continue
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        read -ra f <<< "${stat##*) }"
        echo "${t##*/} $(( f[11] + f[12] )) $comm"
    done
}

deliveries() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '/^safemessenger_deliveries_total/ { print $2 }'
}

# Waits for the measure phase, then counts for SM_BENCH_SYSCALLS seconds.
count_syscalls() {
    local port=$1 base=$2
    for _ in $(seq 1200); do
        grep -q '] measure ' "$base.err" 2>/dev/null && break
        kill -0 "$bench" 2>/dev/null || return
        sleep 0.5
    done
    local d0 d1
    d0=$(deliveries "$port")
    perf stat -x, -e syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev \
        -p "$pid" -o "$base.perf" -- sleep "$SM_BENCH_SYSCALLS" 2>/dev/null
    d1=$(deliveries "$port")
    awk -F, -v d="$(( ${d1:-0} - ${d0:-0} ))" '
        /syscalls:sys_enter/ { n[$3] = $1; total += $1 }
        END {
            printf "deliveries %d\n", d
            for (k in n) printf "%s %d\n", k, n[k]
            printf "syscalls_per_delivery %.4f\n", (d > 0 ? total / d : -1)
        }' "$base.perf" > "$base.syscalls"
}

# pg_stat_database's counters of the benchmark's database, one line.
pg_counters() {
    psql "$SM_BENCH_POSTGRESQL" -AtF' ' -c "SELECT xact_commit, xact_rollback, tup_inserted,
        tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()"
}

for i in $(seq "$runs"); do
    data=$(mktemp -d /tmp/smbench-run.XXXXXX)
    storage_line="s|^\( *database = \).*|\1\"$data/bench.db\";|"
    if [ -n "${SM_BENCH_POSTGRESQL:-}" ]; then
        schema=smbench_$$_$i
        psql "$SM_BENCH_POSTGRESQL" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" \
            || { echo "cannot create schema $schema" >&2; exit 1; }
        storage_line="s|^\( *database = \).*|  backend = \"postgresql\"; postgresql = \"$SM_BENCH_POSTGRESQL options='-c search_path=$schema'\";|"
    fi
    sed -e 's|^\( *port = \).*|\10;|' \
        -e "s|^\( *key_file = \).*|\1\"$out/server_key.pem\";|" \
        -e "$storage_line" \
        -e "s|^\( *dir = \).*|\1\"$server_build/plugins\";|" \
        "${argon2[@]}" "$conf" > "$data/bench.conf"
    if [ ${#argon2[@]} -gt 0 ]; then
        grep -q "^ *argon2_memory_kib = $m;" "$data/bench.conf" \
            && grep -q "^ *argon2_passes = $t;" "$data/bench.conf" \
            && grep -q "^ *allow_weak_argon2 = false;" "$data/bench.conf" \
            || { echo "$conf: argon2 settings not replaced" >&2; exit 2; }
        cp "$data/bench.conf" "$out/$name.conf"
    fi
    urls=()
    for n in $(seq "$nodes"); do
        nconf=$data/bench.conf log=$out/$name.$i.server.log
        if [ -n "${SM_BENCH_REDIS:-}" ]; then
            # The first node makes the schema's tables before the others start.
            nconf=$data/bench$n.conf log=$out/$name.$i.server$n.log
            [ "$n" = 1 ] && log=$out/$name.$i.server.log
            sed -e "s|^\( *key_file = .*\)|\1\n  admin_socket = \"$data/admin$n.sock\";|" \
                "$data/bench.conf" > "$nconf"
            printf 'cluster: { node = "n%d"; redis = "%s"; prefix = "smbench:%d:%d:"; };\n' \
                "$n" "$SM_BENCH_REDIS" "$$" "$i" >> "$nconf"
        fi
        rm -f "$data/port"
        "$server_build/safemessenger-server" -c "$nconf" --port-file "$data/port" > "$log" 2>&1 &
        if [ "$n" = 1 ]; then pid=$!; else others+=($!); fi
        for _ in $(seq 300); do [ -s "$data/port" ] && break; sleep 0.1; done
        [ -s "$data/port" ] || { echo "server $n did not start (log: $log)" >&2; exit 1; }
        urls+=(--url "ws://127.0.0.1:$(cat "$data/port")/")
        [ "$n" = 1 ] && first_port=$(cat "$data/port")
    done
    sleep 1   # let the server settle (idle measures its RSS first)
    [ -n "${SM_BENCH_POSTGRESQL:-}" ] && pg_counters > "$out/$name.$i.pgstat-before"
    thread_ticks "$pid" > "$out/$name.$i.threads-before"
    "$build/tools/bench/safemessenger-bench" "$scenario" "$@" \
        "${urls[@]}" --server-pid "$pid" \
        > "$out/$name.$i.json" 2> "$out/$name.$i.err" &
    bench=$!
    if [ -n "${SM_BENCH_SYSCALLS:-}" ]; then
        count_syscalls "$first_port" "$out/$name.$i" &
        counter=$!
    fi
    wait "$bench"
    echo "run $i: exit status $?" >&2
    bench=
    thread_ticks "$pid" > "$out/$name.$i.threads-after"
    [ -n "${SM_BENCH_SYSCALLS:-}" ] && wait "$counter"
    stop_server
    if [ -n "${SM_BENCH_POSTGRESQL:-}" ]; then
        sleep 1.5   # PostgreSQL publishes a backend's counters within a second
        pg_counters > "$out/$name.$i.pgstat-after"
        paste -d' ' "$out/$name.$i.pgstat-before" "$out/$name.$i.pgstat-after" | awk '{
            printf "commits %d\nrollbacks %d\ninserted %d\nupdated %d\ndeleted %d\n",
                $6 - $1, $7 - $2, $8 - $3, $9 - $4, $10 - $5 }' > "$out/$name.$i.pgstat"
        psql "$SM_BENCH_POSTGRESQL" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null
    fi
done

python3 - "$out" "$name" "$runs" "$scenario" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys
out, name, runs, scenario = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
clk_tck = float(sys.argv[5])
GROUPS = ["sm-logic", "sm-io", "sm-worker", "other"]
reports = {}
for i in range(1, runs + 1):
    try:
        reports[i] = json.load(open(f"{out}/{name}.{i}.json"))
    except (OSError, ValueError) as e:
        print(f"run {i}: no report ({e})")
def get(r, path):
    for k in path.split("."):
        r = r.get(k) if isinstance(r, dict) else None
    return r
def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
metrics = {
    "handshakes": ["handshakes_per_s", "latency_ms.p50", "latency_ms.p99", "cpu.server_percent", "cpu.bench_percent"],
    "logins": ["logins_per_s", "latency_ms.p50", "latency_ms.p99", "cpu.server_percent", "cpu.bench_percent",
               "bystander.alone.latency_ms.p50", "bystander.alone.latency_ms.p99",
               "bystander.storm.latency_ms.p50", "bystander.storm.latency_ms.p99", "bystander.p99_ratio",
               "bystander.alone.cpu.server_percent", "bystander.alone.missed_sends",
               "bystander.storm.missed_sends"],
    "fanout": ["deliveries_per_s", "messages_per_s", "latency_ms.p50", "latency_ms.p99", "latency_ms.max",
               "arrival_latency_ms.p50", "arrival_latency_ms.p99",
               "undelivered", "cpu.server_percent", "cpu.bench_percent"],
    "private": ["online.messages_per_s", "online.rtt_ms.p50", "online.rtt_ms.p99", "online.delivery_latency_ms.p99",
                "offline.messages_per_s", "offline.rtt_ms.p50", "offline.rtt_ms.p99",
                "online.cpu.server_percent", "offline.cpu.server_percent"],
    "idle": ["per_session_bytes", "anon_per_session_bytes", "per_session_bytes_at_end", "rss_before_kib",
             "rss_after_kib", "alive_at_end"],
}[scenario]
print(f"{name}: {len(reports)} runs; errors per run: {[get(r, 'errors.total') for r in reports.values()]}")
per_run = {i: {} for i in range(1, runs + 1)}
medians = {}
def summarise(m, label=None):
    """Median of figure m over the runs that have it, printed in one line."""
    vals = [per_run[i][m] for i in sorted(per_run) if number(per_run[i].get(m))]
    if vals:
        medians[m] = statistics.median(vals)
        print(f"  {label or m:34s} median {medians[m]:14.3f}   runs {[round(v, 3) for v in vals]}")
for m in metrics:
    for i, r in reports.items():
        v = get(r, "results." + m)
        if number(v):
            per_run[i][m] = v
    summarise(m)
for i in range(1, runs + 1):
    try:
        for line in open(f"{out}/{name}.{i}.syscalls"):
            k, v = line.split()
            if k == "syscalls_per_delivery" and float(v) >= 0:
                per_run[i]["syscalls_per_delivery"] = float(v)
    except OSError:
        pass
summarise("syscalls_per_delivery")

# PostgreSQL's writes per message (SM_BENCH_POSTGRESQL).
for i, r in reports.items():
    try:
        pg = dict(line.split() for line in open(f"{out}/{name}.{i}.pgstat"))
    except OSError:
        continue
    sent = sum(v for v in (get(r, "results.online.messages"), get(r, "results.offline.messages"),
                           get(r, "results.messages")) if number(v))
    if sent > 0:
        per_run[i]["pg_commits_per_message"] = int(pg["commits"]) / sent
        per_run[i]["pg_rows_written_per_message"] = (
            int(pg["inserted"]) + int(pg["updated"]) + int(pg["deleted"])) / sent
summarise("pg_commits_per_message")
summarise("pg_rows_written_per_message")

# Server CPU per thread group. The grouping is the bench's (threads.c):
# a server without an sm-logic thread has its main thread counted as it.
def group_of(comm, main_thread, named_logic):
    if comm == "sm-logic":
        return "sm-logic"
    if comm.startswith("sm-io-"):
        return "sm-io"
    if comm.startswith("sm-worker-"):
        return "sm-worker"
    return "sm-logic" if main_thread and not named_logic else "other"
def read_threads(path):
    pid, threads = None, {}
    for line in open(path):
        parts = line.rstrip("\n").split(" ", 2)
        if parts[0] == "pid":
            pid = int(parts[1])
        elif len(parts) == 3:
            threads[int(parts[0])] = (int(parts[1]), parts[2])
    return pid, threads
for i in range(1, runs + 1):
    try:
        pid, before = read_threads(f"{out}/{name}.{i}.threads-before")
        _, after = read_threads(f"{out}/{name}.{i}.threads-after")
    except (OSError, ValueError):
        continue
    if not after:
        continue   # the server was gone when the bench ended
    named_logic = any(comm == "sm-logic" for _, comm in after.values())
    secs = dict.fromkeys(GROUPS + ["total"], 0.0)
    for tid, (ticks, comm) in after.items():
        # A thread that ended during the run took its account with it.
        s = max(ticks - before.get(tid, (0, ""))[0], 0) / clk_tck
        secs[group_of(comm, tid == pid, named_logic)] += s
        secs["total"] += s
    for g, s in secs.items():
        per_run[i][f"run_cpu_s.{g}"] = s
cpu_path = "results.online.cpu" if scenario == "private" else "results.cpu"
def deliveries(r):
    if scenario == "fanout":
        return get(r, "results.deliveries")
    if scenario == "private":
        rate, secs = get(r, "results.online.deliveries_per_s"), get(r, "results.online.measured_seconds")
        return rate * secs if number(rate) and number(secs) else None
    return None
names = set()
for i, r in reports.items():
    threads = get(r, cpu_path + ".server_threads_s")
    if not isinstance(threads, dict):
        continue
    for g in GROUPS + ["total"]:
        per_run[i][f"measure_cpu_s.{g}"] = threads.get(g)
    for t, s in (threads.get("threads") or {}).items():
        per_run[i][f"measure_cpu_s.thread.{t}"] = s
        names.add(t)
    d = deliveries(r)
    if number(d) and d > 0:
        logic, total = threads.get("sm-logic", 0.0), threads.get("total", 0.0)
        per_run[i]["logic_cpu_us_per_delivery"] = logic * 1e6 / d
        per_run[i]["server_cpu_us_per_delivery"] = total * 1e6 / d
        if total > 0:
            per_run[i]["logic_share_of_server_cpu"] = logic / total
if any(k.startswith(("run_cpu_s.", "measure_cpu_s.")) for v in per_run.values() for k in v):
    print("  server CPU seconds per thread group: whole bench run (run_), measured interval (measure_)")
for g in GROUPS + ["total"]:
    summarise(f"run_cpu_s.{g}")
for g in GROUPS + ["total"]:
    summarise(f"measure_cpu_s.{g}")
for t in sorted(names):
    summarise(f"measure_cpu_s.thread.{t}")
for m in ["logic_cpu_us_per_delivery", "server_cpu_us_per_delivery", "logic_share_of_server_cpu"]:
    summarise(m)
if "logic_cpu_us_per_delivery" in medians and medians.get("server_cpu_us_per_delivery"):
    logic, server = medians["logic_cpu_us_per_delivery"], medians["server_cpu_us_per_delivery"]
    print(f"  logic thread / whole server, CPU per delivery (medians): {logic:.3f} us / {server:.3f} us"
          f" = {logic / server:.3f} (issue 11 goal: at most 1/8 = 0.125)")

try:
    ceiling = open(f"{out}/{name}.ceiling.txt").read()
except OSError:
    ceiling = ""   # SM_BENCH_CEILING=0
if scenario in ("handshakes", "logins"):
    rows = [l for l in ceiling.splitlines() if l.startswith("rsa 2048")]
    if rows:
        sign_per_s = float(rows[-1].split()[-2])
        print(f"  ceiling: RSA-2048 private ops/s, 2 processes: {sign_per_s:.0f}")
        if scenario == "logins" and medians.get("bystander.alone.latency_ms.p99"):
            print(f"  bystander p99, median storm / median alone: "
                  f"{medians['bystander.storm.latency_ms.p99'] / medians['bystander.alone.latency_ms.p99']:.2f}")
        if scenario == "handshakes" and "handshakes_per_s" in medians:
            print(f"  ratio handshakes/s / ceiling: {medians['handshakes_per_s'] / sign_per_s:.3f}")
else:
    rows = [l for l in ceiling.splitlines() if l.startswith("AES-256-GCM")]
    if rows:
        kbytes = float(rows[-1].split()[-1].rstrip("k"))
        blocks = kbytes * 1000 / 1024
        print(f"  ceiling: AES-256-GCM 1 KiB blocks/s, one core: {blocks:.0f}")
        if scenario == "fanout" and "deliveries_per_s" in medians:
            print(f"  ratio deliveries/s / ceiling: {medians['deliveries_per_s'] / blocks:.4f}")
with open(f"{out}/{name}.summary.json", "w") as f:
    json.dump({"name": name, "scenario": scenario, "clk_tck": clk_tck,
               "errors": {str(i): get(r, "errors.total") for i, r in reports.items()},
               "runs": {str(i): v for i, v in per_run.items()}, "medians": medians}, f, indent=1)
    f.write("\n")
EOF
