// The user interface: wires the DOM to protocol.js (the connection) and
// e2e.js (Appendix A). Remote text only ever goes into textContent.
import { Connection, ProtocolError, ServerError, CIPHER_GCM, CIPHER_CBC } from './protocol.js';
import * as e2e from './e2e.js';

const $ = (id) => document.getElementById(id);
const HISTORY_PAGE = 50;
const BACKOFF_S = [1, 2, 4, 8, 15, 30];
const NAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,32}$/;

const params = new URLSearchParams(location.search);
// The server is the page's own origin: the code and the WebSocket come from
// the same place, and the server's CSP allows no other.
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const cipher = params.get('cipher') === 'cbc' ? CIPHER_CBC : CIPHER_GCM;
const serverId = new URL(wsUrl).host;
const PIN_KEY = `sm.server_pin.v1.${serverId}`;

const state = {
  conn: null,
  me: null,              // user name as registered, when logged in
  password: null,        // kept in memory only, to log in again after a reconnect
  userKey: null,         // { decryptKey, signKey, publicPem, fingerprint } or null
  room: null,
  members: new Set(),
  oldestId: null,
  more: false,
  friends: new Map(),    // lower name -> { username, online }
  outgoing: new Map(),   // message id -> li of a private message we sent
  incoming: new Map(),   // message id -> li of a private message to us
  unread: new Set(),
  ready: false,          // logged in and the room (re)joined: commands may go
  reconnectTimer: null,
  attempt: 0,
  keyRefused: null,      // { pinned, offered } while a changed server key is refused
  pendingContact: null,  // { user, pem, fingerprint } whose changed key awaits trust
};

// ---- small UI helpers ----

function setStatus(text) { $('status').textContent = text; }
function showError(text) { $('error').textContent = text || ''; }
function notice(text) { $('notice').textContent = text || ''; }

function describe(err) {
  if (err instanceof ServerError) {
    const retry = err.retryAfter ? ` (try again in ${Math.ceil(err.retryAfter)} s)` : '';
    return `${err.message}${retry}`;
  }
  return err && err.message ? err.message : String(err);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, onClick, cls = 'small secondary') {
  const b = el('button', cls, label);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

function clock(ts) {
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function serverNow() {
  return state.conn ? state.conn.serverNow() : Date.now() / 1000;
}

function expiresAt(selectId) {
  const s = Number($(selectId).value);
  return s > 0 ? Math.floor(serverNow()) + s : undefined;
}

// Expiring messages leave the view when their time comes (the server stops
// serving them at that moment too).
setInterval(() => {
  const now = serverNow();
  document.querySelectorAll('[data-expires]').forEach((li) => {
    if (Number(li.dataset.expires) <= now) li.remove();
  });
}, 500);

// ---- the server key pin ----

function loadPin() {
  try {
    return JSON.parse(localStorage.getItem(PIN_KEY));
  } catch (e) {
    return null;
  }
}

function checkServerKey(hello) {
  const pin = loadPin();
  if (!pin || !pin.fingerprint) {
    localStorage.setItem(PIN_KEY, JSON.stringify({ fingerprint: hello.fingerprint, pinned_at: Date.now() }));
    $('fingerprint').textContent = `${hello.fingerprint} (pinned now, first use)`;
    return true;
  }
  if (pin.fingerprint !== hello.fingerprint) {
    state.keyRefused = { pinned: pin.fingerprint, offered: hello.fingerprint };
    return false;
  }
  $('fingerprint').textContent = `${hello.fingerprint} (pinned ${new Date(pin.pinned_at).toLocaleDateString()})`;
  return true;
}

function showKeyAlert() {
  const k = state.keyRefused;
  $('key-alert-pinned').textContent = k.pinned;
  $('key-alert-offered').textContent = k.offered;
  $('key-alert').hidden = false;
  $('fingerprint').textContent = `${k.offered} (REFUSED: differs from the pinned ${k.pinned})`;
  setStatus('refused: the server key changed');
  // Stop any reconnecting and show the login form, disabled, under the alert.
  clearTimeout(state.reconnectTimer);
  state.me = null;
  state.password = null;
  $('chat-view').hidden = true;
  $('logout').hidden = true;
  $('auth-view').hidden = false;
  showError('Not connected: the server key is not the pinned one. Read the red box above.');
  setAuthEnabled(false);
}

$('accept-new-key').addEventListener('click', () => {
  const k = state.keyRefused;
  if (!k) return;
  localStorage.setItem(PIN_KEY, JSON.stringify({ fingerprint: k.offered, pinned_at: Date.now() }));
  state.keyRefused = null;
  $('key-alert').hidden = true;
  showError('');
  notice(`The new server key ${k.offered} is pinned.`);
  setAuthEnabled(true);
  connect().catch(() => {});
});

// ---- the connection ----

function setAuthEnabled(on) {
  for (const id of ['login', 'register', 'username', 'password']) $(id).disabled = !on;
}

async function connect() {
  if (state.conn && !state.conn.closed) return state.conn;
  if (state.keyRefused) throw new ProtocolError('key_changed', 'the server key changed');
  setStatus('connecting…');
  const conn = new Connection(wsUrl, {
    cipher,
    checkServerKey,
    onEvent: (ev) => onEvent(conn, ev),
    onClose: (err) => onClose(conn, err),
  });
  state.conn = conn;
  try {
    const info = await conn.open();
    $('cipher').textContent = `· ${info.cipher}`;
  } catch (err) {
    if (err.kind === 'key_changed') showKeyAlert();
    throw err;
  }
  setStatus(state.me ? `connected; logging in again as ${state.me}…` : 'connected (not logged in)');
  return conn;
}

function onClose(conn, err) {
  if (conn !== state.conn) return;
  state.ready = false;
  if (err && err.kind === 'key_changed') return;
  const wasLoggedIn = !!state.me && !!state.password;
  if (err && err.deliberate) return;
  if (!wasLoggedIn) {
    setStatus('not connected');
    return;
  }
  // Logged in and the connection went away: try again with backoff, and log
  // in again with the password kept in memory.
  const delay = BACKOFF_S[Math.min(state.attempt, BACKOFF_S.length - 1)] * (1 + Math.random() * 0.2);
  state.attempt += 1;
  setStatus(`disconnected (${describe(err)}); reconnecting in ${Math.round(delay)} s`);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(reconnect, delay * 1000);
}

async function reconnect() {
  try {
    await connect();
    await login(state.me, state.password, false, state.room);
    state.attempt = 0;
    notice('Reconnected.');
  } catch (err) {
    if (err.kind === 'key_changed') return;
    if (err instanceof ServerError && err.code === 1001) {
      logoutLocal('Could not log in again: invalid user name or password.');
      return;
    }
    // onClose schedules the next attempt when the connection went away;
    // a failure on a live connection (busy server) gets one here.
    if (state.conn && !state.conn.closed) {
      state.conn.close();
      onClose(state.conn, err);
    }
  }
}

// ---- log in, register, log out ----

async function login(username, password, isRegister, rejoinRoom) {
  const conn = await connect();
  let reply;
  if (isRegister) {
    // The key is made before registering; it is stored only once the
    // account exists (as the CLI does). A key already stored is reused.
    let key = await e2e.loadUserKey(username);
    let fresh = false;
    if (!key) {
      notice('Creating your end-to-end key pair…');
      key = await e2e.generateUserKey();
      fresh = true;
    }
    reply = await conn.request('register', { username, password, public_key: key.publicPem });
    if (fresh) await e2e.saveUserKey(reply.payload.username, key);
    state.userKey = key;
    notice(`Registered. Your end-to-end key: ${key.fingerprint}`);
  } else {
    reply = await conn.request('login', { username, password });
    state.userKey = (await e2e.loadUserKey(reply.payload.username)) || null;
  }
  const p = reply.payload;
  state.me = p.username;
  state.password = password;
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('logout').hidden = false;
  await checkOwnKey(conn);
  if (rejoinRoom && (!p.assigned_room || rejoinRoom.toLowerCase() !== p.assigned_room.toLowerCase())) {
    await joinRoom(rejoinRoom);
  } else if (p.assigned_room) {
    const users = await conn.request('get_users', {});
    await enterRoom(users.payload.room, users.payload.users);
  } else {
    enterNoRoom();
    loadRooms();
  }
  await Promise.all([loadFriends(), loadRequests(), loadBlocked(), loadUnread()]);
  // Only now: after a reconnect, a message typed before the room was
  // joined again would go to the server's default room.
  state.ready = true;
  setStatus(`connected as ${state.me}`);
  $('message-input').focus();
}

async function checkOwnKey(conn) {
  if (!state.userKey) {
    notice(`This browser has no private key for ${state.me}: encrypted messages to you cannot be read here, and messages you send are not signed.`);
    return;
  }
  try {
    const r = await conn.request('get_public_key', { username: state.me });
    const pem = r.payload.public_key;
    const fp = pem ? await e2e.fingerprintOfPem(pem) : null;
    if (fp !== state.userKey.fingerprint) {
      showError(`Warning: the server holds a different key for ${state.me} (${fp || 'none'}) than this browser (${state.userKey.fingerprint}).`);
    }
  } catch (e) {
    showError(`Could not check your registered key: ${describe(e)}`);
  }
}

async function onAuth(isRegister) {
  showError('');
  const username = $('username').value.trim();
  const password = $('password').value;
  if (!NAME_RE.test(username)) {
    showError('A user name is 3 to 32 letters, digits, "_", "." or "-".');
    $('username').focus();
    return;
  }
  if (utf8Length(password) < 8) {
    showError('The password needs at least 8 characters.');
    $('password').focus();
    return;
  }
  setAuthEnabled(false);
  try {
    await login(username, password, isRegister, null);
    $('password').value = '';
  } catch (err) {
    if (err.kind !== 'key_changed') showError(`${isRegister ? 'Registration' : 'Login'} failed: ${describe(err)}`);
  } finally {
    if (!state.keyRefused) setAuthEnabled(true);
  }
}

function utf8Length(s) { return new TextEncoder().encode(s).length; }

$('auth-form').addEventListener('submit', (ev) => { ev.preventDefault(); onAuth(false); });
$('register').addEventListener('click', () => onAuth(true));

function logoutLocal(message) {
  state.ready = false;
  state.me = null;
  state.password = null;
  state.userKey = null;
  state.room = null;
  clearTimeout(state.reconnectTimer);
  $('chat-view').hidden = true;
  $('auth-view').hidden = false;
  $('logout').hidden = true;
  for (const id of ['messages', 'pm-messages', 'members', 'friends', 'requests', 'blocked', 'room-list']) {
    $(id).replaceChildren();
  }
  state.outgoing.clear();
  state.incoming.clear();
  state.unread.clear();
  updateUnread();
  if (state.conn) state.conn.close();
  setStatus('not connected');
  if (message) showError(message);
  $('username').focus();
}

$('logout').addEventListener('click', async () => {
  try {
    if (state.conn && !state.conn.closed) await state.conn.request('logout', {});
  } catch (e) { /* logging out locally anyway */ }
  logoutLocal('');
  notice('Logged out.');
});

// ---- rooms ----

function knownRoomsKey() { return `sm.rooms.v1.${(state.me || '').toLowerCase()}`; }

function knownRooms() {
  try {
    const rooms = JSON.parse(localStorage.getItem(knownRoomsKey()));
    return Array.isArray(rooms) ? rooms.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
  } catch (e) {
    return [];
  }
}

function rememberRoom(name) {
  const rooms = knownRooms();
  if (!rooms.some((r) => r.toLowerCase() === name.toLowerCase())) rooms.push(name);
  localStorage.setItem(knownRoomsKey(), JSON.stringify(rooms.slice(-50)));
}

// The server's rooms with their number of users (list_rooms, our extension,
// PROTOCOL.md decision 34); from a server without it, the rooms joined in
// this browser.
async function loadRooms() {
  if (!state.conn || state.conn.closed) return;
  try {
    const r = await state.conn.request('list_rooms', {});
    renderRoomList(r.payload.rooms);
  } catch (err) {
    if (err instanceof ServerError && err.code === 1003) {
      renderRoomList(knownRooms().map((room) => ({ room })));
    }
  }
}

// Room events change the counts; many at once cost one request.
let roomsTimer = null;
function refreshRoomsSoon() {
  clearTimeout(roomsTimer);
  roomsTimer = setTimeout(loadRooms, 1500);
}

function renderRoomList(rooms) {
  const list = $('room-list');
  list.replaceChildren();
  for (const { room, users } of rooms) {
    const li = el('li');
    const label = typeof users === 'number' ? `${room} (${users})` : room;
    const b = button(label, () => joinRoom(room), 'small secondary room-link');
    if (typeof users === 'number') {
      b.setAttribute('aria-label', `Join ${room}, ${users} ${users === 1 ? 'user' : 'users'} there`);
    }
    if (state.room && room.toLowerCase() === state.room.toLowerCase()) {
      b.classList.add('current');
      b.setAttribute('aria-current', 'true');
    }
    li.append(b);
    list.append(li);
  }
}

async function joinRoom(name) {
  showError('');
  try {
    const r = await state.conn.request('join_room', { room_name: name });
    await enterRoom(r.payload.room, r.payload.users);
  } catch (err) {
    showError(`Could not join ${name}: ${describe(err)}`);
  }
}

async function enterRoom(room, users) {
  state.room = room;
  $('room-title').textContent = room;
  state.members = new Set(users);
  renderMembers();
  rememberRoom(room);
  loadRooms();
  $('messages').replaceChildren();
  state.oldestId = null;
  state.more = false;
  await loadHistory();
}

function enterNoRoom() {
  state.room = null;
  $('room-title').textContent = 'none';
  state.members.clear();
  renderMembers();
  $('messages').replaceChildren();
  $('load-older').hidden = true;
}

function renderMembers() {
  const list = $('members');
  list.replaceChildren();
  const names = [...state.members].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  for (const n of names) {
    const li = el('li');
    li.append(el('span', 'name', n === state.me ? `${n} (you)` : n));
    if (n !== state.me) li.append(button('Message', () => startPm(n)));
    list.append(li);
  }
}

$('refresh-rooms').addEventListener('click', () => loadRooms());

$('room-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('room-name').value.trim();
  if (!ROOM_RE.test(name)) {
    showError('A room name is 1 to 32 letters, digits, "_", "." or "-".');
    return;
  }
  $('room-name').value = '';
  joinRoom(name);
});

$('leave-room').addEventListener('click', async () => {
  try {
    await state.conn.request('leave_room', {});
    enterNoRoom();
    loadRooms();
  } catch (err) {
    showError(`Could not leave: ${describe(err)}`);
  }
});

// ---- public messages and history ----

function messageItem(m) {
  const li = el('li', 'msg');
  li.dataset.id = String(m.id);
  if (m.sender === state.me) li.classList.add('mine');
  // "/me TEXT" is an action (PROTOCOL.md decision 35): "* sender TEXT".
  const action = m.content.startsWith('/me ') && m.content.length > 4;
  if (action) li.classList.add('action');
  li.append(el('span', 'time', clock(m.timestamp)), ' ',
    el('strong', 'sender', action ? `* ${m.sender}` : m.sender), ' ',
    el('span', 'content', action ? m.content.slice(4) : m.content));
  if (typeof m.expires_at === 'number') {
    li.dataset.expires = String(m.expires_at);
    li.append(' ', el('span', 'tag', `disappears at ${clock(m.expires_at)}`));
  }
  return li;
}

// Keeps #messages in id order, each id once.
function addPublic(m) {
  const list = $('messages');
  if (typeof m.expires_at === 'number' && m.expires_at <= serverNow()) return;
  if (list.querySelector(`li[data-id="${Number(m.id)}"]`)) return;
  const li = messageItem(m);
  let after = null;
  for (let c = list.lastElementChild; c; c = c.previousElementSibling) {
    if (Number(c.dataset.id) < m.id) { after = c; break; }
  }
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
  if (after) after.after(li); else list.prepend(li);
  if (li === list.lastElementChild && atBottom) list.scrollTop = list.scrollHeight;
}

async function loadHistory() {
  if (!state.room) return;
  const payload = { room: state.room, limit: HISTORY_PAGE };
  if (state.oldestId) payload.before_id = state.oldestId;
  try {
    const r = await state.conn.request('get_history', payload);
    for (const m of r.payload.messages) {
      addPublic(m);
      if (!state.oldestId || m.id < state.oldestId) state.oldestId = m.id;
    }
    state.more = r.payload.more;
    $('load-older').hidden = !state.more;
    if (!payload.before_id) $('messages').scrollTop = $('messages').scrollHeight;
  } catch (err) {
    showError(`Could not load the history: ${describe(err)}`);
  }
}

$('load-older').addEventListener('click', () => loadHistory());

$('message-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const content = $('message-input').value;
  if (!content.trim()) return;
  if (!state.ready) {
    showError('Not connected yet: the message was not sent.');
    return;
  }
  if (!state.room) {
    showError('Join a room first.');
    return;
  }
  const payload = { content };
  const exp = expiresAt('expiry');
  if (exp) payload.expires_at = exp;
  try {
    await state.conn.request('public_message', payload);
    $('message-input').value = '';
    showError('');
  } catch (err) {
    showError(`Not sent: ${describe(err)}`);
  }
});

// ---- private messages ----

function startPm(user) {
  $('pm-to').value = user;
  $('pm-text').focus();
}

function updateUnread() {
  const n = state.unread.size;
  const b = $('unread-count');
  b.textContent = `${n} unread`;
  b.classList.toggle('has-unread', n > 0);
}

async function serverKeyOf(user) {
  const r = await state.conn.request('get_public_key', { username: user });
  const pem = r.payload.public_key;
  return { username: r.payload.username, pem, fingerprint: pem ? await e2e.fingerprintOfPem(pem) : null };
}

function contactAlert(user, pinnedFp, offered) {
  state.pendingContact = offered ? { user, ...offered } : null;
  $('contact-alert-text').textContent = offered
    ? `The key of ${user} has CHANGED (pinned ${pinnedFp}, the server now gives ${offered.fingerprint}). Nothing was sent. Check the new fingerprint with ${user} by another channel before trusting it.`
    : `${user} no longer has a key on the server, though this browser pinned ${pinnedFp}. Nothing was sent.`;
  $('trust-contact').hidden = !offered;
  $('contact-alert').hidden = false;
}

$('trust-contact').addEventListener('click', () => {
  const c = state.pendingContact;
  if (!c) return;
  e2e.setContactPin(c.user, c.pem, c.fingerprint);
  $('contact-alert').hidden = true;
  notice(`Pinned the new key of ${c.user}: ${c.fingerprint}`);
  state.pendingContact = null;
});

function pmItem(kind, peer, text, tags, ts) {
  const li = el('li', 'msg');
  li.append(el('span', 'time', clock(ts)), ' ', el('strong', 'sender', kind === 'out' ? `to ${peer}` : peer),
    ' ', el('span', 'content', text));
  for (const [t, cls] of tags) li.append(' ', el('span', `tag ${cls}`, t));
  return li;
}

$('pm-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const to = $('pm-to').value.trim();
  const text = $('pm-text').value;
  if (!NAME_RE.test(to)) {
    showError('Write the recipient\'s user name in "To".');
    $('pm-to').focus();
    return;
  }
  if (!text) return;
  if (!state.ready) {
    showError('Not connected yet: the message was not sent.');
    return;
  }
  try {
    await sendPrivate(to, text);
    $('pm-text').value = '';
    showError('');
  } catch (err) {
    showError(`Private message NOT sent: ${describe(err)}`);
  }
});

async function sendPrivate(to, text) {
  const conn = state.conn;
  const key = await serverKeyOf(to);
  const recipient = key.username;
  const pin = e2e.contactPin(recipient);
  if (pin && !key.pem) {
    contactAlert(recipient, pin.fingerprint, null);
    throw new Error(`${recipient}'s pinned key disappeared from the server`);
  }
  if (pin && pin.fingerprint !== key.fingerprint) {
    contactAlert(recipient, pin.fingerprint, key);
    throw new Error(`${recipient}'s key changed`);
  }
  if (!pin && key.pem) {
    e2e.setContactPin(recipient, key.pem, key.fingerprint);
    notice(`Pinned the end-to-end key of ${recipient} (first use): ${key.fingerprint}`);
  }
  const payload = { recipient, encrypted: false, content: text };
  const tags = [];
  if (key.pem) {
    const sealed = await e2e.encryptMessage(key.pem, state.me, recipient, text, Date.now() / 1000);
    payload.content = sealed.content;
    payload.encrypted = true;
    tags.push(['encrypted', 'good']);
  } else {
    tags.push([`NOT encrypted: ${recipient} has no key`, 'bad']);
  }
  if (state.userKey) {
    payload.signature = await e2e.signMessage(state.userKey.signKey, state.me, recipient, payload.content);
    tags.push(['signed', 'good']);
  } else {
    tags.push(['unsigned', 'bad']);
  }
  const exp = expiresAt('pm-expiry');
  if (exp) payload.expires_at = exp;
  const r = await conn.request('private_message', payload);
  const d = r.payload;
  const li = pmItem('out', recipient, text, tags, d.timestamp);
  li.classList.add('mine');
  li.dataset.id = String(d.message_id);
  if (exp) li.dataset.expires = String(exp);
  li.append(' ', el('span', 'tag receipt', d.online ? 'delivered' : 'waiting (recipient offline)'));
  state.outgoing.set(d.message_id, li);
  $('pm-messages').append(li);
  $('pm-messages').scrollTop = $('pm-messages').scrollHeight;
}

// What a received private message says, in the CLI's order of verdicts:
// replay, key_changed, bad_signature, unsigned, undecryptable, ok.
async function openPrivate(m) {
  const sender = m.sender;
  const recipient = m.recipient || state.me;
  let pin = e2e.contactPin(sender);
  let serverKey = null;
  if (!pin) {
    serverKey = await serverKeyOf(sender).catch(() => null);
    if (serverKey && serverKey.pem) {
      e2e.setContactPin(sender, serverKey.pem, serverKey.fingerprint);
      pin = e2e.contactPin(sender);
    }
  }
  let verified = false;
  let keyChanged = false;
  if (m.signature && pin) {
    verified = await e2e.verifyMessage(pin.pem, sender, recipient, m.content, m.signature);
    if (!verified) {
      serverKey = serverKey || await serverKeyOf(sender).catch(() => null);
      if (serverKey && serverKey.pem && serverKey.fingerprint !== pin.fingerprint) {
        keyChanged = await e2e.verifyMessage(serverKey.pem, sender, recipient, m.content, m.signature);
      }
    }
  }
  let text = null;
  let decrypted = false;
  let replay = false;
  if (m.encrypted) {
    if (state.userKey) {
      try {
        const plain = await e2e.decryptMessage(state.userKey.decryptKey, sender, recipient, m.content);
        decrypted = true;
        if (e2e.checkSeen(state.me, plain.id, m.id) === 'replay') replay = true;
        else text = plain.text;
      } catch (e) {
        decrypted = false;
      }
    }
  } else {
    text = m.content;
  }
  let status = 'ok';
  if (replay) status = 'replay';
  else if (keyChanged) status = 'key_changed';
  else if (m.signature && !verified) status = 'bad_signature';
  else if (!m.signature) status = 'unsigned';
  else if (m.encrypted && !decrypted) status = 'undecryptable';
  return { status, text, encrypted: !!m.encrypted, verified };
}

const VERDICT = {
  ok: ['signature verified', 'good'],
  replay: ['!! REPLAY: this message was already shown as another one; withheld', 'bad'],
  key_changed: ['!! signed by a NEW key of the sender, not the pinned one', 'bad'],
  bad_signature: ['!! BAD SIGNATURE: sender not verified', 'bad'],
  unsigned: ['!! UNSIGNED: sender not verified', 'bad'],
  undecryptable: ['!! cannot be decrypted in this browser', 'bad'],
};

async function addIncoming(m, isUnread) {
  if (state.incoming.has(m.id)) return;
  if (typeof m.expires_at === 'number' && m.expires_at <= serverNow()) return;
  state.incoming.set(m.id, null);
  const v = await openPrivate(m);
  const tags = [];
  tags.push(v.encrypted ? ['encrypted', 'good'] : ['NOT encrypted', 'bad']);
  tags.push(VERDICT[v.status]);
  const text = v.text === null ? '(no readable text)' : v.text;
  const li = pmItem('in', m.sender, text, tags, m.timestamp);
  li.dataset.id = String(m.id);
  if (typeof m.expires_at === 'number') li.dataset.expires = String(m.expires_at);
  state.incoming.set(m.id, li);
  if (isUnread) {
    li.classList.add('unread');
    state.unread.add(m.id);
    const b = button('Mark read', () => markRead(m.id));
    b.classList.add('mark-read');
    li.append(b);
  }
  updateUnread();
  const list = $('pm-messages');
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function markedRead(id) {
  state.unread.delete(id);
  const li = state.incoming.get(id);
  if (li) {
    li.classList.remove('unread');
    const b = li.querySelector('.mark-read');
    if (b) b.remove();
  }
  updateUnread();
}

async function markRead(id) {
  try {
    await state.conn.request('mark_message_read', { message_id: id });
    markedRead(id);
  } catch (err) {
    showError(`Could not mark as read: ${describe(err)}`);
  }
}

$('mark-all-read').addEventListener('click', async () => {
  const ids = [...state.unread].sort((a, b) => a - b);
  if (!ids.length) return;
  const upTo = ids[ids.length - 1];
  try {
    // The extension marks them in one command; without it, one by one.
    await state.conn.request('mark_all_read', { up_to_id: upTo });
    ids.forEach(markedRead);
  } catch (err) {
    if (err instanceof ServerError && err.code === 1003) {
      for (const id of ids) await markRead(id);
    } else {
      showError(`Could not mark as read: ${describe(err)}`);
    }
  }
});

async function loadUnread() {
  let after = 0;
  for (let page = 0; page < 100; page++) {
    const r = await state.conn.request('get_unread_messages', after ? { after_id: after } : {});
    for (const m of r.payload.messages) {
      await addIncoming({ ...m, recipient: state.me }, true);
      after = m.id;
    }
    if (!r.payload.more) break;
  }
}

// ---- friends and blocking ----

async function loadFriends() {
  try {
    const r = await state.conn.request('get_friends_list', {});
    state.friends.clear();
    for (const f of r.payload.friends) state.friends.set(f.username.toLowerCase(), f);
    renderFriends();
  } catch (err) {
    showError(`Could not load friends: ${describe(err)}`);
  }
}

function renderFriends() {
  const list = $('friends');
  list.replaceChildren();
  for (const f of state.friends.values()) {
    const li = el('li');
    li.dataset.user = f.username;
    li.append(el('span', 'name', f.username));
    li.append(el('span', `presence${f.online ? ' online' : ''}`, f.online ? 'online' : 'offline'));
    li.append(button('Message', () => startPm(f.username)));
    li.append(button('Remove', () => friendCommand('remove_friend', f.username)));
    list.append(li);
  }
}

async function loadRequests() {
  try {
    const r = await state.conn.request('get_friend_requests', {});
    const list = $('requests');
    list.replaceChildren();
    for (const q of r.payload.requests) {
      const li = el('li');
      li.dataset.user = q.from;
      li.append(el('span', 'name', `from ${q.from}`));
      li.append(button('Accept', () => friendCommand('accept_friend_request', q.from)));
      li.append(button('Decline', () => friendCommand('decline_friend_request', q.from)));
      list.append(li);
    }
  } catch (err) {
    showError(`Could not load friend requests: ${describe(err)}`);
  }
}

async function friendCommand(action, user) {
  try {
    const r = await state.conn.request(action, { friend_username: user });
    if (r.payload.message) notice(r.payload.message);
    await Promise.all([loadFriends(), loadRequests()]);
  } catch (err) {
    showError(`${describe(err)}`);
  }
}

$('friend-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('friend-name').value.trim();
  if (!NAME_RE.test(name)) {
    showError('Write a user name to add.');
    return;
  }
  $('friend-name').value = '';
  friendCommand('send_friend_request', name);
});

async function loadBlocked() {
  try {
    const r = await state.conn.request('get_blocked_users', {});
    const list = $('blocked');
    list.replaceChildren();
    for (const u of r.payload.users) {
      const li = el('li');
      li.dataset.user = u;
      li.append(el('span', 'name', u));
      li.append(button('Unblock', () => blockCommand('unblock_user', u)));
      list.append(li);
    }
  } catch (err) {
    if (!(err instanceof ServerError && err.code === 1003)) showError(`Could not load blocked users: ${describe(err)}`);
  }
}

async function blockCommand(action, user) {
  try {
    await state.conn.request(action, { username: user });
    notice(action === 'block_user' ? `Blocked ${user}.` : `Unblocked ${user}.`);
    await Promise.all([loadBlocked(), loadFriends(), loadRequests()]);
  } catch (err) {
    showError(describe(err));
  }
}

$('block-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('block-name').value.trim();
  if (!NAME_RE.test(name)) {
    showError('Write a user name to block.');
    return;
  }
  $('block-name').value = '';
  blockCommand('block_user', name);
});

// ---- events ----

async function onEvent(conn, ev) {
  if (conn !== state.conn) return;
  const p = ev.payload;
  switch (ev.action) {
    case 'public_message':
      if (state.room && p.room && p.room.toLowerCase() === state.room.toLowerCase()) addPublic(p);
      break;
    case 'user_joined':
      if (state.room && p.room && p.room.toLowerCase() === state.room.toLowerCase()) {
        state.members.add(p.username);
        renderMembers();
        refreshRoomsSoon();
        notice(`${p.username} joined ${p.room}`);
      }
      break;
    case 'user_left':
      if (state.room && p.room && p.room.toLowerCase() === state.room.toLowerCase()) {
        state.members.delete(p.username);
        renderMembers();
        refreshRoomsSoon();
        notice(`${p.username} left ${p.room}`);
      }
      break;
    case 'private_message':
      await addIncoming(p, true);
      break;
    case 'message_read': {
      const li = state.outgoing.get(p.message_id);
      if (li) {
        const r = li.querySelector('.receipt');
        if (r) {
          r.textContent = `read by ${p.reader} at ${clock(p.timestamp)}`;
          r.classList.add('good');
        }
        li.classList.add('read');
      }
      break;
    }
    case 'friend_request':
      notice(`Friend request from ${p.from}`);
      await loadRequests();
      break;
    case 'friend_request_accepted':
      notice(`You and ${p.friend_username} are now friends`);
      await Promise.all([loadFriends(), loadRequests()]);
      break;
    case 'friend_removed':
      await loadFriends();
      break;
    case 'friend_online':
    case 'friend_offline': {
      const f = state.friends.get(p.username.toLowerCase());
      if (f) {
        f.online = ev.action === 'friend_online';
        renderFriends();
      } else {
        await loadFriends();
      }
      break;
    }
    default:
      break;
  }
}

// ---- start ----

$('username').focus();
connect().catch((err) => {
  if (err.kind !== 'key_changed') setStatus(`not connected (${describe(err)})`);
});
