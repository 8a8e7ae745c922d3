// Whisper: chat rooms on dragon.js, no framework, one WebSocket for everything.
//
// - Accounts: POST /login or /signup answers a signed token; it is kept in localStorage (a
//   reload stays signed in) and given to the client as its `token` option.
// - Rooms: a liveList of `room` (the server only sends the rooms this user may see).
// - A room: a subscription to its messages (filter {room_id}) plus history pages from
//   get_list (newest first, shown oldest at the top); events that arrive while a page is being
//   read wait and are applied after it, so nothing goes back to an older state.
// - Presence on the room (key = room id): who is here, and who is typing (state {typing}).
const { Dragon } = window.dragon;

const TOKEN_KEY = 'whisper-token';
const USER_KEY = 'whisper-user';
const PAGE_SIZE = 50;
const TYPING_IDLE_MS = 2000;

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
};

const ui = {
  session: $('#session'),
  status: $('#status'),
  statusText: $('#status-text'),
  me: $('#me'),
  logout: $('#logout'),
  error: $('#error'),
  errorText: $('#error-text'),
  errorDismiss: $('#error-dismiss'),
  authView: $('#auth-view'),
  loginForm: $('#login-form'),
  username: $('#login-username'),
  password: $('#login-password'),
  loginButton: $('#login-button'),
  signupButton: $('#signup-button'),
  loginError: $('#login-error'),
  chatView: $('#chat-view'),
  rooms: $('#rooms'),
  roomsEmpty: $('#rooms-empty'),
  newRoomForm: $('#new-room-form'),
  newRoomName: $('#new-room-name'),
  newRoomStaffOnly: $('#new-room-staff-only'),
  roomTitle: $('#room-title'),
  roomBadge: $('#room-badge'),
  roomBody: $('#room-body'),
  loadOlder: $('#load-older'),
  messages: $('#messages'),
  messagesEmpty: $('#messages-empty'),
  typing: $('#typing'),
  composer: $('#composer'),
  input: $('#message-input'),
  send: $('#send-button'),
  who: $('#who'),
};

/** The signed-in session: {client, user, rooms (liveList)}; null when signed out. */
let session = null;
/** The open room: see openRoom(); null when none. */
let current = null;
/** A room this page just created: its id may be in the address before the room list has it. */
let pendingRoomId = null;

// ---------------------------------------------------------------------------------------------
// Small helpers

function showError(message) {
  ui.errorText.textContent = message;
  ui.error.hidden = false;
}
function clearError() {
  ui.error.hidden = true;
  ui.errorText.textContent = '';
}
ui.errorDismiss.addEventListener('click', clearError);

/** A readable line for a failed call (validation details included). */
function describe(err, what) {
  if (!err) return what;
  let text = err.message || String(err);
  if (err.code === 'validation' && err.details && typeof err.details === 'object') {
    const parts = Object.entries(err.details).map(([field, msgs]) => `${field}: ${[].concat(msgs).join(', ')}`);
    if (parts.length) text = parts.join('; ');
  } else if (err.code === 'forbidden') {
    text = 'you are not allowed to do that';
  } else if (err.code === 'disconnected' || err.code === 'timeout') {
    text = 'the connection dropped; please try again';
  }
  return `${what}: ${text}`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
function toDate(ts) {
  if (ts === null || ts === undefined) return null;
  const d = typeof ts === 'number' ? new Date(ts < 1e12 ? ts * 1000 : ts) : new Date(ts);
  return isNaN(d.getTime()) ? null : d;
}
function formatTime(ts) {
  const d = toDate(ts);
  if (!d) return '';
  return d.toDateString() === new Date().toDateString() ? timeFormat.format(d) : dateTimeFormat.format(d);
}

function listNames(names) {
  if (names.length === 1) return names[0];
  if (names.length === 2) return `${names[0]} and ${names[1]}`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

// ---------------------------------------------------------------------------------------------
// Views

function showView(view) {
  document.body.dataset.view = view;
  ui.authView.hidden = view !== 'auth';
  ui.chatView.hidden = view !== 'chat';
  ui.session.hidden = view !== 'chat';
}

function showState(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  document.body.dataset.connection = state;
}

// ---------------------------------------------------------------------------------------------
// Logging in and out

async function postJson(path, body) {
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, error: 'cannot reach the server' };
  }
  let data = null;
  const raw = await res.text().catch(() => '');
  try { data = raw ? JSON.parse(raw) : null; } catch { data = null; }
  if (res.ok && data && typeof data.token === 'string') return { ok: true, data };
  const error = (data && typeof data.error === 'string' && data.error) || raw.trim() || `HTTP ${res.status}`;
  return { ok: false, status: res.status, error };
}

function setLoginError(text) {
  ui.loginError.textContent = text || '';
  ui.loginError.hidden = !text;
}

async function authenticate(kind) {
  const username = ui.username.value.trim();
  const password = ui.password.value;
  if (!username || !password) {
    setLoginError('Enter a username and a password.');
    (username ? ui.password : ui.username).focus();
    return;
  }
  setLoginError('');
  ui.loginButton.disabled = ui.signupButton.disabled = true;
  try {
    const r = await postJson(kind === 'signup' ? '/signup' : '/login', { username, password });
    if (!r.ok) {
      const prefix = kind === 'signup' ? 'Sign-up failed' : 'Login failed';
      setLoginError(`${prefix}: ${r.error}`);
      ui.password.select();
      return;
    }
    localStorage.setItem(TOKEN_KEY, r.data.token);
    localStorage.setItem(USER_KEY, JSON.stringify(r.data.user || null));
    ui.password.value = '';
    startSession(r.data.user);
  } finally {
    ui.loginButton.disabled = ui.signupButton.disabled = false;
  }
}

ui.loginForm.addEventListener('submit', (e) => { e.preventDefault(); authenticate('login'); });
ui.signupButton.addEventListener('click', () => authenticate('signup'));
ui.logout.addEventListener('click', () => signOut());

/** Ends the session: forgets the token, closes the socket, back to the login form. */
function signOut(message) {
  pendingRoomId = null;
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
  closeRoom();
  if (session) {
    const s = session;
    session = null;
    s.rooms.close().catch(() => {});
    s.client.disconnect();
  }
  window.whisperClient = null;
  ui.rooms.replaceChildren();
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  showView('auth');
  setLoginError(message || '');
  ui.username.focus();
}

// Another tab logged out (or in as someone else): follow it.
window.addEventListener('storage', (e) => {
  if (e.key !== TOKEN_KEY) return;
  if (!e.newValue) { if (session) signOut(); return; }
  if (session) signOut();
  let user = null;
  try { user = JSON.parse(localStorage.getItem(USER_KEY)); } catch {}
  startSession(user);
});

// ---------------------------------------------------------------------------------------------
// The session: one client, the room list

function startSession(user) {
  if (session) return;
  clearError();
  const client = new Dragon({ token: () => localStorage.getItem(TOKEN_KEY) });
  // Exposed for debugging and for the end-to-end tests.
  window.whisperClient = client;
  const s = { client, user: user || null, rooms: null };
  session = s;
  showMe(s.user);
  showView('chat');
  showState('connecting', 'Connecting…');

  client.on('state', (state) => {
    if (session !== s) return;
    if (state === 'open') showState('connected', 'Connected');
    else if (state === 'connecting') showState('connecting', 'Connecting…');
    else if (state === 'reconnecting') showState('reconnecting', 'Reconnecting…');
    else if (state === 'closed') showState('offline', 'Offline');
  });
  client.on('open', (info) => {
    if (session !== s) return;
    if (!info.user) {
      // The server did not accept the token (expired, or signed with another secret).
      signOut('Your session has ended. Please log in again.');
      return;
    }
    s.user = info.user;
    localStorage.setItem(USER_KEY, JSON.stringify(info.user));
    showMe(info.user);
  });
  client.on('error', (err) => {
    if (session !== s) return;
    if (err && (err.code === 'unauthenticated' || err.code === 'token_expired')) {
      signOut('Your session has ended. Please log in again.');
    } else if (err && err.code === 'forbidden' && err.subscriptions && client.user === null) {
      signOut('Your access was revoked. Please log in again.');
    }
  });

  s.rooms = client.liveList('room', {}, { order_by: ['name'] });
  s.rooms.onChange(() => { if (session === s) renderRooms(); });
  s.rooms.ready.then(() => {
    if (session !== s) return;
    renderRooms();
    routeFromHash();
  }, (err) => {
    if (session === s && err.code !== 'disconnected') showError(describe(err, 'Cannot load the rooms'));
  });
  renderRooms();
}

function showMe(user) {
  ui.me.replaceChildren();
  if (!user) return;
  ui.me.append(el('span', { class: 'me-name', text: user.username }));
  if (user.staff) ui.me.append(el('span', { class: 'badge', text: 'staff' }));
  ui.newRoomForm.hidden = !user.staff;
}

// ---------------------------------------------------------------------------------------------
// Rooms

function renderRooms() {
  if (!session) return;
  const rooms = session.rooms.items;
  const byId = new Map([...ui.rooms.children].map((li) => [Number(li.dataset.roomId), li]));
  let prev = null;
  for (const room of rooms) {
    let li = byId.get(room.id);
    if (li) byId.delete(room.id);
    else {
      li = el('li', { 'data-room-id': room.id, class: 'room-item' },
        el('a', { href: `#room-${room.id}`, class: 'room-link' },
          el('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
          el('span', { class: 'room-name' }),
          el('span', { class: 'lock', role: 'img', title: 'Staff only', 'aria-label': 'staff only' })));
    }
    li.querySelector('.room-name').textContent = room.name;
    li.querySelector('.lock').hidden = !room.staff_only;
    li.classList.toggle('staff-only', !!room.staff_only);
    const active = current !== null && current.id === room.id;
    li.classList.toggle('active', active);
    const link = li.querySelector('a');
    if (active) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
    const want = prev ? prev.nextSibling : ui.rooms.firstChild;
    if (want !== li) ui.rooms.insertBefore(li, want);
    prev = li;
  }
  for (const li of byId.values()) li.remove();
  ui.roomsEmpty.hidden = !session.rooms.loaded || rooms.length > 0;
  if (pendingRoomId !== null && session.rooms.get(pendingRoomId)) {
    pendingRoomId = null;
    routeFromHash();
  }

  if (current) {
    const room = session.rooms.get(current.id);
    if (room) showRoomHeader(room);
    else if (session.rooms.loaded) {
      // Deleted, or no longer ours to see.
      closeRoom();
      if (location.hash) history.replaceState(null, '', location.pathname + location.search);
      showError('That room is no longer available.');
    }
  }
}

ui.newRoomForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!session) return;
  const name = ui.newRoomName.value.trim();
  if (!name) return;
  const button = ui.newRoomForm.querySelector('button');
  button.disabled = true;
  try {
    const room = await session.client.create('room', { name, staff_only: ui.newRoomStaffOnly.checked });
    ui.newRoomName.value = '';
    ui.newRoomStaffOnly.checked = false;
    if (!session.rooms.get(room.id)) pendingRoomId = room.id; // opened once its `created` event is in
    location.hash = `#room-${room.id}`;
  } catch (err) {
    showError(describe(err, 'Cannot create the room'));
  } finally {
    button.disabled = false;
  }
});

function routeFromHash() {
  if (!session || !session.rooms.loaded) return;
  const m = /^#room-(\d+)$/.exec(location.hash);
  if (!m) { closeRoom(); return; }
  const id = Number(m[1]);
  if (!session.rooms.get(id)) {
    if (id === pendingRoomId) return;
    closeRoom();
    history.replaceState(null, '', location.pathname + location.search);
    return;
  }
  openRoom(id);
}
window.addEventListener('hashchange', routeFromHash);

// ---------------------------------------------------------------------------------------------
// A room: messages (subscription + history pages), presence (who is here, who is typing)

function showRoomHeader(room) {
  ui.roomTitle.textContent = `# ${room.name}`;
  ui.roomBadge.hidden = !room.staff_only;
  document.title = `#${room.name} · Whisper`;
}

function openRoom(id) {
  if (!session) return;
  if (current && current.id === id) return;
  closeRoom();
  const client = session.client;
  const view = {
    id,
    messages: new Map(),   // id -> message
    versions: new Map(),   // id -> highest change version applied (deleted ones included)
    deleted: new Set(),    // ids seen deleted (so an older history page does not bring them back)
    loading: 0,            // history reads in flight: events wait meanwhile
    buffer: [],
    more: false,           // older messages exist
    loaded: false,
    sub: null,
    here: null,
    typing: false,
    typingTimer: null,
    closed: false,
    editing: new Set(),
  };
  current = view;
  showRoomHeader(session.rooms.get(id));
  ui.roomBody.hidden = false;
  ui.messages.replaceChildren();
  ui.who.replaceChildren();
  ui.typing.textContent = '';
  ui.loadOlder.hidden = true;
  ui.messagesEmpty.hidden = true;
  ui.input.value = '';
  renderRooms();

  // Subscribe first, then read the newest page: no change can fall between the two.
  view.loading++;
  client.subscribe('message', { room_id: id }, (frame) => onMessageEvent(view, frame)).then((sub) => {
    if (view.closed) { sub.unsubscribe().catch(() => {}); return; }
    view.sub = sub;
    return loadHistory(view, true);
  }).catch((err) => {
    if (!view.closed) showError(describe(err, 'Cannot open the room'));
  }).finally(() => {
    view.loading--;
    flush(view);
  });

  view.here = client.presence('room', id, { typing: false });
  view.here.onChange(() => { if (!view.closed) renderPresence(view); });
  view.here.ready.catch((err) => {
    if (!view.closed && !['timeout', 'unavailable', 'internal', 'rate_limited', 'disconnected'].includes(err.code)) {
      showError(describe(err, 'Cannot show who is here'));
    }
  });
  ui.input.focus();
}

function closeRoom() {
  const view = current;
  if (!view) return;
  current = null;
  view.closed = true;
  clearTimeout(view.typingTimer);
  if (view.sub) view.sub.unsubscribe().catch(() => {});
  if (view.here) view.here.leave().catch(() => {});
  ui.roomBody.hidden = true;
  ui.roomTitle.textContent = 'Pick a room';
  ui.roomBadge.hidden = true;
  document.title = 'Whisper';
  ui.messages.replaceChildren();
  ui.who.replaceChildren();
  ui.typing.textContent = '';
  renderRooms();
}

function onMessageEvent(view, frame) {
  if (view.closed) return;
  if (frame.event === 'resync') {
    // Events were lost (the server could not replay them): read the newest page again.
    view.messages.clear();
    view.versions.clear();
    view.deleted.clear();
    view.buffer = [];
    view.loading++;
    loadHistory(view, true).catch((err) => {
      if (!view.closed) showError(describe(err, 'Cannot reload the messages'));
    }).finally(() => { view.loading--; flush(view); });
    return;
  }
  if (frame.event === 'error') {
    showError(describe(frame.error, 'This room stopped updating'));
    return;
  }
  if (frame.event !== 'created' && frame.event !== 'updated' && frame.event !== 'deleted') return;
  if (view.loading > 0) view.buffer.push(frame);
  else if (applyEvent(view, frame)) renderMessages(view);
}

/** Applies one change; false if it changed nothing (a repeated or older version). */
function applyEvent(view, frame) {
  const data = frame.data;
  if (!data || data.id === undefined) return false;
  const id = data.id;
  const known = view.versions.get(id);
  if (typeof frame.version === 'number') {
    if (known !== undefined && frame.version <= known) return false;
    view.versions.set(id, frame.version);
  }
  if (frame.event === 'deleted') {
    view.deleted.add(id);
    return view.messages.delete(id);
  }
  if (data.room_id !== undefined && data.room_id !== view.id) return false;
  const prev = view.messages.get(id);
  view.messages.set(id, frame.event === 'updated' && prev ? { ...prev, ...data } : { ...data });
  view.deleted.delete(id);
  return true;
}

function flush(view) {
  if (view.closed || view.loading > 0) return;
  const frames = view.buffer;
  view.buffer = [];
  for (const f of frames) applyEvent(view, f);
  renderMessages(view);
}

/**
 * Reads a page of history: the newest (`newest`), or the one before the oldest message shown.
 * Rows already held (from events) stay as they are: their events are at least as new.
 */
async function loadHistory(view, newest) {
  const client = session.client;
  const filter = { room_id: view.id };
  if (!newest) {
    const ids = [...view.messages.keys()];
    if (ids.length) filter.id__lt = Math.min(...ids);
  }
  const { items, meta } = await client.getList('message', filter, { order_by: ['-id'], per_page: PAGE_SIZE, page: 1 });
  if (view.closed) return;
  for (const m of items) {
    if (!view.messages.has(m.id) && !view.deleted.has(m.id)) view.messages.set(m.id, m);
  }
  view.more = meta && typeof meta.pages === 'number' ? meta.pages > 1 : items.length === PAGE_SIZE;
  view.loaded = true;
}

ui.loadOlder.addEventListener('click', async () => {
  const view = current;
  if (!view || view.loading > 0) return;
  ui.loadOlder.disabled = true;
  const before = ui.messages.scrollHeight - ui.messages.scrollTop;
  view.loading++;
  try {
    await loadHistory(view, false);
  } catch (err) {
    if (!view.closed) showError(describe(err, 'Cannot load older messages'));
  } finally {
    view.loading--;
    ui.loadOlder.disabled = false;
    flush(view);
    // keep the messages that were on screen where they were
    if (!view.closed) ui.messages.scrollTop = ui.messages.scrollHeight - before;
  }
});

function canDelete(m) { return !!session && !!session.user && (m.user === session.user.username || session.user.staff === true); }
function isOwn(m) { return !!session && !!session.user && m.user === session.user.username; }

function renderMessages(view) {
  if (view.closed || view !== current) return;
  const ul = ui.messages;
  const atBottom = ul.scrollHeight - ul.scrollTop - ul.clientHeight < 80;
  const rows = [...view.messages.values()].sort((a, b) => a.id - b.id);
  const byId = new Map([...ul.children].map((li) => [Number(li.dataset.messageId), li]));
  let prev = null;
  let appended = false;
  for (const m of rows) {
    let li = byId.get(m.id);
    if (li) byId.delete(m.id);
    else { li = buildMessage(view, m); appended = true; }
    fillMessage(li, m);
    const want = prev ? prev.nextSibling : ul.firstChild;
    if (want !== li) ul.insertBefore(li, want);
    prev = li;
  }
  for (const [id, li] of byId) { li.remove(); view.editing.delete(id); }
  ui.messagesEmpty.hidden = !view.loaded || rows.length > 0;
  ui.loadOlder.hidden = !view.more;
  if (appended && (atBottom || isOwn(rows[rows.length - 1] || {}))) ul.scrollTop = ul.scrollHeight;
}

function buildMessage(view, m) {
  const li = el('li', { class: 'message', 'data-message-id': m.id },
    el('div', { class: 'meta' },
      el('span', { class: 'author' }),
      el('time', { class: 'time' }),
      el('span', { class: 'edited', text: '(edited)', hidden: true }),
      el('span', { class: 'actions' },
        el('button', { type: 'button', class: 'edit', text: 'Edit', onclick: () => startEdit(view, li) }),
        el('button', { type: 'button', class: 'delete', text: 'Delete', onclick: () => removeMessage(view, li) }))),
    el('p', { class: 'text' }));
  return li;
}

function fillMessage(li, m) {
  li.classList.toggle('own', isOwn(m));
  li.classList.toggle('is-edited', !!m.edited_at);
  li.querySelector('.author').textContent = m.user;
  const time = li.querySelector('.time');
  time.textContent = formatTime(m.created_at);
  if (m.created_at) time.setAttribute('datetime', m.created_at);
  const edited = li.querySelector('.edited');
  edited.hidden = !m.edited_at;
  edited.title = m.edited_at ? `edited ${formatTime(m.edited_at)}` : '';
  li.querySelector('.text').textContent = m.text;
  li.querySelector('.edit').hidden = !isOwn(m);
  li.querySelector('.delete').hidden = !canDelete(m);
}

function startEdit(view, li) {
  const id = Number(li.dataset.messageId);
  const m = view.messages.get(id);
  if (!m || li.querySelector('.edit-form')) return;
  view.editing.add(id);
  li.classList.add('editing');
  const input = el('input', { type: 'text', class: 'edit-input', maxlength: 4000, 'aria-label': 'Edit message' });
  input.value = m.text;
  const stop = () => { form.remove(); li.classList.remove('editing'); view.editing.delete(id); };
  const form = el('form', { class: 'edit-form', autocomplete: 'off' },
    input,
    el('button', { type: 'submit', class: 'save primary', text: 'Save' }),
    el('button', { type: 'button', class: 'cancel', text: 'Cancel', onclick: () => { stop(); ui.input.focus(); } }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    const now = view.messages.get(id);
    if (!text || !now || text === now.text) { stop(); return; }
    input.disabled = true;
    try {
      await session.client.update('message', id, { text });
      stop();
    } catch (err) {
      input.disabled = false;
      showError(describe(err, 'Cannot edit the message'));
      input.focus();
    }
  });
  input.addEventListener('keydown', (e) => { if (e.key === 'Escape') { e.preventDefault(); stop(); ui.input.focus(); } });
  li.querySelector('.text').after(form);
  input.focus();
  input.select();
}

async function removeMessage(view, li) {
  const id = Number(li.dataset.messageId);
  const button = li.querySelector('.delete');
  button.disabled = true;
  try {
    await session.client.delete('message', id);
  } catch (err) {
    if (err.code !== 'not_found') showError(describe(err, 'Cannot delete the message'));
  } finally {
    button.disabled = false;
  }
}

// ---- presence: who is here, who is typing ----

function renderPresence(view) {
  if (view !== current || !session) return;
  const meId = session.user ? session.user.id : undefined;
  const groups = view.here.byUser();
  const users = groups
    .filter((g) => g.user && typeof g.user === 'object')
    .sort((a, b) => String(a.user.username).localeCompare(String(b.user.username)));
  ui.who.replaceChildren(...users.map((g) => el('li', {
    'data-user-id': g.user.id,
    'data-username': g.user.username,
    class: g.user.id === meId ? 'me' : null,
  },
  el('span', { class: 'dot', 'aria-hidden': 'true' }),
  el('span', { class: 'name', text: g.user.username }),
  g.user.id === meId ? el('span', { class: 'muted you', text: ' (you)' }) : null,
  g.user.staff ? el('span', { class: 'badge', text: 'staff' }) : null)));
  const typing = users
    .filter((g) => g.user.id !== meId && g.states.some((s) => s && s.typing === true))
    .map((g) => g.user.username);
  ui.typing.textContent = typing.length === 0 ? ''
    : `${listNames(typing)} ${typing.length === 1 ? 'is' : 'are'} typing…`;
  ui.typing.classList.toggle('active', typing.length > 0);
}

function setTyping(view, typing) {
  if (!view || view.closed || !view.here || view.typing === typing) return;
  view.typing = typing;
  view.here.update({ typing }).catch(() => {});
}

ui.input.addEventListener('input', () => {
  const view = current;
  if (!view) return;
  clearTimeout(view.typingTimer);
  if (!ui.input.value.trim()) { setTyping(view, false); return; }
  setTyping(view, true);
  view.typingTimer = setTimeout(() => setTyping(view, false), TYPING_IDLE_MS);
});
ui.input.addEventListener('blur', () => {
  const view = current;
  if (view && !ui.input.value.trim()) { clearTimeout(view.typingTimer); setTyping(view, false); }
});

ui.composer.addEventListener('submit', async (e) => {
  e.preventDefault();
  const view = current;
  if (!view || !session) return;
  const text = ui.input.value.trim();
  if (!text) return;
  clearTimeout(view.typingTimer);
  setTyping(view, false);
  ui.send.disabled = true;
  try {
    await session.client.create('message', { room_id: view.id, text });
    if (ui.input.value.trim() === text) ui.input.value = '';
  } catch (err) {
    showError(describe(err, 'Cannot send the message'));
  } finally {
    ui.send.disabled = false;
    ui.input.focus();
  }
});

// ---------------------------------------------------------------------------------------------
// Start: signed in already (a token from an earlier visit), or the login form

(function start() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) { showView('auth'); ui.username.focus(); return; }
  let user = null;
  try { user = JSON.parse(localStorage.getItem(USER_KEY)); } catch {}
  startSession(user);
})();
