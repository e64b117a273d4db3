#!/usr/bin/env python3
"""browser.server_key: the page pins the server's key per origin and
reconnects with backoff. A restart of the server with the same key on the
same port: the page reconnects by itself, logs in again and rejoins its
room. A restart with a different key on the same port and origin: the page
refuses it loudly (a visible alert with both fingerprints and what to do),
sends no login, and keeps refusing after a reload; only the explicit
"trust it" button replaces the pin.

Usage: test_server_key.py SERVER_BIN CLI_BIN PLUGIN_DIR SOURCE_DIR
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smtest import Args, Browser, Server, check, key_fingerprint, log, make_key  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

PASSWORD = "dora-password-1"


def count_in_log(srv, needle):
    with open(srv.log_path, "rb") as f:
        return f.read().decode("utf-8", "replace").count(needle)


def main(args):
    t0 = time.time()
    key1 = os.path.join(args.tmp, "key1.pem")
    key2 = os.path.join(args.tmp, "key2.pem")
    make_key(key1)
    make_key(key2)
    fp1, fp2 = key_fingerprint(key1), key_fingerprint(key2)
    # A fast heartbeat: a page that did not answer PING with PONG would be
    # closed after 3 s and log in again.
    srv = Server(args, extra="heartbeat = { interval = 1; timeout = 3; };")
    port = srv.start(key1)

    dora = Browser(args, "dora")
    dora.open(srv.url)
    check(dora.text("#fingerprint").startswith(fp1) and "first use" in dora.text("#fingerprint"),
          "first use: the server key is shown and pinned")
    dora.auth("dora", PASSWORD, register=True)
    dora.type("#room-name", "den" + Keys.ENTER)
    dora.wait_text("#room-title", "den")
    dora.type("#message-input", "before the restart" + Keys.ENTER)
    dora.wait_text("#messages", "before the restart")
    time.sleep(5)
    check(count_in_log(srv, "[audit] connection") == 1 and count_in_log(srv, "login user='dora'") == 1
          and "connected as dora" in dora.text("#status"),
          "the page answers PING: 5 s with a 3 s heartbeat timeout on one connection")

    # ---- the same server comes back: reconnect, log in again, rejoin ----
    srv.stop()
    dora.wait("the page to notice the close", lambda: "reconnecting" in dora.text("#status"))
    check(True, f"the page shows the lost connection: {dora.text('#status')!r}")
    srv.start(key1, port)
    dora.wait_text("#status", "connected as dora", timeout=40)
    dora.wait_text("#room-title", "den")
    dora.wait_text("#messages", "before the restart")
    dora.type("#message-input", "after the restart" + Keys.ENTER)
    dora.wait_text("#messages", "after the restart")
    check(True, "after a server restart the page reconnected, logged in again and rejoined its room")

    # ---- another key on the same port and origin: refused loudly ----
    srv.stop()
    dora.wait("the page to notice the close", lambda: "reconnecting" in dora.text("#status"))
    logins_before = count_in_log(srv, "user='dora'")
    srv.start(key2, port)
    dora.wait("the key alert", lambda: dora.el("#key-alert").is_displayed())
    alert = dora.text("#key-alert")
    check(fp1 in alert and fp2 in alert and "What to do" in alert,
          "the alert shows the pinned and the offered fingerprint and what to do")
    check("refused" in dora.text("#status") and "connected as" not in dora.text("#status"),
          f"the status says refused: {dora.text('#status')!r}")
    check(dora.el("#chat-view").is_displayed() is False, "the chat view is gone")
    time.sleep(1.5)
    check(count_in_log(srv, "user='dora'") == logins_before, "the server saw no login of dora")

    dora.driver.refresh()
    dora.wait("the key alert after a reload", lambda: dora.el("#key-alert").is_displayed())
    check(not dora.el("#login").is_enabled() and not dora.el("#register").is_enabled(),
          "after a reload the key is still refused and login is disabled")
    time.sleep(1.0)
    check(count_in_log(srv, "user='dora'") == logins_before, "still no login of dora")

    # ---- the deliberate way out: trust the new key ----
    dora.click("#accept-new-key")
    dora.wait("the new key pinned", lambda: dora.text("#fingerprint").startswith(fp2))
    check(not dora.el("#key-alert").is_displayed(), "trusting the new key clears the alert")
    dora.auth("dora", PASSWORD, register=False)
    check(True, "with the new key trusted, login works")

    log(f"browser.server_key passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main(Args(sys.argv))
    print("1 passed, 0 failed")
