// PROTOCOL.md Appendix A (end-to-end private messages) with WebCrypto, in the
// same format as the CLI (tools/cli/e2e.c), plus where this browser keeps the
// user's key pair (IndexedDB, non-extractable) and its pins (localStorage).
import {
  utf8, utf8Decode, randomBytes, b64encode, b64decode, pemToDer, derToPem, fingerprintDer,
} from './codec.js';

const PREFIX = 'safemessenger e2e v1\n';
const KEY_BITS = 3072;          // as the CLI creates
const MIN_RSA_BITS = 2048;
const ID_BYTES = 16;
const SALT_LEN = 32;
const OAEP = { name: 'RSA-OAEP', hash: 'SHA-256' };
const PSS = { name: 'RSA-PSS', hash: 'SHA-256' };

export class E2EError extends Error {}

function boundText(sender, recipient, content) {
  return content === undefined ? `${PREFIX}${sender}\n${recipient}` : `${PREFIX}${sender}\n${recipient}\n${content}`;
}

async function importPublic(pem, alg, usage) {
  let key;
  try {
    key = await crypto.subtle.importKey('spki', pemToDer(pem), alg, false, [usage]);
  } catch (e) {
    throw new E2EError('the key is not a usable RSA public key');
  }
  if (key.algorithm.modulusLength < MIN_RSA_BITS) throw new E2EError('the key has fewer than 2048 bits');
  return key;
}

// A new key pair. WebCrypto ties a key to one algorithm, and Appendix A uses
// the private key for both RSA-OAEP and RSA-PSS, so the pair is generated
// extractable once, its PKCS#8 form imported twice as NON-extractable keys,
// and the extractable key and the PKCS#8 bytes dropped. Only the two
// non-extractable keys are stored.
export async function generateUserKey() {
  const pair = await crypto.subtle.generateKey(
    { ...OAEP, modulusLength: KEY_BITS, publicExponent: new Uint8Array([1, 0, 1]) },
    true, ['encrypt', 'decrypt']);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', pair.privateKey));
  try {
    const decryptKey = await crypto.subtle.importKey('pkcs8', pkcs8, OAEP, false, ['decrypt']);
    const signKey = await crypto.subtle.importKey('pkcs8', pkcs8, PSS, false, ['sign']);
    const spki = new Uint8Array(await crypto.subtle.exportKey('spki', pair.publicKey));
    return { decryptKey, signKey, publicPem: derToPem(spki), fingerprint: await fingerprintDer(spki) };
  } finally {
    pkcs8.fill(0);
  }
}

// ---- the key store (IndexedDB; one record per user name, lower-cased) ----

const DB_NAME = 'safemessenger';
const STORE = 'user_keys';

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function withStore(mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req ? req.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export function loadUserKey(username) {
  return withStore('readonly', (s) => s.get(username.toLowerCase()));
}

// Never overwrites: a key that exists stays (as the CLI never overwrites its
// key file). Returns false when one was already there.
export async function saveUserKey(username, key) {
  const existing = await loadUserKey(username);
  if (existing) return false;
  const record = {
    decryptKey: key.decryptKey, signKey: key.signKey, publicPem: key.publicPem,
    fingerprint: key.fingerprint, created: Date.now(),
  };
  await withStore('readwrite', (s) => s.put(record, username.toLowerCase()));
  return true;
}

// ---- pins of correspondents' keys and the replay list (localStorage) ----

const CONTACTS = 'sm.contacts.v1';

function readJson(name, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(name));
    return v && typeof v === 'object' ? v : fallback;
  } catch (e) {
    return fallback;
  }
}

export function contactPin(user) {
  const all = readJson(CONTACTS, {});
  return all[user.toLowerCase()] || null;
}

export function setContactPin(user, pem, fingerprint) {
  const all = readJson(CONTACTS, {});
  all[user.toLowerCase()] = { pem, fingerprint, pinned_at: Date.now() };
  localStorage.setItem(CONTACTS, JSON.stringify(all));
}

const SEEN_MAX = 10000;

// The e2e ids shown to `me`, each with the server message id it came in.
// Returns 'new', 'again' (the same server message listed again) or 'replay'.
export function checkSeen(me, e2eId, messageId) {
  const name = `sm.seen.v1.${me.toLowerCase()}`;
  const seen = readJson(name, {});
  if (Object.prototype.hasOwnProperty.call(seen, e2eId)) {
    return seen[e2eId] === messageId ? 'again' : 'replay';
  }
  seen[e2eId] = messageId;
  const ids = Object.keys(seen);
  if (ids.length > SEEN_MAX) {
    // Oldest entries first: keys keep insertion order.
    for (const id of ids.slice(0, ids.length - SEEN_MAX)) delete seen[id];
  }
  localStorage.setItem(name, JSON.stringify(seen));
  return 'new';
}

// ---- Appendix A ----

// Returns { content, id }: the compact JSON `content` and the e2e id.
export async function encryptMessage(recipientPem, sender, recipient, text, sentAt) {
  const key = await importPublic(recipientPem, OAEP, 'encrypt');
  const id = b64encode(randomBytes(ID_BYTES));
  const plain = utf8.encode(JSON.stringify({ text, sent_at: sentAt, id }));
  const m = randomBytes(32);
  const iv = randomBytes(12);
  try {
    const mKey = await crypto.subtle.importKey('raw', m, 'AES-GCM', false, ['encrypt']);
    const ct = new Uint8Array(await crypto.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: utf8.encode(boundText(sender, recipient)), tagLength: 128 },
      mKey, plain));
    const ek = new Uint8Array(await crypto.subtle.encrypt({ name: 'RSA-OAEP' }, key, m));
    // Member order as Appendix A writes it, like the CLI.
    const content = JSON.stringify({ v: 1, ek: b64encode(ek), iv: b64encode(iv), ct: b64encode(ct) });
    return { content, id };
  } finally {
    m.fill(0);
    plain.fill(0);
  }
}

export async function signMessage(signKey, sender, recipient, content) {
  const sig = await crypto.subtle.sign({ name: 'RSA-PSS', saltLength: SALT_LEN }, signKey,
    utf8.encode(boundText(sender, recipient, content)));
  return b64encode(new Uint8Array(sig));
}

export async function verifyMessage(pem, sender, recipient, content, signature) {
  if (typeof signature !== 'string') return false;
  try {
    const key = await importPublic(pem, PSS, 'verify');
    const sig = b64decode(signature);
    // A signature is exactly as long as the modulus (as the CLI checks).
    if (sig.length !== key.algorithm.modulusLength / 8) return false;
    return await crypto.subtle.verify({ name: 'RSA-PSS', saltLength: SALT_LEN }, key, sig,
      utf8.encode(boundText(sender, recipient, content)));
  } catch (e) {
    return false;
  }
}

// Returns { text, sent_at, id } or throws E2EError.
export async function decryptMessage(decryptKey, sender, recipient, content) {
  try {
    const env = JSON.parse(content);
    if (!env || env.v !== 1) throw new Error('version');
    const ek = b64decode(env.ek);
    const iv = b64decode(env.iv);
    const ct = b64decode(env.ct);
    if (ek.length !== decryptKey.algorithm.modulusLength / 8 || iv.length !== 12 || ct.length < 16) {
      throw new Error('lengths');
    }
    const m = new Uint8Array(await crypto.subtle.decrypt({ name: 'RSA-OAEP' }, decryptKey, ek));
    if (m.length !== 32) throw new Error('key length');
    const mKey = await crypto.subtle.importKey('raw', m, 'AES-GCM', false, ['decrypt']);
    m.fill(0);
    const pt = await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv, additionalData: utf8.encode(boundText(sender, recipient)), tagLength: 128 },
      mKey, ct);
    const obj = JSON.parse(utf8Decode(new Uint8Array(pt)));
    if (!obj || typeof obj.text !== 'string' || typeof obj.sent_at !== 'number'
        || typeof obj.id !== 'string' || obj.id.length !== 24 || b64decode(obj.id).length !== ID_BYTES) {
      throw new Error('plaintext');
    }
    return { text: obj.text, sent_at: obj.sent_at, id: obj.id };
  } catch (e) {
    throw new E2EError('the message cannot be decrypted');
  }
}

export async function fingerprintOfPem(pem) {
  return fingerprintDer(pemToDer(pem));
}
