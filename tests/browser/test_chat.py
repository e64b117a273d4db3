#!/usr/bin/env python3
"""browser.chat: two browser users (one on AES-256-GCM, one on
AES-256-CBC-HMAC-SHA256) and one CLI user against the real server, the page
loaded from the server itself. Checks: the protocol's worked example in the
browser's crypto; public chat in one room seen by all three; end-to-end
private messages browser -> CLI and CLI -> browser, verified on both sides;
unread count and read receipts both ways; history paging; friends request,
accept and presence; logout and a keyboard-only login; blocking; an
expiring message leaving the view; the layout at 360 px; no CSP violation.
Writes the screenshot web-client.png into the working directory (the
build tree under ctest); with SM_UPDATE_SCREENSHOT=1 into docs/ instead,
which is how docs/web-client.png is made (the source tree is never
changed by a plain test run).

Usage: test_chat.py SERVER_BIN CLI_BIN PLUGIN_DIR SOURCE_DIR
"""
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smtest  # noqa: E402
from smtest import Args, Browser, Cli, Server, check, log, make_key  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

PW = {"alice": "alice-password-1", "bob": "bob-password-22", "carl": "carl-password-333"}

# PROTOCOL.md section 9, computed in the page by web/js/protocol.js.
WORKED_EXAMPLE_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const P = await import('/js/protocol.js');
  const C = await import('/js/codec.js');
  const h = (s) => new Uint8Array(s.match(/../g).map((x) => parseInt(x, 16)));
  const seq = (a, n) => new Uint8Array(Array.from({ length: n }, (_, i) => a + i));
  const keys = await P.deriveKeys(seq(0, 32), seq(0x20, 32), seq(0x40, 32));
  const out = { c2sEnc: C.hex(keys.c2sEnc), s2cEnc: C.hex(keys.s2cEnc), c2sMac: C.hex(keys.c2sMac),
                s2cMac: C.hex(keys.s2cMac) };
  // The client's view: seal with c2s, open with s2c.
  const gcm = await P.Channel.create(P.CIPHER_GCM, keys.c2sEnc, keys.c2sMac, keys.s2cEnc, keys.s2cMac);
  const resp = {"type":"response","action":"key_exchange","payload":"gIGCg4SFhoeIiYqLK1mgwUFHWS8dUqAYf62d3PD2NZr+hkEFUfS7mPO4W86KNVlPPkG34NnJYFd5LBjHCZoFHy3GfxLi6HrvVknZrkr8DoXGqognSS6QPOQOsTA=","nonce":"1","signature":"Htok46ye75Ce834OfdSogcI5ZvG2pHvlJ7Nzp7HBUZg=","reply_to":"0"};
  out.response = await gcm.open(resp);
  try { await gcm.open(resp); out.replay = 'accepted'; } catch (e) { out.replay = e.kind; }
  out.gcm = await gcm.seal('command', 'echo', undefined, { text: 'hello' }, h('606162636465666768696a6b'));
  const cbc = await P.Channel.create(P.CIPHER_CBC, keys.c2sEnc, keys.c2sMac, keys.s2cEnc, keys.s2cMac);
  out.cbc = await cbc.seal('command', 'echo', undefined, { text: 'hello' }, h('707172737475767778797a7b7c7d7e7f'));
  // A server-side channel opens both, and refuses a flipped signature byte.
  const srv = await P.Channel.create(P.CIPHER_GCM, keys.s2cEnc, keys.s2cMac, keys.c2sEnc, keys.c2sMac);
  const bad = JSON.parse(out.gcm);
  bad.signature = 'N' + bad.signature.slice(1);
  try { await srv.open(bad); out.tampered = 'accepted'; } catch (e) { out.tampered = e.kind; }
  out.opened = await srv.open(JSON.parse(out.gcm));
  return out;
})().then(done, (e) => done({ error: String(e) }));
"""


def worked_example(b):
    r = b.driver.execute_async_script(WORKED_EXAMPLE_JS)
    check("error" not in r, f"the worked example ran in the browser ({r.get('error')})")
    check(r["c2sEnc"] == "825f49229c65e035cef35d364aa7563e365f2a7d9e8fa226199e56ca5603494e"
          and r["s2cMac"] == "cce6c597382199e206324a1f24cf194a568bd3e4c9139698f1bb3a503560256b"
          and r["s2cEnc"] == "39dc0670d674d95a575ecc772d83f304b43cf44d8e490116a6823cdbba8dbbaf"
          and r["c2sMac"] == "b475e5b352c85b85f28a76a9205df4092288091667cfb4fb8f009d9e25ea17df",
          "HKDF in WebCrypto gives the four keys of PROTOCOL.md 9.2")
    check(r["response"] == {"success": True, "session_id": "3f9c2a7be1d04c5f8a6e0b1d2c3e4f50"},
          "the 9.3 key_exchange response opens")
    check(r["replay"] == "integrity", "the same server nonce a second time is refused")
    check(r["gcm"] == '{"type":"command","action":"echo","payload":"YGFiY2RlZmdoaWprhpacc6DfbzAV0XucStSgPUwjCd8fvQGVjyZd/z1g5F0=",'
          '"nonce":"1","signature":"M4wyU+kfVwesZ9bJ3WVHtyjgTI1FdB8N/CUOg87cFtw="}',
          "AES-256-GCM sealing is byte-exact with 9.4")
    check(r["cbc"] == '{"type":"command","action":"echo","payload":"cHFyc3R1dnd4eXp7fH1+f/iMyBRMavWZFeJBYVaxbOMGAkZhQHXwMQiuFwafGyoE",'
          '"nonce":"1","signature":"VYbBdUV+yYztmf90ERG1cXBP7GbLzYsOCkpzY3r6c+Y="}',
          "AES-256-CBC-HMAC-SHA256 sealing is byte-exact with 9.5")
    check(r["tampered"] == "integrity" and r["opened"] == {"text": "hello"},
          "a changed signature is refused, the real one opens")


# A server that replays a stored message, played by a second connection of
# bob's that sends the very same sealed and signed content twice (the e2e
# id inside is the same; the server gives each a new message id).
REPLAY_JS = r"""
const [user, password, to, text] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const P = await import('/js/protocol.js');
  const E = await import('/js/e2e.js');
  const key = await E.loadUserKey(user);
  const c = new P.Connection(`ws://${location.host}/`, {});
  await c.open();
  await c.request('login', { username: user, password });
  const k = await c.request('get_public_key', { username: to });
  const sealed = await E.encryptMessage(k.payload.public_key, user, to, text, Date.now() / 1000);
  const signature = await E.signMessage(key.signKey, user, to, sealed.content);
  const p = { recipient: to, content: sealed.content, encrypted: true, signature };
  const r1 = await c.request('private_message', p);
  const r2 = await c.request('private_message', p);
  c.close();
  return [r1.payload.message_id, r2.payload.message_id];
})().then(done, (e) => done({ error: String(e) }));
"""


def in_messages(b, needle, css="#messages > *"):
    return any(needle in t for t in b.message_texts(css))


def main(args):
    t0 = time.time()
    key = os.path.join(args.tmp, "server_key.pem")
    make_key(key)
    srv = Server(args)
    srv.start(key)

    alice = Browser(args, "alice")
    alice.open(srv.url)
    worked_example(alice)
    check(alice.text("#fingerprint").startswith(smtest.key_fingerprint(key)),
          "the page shows the server's fingerprint, computed from its key")
    alice.auth("alice", PW["alice"], register=True)

    bob = Browser(args, "bob")
    bob.open(srv.page("cipher=cbc"))
    bob.auth("bob", PW["bob"], register=True)
    check("AES-256-CBC-HMAC-SHA256" in bob.text("#cipher") and "AES-256-GCM" in alice.text("#cipher"),
          "bob's page runs on AES-256-CBC-HMAC-SHA256, alice's on AES-256-GCM")

    carl = Cli(args, srv.ws_url, "carl", PW["carl"])
    carl.command("/register carl", "register")

    # ---- one room, three users ----
    for b in (alice, bob):
        b.type("#room-name", "lobby")
        b.click("#join-room")
        b.wait_text("#room-title", "lobby")
    carl.command("/join lobby", "join")
    alice.wait_text("#members", "carl")

    alice.type("#message-input", "hello from alice")
    alice.click("#send")
    bob.type("#message-input", "hi from bob" + Keys.ENTER)   # Enter sends
    carl.command("carl here, from the CLI", "say")
    for b in (alice, bob):
        for sender, text in (("alice", "hello from alice"), ("bob", "hi from bob"),
                             ("carl", "carl here, from the CLI")):
            b.wait(f"{sender}'s message in #messages",
                   lambda s=sender, t=text, b=b: any(s in x and t in x for x in b.message_texts()))
    check(True, "both browser users see all three users' messages, each with its sender")
    for sender, text in (("alice", "hello from alice"), ("bob", "hi from bob")):
        carl.wait(f"{sender}'s message at the CLI",
                  lambda o, s=sender, t=text: o.get("action") == "public_message" and o.get("kind") == "event"
                  and o["payload"].get("sender") == s and o["payload"].get("content") == t)
    check(True, "the CLI user sees both browser users' messages")

    # An expiring message: checked for disappearance at the end.
    Select(alice.el("#expiry")).select_by_value("10")
    alice.type("#message-input", "this one disappears" + Keys.ENTER)
    alice.wait("the expiring message", lambda: in_messages(alice, "this one disappears"))
    expiring_sent = time.time()
    Select(alice.el("#expiry")).select_by_value("0")
    carl.wait("the expiring message with expires_at at the CLI",
              lambda o: o.get("action") == "public_message" and o.get("kind") == "event"
              and o["payload"].get("content") == "this one disappears" and "expires_at" in o["payload"])

    # ---- end-to-end private messages, browser -> CLI and back ----
    alice.type("#pm-to", "carl")
    alice.type("#pm-text", "secret for carl" + Keys.ENTER)
    ev = carl.wait("alice's private message at the CLI",
                   lambda o: o.get("action") == "private_message" and o.get("kind") == "event")
    check(ev["payload"]["encrypted"] is True and ev["payload"]["content"].startswith('{"v":1,"ek":"')
          and "secret" not in ev["payload"]["content"],
          "browser -> CLI: the server relayed only the Appendix A ciphertext")
    check(ev["e2e"]["status"] == "ok" and ev["e2e"]["verified"] and ev["e2e"]["decrypted"]
          and ev["e2e"]["text"] == "secret for carl",
          "browser -> CLI: the CLI verified alice's signature and decrypted the text")
    alice.wait_text("#pm-messages", "secret for carl")
    pm_from_alice_id = ev["payload"]["id"]

    reply = carl.command("/msg alice secret for alice, from the CLI", "msg")
    carl_pm_id = reply["payload"]["message_id"]
    alice.wait("carl's private message", lambda: in_messages(alice, "secret for alice, from the CLI", "#pm-messages > *"))
    item = [t for t in alice.message_texts("#pm-messages > *") if "secret for alice" in t][0]
    check("carl" in item and "encrypted" in item and "signature verified" in item and "!!" not in item,
          "CLI -> browser: alice's page verified carl's signature and decrypted the text")
    check(alice.text("#unread-count") == "1 unread", "the unread count shows the new private message")

    # Read receipts: alice reads carl's message -> the CLI gets message_read.
    mark = carl.mark()
    alice.click("#pm-messages li.unread .mark-read")
    carl.wait("message_read at the CLI", lambda o: o.get("action") == "message_read"
              and o["payload"].get("message_id") == carl_pm_id and o["payload"].get("reader") == "alice", start=mark)
    alice.wait_text("#unread-count", "0 unread")
    check(True, "marking read in the browser sends the read receipt to the CLI sender")
    carl.command(f"/read {pm_from_alice_id}", "read")
    alice.wait_text("#pm-messages", "read by carl")
    check(True, "the CLI marking read shows as a read receipt in the browser")

    # The main view for docs/web-client.png: a room, messages, private messages.
    shot_dir = (os.path.join(args.source_dir, "docs") if os.environ.get("SM_UPDATE_SCREENSHOT") == "1"
                else os.getcwd())
    shot = os.path.join(shot_dir, "web-client.png")
    alice.driver.save_screenshot(shot)
    with open(shot, "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"screenshot written to {shot}")

    # ---- a correspondent's key changed on the server: nothing is sent ----
    # The server (here: its database, changed behind its back) hands out
    # another key for carl. alice's pin must stop the message.
    fake = os.path.join(args.tmp, "fake_carl.pem")
    make_key(fake)
    fake_pub = subprocess.run(["openssl", "pkey", "-in", fake, "-pubout"], check=True,
                              stdout=subprocess.PIPE, text=True).stdout
    db = sqlite3.connect(os.path.join(srv.dir, "server.db"), timeout=10)
    real_pub = db.execute("SELECT public_key FROM auth_users WHERE username_lower = 'carl'").fetchone()[0]
    db.execute("UPDATE auth_users SET public_key = ? WHERE username_lower = 'carl'", (fake_pub,))
    db.commit()
    mark = carl.mark()
    alice.type("#pm-to", "carl")
    alice.type("#pm-text", "must not go to a swapped key" + Keys.ENTER)
    alice.wait("the contact key alert", lambda: alice.el("#contact-alert").is_displayed())
    check("CHANGED" in alice.text("#contact-alert") and "carl" in alice.text("#contact-alert")
          and "NOT sent" in alice.text("#error"), "a changed key of carl is refused loudly")
    time.sleep(1)
    check(not any(o.get("action") == "private_message" for o in carl.lines[mark:]),
          "nothing reached carl")
    db.execute("UPDATE auth_users SET public_key = ? WHERE username_lower = 'carl'", (real_pub,))
    db.commit()
    db.close()

    # ---- friends, presence, logout, keyboard-only login ----
    alice.type("#friend-name", "bob" + Keys.ENTER)
    bob.wait_text("#requests", "from alice")
    bob.click("#requests li button")   # Accept comes first
    alice.wait("bob online in alice's friends", lambda: "bob" in alice.text("#friends")
               and "online" in alice.text("#friends"))
    check(True, "friend request sent, accepted, presence shows online")

    bob.click("#logout")
    bob.wait("bob's login form", lambda: bob.el("#username").is_displayed())
    check("connected as" not in bob.text("#status"), "logout ends the session in the page")
    alice.wait("bob offline", lambda: "offline" in alice.text("#friends"))
    check(True, "presence shows bob offline after his logout")
    # Keyboard only: the user name field has the focus; Tab, Enter.
    active = bob.driver.switch_to.active_element
    check(active.get_attribute("id") == "username", "after logout the focus is on the user name")
    active.send_keys(Keys.CONTROL + "a")
    active.send_keys("bob" + Keys.TAB)
    bob.driver.switch_to.active_element.send_keys(PW["bob"] + Keys.ENTER)
    bob.wait_text("#status", "connected as bob", timeout=40)
    alice.wait("bob online again", lambda: "online" in alice.text("#friends"))
    check(True, "keyboard-only login works and presence shows bob online again")

    # Unread while offline: bob -> alice from the browser, read receipt back.
    bob.type("#pm-to", "alice")
    bob.type("#pm-text", "a note from bob" + Keys.ENTER)
    alice.wait("bob's private message", lambda: in_messages(alice, "a note from bob", "#pm-messages > *"))
    alice.click("#mark-all-read")
    bob.wait_text("#pm-messages", "read by alice")
    check(True, "browser -> browser private message, mark all read, receipt shown to the sender")

    # ---- an action (/me, PROTOCOL.md decision 35) ----
    carl.command("/me waves", "me")
    alice.wait("carl's action", lambda: in_messages(alice, "* carl waves"))
    check(True, "a /me message from the CLI shows as an action")

    # ---- history paging ----
    carl.command("/join archive", "join")
    alice.wait("carl to leave lobby's members", lambda: "carl" not in alice.text("#members"))
    check("alice" in alice.text("#members"), "user_left: carl left alice's member list")
    for i in range(1, 61):
        carl.send(f"archive message {i:02d}")
    carl.wait("the 60th archive message", lambda o: o.get("kind") == "event" and o.get("action") == "public_message"
              and o["payload"].get("content") == "archive message 60")
    # The room list (list_rooms) shows archive with carl in it; join from it.
    bob.click("#refresh-rooms")
    bob.wait_text("#room-list", "archive (1)")
    [b for b in bob.els("#room-list button") if b.text.startswith("archive")][0].click()
    bob.wait_text("#room-title", "archive")
    bob.wait("the first history page", lambda: len(bob.els("#messages > *")) == 50)
    check(bob.el("#load-older").is_displayed() and not in_messages(bob, "archive message 10"),
          "joining shows the newest 50 messages and offers older ones")
    bob.click("#load-older")
    bob.wait("the second page", lambda: len(bob.els("#messages > *")) == 60)
    texts = bob.message_texts()
    check("archive message 01" in texts[0] and "archive message 60" in texts[-1]
          and not bob.el("#load-older").is_displayed(),
          "the older page is added above, in order, and paging ends")

    mark = carl.mark()
    bob.click("#leave-room")
    bob.wait_text("#room-title", "none")
    carl.wait("user_left for bob", lambda o: o.get("action") == "user_left"
              and o["payload"].get("username") == "bob" and o["payload"].get("room") == "archive", start=mark)
    check(not bob.els("#messages > *"), "leaving the room empties the view and tells the others")

    # ---- blocking ----
    alice.type("#block-name", "carl" + Keys.ENTER)
    alice.wait_text("#blocked", "carl")
    carl.command("/msg alice you should not see this", "msg")
    bob.type("#pm-to", "alice")
    bob.type("#pm-text", "after the block" + Keys.ENTER)
    alice.wait("bob's later message", lambda: in_messages(alice, "after the block", "#pm-messages > *"))
    check(not in_messages(alice, "you should not see this", "#pm-messages > *"),
          "a blocked user's private message is not delivered")
    alice.click("#blocked li button")   # Unblock
    alice.wait("the blocked list to empty", lambda: "carl" not in alice.text("#blocked"))

    # ---- a replayed e2e id is refused ----
    ids = bob.driver.execute_async_script(REPLAY_JS, "bob", PW["bob"], "alice", "said only once")
    check(isinstance(ids, list) and ids[0] != ids[1], f"the same sealed message was sent twice ({ids})")
    alice.wait("the replay", lambda: in_messages(alice, "REPLAY", "#pm-messages > *"))
    items = alice.message_texts("#pm-messages > *")
    check(sum("said only once" in t for t in items) == 1
          and any("REPLAY" in t and "said only once" not in t for t in items),
          "the first copy is shown, the replayed one is refused and its text withheld")

    # ---- the expiring message left the view ----
    alice.wait("the expiring message to disappear", lambda: not in_messages(alice, "this one disappears"),
               timeout=max(5, 25 - (time.time() - expiring_sent)))
    check(in_messages(alice, "hello from alice"), "the expiring message left the view, the others stayed")

    # ---- 360 px ----
    # A phone's viewport (a headless window may not go below 500 px wide).
    bob.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    time.sleep(0.3)
    width = bob.driver.execute_script("return document.documentElement.scrollWidth")
    inner = bob.driver.execute_script("return window.innerWidth")
    if width > inner:
        wide = bob.driver.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            "window.innerWidth + 1).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' '"
            " + Math.round(e.getBoundingClientRect().right));")
        log(f"too wide at 360 px: {wide}")
        bob.driver.save_screenshot(os.path.join(args.tmp, "..", "narrow.png"))
    check(width <= inner, f"no horizontal scrolling at 360 px (content {width}, window {inner})")
    for css in ("#message-input", "#send", "#pm-send", "#join-room"):
        r = bob.driver.execute_script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return [r.left, r.right, r.width];", css)
        check(r[0] >= 0 and r[1] <= inner and r[2] > 0, f"{css} fits at 360 px")

    # ---- the page obeyed the CSP ----
    for b in (alice, bob):
        bad = [e for e in b.console_errors() if "Content Security Policy" in e.get("message", "")
               or "Refused to" in e.get("message", "")]
        check(not bad, f"{b.name}: no CSP violation in the console ({bad[:2]})")

    log(f"browser.chat passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main(Args(sys.argv))
    print("1 passed, 0 failed")
