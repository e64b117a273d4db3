#!/usr/bin/env bash
# ctest install.deb: the .deb CPack builds from this build tree.
#
#   check_deb.sh BUILD_DIR LIBDIR BUILD_PREFIX
#
# 1. `cpack -G DEB -D CPACK_INSTALL_PREFIX=/usr` (the Debian layout, as
#    docs/OPERATIONS.md builds it; a tree configured for another prefix
#    must warn that the server's compiled-in defaults differ);
# 2. `dpkg-deb -c` lists the server, the CLI, the five plugins, the
#    configuration, the unit and the web client's index, and nothing of the SDK or the load
#    generator; the configuration is the one conffile and names /usr paths;
# 3. the maintainer scripts: postinst creates the system user with
#    `adduser --system` when it is missing and not when it exists (run
#    with a PATH of recording stand-ins, so nothing on this machine
#    changes), and every script passes `sh -n`.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 BUILD_DIR LIBDIR BUILD_PREFIX" >&2
    exit 2
fi
build_dir=$1
libdir=$2
build_prefix=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sm-install-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "check_deb: $*" >&2
    exit 1
}

echo "== cpack -G DEB -D CPACK_INSTALL_PREFIX=/usr"
(cd "$build_dir" && cpack -G DEB -B "$tmp/out" -D CPACK_INSTALL_PREFIX=/usr) \
    >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log" >&2; fail "cpack failed"; }
debs=("$tmp"/out/safemessenger_*.deb)
[ ${#debs[@]} = 1 ] && [ -f "${debs[0]}" ] || fail "expected one safemessenger_*.deb in $tmp/out"
deb=${debs[0]}
if [ "$build_prefix" != /usr ]; then
    grep -q "but the server was built for $build_prefix" "$tmp/cpack.log" ||
        { cat "$tmp/cpack.log" >&2; fail "no warning that the build's prefix differs"; }
fi

echo "== dpkg-deb -c $(basename "$deb")"
dpkg-deb -c "$deb" >"$tmp/contents"
# "mode owner path" of every entry, directories without their trailing /.
awk '{ p = $6; sub(/^\./, "", p); sub(/\/$/, "", p); print $1, $2, p }' "$tmp/contents" \
    >"$tmp/entries"
expect() {  # MODE PATH
    grep -qxF -e "$1 root/root $2" "$tmp/entries" ||
        { cat "$tmp/contents" >&2; fail "the package lacks $2 ($1 root/root)"; }
}
expect -rwxr-xr-x /usr/bin/safemessenger-server
expect -rwxr-xr-x /usr/bin/safemessenger-cli
expect -rwxr-xr-x /usr/bin/safemessenger-admin
for p in auth heartbeat rooms messaging friends; do
    expect -rw-r--r-- "/usr/$libdir/safemessenger/plugins/$p.so"
done
expect -rw-r--r-- /etc/safemessenger/safemessenger.conf
expect -rw-r--r-- /usr/share/safemessenger/safemessenger.conf
expect -rw-r--r-- /usr/lib/systemd/system/safemessenger.service
expect -rw-r--r-- /usr/share/safemessenger/web/index.html
# Developers' files stay out; so does anything not under /usr or /etc.
if grep -E 'safemessenger-bench|safemessenger-ceiling|/include/|pkgconfig|testhost' "$tmp/entries"; then
    fail "the package holds developer files (above)"
fi
if awk '{print $3}' "$tmp/entries" | grep -vE '^(|/usr(/.*)?|/etc(/.*)?)$'; then
    fail "the package installs outside /usr and /etc (above)"
fi

echo "== control: conffiles, Depends, maintainer scripts"
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/safemessenger/safemessenger.conf ] ||
    fail "conffiles is not exactly /etc/safemessenger/safemessenger.conf: $(cat "$tmp/control/conffiles")"
grep -qE '^Depends:.*\badduser\b' "$tmp/control/control" || fail "Depends lacks adduser"
grep -qE '^Depends:.*\blibwebsockets' "$tmp/control/control" ||
    fail "Depends lacks the libraries (dpkg-shlibdeps did not run?)"
for s in postinst prerm postrm; do
    [ -x "$tmp/control/$s" ] || fail "no executable $s"
    sh -n "$tmp/control/$s" || fail "$s: syntax error"
done
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/safemessenger/safemessenger.conf >"$tmp/conf"
grep -qxF "  dir = \"/usr/$libdir/safemessenger/plugins\";" "$tmp/conf" ||
    fail "the packaged configuration's plugins.dir is not /usr/$libdir/safemessenger/plugins"
grep -qxF '  database = "/var/lib/safemessenger/safemessenger.db";' "$tmp/conf" ||
    fail "the packaged configuration's storage.database is not under /var/lib/safemessenger"
grep -qxF '  root = "/usr/share/safemessenger/web";' "$tmp/conf" ||
    fail "the packaged configuration's web.root is not /usr/share/safemessenger/web"
if grep -nF -e "$build_dir" -e "_CPack_Packages" "$tmp/conf" "$tmp/control/postinst"; then
    fail "a build or staging path leaked into the package (above)"
fi

# postinst with stand-ins: getent says whether the user exists (GETENT_RC),
# the others record their arguments. PATH holds nothing else, so a command
# not stood in for fails instead of touching this machine.
mkdir "$tmp/bin"
for c in adduser useradd addgroup groupadd install chown chmod systemctl deb-systemd-helper; do
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$c" "$tmp/calls" >"$tmp/bin/$c"
done
printf '#!/bin/sh\necho "getent $*" >>"%s"\nexit "$GETENT_RC"\n' "$tmp/calls" >"$tmp/bin/getent"
chmod +x "$tmp/bin"/*
run_postinst() {  # GETENT_RC
    : >"$tmp/calls"
    GETENT_RC=$1 PATH=$tmp/bin /bin/sh "$tmp/control/postinst" configure "" ||
        fail "postinst configure failed (getent status $1)"
}
echo "== postinst configure, no user safemessenger yet"
run_postinst 2
grep -qE '^(adduser|useradd) (.* )?--system( .*)? safemessenger$' "$tmp/calls" ||
    { cat "$tmp/calls" >&2; fail "postinst did not create the system user safemessenger"; }
echo "== postinst configure, user safemessenger exists"
run_postinst 0
if grep -E '^(adduser|useradd) ' "$tmp/calls"; then
    fail "postinst created the user again"
fi
echo "== OK"
