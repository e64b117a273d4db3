// The SafeMessenger wire protocol (PROTOCOL.md sections 1-5) over the
// browser's WebSocket and WebCrypto: the handshake, the sealed envelopes with
// their per-direction nonces, request/reply matching and PONG. No UI here.
import {
  utf8, utf8Decode, randomBytes, concatBytes, b64encode, b64decode, pemToDer, fingerprintDer,
} from './codec.js';

export const SUBPROTOCOL = 'safemessenger.v1';
export const CIPHER_GCM = 'AES-256-GCM';
export const CIPHER_CBC = 'AES-256-CBC-HMAC-SHA256';
const HKDF_INFO = utf8.encode('safemessenger v1 session keys');
const MIN_RSA_BITS = 2048;
const REPLY_TIMEOUT_MS = 30000;
const U64_MAX = (1n << 64n) - 1n;

// Why a connection was given up. `kind` is one of: 'key_changed' (the pin
// refused the server's key; nothing was sent), 'handshake' (the server
// refused or the handshake failed), 'integrity' (a server message failed a
// check), 'closed', 'timeout'.
export class ProtocolError extends Error {
  constructor(kind, message, detail = {}) {
    super(message);
    this.kind = kind;
    Object.assign(this, detail);
  }
}

// An `error` reply: code, message, command, retry_after as the server sent.
export class ServerError extends Error {
  constructor(payload) {
    super(payload && typeof payload.message === 'string' ? payload.message : 'server error');
    this.code = payload ? payload.code : undefined;
    this.command = payload ? payload.command : undefined;
    this.retryAfter = payload ? payload.retry_after : undefined;
  }
}

// Section 3 step 3: the 128 bytes of HKDF-SHA256, split in protocol order.
export async function deriveKeys(k, serverNonce, clientNonce) {
  const ikm = await crypto.subtle.importKey('raw', k, 'HKDF', false, ['deriveBits']);
  const bits = new Uint8Array(await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: concatBytes(serverNonce, clientNonce), info: HKDF_INFO },
    ikm, 1024));
  return {
    c2sEnc: bits.slice(0, 32), s2cEnc: bits.slice(32, 64),
    c2sMac: bits.slice(64, 96), s2cMac: bits.slice(96, 128),
  };
}

export function canonicalHeader(type, action, nonce, replyTo) {
  return `${type}\n${action}\n${nonce}\n${replyTo === undefined ? '' : replyTo}`;
}

// One direction's keys and counter. A client seals with c2s and opens with
// s2c; the worked-example test also uses the opposite pairing.
export class Channel {
  static async create(cipher, sendEnc, sendMac, recvEnc, recvMac) {
    if (cipher !== CIPHER_GCM && cipher !== CIPHER_CBC) throw new Error(`unknown cipher ${cipher}`);
    const alg = cipher === CIPHER_GCM ? 'AES-GCM' : 'AES-CBC';
    const ch = new Channel();
    ch.cipher = cipher;
    ch.alg = alg;
    ch.sendEnc = await crypto.subtle.importKey('raw', sendEnc, alg, false, ['encrypt']);
    ch.recvEnc = await crypto.subtle.importKey('raw', recvEnc, alg, false, ['decrypt']);
    const hmac = { name: 'HMAC', hash: 'SHA-256' };
    ch.sendMac = await crypto.subtle.importKey('raw', sendMac, hmac, false, ['sign']);
    ch.recvMac = await crypto.subtle.importKey('raw', recvMac, hmac, false, ['verify']);
    ch.sendNonce = 0n;
    ch.recvNonce = 0n;
    return ch;
  }

  // The envelope as a JSON string; takes the next send nonce. `iv` only for
  // known-answer tests: real messages draw a fresh one.
  async seal(type, action, replyTo, payloadObj, iv) {
    if (this.sendNonce >= U64_MAX) throw new ProtocolError('integrity', 'send nonce exhausted');
    this.sendNonce += 1n;
    const nonce = this.sendNonce.toString();
    const h = canonicalHeader(type, action, nonce, replyTo);
    const plain = utf8.encode(JSON.stringify(payloadObj));
    let raw;
    if (this.alg === 'AES-GCM') {
      const ivb = iv || randomBytes(12);
      const ct = await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv: ivb, additionalData: utf8.encode(h), tagLength: 128 },
        this.sendEnc, plain);
      raw = concatBytes(ivb, new Uint8Array(ct));
    } else {
      const ivb = iv || randomBytes(16);
      const ct = await crypto.subtle.encrypt({ name: 'AES-CBC', iv: ivb }, this.sendEnc, plain);
      raw = concatBytes(ivb, new Uint8Array(ct));
    }
    const payload = b64encode(raw);
    const mac = await crypto.subtle.sign('HMAC', this.sendMac, utf8.encode(`${h}\n${payload}`));
    const env = { type, action, payload, nonce, signature: b64encode(new Uint8Array(mac)) };
    if (replyTo !== undefined) env.reply_to = replyTo;
    return JSON.stringify(env);
  }

  // Section 4's order: signature, then nonce (which only then advances),
  // then decryption. Throws ProtocolError('integrity') on any failure.
  async open(env) {
    const bad = (why) => new ProtocolError('integrity', why);
    for (const f of ['type', 'action', 'nonce', 'signature']) {
      if (typeof env[f] !== 'string') throw bad(`server message without string ${f}`);
    }
    if ('reply_to' in env && typeof env.reply_to !== 'string') throw bad('bad reply_to');
    if (typeof env.payload !== 'string') throw bad('payload is not a string');
    let sig;
    try {
      sig = b64decode(env.signature);
    } catch (e) {
      throw bad('signature is not base64');
    }
    const h = canonicalHeader(env.type, env.action, env.nonce, env.reply_to);
    // WebCrypto's HMAC verify compares the whole MAC, not byte by byte.
    const ok = sig.length === 32 && await crypto.subtle.verify(
      'HMAC', this.recvMac, sig, utf8.encode(`${h}\n${env.payload}`));
    if (!ok) throw bad('bad signature on a server message');
    const expected = this.recvNonce + 1n;
    if (expected > U64_MAX || env.nonce !== expected.toString()) {
      throw bad(`server nonce ${env.nonce}, expected ${expected}`);
    }
    this.recvNonce = expected;
    let plain;
    try {
      const raw = b64decode(env.payload);
      if (this.alg === 'AES-GCM') {
        if (raw.length < 12 + 16) throw new Error('short');
        plain = await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: raw.subarray(0, 12), additionalData: utf8.encode(h), tagLength: 128 },
          this.recvEnc, raw.subarray(12));
      } else {
        if (raw.length < 32 || (raw.length - 16) % 16 !== 0) throw new Error('short');
        plain = await crypto.subtle.decrypt(
          { name: 'AES-CBC', iv: raw.subarray(0, 16) }, this.recvEnc, raw.subarray(16));
      }
    } catch (e) {
      throw bad('a server message does not decrypt');
    }
    let obj;
    try {
      obj = JSON.parse(utf8Decode(new Uint8Array(plain)));
    } catch (e) {
      throw bad('a server payload is not JSON');
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      throw bad('a server payload is not a JSON object');
    }
    return obj;
  }
}

// Checks the server_hello and returns what the pin decision needs. The
// fingerprint is computed from the key, and the hello's own field must agree.
async function readHello(env) {
  const p = env.payload;
  if (env.type !== 'event' || env.action !== 'server_hello' || !p || typeof p !== 'object') {
    throw new ProtocolError('handshake', 'the server did not start with server_hello');
  }
  if (p.protocol !== 1) throw new ProtocolError('handshake', `unsupported protocol ${p.protocol}`);
  let der;
  let serverNonce;
  try {
    der = pemToDer(p.public_key);
    serverNonce = b64decode(p.server_nonce);
  } catch (e) {
    throw new ProtocolError('handshake', 'server_hello is malformed');
  }
  if (serverNonce.length !== 32) throw new ProtocolError('handshake', 'server_nonce is not 32 bytes');
  const fingerprint = await fingerprintDer(der);
  if (p.fingerprint !== fingerprint) {
    throw new ProtocolError('handshake', 'the fingerprint in server_hello does not match its key');
  }
  const ciphers = Array.isArray(p.ciphers) ? p.ciphers : [];
  return { der, serverNonce, fingerprint, ciphers, publicKeyPem: p.public_key };
}

// One connection. Usage:
//   const c = new Connection(url, { checkServerKey, onEvent, onClose, cipher });
//   await c.open();              // handshake done (rejects with ProtocolError)
//   const r = await c.request('login', {...});   // {type, action, payload}
// checkServerKey({fingerprint, publicKeyPem}) runs before anything is sent and
// returns true to go on; false refuses the key (open() rejects 'key_changed').
// onEvent({action, payload}) gets every event but PING, which is answered
// here. onClose(error|null) runs once, after the connection is gone.
export class Connection {
  constructor(url, opts = {}) {
    this.url = url;
    this.opts = opts;
    this.pending = new Map();
    this.channel = null;
    this.rx = Promise.resolve();
    this.tx = Promise.resolve();
    this.events = Promise.resolve();
    this.closed = false;
    this.closeError = null;
    this.serverTimeOffset = 0;
  }

  open() {
    return new Promise((resolve, reject) => {
      this.handshakeDone = resolve;
      this.handshakeFailed = reject;
      let ws;
      try {
        ws = new WebSocket(this.url, SUBPROTOCOL);
      } catch (e) {
        reject(new ProtocolError('closed', `cannot connect: ${e.message}`));
        return;
      }
      this.ws = ws;
      ws.onmessage = (ev) => {
        const data = ev.data;
        this.rx = this.rx.then(() => this.receive(data)).catch((e) => this.fail(e));
      };
      ws.onclose = (ev) => {
        const why = ev.reason ? `${ev.code} ${ev.reason}` : `${ev.code}`;
        // Let queued messages (an error explaining the close) go first.
        this.rx = this.rx.then(() => this.finish(
          this.closeError || new ProtocolError('closed', `connection closed (${why})`, { closeCode: ev.code })));
      };
      ws.onerror = () => {};
    });
  }

  async receive(data) {
    if (this.closed) return;
    if (typeof data !== 'string') throw new ProtocolError('integrity', 'binary message from the server');
    let env;
    try {
      env = JSON.parse(data);
    } catch (e) {
      throw new ProtocolError('integrity', 'a server message is not JSON');
    }
    if (env === null || typeof env !== 'object' || Array.isArray(env)) {
      throw new ProtocolError('integrity', 'a server message is not an object');
    }
    if (!this.hello) return this.onHello(env);
    if (!this.channel) {
      // Handshake errors come unencrypted (section 3).
      if (env.type === 'error' && env.payload && typeof env.payload === 'object') {
        const e = new ServerError(env.payload);
        throw new ProtocolError('handshake', `the server refused the handshake: ${e.message}`,
          { code: e.code, retryAfter: e.retryAfter });
      }
      throw new ProtocolError('handshake', 'unexpected message during the handshake');
    }
    const payload = await this.channel.open(env);
    if (!this.ready) {
      if (env.type !== 'response' || env.action !== 'key_exchange' || env.reply_to !== '0'
          || payload.success !== true) {
        throw new ProtocolError('handshake', 'the server did not confirm the key exchange');
      }
      this.ready = true;
      this.sessionId = payload.session_id;
      this.handshakeDone({ fingerprint: this.hello.fingerprint, cipher: this.channel.cipher });
      return undefined;
    }
    if (typeof payload.timestamp === 'number') {
      this.serverTimeOffset = payload.timestamp - Date.now() / 1000;
    }
    if (env.type === 'response' || env.type === 'error') {
      const p = this.pending.get(env.reply_to);
      if (!p) return undefined;   // e.g. a reply after its timeout
      this.pending.delete(env.reply_to);
      clearTimeout(p.timer);
      if (env.type === 'error') p.reject(new ServerError(payload));
      else p.resolve({ type: env.type, action: env.action, payload });
      return undefined;
    }
    if (env.type === 'event') {
      if (env.action === 'PING') {
        this.send('PONG', { timestamp: payload.timestamp }, false).catch(() => {});
        return undefined;
      }
      if (this.opts.onEvent) {
        // Handlers run one after the other, in arrival order, but outside
        // the receive chain: a handler may wait for a reply of its own.
        const ev = { action: env.action, payload };
        this.events = this.events.then(() => this.opts.onEvent(ev))
          .catch((e) => console.error('event handler failed', e));
      }
    }
    return undefined;
  }

  async onHello(env) {
    const hello = await readHello(env);
    this.hello = hello;
    const accept = this.opts.checkServerKey ? await this.opts.checkServerKey(hello) : true;
    if (!accept) {
      throw new ProtocolError('key_changed', 'the server key differs from the pinned one',
        { fingerprint: hello.fingerprint });
    }
    let cipher = this.opts.cipher || CIPHER_GCM;
    if (!hello.ciphers.includes(cipher)) {
      cipher = [CIPHER_GCM, CIPHER_CBC].find((c) => hello.ciphers.includes(c));
    }
    if (!cipher) throw new ProtocolError('handshake', 'no cipher in common with the server');
    let serverKey;
    try {
      serverKey = await crypto.subtle.importKey('spki', hello.der, { name: 'RSA-OAEP', hash: 'SHA-256' },
        false, ['encrypt']);
    } catch (e) {
      throw new ProtocolError('handshake', 'the server key is not an RSA key');
    }
    if (serverKey.algorithm.modulusLength < MIN_RSA_BITS) {
      throw new ProtocolError('handshake', 'the server key is shorter than 2048 bits');
    }
    const k = randomBytes(32);
    const clientNonce = randomBytes(32);
    const ek = new Uint8Array(await crypto.subtle.encrypt({ name: 'RSA-OAEP' }, serverKey, k));
    const keys = await deriveKeys(k, hello.serverNonce, clientNonce);
    k.fill(0);
    this.channel = await Channel.create(cipher, keys.c2sEnc, keys.c2sMac, keys.s2cEnc, keys.s2cMac);
    Object.values(keys).forEach((b) => b.fill(0));
    this.ws.send(JSON.stringify({
      type: 'command', action: 'key_exchange',
      payload: { cipher, encrypted_key: b64encode(ek), client_nonce: b64encode(clientNonce) },
      nonce: '0', signature: '',
    }));
  }

  // Sends a command. With wantReply (all but PONG) resolves with the reply
  // {type, action, payload} or rejects with ServerError / ProtocolError.
  send(action, payload, wantReply = true) {
    if (this.closed || !this.ready) {
      return Promise.reject(this.closeError || new ProtocolError('closed', 'not connected'));
    }
    let settle;
    const result = new Promise((resolve, reject) => { settle = { resolve, reject }; });
    // Sealing is asynchronous: the chain keeps nonces in sending order.
    this.tx = this.tx.then(async () => {
      if (this.closed) throw this.closeError || new ProtocolError('closed', 'not connected');
      const nonce = (this.channel.sendNonce + 1n).toString();
      const text = await this.channel.seal('command', action, undefined, payload || {});
      if (wantReply) {
        const timer = setTimeout(() => {
          this.pending.delete(nonce);
          settle.reject(new ProtocolError('timeout', `no reply to ${action}`));
          this.fail(new ProtocolError('timeout', `no reply to ${action} in time`));
        }, REPLY_TIMEOUT_MS);
        this.pending.set(nonce, { ...settle, timer });
      }
      this.ws.send(text);
      if (!wantReply) settle.resolve(null);
    }).catch((e) => settle.reject(e));
    return result;
  }

  request(action, payload) {
    return this.send(action, payload, true);
  }

  serverNow() {
    return Date.now() / 1000 + this.serverTimeOffset;
  }

  // Gives up the connection because of err (a ProtocolError).
  fail(err) {
    if (this.closed) return;
    this.closeError = err;
    try {
      this.ws.close(err.kind === 'integrity' ? 4000 : 1000);
    } catch (e) { /* already closing */ }
    this.finish(err);
  }

  // A deliberate close by the user.
  close() {
    if (this.closed) return;
    const err = new ProtocolError('closed', 'closed by the client', { deliberate: true });
    this.closeError = err;
    try {
      this.ws.close(1000);
    } catch (e) { /* already closing */ }
    this.finish(err);
  }

  finish(err) {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    if (!this.ready && this.handshakeFailed) this.handshakeFailed(err);
    if (this.opts.onClose) this.opts.onClose(err);
  }
}
