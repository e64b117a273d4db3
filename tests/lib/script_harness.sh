# Shared by the shell suites that install the tree and run the installed
# server (tests/sdk/build_example.sh, tests/install/install_destdir.sh).
# The caller sets, before sourcing this file:
#   script_name  the name failures are reported under
#   tmp          its temporary directory (removed on exit, whatever happens)
#   server_log   where the server's log goes (its tail is shown on failure)
# and puts the pid of a server it starts in server_pid, which is then
# stopped (SIGTERM, then SIGKILL after 10 s) on every exit path.
server_pid=""
step=""

# Stops the server; returns its exit status.
stop_server() {
    [ -n "$server_pid" ] || return 0
    local pid=$server_pid status=0
    server_pid=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$script_name: the server did not stop within 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}

on_exit() {
    local status=$?
    stop_server || true
    if [ "$status" -ne 0 ]; then
        echo "$script_name: FAILED (status $status) during: ${step:-setup}" >&2
        if [ -f "$server_log" ]; then
            echo "---- last lines of the server log ----" >&2
            tail -n 40 "$server_log" >&2
        fi
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

begin() {
    step=$1
    echo "== $step"
}

fail() {
    echo "$script_name: $*" >&2
    exit 1
}
