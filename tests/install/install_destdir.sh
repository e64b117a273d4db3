#!/usr/bin/env bash
# ctest install.destdir: what `cmake --install` gives an operator.
#
#   install_destdir.sh BUILD_DIR LIBDIR SYSCONFDIR
#
# (SYSCONFDIR: the build's CMAKE_INSTALL_FULL_SYSCONFDIR, where the server
# looks for its configuration without -c.)
# 1. installs BUILD_DIR into a temporary DESTDIR with the prefix /usr (the
#    layout of the .deb: configuration under /etc) and checks the server,
#    the five plugins, the CLI, the configuration, its reference copy and
#    the unit are there;
# 2. checks the installed configuration names absolute paths only: the key
#    and the database under /var/lib/safemessenger, the installed plugins,
#    the installed web client;
# 3. copies it, changing exactly five things (port 0, the state directory,
#    the plugin directory and the web root moved under the temporary
#    directory), checks it with --check-config, starts the installed server
#    on it, fetches the web client's index over HTTP and has the installed
#    CLI register, post to the default room, log in again and read the
#    message back from the history;
# 4. installs again over an operator's change of the configuration and
#    checks the change is kept.
# Everything lives in one temporary directory, removed on exit; the server
# is stopped on every exit path.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 BUILD_DIR LIBDIR SYSCONFDIR" >&2
    exit 2
fi
build_dir=$1
libdir=$2
build_sysconfdir=$3

script_name=install_destdir
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-install-destdir.XXXXXX")
server_log=$tmp/server.log
. "$(dirname "$0")/../lib/script_harness.sh"

root=$tmp/root
plugindir=/usr/$libdir/safemessenger/plugins
conf=$root/etc/safemessenger/safemessenger.conf

begin "DESTDIR=$root cmake --install $build_dir --prefix /usr"
DESTDIR=$root cmake --install "$build_dir" --prefix /usr >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }

begin "check the installed files"
for f in usr/bin/safemessenger-server usr/bin/safemessenger-cli usr/bin/safemessenger-admin; do
    [ -x "$root/$f" ] || fail "not installed or not executable: $f"
done
for p in auth heartbeat rooms messaging friends; do
    [ -f "$root$plugindir/$p.so" ] || fail "plugin not installed: $plugindir/$p.so"
done
for f in etc/safemessenger/safemessenger.conf usr/share/safemessenger/safemessenger.conf \
         usr/lib/systemd/system/safemessenger.service usr/share/safemessenger/web/index.html; do
    [ -f "$root/$f" ] || fail "not installed: $f"
done
cmp -s "$conf" "$root/usr/share/safemessenger/safemessenger.conf" ||
    fail "the reference copy differs from the installed configuration"
default_conf=$build_sysconfdir/safemessenger/safemessenger.conf
"$root/usr/bin/safemessenger-server" --help >"$tmp/help.txt"
grep -qF "(default $default_conf)" "$tmp/help.txt" ||
    fail "the server's default configuration is not $default_conf"
grep -qxF "ExecStart=/usr/bin/safemessenger-server -c /etc/safemessenger/safemessenger.conf" \
    "$root/usr/lib/systemd/system/safemessenger.service" ||
    fail "the unit does not run the installed server on the installed configuration"

begin "the installed configuration names absolute paths"
grep -qxF '  key_file = "/var/lib/safemessenger/server_key.pem";' "$conf" ||
    fail "server.key_file is not /var/lib/safemessenger/server_key.pem"
grep -qxF '  database = "/var/lib/safemessenger/safemessenger.db";' "$conf" ||
    fail "storage.database is not /var/lib/safemessenger/safemessenger.db"
grep -qxF "  dir = \"$plugindir\";" "$conf" || fail "plugins.dir is not $plugindir"
grep -qxF '  root = "/usr/share/safemessenger/web";' "$conf" ||
    fail "web.root is not /usr/share/safemessenger/web"
# No path of the build or source tree, and no relative path, is left.
if grep -nE '^[^#]*= *"\.\.?/|build/|/data/' "$conf"; then
    fail "the installed configuration has a relative or build-tree path (above)"
fi

begin "run the installed server on a copy of the installed configuration"
state=$tmp/state
sed -e "s|^  port = 8765;\$|  port = 0;|" \
    -e "s|\"/var/lib/safemessenger/|\"$state/|" \
    -e "s|^  dir = \"$plugindir\";\$|  dir = \"$root$plugindir\";|" \
    -e "s|^  root = \"/usr/share/safemessenger/web\";\$|  root = \"$root/usr/share/safemessenger/web\";|" \
    "$conf" >"$tmp/test.conf"
changed=$(diff "$conf" "$tmp/test.conf" | grep -c '^>' || true)
[ "$changed" = 5 ] || { diff "$conf" "$tmp/test.conf" >&2 || true
                        fail "expected to change 5 lines of the installed configuration, changed $changed"; }
server=$root/usr/bin/safemessenger-server
"$server" -c "$tmp/test.conf" --check-config >"$tmp/check.log" 2>&1 ||
    { cat "$tmp/check.log" >&2; fail "--check-config refuses the installed configuration"; }
# timeout(1) bounds the server's life even if this script is killed
# outright (SIGKILL runs no trap); it passes our SIGTERM on to the server.
timeout --kill-after=5 90 "$server" -c "$tmp/test.conf" --port-file "$tmp/port" \
    >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
    [ -s "$tmp/port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
    sleep 0.1
done
[ -s "$tmp/port" ] || fail "the server wrote no port file within 30 s"
url=ws://127.0.0.1:$(cat "$tmp/port")/
for p in auth heartbeat rooms messaging friends; do
    grep -q "plugin $p .* loaded from $root$plugindir/$p.so" "$tmp/server.log" ||
        fail "the server log does not show $p loaded from the installed plugins"
done
[ "$(stat -c %a "$state/server_key.pem")" = 600 ] || fail "the key is not mode 0600"
[ -f "$state/safemessenger.db" ] || fail "no database in the state directory"

begin "the installed server serves the installed web client at /"
grep -qF "serving the web client from $root/usr/share/safemessenger/web" "$tmp/server.log" ||
    fail "the server log does not show the installed web root"
# Raw HTTP over bash's /dev/tcp: no HTTP client needed.
exec 3<>"/dev/tcp/127.0.0.1/$(cat "$tmp/port")"
printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
timeout 10 cat <&3 >"$tmp/index.http" || fail "no answer to GET /"
exec 3<&-
head -n 1 "$tmp/index.http" | grep -q '^HTTP/1.1 200' ||
    { head -n 20 "$tmp/index.http" >&2; fail "GET / did not answer 200"; }
grep -qi '^content-type: text/html; charset=utf-8' "$tmp/index.http" ||
    fail "GET / is not text/html"
grep -qi "^content-security-policy: default-src 'self'" "$tmp/index.http" ||
    fail "GET / has no Content-Security-Policy"
# The body, after the blank line, is the installed index.html byte for byte.
sed '1,/^\r$/d' "$tmp/index.http" >"$tmp/index.body"
cmp -s "$tmp/index.body" "$root/usr/share/safemessenger/web/index.html" ||
    fail "GET / is not the installed web/index.html"

begin "the installed CLI registers, posts and reads back"
cli=$root/usr/bin/safemessenger-cli
export SM_PASSWORD='installed server, installed client'
"$cli" --config-dir "$tmp/cli" -e '/register alice' -e 'hello from the installed cli' "$url" \
    >"$tmp/cli1.out" 2>&1 || { cat "$tmp/cli1.out" >&2; fail "register and post failed"; }
grep -q '"kind":"reply","command":"register"' "$tmp/cli1.out" ||
    { cat "$tmp/cli1.out" >&2; fail "no reply to /register"; }
"$cli" --config-dir "$tmp/cli" -e '/login alice' -e '/history 10' "$url" \
    >"$tmp/cli2.out" 2>&1 || { cat "$tmp/cli2.out" >&2; fail "login and history failed"; }
grep -q '"sender":"alice","content":"hello from the installed cli"' "$tmp/cli2.out" ||
    { cat "$tmp/cli2.out" >&2; fail "the history does not hold the message"; }

begin "the installed admin tool sees alice through the admin socket"
admin=$root/usr/bin/safemessenger-admin
"$admin" --help | grep -qF "(default $default_conf)" ||
    fail "the admin tool's default configuration is not $default_conf"
[ "$(stat -c %a "$state/admin.sock")" = 600 ] || fail "the admin socket is not mode 0600"
"$admin" -c "$tmp/test.conf" users list >"$tmp/admin.out" 2>&1 ||
    { cat "$tmp/admin.out" >&2; fail "safemessenger-admin users list failed"; }
grep -q '^alice ' "$tmp/admin.out" || { cat "$tmp/admin.out" >&2; fail "alice is not listed"; }

begin "stop the server"
stop_server || fail "the server did not shut down cleanly (status $?)"

begin "installing again keeps the operator's configuration"
echo "# changed by the operator" >>"$conf"
# Older than what the install generates, as an operator's file is at an
# upgrade: file(INSTALL) alone would then replace it.
touch -d '2001-01-01 00:00:00' "$conf"
DESTDIR=$root cmake --install "$build_dir" --prefix /usr >"$tmp/install2.log" 2>&1 ||
    { cat "$tmp/install2.log" >&2; fail "the second cmake --install failed"; }
[ "$(tail -n 1 "$conf")" = "# changed by the operator" ] ||
    fail "the second install overwrote the configuration"
grep -qF "Keeping: $conf" "$tmp/install2.log" ||
    fail "the second install did not say it kept the configuration"
echo "== OK"
