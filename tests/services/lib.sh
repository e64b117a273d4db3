# shellcheck shell=bash
# shellcheck disable=SC2154 # svc_name and svc_comm: set by the caller
# Shared by tests/services/redis-instance and tests/services/postgres-instance:
# the instance directory's guard, a free loopback port, and finding and
# ending the processes of an instance. The caller sets, before sourcing:
#   svc_name   what it manages ("redis", "postgres"): its messages and the
#              marker file that lets stop and start remove DIR
#   svc_comm   the process name (/proc/PID/comm) of that service's processes

svc_fail() {
    echo "${svc_name}-instance: $*" >&2
    exit 1
}

# DIR must be absolute and either absent, empty or made by this script
# (its marker file is there): `stop ~` must not remove a home directory.
svc_check_dir() {
    local dir=$1
    case "$dir" in
        /*) ;;
        *) svc_fail "DIR must be an absolute path: '$dir'" ;;
    esac
    [ "$dir" != / ] || svc_fail "DIR must not be /"
    if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/.sm-service-$svc_name" ]; then
        svc_fail "$dir is not empty and was not made by ${svc_name}-instance: not touching it"
    fi
}

# A port nothing listens on now. Another process may take it before the
# service binds it: the callers retry with a new port when that happens.
svc_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' || svc_fail "python3 could not find a free port"
}

# True while PID runs (a zombie, waiting for a parent that may never reap
# it, does not count).
svc_pid_alive() {
    local state
    state=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# The pids of this service's processes whose working directory is DIR:
# Redis and PostgreSQL both chdir into their directory, so this finds an
# instance whose pid file is lost or not yet written, and never an
# unrelated process that reused a recorded pid.
svc_pids_in() {
    local dir p pid comm
    dir=$(readlink -f "$1" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        comm=""
        read -r comm 2>/dev/null <"$p/comm" || continue
        [ "$comm" = "$svc_comm" ] || continue
        [ "$(readlink "$p/cwd" 2>/dev/null)" = "$dir" ] || continue
        svc_pid_alive "$pid" && echo "$pid"
    done
}

# Waits up to $2 tenths of a second for every process in DIR ($1) to end.
svc_wait_gone() {
    local i
    for ((i = 0; i < $2; i++)); do
        [ -z "$(svc_pids_in "$1")" ] && return 0
        sleep 0.1
    done
    [ -z "$(svc_pids_in "$1")" ]
}

# Ends whatever still runs in DIR: SIGTERM, then SIGKILL after 5 s.
svc_kill_in() {
    local pids
    pids=$(svc_pids_in "$1")
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -TERM $pids 2>/dev/null || true
    svc_wait_gone "$1" 50 && return 0
    pids=$(svc_pids_in "$1")
    echo "${svc_name}-instance: still running after SIGTERM, killing: $pids" >&2
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    svc_wait_gone "$1" 50 || svc_fail "could not end processes in $1: $(svc_pids_in "$1")"
}

# Makes DIR afresh (mode 0700) with the marker that lets stop remove it.
svc_make_dir() {
    if ! mkdir -p "$(dirname "$1")" || ! mkdir -m 0700 "$1"; then
        svc_fail "cannot create $1"
    fi
    : >"$1/.sm-service-$svc_name"
}

# Has the instance in DIR ended once process OWNER is gone: a suite that
# ctest kills at its timeout cannot stop its private instance itself. The
# watcher is the instance script again (`watch OWNER DIR`), in a session of
# its own (a kill of the suite's process group does not reach it), holding
# none of the caller's descriptors (ctest waits for those to close).
svc_watch_owner() {
    case "$1" in
        *[!0-9]* | "") svc_fail "SM_SERVICE_OWNER is not a pid: '$1'" ;;
    esac
    setsid "$0" watch "$1" "$2" </dev/null >/dev/null 2>&1 &
}

# The watcher's loop: polls each second; then ends what runs in DIR and
# removes it, if DIR is still this service's (a stop may have come first).
svc_watch() {
    local owner=$1 dir=$2
    while svc_pid_alive "$owner"; do sleep 1; done
    [ -f "$dir/.sm-service-$svc_name" ] || return 0
    svc_kill_in "$dir"
    rm -rf "$dir"
}
