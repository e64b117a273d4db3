#!/usr/bin/env python3
"""Handshake flood probe (docs/BENCHMARKS.md, "handshake flood").

    handshake_flood.py --port P [--flood N] [--flood-source 127.0.0.1]
                       [--probe-source 127.0.0.2] [--server-pid PID]

Sends N junk key_exchange messages (valid base64, undecryptable
ciphertext of the key's size) from one source address, each on its own
connection that is closed at once, as fast as the server accepts them;
meanwhile and afterwards a probe from another source address performs real
handshakes (RSA-OAEP-SHA256, the protocol's key_exchange) one after the
other and times each to the server's encrypted key_exchange response. Prints
one JSON object: the flood's outcome (answered with 1007, refused with
1008, refused at upgrade), the probe's latencies during and after the
flood, and the server's CPU seconds in the 5 s after the flood ended.
Loopback only; bounded by N and a 120 s limit. Needs python3-cryptography.
"""
import argparse
import base64
import json
import os
import socket
import statistics
import struct
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def ws_open(port, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during upgrade")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status:
        s.close()
        raise PermissionError(status.decode(errors="replace"))
    rest = head.split(b"\r\n\r\n", 1)[1]
    return s, rest


def ws_send(s, text):
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    if n < 126:
        hdr = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def ws_recv(s, buf):
    """One text message (unmasked server frame, no fragmentation)."""
    def need(k):
        nonlocal buf
        while len(buf) < k:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
    need(2)
    op, ln = buf[0] & 0x0F, buf[1] & 0x7F
    off = 2
    if ln == 126:
        need(4)
        ln, off = struct.unpack("!H", buf[2:4])[0], 4
    elif ln == 127:
        need(10)
        ln, off = struct.unpack("!Q", buf[2:10])[0], 10
    need(off + ln)
    payload, buf = buf[off:off + ln], buf[off + ln:]
    if op == 8:
        raise ConnectionError("close %d" % (struct.unpack("!H", payload[:2])[0] if ln >= 2 else 0))
    return payload.decode(), buf


def key_exchange(encrypted_key):
    return json.dumps({"type": "command", "action": "key_exchange", "nonce": "0",
                       "signature": "", "payload": {
                           "cipher": "AES-256-GCM",
                           "encrypted_key": base64.b64encode(encrypted_key).decode(),
                           "client_nonce": base64.b64encode(os.urandom(32)).decode()}})


def probe_once(port, source):
    t0 = time.monotonic()
    s, buf = ws_open(port, source)
    try:
        hello, buf = ws_recv(s, buf)
        pem = json.loads(hello)["payload"]["public_key"].encode()
        pub = serialization.load_pem_public_key(pem)
        ek = pub.encrypt(os.urandom(32), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                      algorithm=hashes.SHA256(), label=None))
        ws_send(s, key_exchange(ek))
        reply, buf = ws_recv(s, buf)
        ok = json.loads(reply).get("type") == "response"
    finally:
        s.close()
    return ok, time.monotonic() - t0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--flood", type=int, default=3000)
    ap.add_argument("--flood-source", default="127.0.0.1")
    ap.add_argument("--probe-source", default="127.0.0.2")
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--threads", type=int, default=48)
    ap.add_argument("--linger", type=float, default=0.0,
                    help="seconds a flood connection waits for an answer before it closes "
                         "(0: it closes right after sending, as an attacker that leaves)")
    a = ap.parse_args()
    for src in (a.flood_source, a.probe_source):
        if not src.startswith("127."):
            raise SystemExit("loopback sources only")

    # The key's size, for junk of the right length.
    s, buf = ws_open(a.port, a.probe_source)
    hello, buf = ws_recv(s, buf)
    s.close()
    pub = serialization.load_pem_public_key(json.loads(hello)["payload"]["public_key"].encode())
    junk_len = pub.key_size // 8

    outcome = {"answered_1007": 0, "refused_1008": 0, "refused_at_upgrade": 0, "left": 0,
               "other": 0}
    lock = threading.Lock()
    todo = iter(range(a.flood))
    deadline = time.monotonic() + 120

    def flooder():
        for _ in todo:
            if time.monotonic() > deadline:
                return
            kind = "other"
            try:
                s, b = ws_open(a.port, a.flood_source)
                try:
                    ws_recv(s, b)
                    ws_send(s, key_exchange(os.urandom(junk_len)))
                    if a.linger <= 0:
                        kind = "left"
                        raise ConnectionAbortedError
                    s.settimeout(a.linger)
                    try:
                        r, _ = ws_recv(s, b"")
                        code = json.loads(r).get("payload", {}).get("code")
                        kind = {1007: "answered_1007", 1008: "refused_1008"}.get(code, "other")
                    except (socket.timeout, ConnectionError, ValueError):
                        kind = "other"  # closed before any answer: the attacker left
                finally:
                    s.close()
            except ConnectionAbortedError:
                pass
            except PermissionError:
                kind = "refused_at_upgrade"
            except OSError:
                kind = "other"
            with lock:
                outcome[kind] += 1

    probes_during, probes_after, failures = [], [], 0
    flood_done = threading.Event()
    threads = [threading.Thread(target=flooder) for _ in range(a.threads)]
    t_start = time.monotonic()
    for t in threads:
        t.start()

    def joiner():
        for t in threads:
            t.join()
        flood_done.set()

    threading.Thread(target=joiner).start()
    while not flood_done.is_set() and time.monotonic() < deadline:
        ok, dt = probe_once(a.port, a.probe_source)
        failures += not ok
        probes_during.append(dt)
    flood_seconds = time.monotonic() - t_start
    # What the attacker's leftovers cost once it is gone: nobody connects.
    cpu_before = cpu_seconds(a.server_pid) if a.server_pid else None
    time.sleep(5)
    cpu_after = cpu_seconds(a.server_pid) if a.server_pid else None
    for _ in range(10):
        ok, dt = probe_once(a.port, a.probe_source)
        failures += not ok
        probes_after.append(dt)

    def summary(xs):
        if not xs:
            return None
        xs = sorted(xs)
        return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1000, 1),
                "max_ms": round(xs[-1] * 1000, 1)}

    print(json.dumps({
        "key_bits": pub.key_size, "flood": a.flood, "flood_seconds": round(flood_seconds, 2),
        "flood_outcome": outcome, "probe_failures": failures,
        "probe_during_flood": summary(probes_during), "probe_after_flood": summary(probes_after),
        "server_cpu_seconds_in_5s_after": None if cpu_before is None
        else round(cpu_after - cpu_before, 2)}))


if __name__ == "__main__":
    main()
