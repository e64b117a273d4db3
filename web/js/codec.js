// Byte and text helpers shared by the protocol and end-to-end modules:
// strict base64 (RFC 4648, padded, as PROTOCOL.md section 2 requires), UTF-8,
// PEM SubjectPublicKeyInfo and the "sha256:<hex>" fingerprint form.

export const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function utf8Decode(bytes) {
  return utf8Strict.decode(bytes);
}

export function randomBytes(n) {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

export function concatBytes(...parts) {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function b64encode(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = '';
  // Chunks keep String.fromCharCode's argument list bounded.
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// atob() tolerates whitespace and missing padding; the protocol does not.
export function b64decode(text) {
  if (typeof text !== 'string' || !B64_RE.test(text)) {
    throw new Error('invalid base64');
  }
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (x) => x.toString(16).padStart(2, '0')).join('');
}

const PEM_RE = /^\s*-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----\s*$/;

// The DER SubjectPublicKeyInfo inside exactly one PEM block.
export function pemToDer(pem) {
  const m = typeof pem === 'string' ? PEM_RE.exec(pem) : null;
  if (!m) throw new Error('not a PEM public key');
  return b64decode(m[1].replace(/\s+/g, ''));
}

// The layout OpenSSL's PEM_write_PUBKEY gives (64-character lines), so a key
// registered here looks like one the CLI registers.
export function derToPem(der) {
  const b64 = b64encode(der);
  const lines = b64.match(/.{1,64}/g) || [];
  return `-----BEGIN PUBLIC KEY-----\n${lines.join('\n')}\n-----END PUBLIC KEY-----\n`;
}

export async function fingerprintDer(der) {
  const digest = await crypto.subtle.digest('SHA-256', der);
  return `sha256:${hex(digest)}`;
}
