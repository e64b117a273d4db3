#!/bin/bash
# Fan-out with server.io_threads = 1 against 2, in one session (issue 11
# item 8; docs/BENCHMARKS.md shows how it was used).
#
# Usage: tools/bench/compare-io-threads.sh BUILD_DIR OUT_DIR [bench options...]
#
# BUILD_DIR: a Release build (-DCMAKE_BUILD_TYPE=Release -DSM_SANITIZE=OFF).
# Two scenarios, fan-out to 1 room x 1,000 members (8 senders) and to 10
# rooms x 100 members (10 senders), each --room-window 4 --verify-one-in 10
# --duration 8 (bench options given here are added after those, so they
# override them). Each run is one tools/bench/measure.sh run (a fresh
# server and database, OUT_DIR/<scenario>-io<N>-r<i>.*), with a copy of
# conf/bench.conf (or SM_BENCH_CONF) that has `io_threads = N;` in its
# server section. Runs are interleaved, io_threads 1, 2, 1, 2, ..., so
# that the machine's noise hits both alike. Printed: the medians per
# scenario and io_threads of deliveries/s, latency p99, the logic thread's
# and the whole server's CPU microseconds per delivery (measured interval)
# and their ratio, and deliveries/s io2 / io1; OUT_DIR/compare.json has
# the same.
#
# SM_COMPARE_RUNS=K runs per scenario and io_threads (default 3);
# SM_COMPARE_IO="1 2" the values compared (the first is the baseline);
# SM_COMPARE_HALF=1 then runs each at half its median messages/s
# (--rate), interleaved the same way, for the p99 at half load (doubles
# the time). About 25 s a run: 12 runs, 5 minutes, on the 2-core machine,
# plus the ceiling (below).
#
# A server that refuses server.io_threads (before issue 11) is detected
# with --check-config; the script then stops, unless
# SM_COMPARE_WITHOUT_IO_THREADS=1, which runs every configuration without
# the key (the same server each time: a check of this script's plumbing).
#
# The ceiling: after each maximum run, safemessenger-ceiling runs the same
# fan-out (rooms, members, window 4, 8 s) over bare loopback TCP, with as
# many writing threads as the run's io_threads and one reading thread, at
# its maximum and then at half of it (OUT_DIR/<scenario>-ceiling-io<N>-r<i>.json):
# what this machine allows any server, measured between the server's runs.
# With SM_COMPARE_HALF=1 the ceiling also runs after each half-load run at
# that run's own --rate (OUT_DIR/<scenario>-ceilhalf-io<N>-r<i>.json): the
# p99 bare TCP gives at exactly the load the server was given. Printed
# next to the server's figures: its deliveries/s against the ceiling's,
# and the ceiling's p99 at half load against the server's and the goal's.
# SM_COMPARE_CEILING=0 skips it (about 20 s a run, 10 s at half load).
set -u
[ $# -ge 2 ] || { sed -n '2,30p' "$0" >&2; exit 2; }
build=$1 out=$2
shift 2
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$build" && pwd) || { echo "no build directory $build" >&2; exit 2; }
conf=${SM_BENCH_CONF:-$src/conf/bench.conf}
runs=${SM_COMPARE_RUNS:-3}
read -ra ios <<< "${SM_COMPARE_IO:-1 2}"
mkdir -p "$out" && out=$(cd "$out" && pwd)

declare -A scenario_args=(
    [1x1000]="--rooms 1 --members 1000 --senders 8"
    [10x100]="--rooms 10 --members 100 --senders 10"
)
scenarios=(1x1000 10x100)
common=(--room-window 4 --verify-one-in 10 --duration 8)

tmp=$(mktemp -d /tmp/smbench-compare.XXXXXX)
child=
cleanup() {
    # measure.sh stops its server (and bench) on SIGTERM, through its trap.
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child"
        wait "$child" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The configuration for io_threads = $1 ("" = without the key).
make_conf() {
    if [ -z "$1" ]; then
        cp "$conf" "$tmp/io.conf"
    else
        sed "s|^server: {|&\n  io_threads = $1;|" "$conf" > "$tmp/io.conf"
        grep -q "^ *io_threads = $1;" "$tmp/io.conf" \
            || { echo "$conf: no 'server: {' line to put io_threads in" >&2; exit 2; }
    fi
}

# Does the server take io_threads? --check-config on the configuration
# measure.sh would write (absolute paths; it creates no file).
with_key=1
sed -e 's|^\( *port = \).*|\10;|' \
    -e "s|^\( *key_file = \).*|\1\"$tmp/check_key.pem\";|" \
    -e "s|^\( *database = \).*|\1\"$tmp/check.db\";|" \
    -e "s|^\( *dir = \).*|\1\"$build/plugins\";|" \
    -e "s|^server: {|&\n  io_threads = ${ios[-1]};|" "$conf" > "$tmp/check.conf"
if ! "$build/safemessenger-server" -c "$tmp/check.conf" --check-config > "$tmp/check.log" 2>&1; then
    if grep -q "unknown key server.io_threads" "$tmp/check.log"; then
        echo "this server refuses server.io_threads (it predates issue 11's I/O threads):"
        grep "io_threads" "$tmp/check.log" | sed 's/^/    /'
        if [ "${SM_COMPARE_WITHOUT_IO_THREADS:-0}" != 1 ]; then
            echo "nothing to compare; SM_COMPARE_WITHOUT_IO_THREADS=1 runs without the key" >&2
            exit 3
        fi
        echo "SM_COMPARE_WITHOUT_IO_THREADS=1: every run without io_threads; the columns" \
             "labelled io_threads=N are the same server configuration"
        with_key=0
    else
        echo "the server refuses the configuration:" >&2
        cat "$tmp/check.log" >&2
        exit 2
    fi
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
busy() {
    awk -v n="$(nproc)" '$1 >= n { printf "the machine is busy (load %s on %d cores): other processes take CPU from both columns; judge ratios by the spread of the runs\n", $1, n }' /proc/loadavg
}
busy
echo "bench options: ${common[*]} $*"

ceiling=${SM_COMPARE_CEILING:-1}
[ "$ceiling" = 0 ] || [ -x "$build/tools/bench/safemessenger-ceiling" ] \
    || { echo "no $build/tools/bench/safemessenger-ceiling (SM_COMPARE_CEILING=0 skips it)" >&2; exit 2; }
declare -A ceiling_args=(
    [1x1000]="--rooms 1 --members 1000"
    [10x100]="--rooms 10 --members 100"
)
total=$(( ${#scenarios[@]} * ${#ios[@]} * runs * (${SM_COMPARE_HALF:-0} == 1 ? 2 : 1) ))
n=0
# One measure.sh run: $1 scenario, $2 io_threads, $3 run index, $4 phase
# ("max" or "half"), then extra bench options.
run_one() {
    local sc=$1 io=$2 i=$3 phase=$4
    shift 4
    local name="$sc-$phase-io$io-r$i" start=$SECONDS
    make_conf "$([ $with_key = 1 ] && echo "$io")"
    n=$((n + 1))
    # In the background and waited for, so that a signal reaches the trap.
    # shellcheck disable=SC2086
    SM_BENCH_CONF="$tmp/io.conf" SM_BENCH_CEILING=0 \
        "$src/tools/bench/measure.sh" "$build" "$out" "$name" 1 fanout \
        ${scenario_args[$sc]} "${common[@]}" "$@" > "$out/$name.log" 2>&1 &
    child=$!
    wait "$child"
    local rc=$?
    child=
    python3 - "$out/$name.summary.json" "$n/$total $sc $phase io_threads=$io run $i" \
        "$((SECONDS - start))" "$rc" <<'EOF'
import json, sys
path, label, secs, rc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
try:
    s = json.load(open(path))
    r = s["runs"]["1"]
    errors = s["errors"].get("1")
    print(f"[{label}] {r.get('deliveries_per_s', 0):,.0f} deliveries/s, p99 "
          f"{r.get('latency_ms.p99', float('nan')):.1f} ms, errors {errors}, "
          f"undelivered {r.get('undelivered')}, exit {rc} ({secs} s)")
except (OSError, ValueError, KeyError) as e:
    print(f"[{label}] no summary ({e}); exit {rc}, see {path[:-len('.summary.json')]}.log")
EOF
}

# One safemessenger-ceiling run: $1 file name, $2 label, then its options.
ceiling_run() {
    local name=$1 label=$2 start=$SECONDS
    shift 2
    "$build/tools/bench/safemessenger-ceiling" "$@" --window 4 --duration 8 \
        > "$out/$name.json" 2> "$out/$name.err" &
    child=$!
    wait "$child"
    local rc=$?
    child=
    python3 - "$out/$name.json" "$label" "$((SECONDS - start))" "$rc" <<'EOF'
import json, sys
path, label, secs, rc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
try:
    phases = json.load(open(path))["phases"]
    print(f"[{label}] " + "; ".join(
        f"{p['name']}: {p['deliveries_per_s']:,.0f} deliveries/s, p99 {p['latency_ms']['p99']:.1f} ms"
        for p in phases) + f"; exit {rc} ({secs} s)")
except (OSError, ValueError, KeyError) as e:
    print(f"[{label}] no report ({e}); exit {rc}, see {path[:-5]}.err")
EOF
}
# The ceiling at its maximum and half of it: $1 scenario, $2 writers
# (io_threads), $3 run index.
ceiling_one() {
    # shellcheck disable=SC2086
    ceiling_run "$1-ceiling-io$2-r$3" "ceiling $1 writers=$2 run $3" ${ceiling_args[$1]} \
        --writers "$2" --half
}
# The ceiling at the server's half load: the same and $4 messages/s.
ceiling_at() {
    # shellcheck disable=SC2086
    ceiling_run "$1-ceilhalf-io$2-r$3" "ceiling $1 writers=$2 at $4 msg/s run $3" \
        ${ceiling_args[$1]} --writers "$2" --rate "$4"
}

for i in $(seq "$runs"); do
    for sc in "${scenarios[@]}"; do
        for io in "${ios[@]}"; do
            run_one "$sc" "$io" "$i" max "$@"
            [ "$ceiling" = 0 ] || ceiling_one "$sc" "$io" "$i"
        done
    done
done

# Half of each configuration's own median maximum, in messages/s.
half_rate() {
    python3 - "$out" "$1" "$2" "$runs" <<'EOF'
import json, statistics, sys
out, sc, io, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
vals = []
for i in range(1, runs + 1):
    try:
        v = json.load(open(f"{out}/{sc}-max-io{io}-r{i}.summary.json"))["runs"]["1"].get("messages_per_s")
    except (OSError, ValueError, KeyError):
        continue
    if isinstance(v, (int, float)):
        vals.append(v)
print(f"{statistics.median(vals) / 2:.1f}" if vals else "")
EOF
}
if [ "${SM_COMPARE_HALF:-0}" = 1 ]; then
    declare -A rate
    for sc in "${scenarios[@]}"; do
        for io in "${ios[@]}"; do
            rate[$sc.$io]=$(half_rate "$sc" "$io")
            [ -n "${rate[$sc.$io]}" ] || { echo "$sc io_threads=$io: no maximum to halve" >&2; exit 1; }
        done
    done
    for i in $(seq "$runs"); do
        for sc in "${scenarios[@]}"; do
            for io in "${ios[@]}"; do
                run_one "$sc" "$io" "$i" half "$@" --rate "${rate[$sc.$io]}"
                [ "$ceiling" = 0 ] || ceiling_at "$sc" "$io" "$i" "${rate[$sc.$io]}"
            done
        done
    done
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
busy

python3 - "$out" "$runs" "$with_key" "${scenarios[*]}" "${ios[*]}" "$ceiling" <<'EOF'
import json, statistics, sys
out, runs, with_key = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
scenarios, ios = sys.argv[4].split(), sys.argv[5].split()
with_ceiling = sys.argv[6] != "0"
FIGURES = [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
           ("messages_per_s", "msg/s", "{:.1f}"),
           ("latency_ms.p99", "p99 ms", "{:.1f}"),
           ("arrival_latency_ms.p99", "arr p99", "{:.1f}"),
           ("logic_cpu_us_per_delivery", "logic us/dlv", "{:.3f}"),
           ("server_cpu_us_per_delivery", "server us/dlv", "{:.3f}"),
           ("logic_share_of_server_cpu", "logic/server", "{:.3f}"),
           ("measure_cpu_s.sm-io", "io thr CPU s", "{:.2f}"),
           ("cpu.server_percent", "server %", "{:.0f}"),
           ("cpu.bench_percent", "bench %", "{:.0f}")]
result = {"io_threads_set": with_key, "runs": runs, "phases": {}}
def collect(phase, sc, io):
    per_run, bad = [], []
    for i in range(1, runs + 1):
        try:
            s = json.load(open(f"{out}/{sc}-{phase}-io{io}-r{i}.summary.json"))
        except (OSError, ValueError):
            bad.append(f"run {i}: no summary")
            continue
        r = s["runs"].get("1", {})
        if s["errors"].get("1") != 0 or r.get("undelivered") != 0:
            bad.append(f"run {i}: errors {s['errors'].get('1')}, undelivered {r.get('undelivered')}")
        per_run.append(r)
    med = {}
    for key, _, _ in FIGURES:
        vals = [r[key] for r in per_run if isinstance(r.get(key), (int, float))]
        if vals:
            med[key] = statistics.median(vals)
            med[key + ".runs"] = vals
    return med, bad
for phase in ("max", "half"):
    table = {sc: {io: collect(phase, sc, io) for io in ios} for sc in scenarios}
    if not any(m for sc in table.values() for m, _ in sc.values()):
        continue
    print()
    print(f"{'maximum' if phase == 'max' else 'half load (--rate = half the median maximum msg/s)'},"
          f" medians of {runs}" + ("" if with_key else " -- io_threads NOT set (server predates it)"))
    print(f"  {'scenario':8s} {'io':>3s} " + " ".join(f"{label:>13s}" for _, label, _ in FIGURES))
    for sc in scenarios:
        for io in ios:
            med, bad = table[sc][io]
            cells = [(fmt.format(med[key]) if key in med else "-") for key, _, fmt in FIGURES]
            print(f"  {sc:8s} {io:>3s} " + " ".join(f"{c:>13s}" for c in cells))
            if "deliveries_per_s.runs" in med:
                vals = med["deliveries_per_s.runs"]
                spread = f" (spread max/min {max(vals) / min(vals):.2f})" if min(vals) > 0 else ""
                print(f"  {'':8s} {'':>3s}   deliveries/s runs: "
                      + " / ".join(f"{v:,.0f}" for v in vals) + spread)
            for b in bad:
                print(f"      {sc} io_threads={io} {b}")
    for sc in scenarios:
        for io in ios[1:]:
            base, other = table[sc][ios[0]][0], table[sc][io][0]
            for key, label, _ in FIGURES[:1]:
                if base.get(key) and key in other:
                    ratio = other[key] / base[key]
                    table[sc][io][0][key + ".ratio"] = ratio
                    goal = " (goal: at least 1.3)" if phase == "max" else ""
                    print(f"  {sc}: {label} io_threads={io} / io_threads={ios[0]}: "
                          f"{other[key]:,.0f} / {base[key]:,.0f} = {ratio:.2f}{goal}")
        for io in ios:
            med = table[sc][io][0]
            if "logic_cpu_us_per_delivery" in med and med.get("server_cpu_us_per_delivery"):
                l, s = med["logic_cpu_us_per_delivery"], med["server_cpu_us_per_delivery"]
                print(f"  {sc} io_threads={io}: logic / server CPU per delivery = {l:.3f} / {s:.3f} us"
                      f" = {l / s:.3f} (goal: at most 1/8 = 0.125)")
            if phase == "half" and "latency_ms.p99" in med:
                arrival = med.get("arrival_latency_ms.p99")
                at_socket = f" ({arrival:.1f} ms at the socket)" if arrival is not None else ""
                print(f"  {sc} io_threads={io}: p99 at half load {med['latency_ms.p99']:.1f} ms"
                      f"{at_socket} (goal: under 20 ms)")
    result["phases"][phase] = {sc: {io: {"medians": m, "problems": b} for io, (m, b) in t.items()}
                               for sc, t in table.items()}
def ceiling_medians(sc, io):
    maxes, p99s, cpus, at = [], [], [], []
    for i in range(1, runs + 1):
        try:
            at.append(json.load(open(f"{out}/{sc}-ceilhalf-io{io}-r{i}.json"))
                      ["phases"][0]["latency_ms"]["p99"])
        except (OSError, ValueError, KeyError, IndexError):
            pass
        try:
            p = {ph["name"]: ph for ph in
                 json.load(open(f"{out}/{sc}-ceiling-io{io}-r{i}.json"))["phases"]}
            maxes.append(p["max"]["deliveries_per_s"])
            p99s.append(p["half"]["latency_ms"]["p99"])
            cpus.append(p["half"]["cpu_percent"]["writers"] + p["half"]["cpu_percent"]["reader"])
        except (OSError, ValueError, KeyError):
            continue
    if not maxes:
        return None
    return {"deliveries_per_s": statistics.median(maxes), "deliveries_per_s.runs": maxes,
            "half_p99_ms": statistics.median(p99s), "half_p99_ms.runs": p99s,
            "half_cpu_percent": statistics.median(cpus),
            "at_server_half_p99_ms": statistics.median(at) if at else None,
            "at_server_half_p99_ms.runs": at}
if with_ceiling:
    print()
    print(f"ceiling: the same fan-out over bare loopback TCP (safemessenger-ceiling, as many"
          f" writing threads as io_threads, one reader), medians of {runs}")
    result["ceiling"] = {}
    for sc in scenarios:
        result["ceiling"][sc] = {}
        for io in ios:
            c = ceiling_medians(sc, io)
            if c is None:
                print(f"  {sc} writers={io}: no ceiling report")
                continue
            result["ceiling"][sc][io] = c
            srv = result["phases"].get("max", {}).get(sc, {}).get(io, {}).get("medians", {})
            half = result["phases"].get("half", {}).get(sc, {}).get(io, {}).get("medians", {})
            line = (f"  {sc} writers={io}: {c['deliveries_per_s']:,.0f} deliveries/s ("
                    + " / ".join(f"{v:,.0f}" for v in c["deliveries_per_s.runs"]) + ")")
            if srv.get("deliveries_per_s"):
                line += f"; server / ceiling {srv['deliveries_per_s'] / c['deliveries_per_s']:.2f}"
            print(line)
            line = (f"  {sc} writers={io}: p99 at its own half load {c['half_p99_ms']:.1f} ms ("
                    + " / ".join(f"{v:.1f}" for v in c["half_p99_ms.runs"])
                    + f"), writers + reader CPU {c['half_cpu_percent']:.0f}%")
            print(line)
            if c["at_server_half_p99_ms"] is not None:
                line = (f"  {sc} writers={io}: p99 at the server's half load "
                        f"{c['at_server_half_p99_ms']:.1f} ms ("
                        + " / ".join(f"{v:.1f}" for v in c["at_server_half_p99_ms.runs"]) + ")")
                if "latency_ms.p99" in half:
                    line += f"; the server's {half['latency_ms.p99']:.1f} ms"
                print(line)
with open(f"{out}/compare.json", "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
print(f"\nper run: {out}/<scenario>-<phase>-io<N>-r<i>.{{log,1.json,summary.json,1.threads-*}}; "
      f"medians: {out}/compare.json")
EOF
