// The page: a live list of tasks, shared by every open tab. The list comes from a liveList
// (a snapshot, then the server's events); writes go through the client and come back as
// events, so no tab ever patches its own list. Presence shows, on each task, who else is
// viewing it and who is editing its title. No framework, no build step: change it freely.
import { Dragon, groupByUser } from '/dragon/dragon.mjs';

const client = new Dragon(); // ws(s)://<this host>/ws; reconnects by itself
const $ = (sel) => document.querySelector(sel);

/** h('li', {className: 'x', onclick: fn, 'aria-label': 'y'}, ...children): a new element. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// --- Who am I? There is no login: each browser gets a guest name, kept in localStorage. ---

const GUEST_KEY = 'dragon-guest';
const ADJECTIVES = ['Brave', 'Calm', 'Clever', 'Gentle', 'Happy', 'Lucky', 'Merry', 'Quiet', 'Sunny', 'Swift'];
const ANIMALS = ['Badger', 'Falcon', 'Fox', 'Heron', 'Koala', 'Lynx', 'Otter', 'Panda', 'Puffin', 'Wombat'];
const pick = (words) => words[Math.floor(Math.random() * words.length)];

function loadGuest() {
  try {
    const saved = JSON.parse(localStorage.getItem(GUEST_KEY));
    if (typeof saved?.id === 'string' && typeof saved?.name === 'string' && saved.name.trim()) return saved;
  } catch { /* unreadable: start afresh */ }
  return { id: Math.random().toString(36).slice(2, 10), name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}` };
}
const saveGuest = () => { try { localStorage.setItem(GUEST_KEY, JSON.stringify(guest)); } catch { /* private mode */ } };
const guest = loadGuest();
saveGuest();

/** What every task's presence carries about this tab. */
const presenceState = (editing) => ({ name: guest.name, guest: guest.id, editing });

/** A round badge with someone's initials, in a colour of their own. */
function chip(name, id, label = name) {
  const initials = name.split(/\s+/).filter(Boolean).map((w) => w[0]).join('').slice(0, 2);
  let hash = 7;
  for (const c of String(id)) hash = Math.imul(hash ^ c.charCodeAt(0), 0x9e3779b1) >>> 0;
  const hue = (hash ^ (hash >>> 15)) % 360; // similar ids, far apart colours
  const node = h('span', { className: 'chip', role: 'img', title: label, 'aria-label': label }, initials.toUpperCase());
  node.style.setProperty('--hue', String(hue));
  return node;
}

const nameInput = $('#guest-name');
function showMe() {
  nameInput.value = guest.name;
  $('#me-chip').replaceChildren(chip(guest.name, guest.id, `You: ${guest.name}`));
}
showMe();
nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim().slice(0, 40);
  if (name && name !== guest.name) {
    guest.name = name;
    saveGuest();
    for (const row of rows.values()) row.presence.update(presenceState(row.editing), { timeout: 60000 }).catch(warn);
  }
  showMe();
});

// --- Connection indicator ---

const STATES = { idle: 'Connecting…', connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' };
function showConnection(state) {
  $('#status').dataset.state = state;
  $('#status-text').textContent = STATES[state] ?? state;
  document.body.classList.toggle('offline', state !== 'open'); // presence shown may be stale
}
showConnection(client.state);
client.on('state', showConnection);

// --- Errors: next to the field they are about ---

function errorText(err) {
  if (err.code === 'validation' && err.details) {
    return Object.entries(err.details)
      .map(([field, messages]) => `${field[0].toUpperCase()}${field.slice(1)} ${[].concat(messages).join(', ')}.`)
      .join(' ');
  }
  if (err.code === 'not_found') return 'This task was deleted meanwhile.';
  if (err.code === 'timeout' || err.code === 'disconnected') return 'The server did not answer. Please try again.';
  return err.message || String(err);
}
function showError(input, box, err) {
  box.textContent = err ? errorText(err) : '';
  if (err) input?.setAttribute('aria-invalid', 'true');
  else input?.removeAttribute('aria-invalid');
}
const warn = (err) => console.warn('presence:', err.code ?? '', err.message);
const announce = (text) => { $('#announcer').textContent = text; };

// --- New task ---

const newTitle = $('#new-title');
const newError = $('#new-error');
newTitle.addEventListener('input', () => showError(newTitle, newError, null));
$('#new-task').addEventListener('submit', async (event) => {
  event.preventDefault();
  const title = newTitle.value.trim();
  newTitle.value = ''; // at once, ready for the next one; the task arrives as an event
  try {
    // An empty title is sent too: the server's validation answers, shown under the field.
    await client.create('task', { title });
  } catch (err) {
    if (!newTitle.value) newTitle.value = title; // give it back, to fix
    showError(newTitle, newError, err);
  }
});

// --- The list: one <li> per task, kept (not rebuilt) so that focus and typing survive ---

const tasks = client.liveList('task', {}, { order_by: ['id'] });
const rows = new Map(); // task id -> {li, done, title, error, …, presence}
const list = $('#tasks');
const addedAt = (iso) => {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return date.toLocaleString([], today ? { timeStyle: 'short' } : { dateStyle: 'medium' });
};

tasks.ready.catch((err) => showError(newTitle, newError, err));
tasks.onChange((items) => {
  let previous = null;
  for (const task of items) {
    const row = rows.get(task.id) ?? addRow(task.id);
    if (row.task !== task) fill(row, task);
    const wanted = previous ? previous.nextElementSibling : list.firstElementChild;
    if (row.li !== wanted) list.insertBefore(row.li, wanted);
    previous = row.li;
  }
  for (const [id, row] of rows) if (!tasks.get(id)) removeRow(id, row);
  const done = items.filter((task) => task.done).length;
  $('#count').textContent = items.length ? `${done} of ${items.length} done` : '';
  $('#empty').textContent = items.length ? '' : 'No tasks yet. Add the first one above.';
});

function addRow(id) {
  const row = { id, editing: false, editors: new Set() };
  row.done = h('input', { type: 'checkbox', className: 'done', onchange: () => toggle(row) });
  row.title = h('input', {
    className: 'title', maxLength: 255, autocomplete: 'off', 'aria-describedby': `meta-${id} error-${id}`,
    onfocus: () => setEditing(row, true),
    onblur: () => {
      if (!rows.has(id)) return; // deleted while focused
      saveTitle(row);
      setEditing(row, false);
      if (row.saving === undefined && !row.title.hasAttribute('aria-invalid')) row.title.value = row.task.title;
    },
    onkeydown: (event) => {
      if (event.key === 'Enter') saveTitle(row);
      if (event.key === 'Escape') { row.title.value = row.task.title; showError(row.title, row.error, null); }
    },
    oninput: () => showError(row.title, row.error, null),
  });
  row.added = h('time');
  row.badge = h('span', { className: 'badge' });
  row.error = h('p', { className: 'field-error', id: `error-${id}`, role: 'alert' });
  row.chips = h('span', { className: 'chips' });
  row.remove = h('button', { type: 'button', className: 'remove', onclick: () => remove(row) }, '✕');
  row.li = h('li', { className: 'task' },
    row.done,
    h('div', { className: 'main' }, row.title, h('p', { className: 'meta', id: `meta-${id}` }, row.added, row.badge), row.error),
    row.chips, row.remove);
  row.li.dataset.id = id;
  // Join this task's presence: others see this tab as a viewer, and as editing while the
  // title field has the focus. The server drops it when the tab closes or the connection
  // is lost; the handle joins again by itself after a reconnection.
  row.presence = client.presence('task', id, presenceState(false));
  row.presence.onChange(() => showPresence(row));
  row.presence.ready.catch(warn);
  rows.set(id, row);
  return row;
}

function fill(row, task) {
  row.task = task;
  row.li.classList.toggle('is-done', task.done);
  row.done.checked = task.done;
  row.done.setAttribute('aria-label', `Done: ${task.title}`);
  row.remove.setAttribute('aria-label', `Delete “${task.title}”`);
  row.title.setAttribute('aria-label', `Title of “${task.title}”`);
  // Never overwrite what this user is typing, or a refused title they still have to fix.
  if (document.activeElement !== row.title && !row.title.hasAttribute('aria-invalid')) row.title.value = task.title;
  row.added.dateTime = task.created_at;
  row.added.textContent = `Added ${addedAt(task.created_at)}`;
}

function removeRow(id, row) {
  // Keyboard users keep their place: the focus moves to the next task (or the new task field).
  rows.delete(id);
  if (row.li.contains(document.activeElement)) {
    const next = row.li.nextElementSibling ?? row.li.previousElementSibling;
    (next?.querySelector('.remove') ?? newTitle).focus();
  }
  row.li.remove();
  row.presence.leave().catch(warn);
}

/** Awaits a write; shows its error under the task's title (and clears it once fixed). */
async function write(row, input, request) {
  try {
    await request;
    if (!input || input.hasAttribute('aria-invalid')) showError(input, row.error, null);
    return true;
  } catch (err) {
    showError(input, row.error, err);
    return false;
  }
}

async function toggle(row) {
  const ok = await write(row, row.done, client.update('task', row.id, { done: row.done.checked }));
  if (!ok) row.done.checked = row.task.done;
}

function saveTitle(row) {
  const title = row.title.value.trim();
  if (title === row.task.title || title === row.saving) return;
  row.saving = title;
  write(row, row.title, client.update('task', row.id, { title })).finally(() => { row.saving = undefined; });
}

function remove(row) {
  write(row, null, client.delete('task', row.id));
}

function setEditing(row, editing) {
  if (row.editing === editing) return;
  row.editing = editing;
  row.presence.update(presenceState(editing)).catch(warn);
}

// --- Presence: chips for the others on a task, and "being edited by" ---

function showPresence(row) {
  // One entry per guest: several tabs of one browser show once.
  const people = groupByUser(row.presence.others, (member) => member.state?.guest).map(({ members, states }) => {
    const id = states[0]?.guest ?? members[0].conn;
    const name = String(states[0]?.name || 'Someone').slice(0, 40);
    const me = id === guest.id; // this browser, in another tab
    return { id, name, me, label: me ? 'you (another tab)' : name, editing: states.some((s) => s?.editing === true) };
  });
  const chips = people.slice(0, 3).map((p) => {
    const node = chip(p.name, p.id, `${p.label}: ${p.editing ? 'editing' : 'viewing'}`);
    node.classList.toggle('editing', p.editing);
    return node;
  });
  const more = people.length - chips.length;
  if (more > 0) chips.push(h('span', { className: 'chip more', role: 'img', 'aria-label': `${more} more`, title: `${more} more` }, `+${more}`));
  row.chips.replaceChildren(...chips);

  const editors = people.filter((p) => p.editing);
  row.badge.textContent = editors.length ? `Being edited by ${editors.map((p) => p.label).join(' and ')}` : '';
  row.li.classList.toggle('being-edited', editors.length > 0);

  // Tell screen reader users who started and stopped editing (not their own other tabs).
  const names = new Set(editors.filter((p) => !p.me).map((p) => p.name));
  const title = row.task?.title ?? 'a task';
  for (const name of names) if (!row.editors.has(name)) announce(`${name} is editing “${title}”`);
  for (const name of row.editors) if (!names.has(name)) announce(`${name} stopped editing “${title}”`);
  row.editors = names;
}
