// Dragon Todos: live todo lists on dragon.js, no framework.
// Everything on screen comes from two liveLists (the lists, and the selected list's items);
// writes go through the client and come back as events, so every open tab stays in step.
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
    const li = el('li', { class: 'item', 'data-testid': 'item' }, toggle, text, edit, del);
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
