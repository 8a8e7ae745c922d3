// Request/reply API of dragon.js against a real todo-app server.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, client, Dragon, DragonError, WebSocket, fetchAll } from '../e2e/harness.mjs';

/** Assert that promise rejects with a DragonError of the given code; returns the error. */
async function rejectsWith(promise, code) {
  let err, value;
  try {
    value = await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected rejection with code ${code}, but it resolved to ${JSON.stringify(value)}`);
  assert.ok(err instanceof DragonError, `expected DragonError, got ${err && err.stack}`);
  assert.equal(err.code, code, `code (message: ${err.message})`);
  assert.equal(typeof err.message, 'string');
  return err;
}

describe('request/reply API', () => {
  let server, c;
  before(async () => {
    server = await startServer();
    c = client(server);
    await c.ready();
  });
  after(async () => {
    c?.disconnect();
    await server?.stop();
    server?.cleanup();
  });

  test('connects, gets the hello, ping/whoami', async () => {
    assert.equal(c.connected, true);
    assert.equal(c.state, 'open');
    assert.equal(c.protocol, 1);
    assert.ok(c.conn, 'connection id from hello');
    assert.equal(c.user, null);
    const pong = await c.ping();
    assert.equal(typeof pong.time, 'number');
    assert.ok(Math.abs(pong.time - Date.now()) < 60_000);
    assert.equal(await c.whoami(), null);
  });

  test('auth with a bad token rejects with unauthenticated; unknown dragon verb', async () => {
    await rejectsWith(c.auth('not-a-valid-token'), 'unauthenticated');
    assert.equal(c.token, undefined, 'a refused token is not kept for reconnections');
    assert.equal(c.connected, true);
    await rejectsWith(c.call('dragon', 'frobnicate'), 'unknown_verb');
  });

  test('create/getSingle/update/delete a list and items', async () => {
    const list = await c.create('todo-list', { name: 'Groceries' });
    assert.equal(typeof list.id, 'number');
    assert.equal(list.name, 'Groceries');
    assert.ok(!Number.isNaN(Date.parse(list.created_at)), 'created_at is RFC 3339');
    assert.deepEqual(Object.keys(list).sort(), ['created_at', 'id', 'name']);

    const item = await c.create('todo-item', { list_id: list.id, text: 'milk' });
    assert.equal(item.list_id, list.id);
    assert.equal(item.text, 'milk');
    assert.equal(item.done, false, 'done defaults to false');
    assert.equal(item.position, 0, 'position defaults to 0');
    assert.equal(typeof item.created_at, 'string');
    assert.deepEqual(Object.keys(item).sort(), ['created_at', 'done', 'id', 'list_id', 'position', 'text']);

    assert.deepEqual(await c.getSingle('todo-item', item.id), item);
    assert.deepEqual(await c.getSingle('todo-list', list.id), list);

    const upd = await c.update('todo-item', item.id, { done: true });
    assert.deepEqual(upd, { ...item, done: true }, 'update returns the whole object');
    const upd2 = await c.update('todo-item', item.id, { text: 'oat milk', position: 3 });
    assert.deepEqual(upd2, { ...item, done: true, text: 'oat milk', position: 3 });
    const renamed = await c.update('todo-list', list.id, { name: 'Food' });
    assert.equal(renamed.name, 'Food');

    assert.deepEqual(await c.delete('todo-item', item.id), { id: item.id });
    await rejectsWith(c.getSingle('todo-item', item.id), 'not_found');
    await rejectsWith(c.delete('todo-item', item.id), 'not_found');
  });

  test('validation errors carry details by field', async () => {
    let err = await rejectsWith(c.create('todo-list', { name: '' }), 'validation');
    assert.ok(err.details && Array.isArray(err.details.name) && err.details.name.length > 0, JSON.stringify(err.details));
    assert.equal(typeof err.details.name[0], 'string');
    err = await rejectsWith(c.create('todo-list', { name: 'x'.repeat(201) }), 'validation');
    assert.ok(err.details.name, JSON.stringify(err.details));
    await c.create('todo-list', { name: 'x'.repeat(200) }); // the limit itself is fine
    err = await rejectsWith(c.create('todo-list', {}), 'validation');
    assert.ok(err.details.name, 'missing required name');

    const list = await c.create('todo-list', { name: 'v' });
    err = await rejectsWith(c.create('todo-item', { list_id: list.id, text: '' }), 'validation');
    assert.ok(err.details.text, JSON.stringify(err.details));
    err = await rejectsWith(c.create('todo-item', { list_id: 987654, text: 'orphan' }), 'validation');
    assert.ok(err.details.list_id, JSON.stringify(err.details));
    err = await rejectsWith(c.create('todo-item', { list_id: list.id, text: 'a', colour: 'red' }), 'validation');
    assert.ok(err.details.colour, 'unknown field named: ' + JSON.stringify(err.details));
    err = await rejectsWith(c.create('todo-list', { name: 'a', id: 5 }), 'validation');
    assert.ok(err.details.id, 'read-only id refused: ' + JSON.stringify(err.details));
    err = await rejectsWith(c.create('todo-list', { name: 'a', created_at: '2020-01-01T00:00:00Z' }), 'validation');
    assert.ok(err.details.created_at, 'server-set field refused: ' + JSON.stringify(err.details));

    const item = await c.create('todo-item', { list_id: list.id, text: 'ok' });
    err = await rejectsWith(c.update('todo-item', item.id, { text: '' }), 'validation');
    assert.ok(err.details.text);
    // a failed request changes nothing
    assert.equal((await c.getSingle('todo-item', item.id)).text, 'ok');
    await rejectsWith(c.update('todo-item', 987654, { text: 'x' }), 'not_found');
  });

  test('unknown route / verb / bad requests', async () => {
    await rejectsWith(c.getList('no-such-route'), 'unknown_route');
    await rejectsWith(c.call('todo-item', 'frobnicate', {}), 'unknown_verb');
    let err = await rejectsWith(c.getList('todo-item', { colour: 'red' }), 'bad_request');
    assert.match(err.message + JSON.stringify(err.details), /colour/, 'names the field');
    await rejectsWith(c.getList('todo-item', { list_id: '3' }), 'bad_request');
    await rejectsWith(c.getList('todo-item', { done: 1 }), 'bad_request');
    await rejectsWith(c.getList('todo-item', { position__lt: 1.5 }), 'bad_request');
    await rejectsWith(c.getList('todo-item', { text__frobnicates: 'a' }), 'bad_request');
    await rejectsWith(c.getList('todo-list', { created_at: '2020-01-01T00:00:00Z' }), 'bad_request'); // not filterable on lists
    // the connection survives failed requests
    assert.equal(c.connected, true);
    assert.equal(typeof (await c.ping()).time, 'number');
  });

  test('getList: filters, order_by, pagination, meta', async () => {
    const list = await c.create('todo-list', { name: 'Filters' });
    const other = await c.create('todo-list', { name: 'Other' });
    const texts = ['Apple pie', 'banana', 'Cherry', 'apple juice', '100% juice', 'a_b', 'Éclair'];
    const items = [];
    for (const [i, text] of texts.entries()) {
      items.push(await c.create('todo-item', { list_id: list.id, text, position: i % 3, done: i % 2 === 0 }));
    }
    await c.create('todo-item', { list_id: other.id, text: 'elsewhere' });
    const ids = (rows) => rows.map((r) => r.id);
    const q = async (filter, order_by = ['id']) => ids(await fetchAll(c, 'todo-item', { list_id: list.id, ...filter }, order_by));
    const expect = (pred) => ids(items.filter(pred));

    const all = await c.getList('todo-item', { list_id: list.id });
    assert.deepEqual(all.items.map((r) => r.id).sort((a, b) => a - b), ids(items));
    assert.equal(all.meta.total, texts.length);
    assert.equal(all.meta.page, 1);
    assert.equal(all.meta.pages, 1);
    assert.equal(typeof all.meta.per_page, 'number');
    assert.equal(typeof all.meta.position, 'string');

    assert.deepEqual(await q({ done__eq: false }), expect((r) => r.done === false));
    assert.deepEqual(await q({ done: true }), expect((r) => r.done === true));
    assert.deepEqual(await q({ position__gte: 1 }), expect((r) => r.position >= 1));
    assert.deepEqual(await q({ position__ne: 1 }), expect((r) => r.position !== 1));
    assert.deepEqual(await q({ position__in: [0, 2] }), expect((r) => [0, 2].includes(r.position)));
    assert.deepEqual(await q({ position__in: [] }), []);
    assert.deepEqual(await q({ text__icontains: 'APPLE' }), expect((r) => r.text.toLowerCase().includes('apple')));
    assert.deepEqual(await q({ text__contains: 'apple' }), expect((r) => r.text.includes('apple')));
    assert.deepEqual(await q({ text__startswith: 'a' }), expect((r) => r.text.startsWith('a')));
    assert.deepEqual(await q({ text__contains: '%' }), expect((r) => r.text.includes('%')), '% is literal');
    assert.deepEqual(await q({ text__contains: '_' }), expect((r) => r.text.includes('_')), '_ is literal');
    assert.deepEqual(await q({ text__icontains: 'écl' }), expect((r) => r.text === 'Éclair'), 'unicode icontains');
    assert.deepEqual(await q({ $or: [{ text: 'banana' }, { position: 2 }] }), expect((r) => r.text === 'banana' || r.position === 2));
    assert.deepEqual(await q({ $not: { done: true } }), expect((r) => !r.done));
    assert.deepEqual(await q({ $not: { $or: [{ position: 0 }, { position: 1 }] } }), expect((r) => r.position === 2));

    // order_by: descending, multiple fields, ties by id; strings by code point ("B" < "a")
    const sorted = await fetchAll(c, 'todo-item', { list_id: list.id }, ['-position', 'text']);
    const want = [...items].sort((a, b) => b.position - a.position || (a.text < b.text ? -1 : a.text > b.text ? 1 : 0) || a.id - b.id);
    assert.deepEqual(ids(sorted), ids(want));
    const byPos = await fetchAll(c, 'todo-item', { list_id: list.id }, ['position']);
    assert.deepEqual(ids(byPos), ids([...items].sort((a, b) => a.position - b.position || a.id - b.id)), 'ties break by id');

    // pagination never overlaps or skips
    const p1 = await c.getList('todo-item', { list_id: list.id }, { order_by: ['position'], page: 1, per_page: 3 });
    const p2 = await c.getList('todo-item', { list_id: list.id }, { order_by: ['position'], page: 2, per_page: 3 });
    const p3 = await c.getList('todo-item', { list_id: list.id }, { order_by: ['position'], page: 3, per_page: 3 });
    assert.deepEqual(p1.meta, { ...p1.meta, page: 1, per_page: 3, total: 7, pages: 3 });
    assert.equal(p2.meta.page, 2);
    assert.deepEqual([...p1.items, ...p2.items, ...p3.items].map((r) => r.id), ids(byPos));
    assert.equal(p3.items.length, 1);

    // lists filterable by name
    const named = await c.getList('todo-list', { name__in: ['Filters', 'Other'] }, { order_by: ['-name'] });
    assert.deepEqual(named.items.map((l) => l.name), ['Other', 'Filters']);
  });

  test('call() resolves data, request() resolves {data, meta}', async () => {
    const list = await c.create('todo-list', { name: 'Generic' });
    const data = await c.call('todo-list', 'get_single', { id: list.id });
    assert.deepEqual(data, list);
    const r = await c.request('todo-list', 'get_list', { filter: { id: list.id } });
    assert.deepEqual(r.data, [list]);
    assert.equal(r.meta.total, 1);
    const err = await c.call('todo-list', 'get_single', { id: -1 }).catch((e) => e);
    assert.ok(err instanceof DragonError && err.code === 'not_found');
  });

  test('deleting a list deletes its items', async () => {
    const list = await c.create('todo-list', { name: 'Doomed' });
    const a = await c.create('todo-item', { list_id: list.id, text: 'a' });
    await c.create('todo-item', { list_id: list.id, text: 'b' });
    await c.delete('todo-list', list.id);
    await rejectsWith(c.getSingle('todo-list', list.id), 'not_found');
    await rejectsWith(c.getSingle('todo-item', a.id), 'not_found');
    assert.equal((await c.getList('todo-item', { list_id: list.id })).meta.total, 0);
  });

  test('per-call timeout rejects with code timeout (server frozen)', async () => {
    const t0 = Date.now();
    await server.pause();
    try {
      const err = await rejectsWith(c.getList('todo-list', null, { timeout: 300 }), 'timeout');
      assert.match(err.message, /300/);
      await rejectsWith(c.call('todo-list', 'get_list', {}, { timeout: 200 }), 'timeout');
      assert.ok(Date.now() - t0 < 3000);
    } finally {
      server.resume();
    }
    // a late reply to a timed-out request is ignored and the client keeps working
    assert.ok(Array.isArray((await c.getList('todo-list')).items));
  });

  test('client default timeout applies too', async () => {
    const c2 = client(server, { timeout: 250 });
    await c2.ready();
    await server.pause();
    try {
      await rejectsWith(c2.ping(), 'timeout');
    } finally {
      server.resume();
      c2.disconnect();
    }
  });

  test('disconnect() rejects pending and later calls with disconnected', async () => {
    const c2 = client(server);
    await c2.ready();
    await server.pause();
    let p;
    try {
      p = c2.getList('todo-list');
      c2.disconnect();
      await rejectsWith(p, 'disconnected');
    } finally {
      server.resume();
    }
    await rejectsWith(c2.getList('todo-list'), 'disconnected');
    assert.equal(c2.state, 'closed');
    assert.equal(c2.connected, false);
  });

  test('calls made before the connection is up are queued; onReady/ready/on(open)', async () => {
    const c2 = new Dragon({ url: server.url, WebSocket });
    let readyCalls = 0;
    let opened = null;
    c2.onReady(() => readyCalls++);
    const off = c2.on('open', (info) => { opened = info; });
    const p = c2.getList('todo-list'); // sent as soon as the hello arrives
    assert.ok(Array.isArray((await p).items));
    await c2.ready();
    assert.equal(readyCalls, 1);
    assert.equal(opened.conn, c2.conn);
    assert.equal(opened.reconnect, false);
    off();
    c2.disconnect();
  });

  test('default url is the page origin + /ws', () => {
    const saved = globalThis.location;
    globalThis.location = { protocol: 'https:', host: 'example.test:8443', href: 'https://example.test:8443/app' };
    try {
      const d = new Dragon({ WebSocket: class { close() {} }, autoConnect: false });
      assert.equal(d.url, 'wss://example.test:8443/ws');
      globalThis.location = { protocol: 'http:', host: 'localhost:8000', href: 'http://localhost:8000/' };
      assert.equal(new Dragon({ WebSocket: class {}, autoConnect: false }).url, 'ws://localhost:8000/ws');
      assert.equal(new Dragon({ url: '/other', WebSocket: class {}, autoConnect: false }).url, 'ws://localhost:8000/other');
    } finally {
      if (saved === undefined) delete globalThis.location; else globalThis.location = saved;
    }
  });
});
