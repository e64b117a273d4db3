#!/usr/bin/env python3
"""Worked example of docs/PROTOCOL.md ("Worked example" section).

Computes every byte the document shows, from fixed inputs, so anyone can
reproduce them: the HKDF-SHA256 key split of the handshake (section 3), the
server's key_exchange response, and one client command sealed under both
ciphers (section 4).

Run: python3 docs/examples/worked_example.py
Needs the `cryptography` package (tested with 48) for HKDF and AES.

The fixed IVs only make the example reproducible: real senders draw a fresh
random IV for every message.
"""
import base64
import hashlib
import hmac
import json

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"safemessenger v1 session keys"


def b64(data):
    return base64.b64encode(data).decode("ascii")


def hkdf_stdlib(ikm, salt, info, length):
    """RFC 5869 written out with hmac/hashlib, to cross-check the library."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def derive(k, server_nonce, client_nonce):
    salt = server_nonce + client_nonce
    okm = HKDF(algorithm=hashes.SHA256(), length=128, salt=salt, info=INFO).derive(k)
    assert okm == hkdf_stdlib(k, salt, INFO, 128), "HKDF implementations disagree"
    names = ("c2s_enc", "s2c_enc", "c2s_mac", "s2c_mac")
    return salt, okm, {n: okm[i * 32:(i + 1) * 32] for i, n in enumerate(names)}


def header(typ, action, nonce, reply_to):
    return "\n".join([typ, action, nonce, reply_to or ""]).encode("utf-8")


def seal(cipher, enc_key, mac_key, iv, typ, action, nonce, reply_to, plaintext):
    h = header(typ, action, nonce, reply_to)
    if cipher == "AES-256-GCM":
        ct_tag = AESGCM(enc_key).encrypt(iv, plaintext, h)  # ciphertext || 16-byte tag
        raw = iv + ct_tag
        body = ct_tag
    else:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        enc = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
        body = enc.update(padded) + enc.finalize()
        raw = iv + body
    payload = b64(raw)
    mac_input = h + b"\n" + payload.encode("ascii")
    signature = b64(hmac.new(mac_key, mac_input, hashlib.sha256).digest())
    env = {"type": typ, "action": action, "payload": payload, "nonce": nonce,
           "signature": signature}
    if reply_to is not None:
        env["reply_to"] = reply_to
    return {"H": h, "body": body, "payload": payload, "mac_input": mac_input,
            "signature": signature, "envelope": json.dumps(env, separators=(",", ":"))}


def shown(data):
    """Bytes as the document shows them: printable ASCII, \\n for newline."""
    return data.decode("utf-8").replace("\n", "\\n")


def main():
    k = bytes(range(0x00, 0x20))
    server_nonce = bytes(range(0x20, 0x40))
    client_nonce = bytes(range(0x40, 0x60))
    salt, okm, keys = derive(k, server_nonce, client_nonce)

    print("== Inputs")
    print("K               hex    ", k.hex())
    print("K               base64 ", b64(k))
    print("server_nonce    hex    ", server_nonce.hex())
    print("server_nonce    base64 ", b64(server_nonce))
    print("client_nonce    hex    ", client_nonce.hex())
    print("client_nonce    base64 ", b64(client_nonce))
    print()
    print("== HKDF-SHA256")
    print("IKM             ", k.hex())
    print("salt            ", salt.hex())
    print("info            ", repr(INFO.decode()), "=", INFO.hex(), f"({len(INFO)} bytes)")
    print("L                128")
    print("OKM             ", okm.hex())
    for name, key in keys.items():
        print(f"{name:<16}", key.hex())

    # The server's key_exchange response (section 3 step 4): the first
    # server-to-client message, sealed with the s2c keys. The session_id is
    # a fixed stand-in for the 32 random hex characters the server draws.
    resp_pt = b'{"success":true,"session_id":"3f9c2a7be1d04c5f8a6e0b1d2c3e4f50"}'
    resp_iv = bytes(range(0x80, 0x8c))
    r = seal("AES-256-GCM", keys["s2c_enc"], keys["s2c_mac"], resp_iv,
             "response", "key_exchange", "1", "0", resp_pt)
    print()
    print("== Server key_exchange response under AES-256-GCM (s2c keys)")
    print("plaintext       ", resp_pt.decode())
    print("H               ", shown(r["H"]), f"({len(r['H'])} bytes)")
    print("IV              ", resp_iv.hex())
    print("ciphertext||tag ", r["body"].hex())
    print("payload         ", r["payload"])
    print("HMAC input      ", shown(r["mac_input"]))
    print("signature       ", r["signature"])
    print("envelope        ", r["envelope"])

    plaintext = b'{"text":"hello"}'
    cases = (("AES-256-GCM", bytes(range(0x60, 0x6c))),
             ("AES-256-CBC-HMAC-SHA256", bytes(range(0x70, 0x80))))
    for cipher, iv in cases:
        r = seal(cipher, keys["c2s_enc"], keys["c2s_mac"], iv,
                 "command", "echo", "1", None, plaintext)
        print()
        print(f"== Client command under {cipher} (c2s keys)")
        print("plaintext       ", plaintext.decode())
        print("H               ", shown(r["H"]), f"({len(r['H'])} bytes)")
        print("H hex           ", r["H"].hex())
        print("IV              ", iv.hex())
        if cipher == "AES-256-GCM":
            print("ciphertext||tag ", r["body"].hex())
            print("  ciphertext    ", r["body"][:-16].hex())
            print("  tag           ", r["body"][-16:].hex())
        else:
            print("ciphertext      ", r["body"].hex())
        print("payload         ", r["payload"])
        print("HMAC input      ", shown(r["mac_input"]))
        print("signature       ", r["signature"])
        print("signature hex   ", base64.b64decode(r["signature"]).hex())
        print("envelope        ", r["envelope"])


if __name__ == "__main__":
    main()
