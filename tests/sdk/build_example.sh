#!/usr/bin/env bash
# ctest sdk.example_out_of_tree: the plugin SDK as an outsider uses it.
#
#   build_example.sh BUILD_DIR SOURCE_DIR CALL_HELLO TESTCMDS_SO SANITIZE
#
# 1. installs BUILD_DIR into a temporary prefix (cmake --install --prefix);
# 2. checks what the SDK installed (headers, .pc files, versioned library),
#    builds hello.c with the pkg-config one-liner, then builds hello's suite
#    with the line docs/PLUGINS.md gives and runs it, with no rpath or
#    LD_LIBRARY_PATH of our own;
# 3. configures, builds and tests examples/plugins/hello with
#    PKG_CONFIG_PATH pointing at the prefix: nothing from the source tree;
# 4. starts the installed server with the example's hello.so and the test
#    plugin testcmds (for fake_login) in one plugin directory, and has
#    CALL_HELLO (tests/sdk/call_hello.c, a real client) call `hello`.
# SANITIZE is ON when the main build uses SM_SANITIZE: the installed test
# host library is then ASan-instrumented, so the example is built with the
# same flags. Everything lives in one temporary directory, removed on exit;
# the server is stopped on every exit path.
set -euo pipefail

if [ $# -ne 5 ]; then
    echo "usage: $0 BUILD_DIR SOURCE_DIR CALL_HELLO TESTCMDS_SO SANITIZE" >&2
    exit 2
fi
build_dir=$1
source_dir=$2
call_hello=$3
testcmds_so=$4
sanitize=$5

script_name=build_example
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-sdk-example.XXXXXX")
server_log=$tmp/server/server.log
. "$(dirname "$0")/../lib/script_harness.sh"

# Runs a command with its output in a log file, shown only on failure.
quietly() {
    local log=$tmp/$1.log
    shift
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "command failed: $*"
    fi
}

prefix=$tmp/prefix
example=$source_dir/examples/plugins/hello
san_flags="-fsanitize=address,undefined -fno-omit-frame-pointer"

begin "cmake --install $build_dir --prefix $prefix"
quietly install cmake --install "$build_dir" --prefix "$prefix"

begin "check the installed SDK"
for f in include/safemessenger/plugin.h include/safemessenger/testhost.h \
         include/safemessenger/testhost_suite.h \
         lib/pkgconfig/safemessenger-plugin.pc lib/pkgconfig/safemessenger-testhost.pc \
         lib/libsafemessenger-testhost.so bin/safemessenger-server; do
    [ -e "$prefix/$f" ] || fail "not installed: $f"
done
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
header_abi=$(sed -n 's/^#define SM_PLUGIN_ABI_VERSION \([0-9]*\)u\{0,1\}$/\1/p' \
             "$prefix/include/safemessenger/plugin.h")
pc_abi=$(pkg-config --variable=abi_version safemessenger-plugin)
[ -n "$header_abi" ] && [ "$pc_abi" = "$header_abi" ] ||
    fail "abi_version '$pc_abi' in the .pc differs from the header's '$header_abi'"
plugindir=$(pkg-config --variable=plugindir safemessenger-plugin)
[ "$(cd "$plugindir" && pwd -P)" = "$(cd "$prefix/lib/safemessenger/plugins" && pwd -P)" ] ||
    fail "plugindir '$plugindir' is not the installed plugin directory"
soname=$(readelf -d "$prefix/lib/libsafemessenger-testhost.so" |
         sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libsafemessenger-testhost.so.$header_abi" ] || fail "unexpected SONAME '$soname'"
[ -e "$prefix/lib/$soname" ] || fail "no $soname beside the library"

begin "cc \$(pkg-config --cflags --libs safemessenger-plugin) -shared -fPIC -o hello.so hello.c"
mkdir -p "$tmp/oneliner"
# shellcheck disable=SC2046 # word splitting of pkg-config's output is wanted
quietly oneliner cc $(pkg-config --cflags --libs safemessenger-plugin) -shared -fPIC \
    -o "$tmp/oneliner/hello.so" "$example/hello.c"
nm -D --defined-only "$tmp/oneliner/hello.so" | grep -q ' safemessenger_plugin$' ||
    fail "the one-liner's hello.so does not export safemessenger_plugin"

# The suite by hand, with the build line docs/PLUGINS.md (section 13) gives,
# word for word, and nothing else: no rpath, no LD_LIBRARY_PATH. The test
# binary must find the installed test host through what pkg-config gave.
# Under SANITIZE, cc is a function adding the flags the ASan-built test
# host needs (the guide says to add them in that case).
test_line="cc -o test_hello test_hello.c -DHELLO_SO='\"./hello.so\"' \$(pkg-config --cflags --libs safemessenger-testhost cunit)"
begin "$test_line, then ./test_hello"
grep -qxF "$test_line" "$source_dir/docs/PLUGINS.md" ||
    fail "docs/PLUGINS.md does not show the suite's build line: $test_line"
cp "$example/test_hello.c" "$tmp/oneliner/"
if [ "$sanitize" = ON ]; then
    # shellcheck disable=SC2086 # san_flags is a list of flags
    cc() { command cc $san_flags "$@"; }
fi
(cd "$tmp/oneliner" && eval "$test_line") >"$tmp/test_line.log" 2>&1 ||
    { cat "$tmp/test_line.log" >&2; fail "the documented build line failed"; }
unset -f cc
(cd "$tmp/oneliner" && ./test_hello) >"$tmp/test_hello.log" 2>&1 ||
    { cat "$tmp/test_hello.log" >&2; fail "test_hello, built with the documented line, failed"; }
# And it ran the test host of the SDK the line named, not a copy elsewhere.
resolved=$(cd "$tmp/oneliner" && ldd ./test_hello | grep 'libsafemessenger-testhost' || true)
resolved=${resolved#*=> }
resolved=${resolved% (*}
[ -f "$resolved" ] && [ "$(cd "$(dirname "$resolved")" && pwd -P)" = "$(cd "$prefix/lib" && pwd -P)" ] ||
    fail "test_hello does not find the test host in $prefix/lib (ldd: ${resolved:-nothing})"

begin "configure, build and test $example out of tree"
cmake_args=(-S "$example" -B "$tmp/hello-build" -DCMAKE_BUILD_TYPE=Debug)
if [ "$sanitize" = ON ]; then
    cmake_args+=("-DCMAKE_C_FLAGS=$san_flags" "-DCMAKE_EXE_LINKER_FLAGS=$san_flags"
                 "-DCMAKE_MODULE_LINKER_FLAGS=$san_flags")
fi
quietly configure cmake "${cmake_args[@]}"
quietly build cmake --build "$tmp/hello-build" -j2
(cd "$tmp/hello-build" && ctest --output-on-failure --timeout 60) ||
    fail "the example's own suites failed"

begin "run the installed server with hello and call it from a real client"
mkdir -p "$tmp/server/plugins"
cp "$tmp/hello-build/hello.so" "$testcmds_so" "$tmp/server/plugins/"
cat >"$tmp/server/server.conf" <<EOF
server = { port = 0; bind = "127.0.0.1"; key_file = "$tmp/server/server_key.pem"; key_bits = 2048; };
storage = { database = "$tmp/server/server.db"; };
plugins = { dir = "$tmp/server/plugins"; load = ["testcmds", "hello"]; };
log = { level = "info"; };
hello = { greeting = "Greetings"; };
EOF
server=$prefix/bin/safemessenger-server
quietly check-config "$server" -c "$tmp/server/server.conf" --check-config
# timeout(1) bounds the server's life even if this script is killed
# outright (SIGKILL runs no trap); it passes our SIGTERM on to the server.
timeout --kill-after=5 60 "$server" -c "$tmp/server/server.conf" --port-file "$tmp/server/port" \
    >"$tmp/server/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
    [ -s "$tmp/server/port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
    sleep 0.1
done
[ -s "$tmp/server/port" ] || fail "the server wrote no port file within 30 s"
port=$(cat "$tmp/server/port")
grep -q "plugin hello 1.0 loaded from $tmp/server/plugins/hello.so" "$tmp/server/server.log" ||
    fail "the server log does not show hello loaded"
url=ws://127.0.0.1:$port/
"$call_hello" "$url" alice "Greetings, alice!" 1
"$call_hello" "$url" alice "Greetings, alice!" 2
"$call_hello" "$url" bob "Greetings, bob!" 1

begin "stop the server"
stop_server || fail "the server did not shut down cleanly (status $?)"
echo "== OK"
