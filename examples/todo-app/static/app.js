// Dragon Todos: live todo lists on dragon.js, no framework.
// Everything on screen comes from two liveLists (the lists, and the selected list's items);
// writes go through the client and come back as events, so every open tab stays in step.
// Presence shows who else is looking at the list and at each item, and who is editing what.
import { Dragon, liveList } from '/dragon/dragon.mjs';

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) node.append(c);
  return node;
};

const client = new Dragon();
// Exposed for debugging and for the end-to-end tests.
window.dragonClient = client;

const ui = {
  status: $('#status'),
  statusText: $('#status .status-text'),
  retry: $('#retry'),
  error: $('#error'),
  errorText: $('#error-text'),
  lists: $('#lists'),
  listsEmpty: $('#lists-empty'),
  newListForm: $('#new-list-form'),
  newListInput: $('#new-list-input'),
  title: $('#current-list-name'),
  itemsLeft: $('#items-left'),
  newItemForm: $('#new-item-form'),
  newItemInput: $('#new-item-input'),
  items: $('#items'),
  itemsEmpty: $('#items-empty'),
  viewers: $('#list-viewers'),
  announcer: $('#presence-announcer'),
  guestName: $('#guest-name'),
  guestChip: $('#guest-chip'),
};

// ---------------------------------------------------------------------------------------------
// Connection indicator: connected / reconnecting / offline

let attempts = 0;
function showState(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  ui.retry.hidden = state !== 'offline';
  document.body.dataset.connection = state;
}
client.on('state', (s) => {
  if (s === 'open') {
    attempts = 0;
    showState('connected', 'Connected');
  } else if (s === 'connecting') {
    showState('connecting', 'Connecting…');
  } else if (s === 'closed') {
    showState('offline', 'Offline');
  }
});
client.on('reconnecting', ({ attempt, delay }) => {
  attempts = attempt;
  const secs = Math.max(1, Math.round(delay / 1000));
  if (!navigator.onLine || attempt > 4) showState('offline', `Offline, retrying in ${secs} s`);
  else showState('reconnecting', 'Reconnecting…');
});
window.addEventListener('offline', () => { if (!client.connected) showState('offline', 'Offline'); });
ui.retry.addEventListener('click', () => {
  showState('reconnecting', 'Reconnecting…');
  client.reconnectNow();
});

// ---------------------------------------------------------------------------------------------
// Errors

let errorTimer = null;
function showError(err) {
  let msg = err && err.message ? err.message : String(err);
  if (err && err.code === 'validation' && err.details && typeof err.details === 'object') {
    msg = Object.entries(err.details).map(([f, m]) => `${f}: ${[].concat(m).join(', ')}`).join('; ');
  } else if (err && err.code === 'timeout') {
    msg = 'The server did not answer in time; please try again.';
  } else if (err && err.code === 'not_found') {
    msg = 'That no longer exists (someone else may have deleted it).';
  }
  ui.errorText.textContent = msg;
  ui.error.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { ui.error.hidden = true; }, 6000);
}
const guard = (p) => p.catch(showError);
$('#error-dismiss').addEventListener('click', () => { ui.error.hidden = true; clearTimeout(errorTimer); });

// ---------------------------------------------------------------------------------------------
// Presence: who else is looking at the selected list and its items, and who is editing which
// item. There is no login, so each browser gets a guest name (kept in localStorage) that goes
// into the presence state: {name, guest, editing}. Several tabs of one browser show once.
// Presence is an extra: when it fails, the page logs it and goes on without.

const GUEST_KEY = 'dragon-todos-guest';
const ADJECTIVES = ['Amber', 'Brave', 'Calm', 'Clever', 'Cosmic', 'Gentle', 'Happy', 'Jolly', 'Lucky', 'Merry', 'Quiet', 'Sunny', 'Swift', 'Witty'];
const ANIMALS = ['Badger', 'Falcon', 'Fox', 'Heron', 'Koala', 'Lynx', 'Otter', 'Panda', 'Puffin', 'Quokka', 'Raven', 'Seal', 'Tiger', 'Wombat'];
const pick = (arr) => arr[Math.floor(Math.random() * arr.length)];

function loadGuest() {
  let g = null;
  try { g = JSON.parse(localStorage.getItem(GUEST_KEY)); } catch { g = null; }
  if (!g || typeof g.id !== 'string' || typeof g.name !== 'string' || !g.name.trim()) {
    g = { id: Math.random().toString(36).slice(2, 10), name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}` };
    saveGuest(g);
  }
  return g;
}
function saveGuest(g) {
  try { localStorage.setItem(GUEST_KEY, JSON.stringify(g)); } catch { /* private mode: a name per tab */ }
}

/** A stable hue from a guest id, so everyone sees the same colour for the same person. */
function hueOf(id) {
  let h = 0x811c9dc5; // FNV-1a, then a final mix: similar ids get far apart hues
  for (const ch of String(id)) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h ^= h >>> 13;
  return (h >>> 0) % 360;
}
function initials(name) {
  const words = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] || '?').slice(0, 2);
  return letters.toUpperCase();
}
function chip(name, guestId, { editing = false, label } = {}) {
  const c = el('span', {
    class: 'chip' + (editing ? ' editing' : ''), 'data-testid': 'presence-chip', role: 'img',
    'aria-label': label || name, title: label || name, text: initials(name),
  });
  c.style.setProperty('--hue', String(hueOf(guestId)));
  return c;
}
function joinNames(names) {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

const presence = (() => {
  const guest = loadGuest();
  const itemHandles = new Map(); // item id -> {handle, editing, editors: Set of names}
  let list = null;         // {id, handle}
  const announced = [];
  let announceTimer = null;

  const state = (editing = false) => ({ name: guest.name, guest: guest.id, editing });
  const warn = (what) => (err) => console.warn(`presence: ${what}:`, err && err.code ? `${err.code}: ${err.message}` : err);

  /** Other people here, one entry per guest (their tabs together); editing if any tab edits. */
  function people(handle) {
    return handle.byUser((m) => (m.state && m.state.guest) || null)
      .filter((g) => g.members.some((m) => m.conn !== handle.conn))
      .map((g) => {
        const states = g.members.filter((m) => m.conn !== handle.conn).map((m) => m.state || {});
        const id = states[0].guest || g.members[0].conn;
        const me = id === guest.id; // this browser, in another tab
        const name = me ? guest.name : String(states[0].name || 'Someone').slice(0, 60);
        return { id, name, me, editing: states.some((s) => s.editing === true) };
      });
  }

  function announce(text) {
    announced.push(text);
    clearTimeout(announceTimer);
    // batch what happens together into one polite message
    announceTimer = setTimeout(() => {
      ui.announcer.textContent = announced.splice(0).join('. ');
    }, 150);
  }

  function open(route, key, st, onChange) {
    try {
      const handle = client.presence(route, key, st);
      handle.onChange(onChange);
      handle.ready.catch(warn(`joining ${route} ${JSON.stringify(key)}`));
      return handle;
    } catch (err) {
      warn(`joining ${route} ${JSON.stringify(key)}`)(err);
      return null;
    }
  }

  function renderItem(id, li = ui.items.querySelector(`[data-item-id="${id}"]`)) {
    const entry = itemHandles.get(id);
    if (!li || !entry) return;
    const box = li.querySelector('.presence');
    const who = entry.handle ? people(entry.handle) : [];
    const editors = who.filter((p) => p.editing);
    const row = items && items.get(id); // the shown list's liveList
    const text = row ? row.text : li.querySelector('.item-text')?.textContent || '';
    const chips = who.map((p) => chip(p.name, p.id, {
      editing: p.editing,
      label: p.me ? `You are ${p.editing ? 'editing' : 'viewing'} this item in another tab` : `${p.name} is ${p.editing ? 'editing' : 'viewing'} this item`,
    }));
    const nodes = [];
    if (editors.length) {
      const names = editors.map((p) => (p.me ? 'you (another tab)' : p.name));
      const only = editors.length === 1 && editors[0].me;
      nodes.push(el('span', { class: 'editing-badge', 'data-testid': 'item-editing' },
        el('span', { class: 'pen', 'aria-hidden': 'true', text: '✎' }),
        only ? 'You are editing in another tab' : `${joinNames(names)} ${editors.length > 1 ? 'are' : 'is'} editing`));
    }
    const MAX = 3;
    if (chips.length) {
      const more = chips.length > MAX ? chips.length - (MAX - 1) : 0; // "+N" takes the last place
      nodes.push(el('span', { class: 'chips' }, ...(more ? chips.slice(0, MAX - 1) : chips),
        ...(more ? [el('span', { class: 'chip more', text: `+${more}`, role: 'img', 'aria-label': `and ${more} more`, title: who.slice(MAX - 1).map((p) => p.name).join(', ') })] : [])));
    }
    box.replaceChildren(...nodes);
    li.classList.toggle('being-edited', editors.length > 0);
    if (editors.length) li.dataset.editingBy = editors.map((p) => p.name).join(', ');
    else delete li.dataset.editingBy;
    // tell screen reader users who started and stopped editing
    const now = new Set(editors.filter((p) => !p.me).map((p) => p.name));
    for (const name of now) if (!entry.editors.has(name)) announce(`${name} is editing “${text}”`);
    for (const name of entry.editors) if (!now.has(name)) announce(`${name} stopped editing “${text}”`);
    entry.editors = now;
  }

  function renderList() {
    const box = ui.viewers;
    const who = list && list.handle ? people(list.handle) : [];
    if (!who.length) {
      box.replaceChildren();
      box.hidden = true;
      return;
    }
    const names = who.map((p) => (p.me ? 'you (another tab)' : p.name));
    box.hidden = false;
    box.replaceChildren(
      el('span', { class: 'chips' }, ...who.slice(0, 5).map((p) => chip(p.name, p.id))),
      el('span', { class: 'viewers-text', 'data-testid': 'list-viewers-text', text: names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more are here` : `${joinNames(names)} ${names.length > 1 ? 'are' : 'is'} here too` }),
    );
    box.setAttribute('aria-label', `Also viewing this list: ${names.join(', ')}`);
  }

  function leaveItem(id) {
    const entry = itemHandles.get(id);
    if (!entry) return;
    itemHandles.delete(id);
    if (entry.handle) entry.handle.leave().catch(warn('leaving an item'));
  }

  return {
    guest,
    /** Join presence for every shown item; leave the ones no longer shown. */
    syncItems(rows) {
      const shown = new Set(rows.map((r) => r.id));
      for (const id of Array.from(itemHandles.keys())) if (!shown.has(id)) leaveItem(id);
      for (const r of rows) {
        if (itemHandles.has(r.id)) continue;
        const entry = { handle: null, editing: false, editors: new Set() };
        itemHandles.set(r.id, entry);
        entry.handle = open('todo-item', r.id, state(false), () => { if (itemHandles.get(r.id) === entry) renderItem(r.id); });
      }
    },
    renderItem,
    /** A list is shown (or none): leave the old list and its items, join `list:<id>`. */
    showList(id) {
      for (const itemId of Array.from(itemHandles.keys())) leaveItem(itemId);
      if (list && list.handle) list.handle.leave().catch(warn('leaving a list'));
      list = null;
      renderList();
      if (id === null) return;
      const mine = { id, handle: null };
      list = mine;
      mine.handle = open('todo-item', `list:${id}`, { name: guest.name, guest: guest.id }, () => { if (list === mine) renderList(); });
    },
    /** This tab's edit field of item `id` got (true) or lost (false) the focus. */
    editing(id, on) {
      const entry = itemHandles.get(id);
      if (!entry || !entry.handle || entry.editing === on) return;
      entry.editing = on;
      entry.handle.update(state(on)).catch(warn('updating the editing state'));
    },
    rename(name, { save = true } = {}) {
      guest.name = name;
      if (save) saveGuest(guest);
      // the server takes 10 state changes a second per connection: a long list takes a while
      const slow = { timeout: 120000 };
      for (const entry of itemHandles.values()) if (entry.handle) entry.handle.update(state(entry.editing), slow).catch(warn('renaming'));
      if (list && list.handle) list.handle.update({ name: guest.name, guest: guest.id }, slow).catch(warn('renaming'));
    },
  };
})();

// The guest name in the header: editable; Enter or leaving the field saves it.
function showGuest() {
  ui.guestName.value = presence.guest.name;
  ui.guestChip.replaceChildren(chip(presence.guest.name, presence.guest.id, { label: `You: ${presence.guest.name}` }));
}
showGuest();
ui.guestName.addEventListener('change', () => {
  const name = ui.guestName.value.trim().slice(0, 40);
  if (name && name !== presence.guest.name) presence.rename(name);
  showGuest();
});
// renamed in another tab of this browser
window.addEventListener('storage', (ev) => {
  if (ev.key !== GUEST_KEY || !ev.newValue) return;
  let g = null;
  try { g = JSON.parse(ev.newValue); } catch { return; }
  if (g && g.id === presence.guest.id && typeof g.name === 'string' && g.name.trim() && g.name !== presence.guest.name) {
    presence.rename(g.name, { save: false });
    showGuest();
  }
});
ui.guestName.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter') { ev.preventDefault(); ui.guestName.blur(); }
  else if (ev.key === 'Escape') { ui.guestName.value = presence.guest.name; ui.guestName.blur(); }
});

// ---------------------------------------------------------------------------------------------
// Lists

const lists = liveList(client, 'todo-list', {}, { order_by: ['name'] });
let selectedId = null;
let selectedSeen = false; // the selected list has been in `lists` (so its absence means deleted)

function listIdFromHash() {
  const m = /^#list-(\d+)$/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

function renderLists(items) {
  ui.listsEmpty.hidden = !lists.loaded || items.length > 0;
  reconcile(ui.lists, items, (list) => {
    const select = el('button', { type: 'button', class: 'list-select', 'data-testid': 'list-select', onclick: () => select_(list.id) });
    const del = el('button', {
      type: 'button', class: 'icon-button danger', 'data-testid': 'list-delete',
      onclick: () => {
        const cur = lists.get(list.id);
        if (confirmDelete(`Delete the list “${cur ? cur.name : ''}” and all its items?`)) guard(client.delete('todo-list', list.id));
      },
    }, el('span', { 'aria-hidden': 'true', text: '✕' }));
    return el('li', { 'data-testid': 'list', class: 'list-row' }, select, del);
  }, (li, list) => {
    li.dataset.listId = list.id;
    const select = li.querySelector('.list-select');
    select.textContent = list.name;
    select.title = list.name;
    const current = list.id === selectedId;
    li.classList.toggle('current', current);
    if (current) select.setAttribute('aria-current', 'true');
    else select.removeAttribute('aria-current');
    li.querySelector('.list-delete, [data-testid="list-delete"]').setAttribute('aria-label', `Delete list ${list.name}`);
  });
  // the selected list may have been renamed or deleted elsewhere (a list we just created may
  // not have arrived yet: the reply to `create` can come before its event)
  if (selectedId !== null && lists.loaded) {
    const cur = lists.get(selectedId);
    if (cur) {
      selectedSeen = true;
      ui.title.textContent = cur.name;
    } else if (selectedSeen) {
      select_(null);
      showError(new Error('The list you were looking at was deleted.'));
    }
  } else if (selectedId === null && lists.loaded && items.length && listIdFromHash() === null && !location.hash) {
    // nothing chosen yet: open the first list
    select_(items[0].id, { replace: true });
  }
}

function confirmDelete(question) {
  // Deleting a list takes its items with it: ask first.
  return window.confirm(question);
}

lists.onChange(renderLists);
lists.ready.then(() => {
  const fromHash = listIdFromHash();
  if (fromHash !== null && lists.get(fromHash)) select_(fromHash, { replace: true });
  else renderLists(lists.items);
}, showError);

ui.newListForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = ui.newListInput.value.trim();
  if (!name) return;
  const button = ui.newListForm.querySelector('button');
  button.disabled = true;
  client.create('todo-list', { name }).then((list) => {
    ui.newListInput.value = '';
    select_(list.id, { known: list });
    ui.newItemInput.focus();
  }, showError).finally(() => { button.disabled = false; });
});

window.addEventListener('hashchange', () => {
  const id = listIdFromHash();
  if (id !== selectedId) select_(id, { fromHash: true });
});

// ---------------------------------------------------------------------------------------------
// Items of the selected list

let items = null; // the liveList of the selected list's items

function select_(id, { replace = false, fromHash = false, known = null } = {}) {
  if (id !== null && !known && lists.loaded && !lists.get(id)) id = null;
  const changed = id !== selectedId;
  selectedId = id;
  if (changed) selectedSeen = false;
  if (!fromHash) {
    const hash = id === null ? '' : `#list-${id}`;
    if (location.hash !== hash) {
      if (replace || hash === '') history.replaceState(null, '', hash || location.pathname + location.search);
      else history.pushState(null, '', hash);
    }
  }
  if (changed) {
    if (items) items.close();
    items = null;
    presence.showList(id);
    ui.items.replaceChildren();
    ui.itemsEmpty.hidden = true;
    ui.itemsLeft.textContent = '';
    if (id !== null) {
      const ll = liveList(client, 'todo-item', { list_id: id }, { order_by: ['position'] });
      items = ll;
      ll.onChange((rows) => { if (items === ll) renderItems(rows); });
      ll.ready.catch(showError);
    }
  }
  const cur = id === null ? null : lists.get(id) || known;
  ui.title.textContent = cur ? cur.name : 'Pick or create a list';
  ui.newItemForm.hidden = id === null;
  document.body.dataset.selectedList = id === null ? '' : String(id);
  renderLists(lists.items);
}

function renderItems(rows) {
  presence.syncItems(rows);
  ui.itemsEmpty.hidden = rows.length > 0;
  const left = rows.filter((r) => !r.done).length;
  ui.itemsLeft.textContent = rows.length ? `${left} of ${rows.length} left` : '';
  reconcile(ui.items, rows, (item) => {
    const toggle = el('input', {
      type: 'checkbox', class: 'item-toggle', 'data-testid': 'item-toggle',
      onchange: (ev) => guard(client.update('todo-item', item.id, { done: ev.target.checked })),
    });
    const text = el('span', { class: 'item-text', 'data-testid': 'item-text', ondblclick: () => startEdit(li, item.id) });
    const edit = el('button', { type: 'button', class: 'icon-button', 'data-testid': 'item-edit', onclick: () => startEdit(li, item.id) },
      el('span', { 'aria-hidden': 'true', text: '✎' }));
    const del = el('button', {
      type: 'button', class: 'icon-button danger', 'data-testid': 'item-delete',
      onclick: () => guard(client.delete('todo-item', item.id)),
    }, el('span', { 'aria-hidden': 'true', text: '✕' }));
    const who = el('span', { class: 'presence', 'data-testid': 'item-presence' });
    const li = el('li', { class: 'item', 'data-testid': 'item' }, toggle, text, who, edit, del);
    return li;
  }, (li, item) => {
    li.dataset.itemId = item.id;
    li.dataset.done = String(item.done);
    li.classList.toggle('done', item.done);
    const toggle = li.querySelector('.item-toggle');
    toggle.checked = item.done;
    toggle.setAttribute('aria-label', `Done: ${item.text}`);
    if (!li.classList.contains('editing')) li.querySelector('.item-text').textContent = item.text;
    li.querySelector('[data-testid="item-edit"]').setAttribute('aria-label', `Edit ${item.text}`);
    li.querySelector('[data-testid="item-delete"]').setAttribute('aria-label', `Delete ${item.text}`);
    presence.renderItem(item.id, li);
  });
}

function startEdit(li, id) {
  if (li.classList.contains('editing') || !items) return;
  const current = items.get(id);
  if (!current) return;
  li.classList.add('editing');
  const span = li.querySelector('.item-text');
  const input = el('input', { type: 'text', class: 'item-edit-input', 'data-testid': 'item-edit-input', 'aria-label': `Edit ${current.text}` });
  input.value = current.text;
  let finished = false;
  const finish = (save, refocus = false) => {
    if (finished) return;
    finished = true;
    presence.editing(id, false);
    const text = input.value.trim();
    input.replaceWith(span);
    li.classList.remove('editing');
    const latest = items && items.get(id);
    if (latest) span.textContent = latest.text;
    if (refocus) li.querySelector('[data-testid="item-edit"]').focus();
    if (save && latest && text !== latest.text) {
      span.textContent = text; // optimistic; the update event confirms it
      guard(client.update('todo-item', id, { text }).catch((err) => {
        const again = items && items.get(id);
        if (again && !li.classList.contains('editing')) span.textContent = again.text;
        throw err;
      }));
    }
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') { ev.preventDefault(); finish(true, true); }
    else if (ev.key === 'Escape') { ev.preventDefault(); finish(false, true); }
  });
  input.addEventListener('blur', () => finish(true));
  // Everyone else sees "being edited by <you>" while this field has the focus.
  input.addEventListener('focus', () => presence.editing(id, true));
  span.replaceWith(input);
  input.focus();
  input.select();
}

ui.newItemForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.newItemInput.value.trim();
  if (!text || selectedId === null) return;
  const rows = items ? items.items : [];
  const position = rows.reduce((m, r) => Math.max(m, r.position), 0) + 1;
  ui.newItemInput.value = '';
  guard(client.create('todo-item', { list_id: selectedId, text, position }).catch((err) => {
    if (!ui.newItemInput.value) ui.newItemInput.value = text; // give the text back
    throw err;
  }));
});

// ---------------------------------------------------------------------------------------------
// Keyed DOM reconciliation: reuse each row's element, update it, put rows in order.

function reconcile(container, rows, create, update) {
  const byId = new Map();
  for (const child of Array.from(container.children)) byId.set(child.dataset.key, child);
  let prev = null;
  for (const row of rows) {
    const key = String(row.id);
    let node = byId.get(key);
    if (node) byId.delete(key);
    else {
      node = create(row);
      node.dataset.key = key;
    }
    update(node, row);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (node !== want) container.insertBefore(node, want);
    prev = node;
  }
  for (const node of byId.values()) node.remove();
}
