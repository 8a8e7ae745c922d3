// The page: a live list of tasks (liveList keeps it current), with create, edit, done and
// delete, and per-task presence: who else is looking at a task, and who is editing it.
import { Dragon, liveList } from '/dragon/dragon.mjs';

const client = new Dragon();
const $ = (sel) => document.querySelector(sel);
const me = localStorage.getItem('name') || `Guest ${Math.floor(1000 + Math.random() * 9000)}`;
localStorage.setItem('name', me);

client.on('state', (s) => {
  $('#status').textContent = s === 'open' ? `Connected as ${me}` : 'Reconnecting…';
});

const tasks = liveList(client, 'task', {}, { order_by: ['id'] });
const here = new Map(); // task id -> presence handle

function row(task) {
  const li = document.createElement('li');
  li.dataset.id = task.id;
  const done = document.createElement('input');
  done.type = 'checkbox';
  done.checked = task.done;
  done.setAttribute('aria-label', `Done: ${task.title}`);
  done.addEventListener('change', () => client.update('task', task.id, { done: done.checked }));
  const title = document.createElement('input');
  title.value = task.title;
  title.setAttribute('aria-label', 'Title');
  title.addEventListener('focus', () => here.get(task.id)?.update({ name: me, editing: true }));
  title.addEventListener('blur', () => here.get(task.id)?.update({ name: me, editing: false }));
  title.addEventListener('change', () => client.update('task', task.id, { title: title.value }));
  const who = document.createElement('span');
  who.className = 'who';
  const remove = document.createElement('button');
  remove.textContent = 'Delete';
  remove.addEventListener('click', () => client.delete('task', task.id));
  li.append(done, title, who, remove);
  return li;
}

function showPresence(id, handle) {
  const who = document.querySelector(`li[data-id="${id}"] .who`);
  if (!who) return;
  const others = handle.others;
  const editing = others.find((m) => m.state?.editing);
  who.textContent = editing
    ? `being edited by ${editing.state.name}`
    : others.length ? `${others.map((m) => m.state?.name ?? 'someone').join(', ')} viewing` : '';
  if (editing) $('#announcer').textContent = `${editing.state.name} is editing a task`;
}

tasks.onChange((rows) => {
  const list = $('#tasks');
  list.replaceChildren(...rows.map(row));
  for (const task of rows) {
    if (!here.has(task.id)) {
      const handle = client.presence('task', task.id, { name: me, editing: false });
      handle.onChange(() => showPresence(task.id, handle));
      here.set(task.id, handle);
    }
    showPresence(task.id, here.get(task.id));
  }
  for (const [id, handle] of here) {
    if (!rows.some((t) => t.id === id)) {
      handle.leave();
      here.delete(id);
    }
  }
});

$('#new-task').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('#new-title');
  await client.create('task', { title: input.value });
  input.value = '';
});
