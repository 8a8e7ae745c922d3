// Client logic without a server: ordering, event application, and the connection state machine
// driven through a scripted fake WebSocket.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import '../dragon.js';
import { tick, sleep, waitUntil, FakeSocket, fakeClient } from './fake.mjs';

const { DragonError, liveList, makeComparator, sortItems, compareValues, applyEvent } = globalThis.dragon;

describe('packaging', () => {
  test('dragon.js is a classic script (no export statements) defining globalThis.dragon', async () => {
    const fs = await import('node:fs');
    const src = fs.readFileSync(new URL('../dragon.js', import.meta.url), 'utf8');
    assert.doesNotMatch(src, /^\s*export\b/m);
    assert.doesNotMatch(src, /^\s*import\b/m);
    // runs as a plain script in a fresh context, defining the global
    const vm = await import('node:vm');
    const ctx = vm.createContext({ console, setTimeout, clearTimeout, setInterval, clearInterval, URL });
    vm.runInContext(src, ctx);
    assert.equal(typeof vm.runInContext('dragon.Dragon', ctx), 'function');
    assert.equal(typeof vm.runInContext('dragon.liveList', ctx), 'function');
  });
  test('dragon.mjs re-exports every member of globalThis.dragon, named and default', async () => {
    const mod = await import('../dragon.mjs');
    assert.equal(mod.default, globalThis.dragon);
    for (const [k, v] of Object.entries(globalThis.dragon)) assert.equal(mod[k], v, k);
    for (const k of ['Dragon', 'DragonError', 'liveList']) assert.ok(k in mod);
  });
  test('dragon.d.ts declares the public API', async () => {
    const fs = await import('node:fs');
    const dts = fs.readFileSync(new URL('../dragon.d.ts', import.meta.url), 'utf8');
    for (const name of Object.keys(globalThis.dragon)) assert.match(dts, new RegExp(`\\b${name}\\b`), name);
    for (const m of ['getList', 'getSingle', 'create', 'update', 'delete', 'call', 'subscribe', 'onChannelMessage', 'onReady', 'ready', 'disconnect', 'liveList', 'unsubscribe', 'onChange', 'close']) {
      assert.match(dts, new RegExp(`\\b${m}\\b`), m);
    }
  });
});

describe('ordering', () => {
  test('values: numbers, booleans, nulls first, strings by code point', () => {
    assert.ok(compareValues(1, 2) < 0);
    assert.ok(compareValues(false, true) < 0);
    assert.ok(compareValues(null, 0) < 0);
    assert.ok(compareValues('B', 'a') < 0, '"B" < "a"');
    assert.ok(compareValues('\uFFFD', '\u{1F600}') < 0, 'code point order, not UTF-16 units');
    assert.ok(compareValues('ab', 'abc') < 0);
    assert.equal(compareValues('x', 'x'), 0);
  });
  test('RFC 3339 timestamps compare as instants', () => {
    assert.ok(compareValues('2026-01-01T00:00:00Z', '2026-01-01T00:00:00.5Z') < 0);
    assert.ok(compareValues('2026-01-01T01:00:00+02:00', '2026-01-01T00:00:00Z') < 0);
    assert.ok(compareValues('2026-01-01T00:00:00.000000001Z', '2026-01-01T00:00:00Z') > 0);
  });
  test('order_by with - prefix, several fields, ties by id', () => {
    const rows = [
      { id: 3, done: false, position: 1 }, { id: 1, done: true, position: 1 },
      { id: 2, done: false, position: 1 }, { id: 4, done: false, position: 0 },
    ];
    assert.deepEqual(sortItems(rows, ['done', '-position']).map((r) => r.id), [2, 3, 4, 1]);
    assert.deepEqual(sortItems(rows, []).map((r) => r.id), [1, 2, 3, 4]);
    assert.deepEqual(sortItems(rows, '-id').map((r) => r.id), [4, 3, 2, 1]);
    assert.deepEqual(rows.map((r) => r.id), [3, 1, 2, 4], 'sortItems does not mutate');
    assert.equal(makeComparator(['position'])(rows[0], rows[2]), 1, 'tie on position broken by id');
  });
});

describe('applyEvent', () => {
  test('upsert by id, idempotent, deleted removes, updated merges', () => {
    const m = new Map();
    assert.equal(applyEvent(m, { event: 'created', data: { id: 1, text: 'a' } }), true);
    assert.equal(applyEvent(m, { event: 'created', data: { id: 1, text: 'a' } }), false, 'repeat is a no-op');
    assert.equal(m.size, 1);
    assert.equal(applyEvent(m, { event: 'updated', data: { id: 1, done: true }, changed: ['done'] }), true);
    assert.deepEqual(m.get(1), { id: 1, text: 'a', done: true });
    assert.equal(applyEvent(m, { event: 'updated', data: { id: 2, text: 'b' } }), true, 'update of unknown id inserts');
    assert.equal(applyEvent(m, { event: 'deleted', data: { id: 1 } }), true);
    assert.equal(applyEvent(m, { event: 'deleted', data: { id: 1 } }), false);
    assert.equal(applyEvent(m, { event: 'message', data: { id: 2 } }), false, 'custom events ignored');
    assert.deepEqual([...m.keys()], [2]);
  });
});

describe('connection state machine (fake socket)', () => {
  test('queues calls until the hello, sends {id, route, verb, args}, resolves data/meta', async () => {
    const c = fakeClient({ token: 'se cret' });
    const ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=se%20cret');
    const p = c.getList('todo-item', { done: false }, { order_by: ['-position'], page: 2, per_page: 10 });
    await tick();
    assert.equal(ws.sent.length, 0, 'nothing sent before the hello');
    ws.accept();
    assert.equal(c.state, 'open');
    const req = ws.take();
    assert.deepEqual(Object.keys(req).sort(), ['args', 'id', 'route', 'verb']);
    assert.equal(req.route, 'todo-item');
    assert.equal(req.verb, 'get_list');
    assert.deepEqual(req.args, { filter: { done: false }, order_by: ['-position'], page: 2, per_page: 10 });
    ws.reply(req, [{ id: 1 }], { page: 2, per_page: 10, total: 11, pages: 2, position: 'p' });
    assert.deepEqual(await p, { items: [{ id: 1 }], meta: { page: 2, per_page: 10, total: 11, pages: 2, position: 'p' } });

    const q = c.update('todo-item', 5, { text: '' });
    const r2 = ws.take();
    assert.deepEqual(r2.args, { id: 5, data: { text: '' } });
    ws.fail(r2, 'validation', 'invalid', { text: ['required'] });
    const err = await q.catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.deepEqual([err.code, err.message, err.details], ['validation', 'invalid', { text: ['required'] }]);
    c.disconnect();
  });

  test('events go to every local subscription named in subs; positions remembered', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept();
    const got = { a: [], b: [] };
    const pa = c.subscribe('todo-item', { list_id: 1 }, (f) => got.a.push(f));
    const pb = c.subscribe('todo-item', {}, (f) => got.b.push(f));
    ws.reply(ws.take(), { sub: 'sA', position: 'p0' });
    ws.reply(ws.take(), { sub: 'sB', position: 'p0' });
    const [a, b] = await Promise.all([pa, pb]);
    assert.deepEqual([a.id, b.id, a.position], ['sA', 'sB', 'p0']);
    ws.frame({ event: 'created', route: 'todo-item', subs: ['sA', 'sB'], data: { id: 1 }, position: 'p1' });
    ws.frame({ event: 'created', route: 'todo-item', subs: ['sB'], data: { id: 2 }, position: 'p2' });
    ws.frame({ event: 'created', route: 'todo-item', subs: ['sZ'], data: { id: 3 }, position: 'p3' });
    assert.deepEqual(got.a.map((f) => f.data.id), [1]);
    assert.deepEqual(got.b.map((f) => f.data.id), [1, 2]);
    assert.deepEqual([a.position, b.position], ['p1', 'p2']);
    const u = a.unsubscribe();
    const ureq = ws.take();
    assert.deepEqual([ureq.verb, ureq.args], ['unsubscribe', { sub: 'sA' }]);
    ws.reply(ureq, { sub: 'sA' });
    await u;
    ws.frame({ event: 'deleted', route: 'todo-item', subs: ['sA'], data: { id: 1 }, position: 'p4' });
    assert.equal(got.a.length, 1);
    c.disconnect();
  });

  test('reconnect: resubscribe with since, new sub id mapped, recovered:false signals resync', async () => {
    const c = fakeClient();
    const states = [];
    c.on('state', (s) => states.push(s));
    const resyncs = [];
    c.on('resync', (r) => resyncs.push(r));
    let ws = FakeSocket.last();
    ws.accept();
    const got = [];
    const p = c.subscribe('todo-item', { list_id: 1 }, (f) => got.push(f));
    ws.reply(ws.take(), { sub: 's1', position: 'p0' });
    const sub = await p;
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 1 }, position: 'p7' });

    ws.drop(1001);
    assert.equal(c.state, 'reconnecting');
    const queued = c.create('todo-item', { text: 'x' });
    await sleep(20);
    ws = FakeSocket.last();
    assert.equal(FakeSocket.all.length, 2, 'a new socket');
    ws.accept();
    const re = ws.take((r) => r.verb === 'subscribe');
    assert.deepEqual(re.args, { filter: { list_id: 1 }, since: 'p7' });
    const cr = ws.take((r) => r.verb === 'create');
    ws.reply(cr, { id: 9, text: 'x' });
    assert.deepEqual(await queued, { id: 9, text: 'x' });
    ws.reply(re, { sub: 's5', position: 'p9', recovered: true });
    assert.equal(sub.id, 's5');
    ws.frame({ event: 'updated', route: 'todo-item', subs: ['s5'], data: { id: 1 }, changed: ['text'], position: 'p8' });
    assert.equal(got.at(-1).position, 'p8');
    assert.equal(sub.position, 'p8');
    assert.equal(resyncs.length, 0);

    ws.drop(1006);
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept();
    const re2 = ws.take((r) => r.verb === 'subscribe');
    assert.equal(re2.args.since, 'p8');
    ws.reply(re2, { sub: 's1', position: 'q0', recovered: false });
    assert.equal(resyncs.length, 1);
    assert.equal(resyncs[0].subscription, sub);
    assert.deepEqual(got.at(-1), { event: 'resync', route: 'todo-item', subs: ['s1'], reason: 'not_recovered' });
    assert.equal(sub.position, 'q0');
    assert.deepEqual(states, ['open', 'reconnecting', 'open', 'reconnecting', 'open']);
    c.disconnect();
  });

  test('close 4001 stops reconnecting and rejects queued calls with unauthenticated', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.drop(4001);
    const err = await c.ping().catch((e) => e);
    assert.equal(err.code, 'disconnected');
    assert.equal(c.state, 'closed');
    await sleep(20);
    assert.equal(FakeSocket.all.length, 1, 'no reconnection');
  });

  test('in-flight writes reject with disconnected on a drop, reads are resent', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept();
    const w = c.delete('todo-item', 1);
    const r = c.getSingle('todo-item', 1);
    assert.equal(ws.sent.length, 2);
    ws.drop();
    assert.equal((await w.catch((e) => e)).code, 'disconnected');
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept();
    const again = ws.take();
    assert.equal(again.verb, 'get_single');
    ws.reply(again, { id: 1 });
    assert.deepEqual(await r, { id: 1 });
    c.disconnect();
  });

  test('timeouts reject with code timeout; a late reply is ignored', async () => {
    const c = fakeClient({ timeout: 30 });
    const ws = FakeSocket.last();
    ws.accept();
    const p = c.getSingle('todo-item', 1);
    const req = ws.take();
    const err = await p.catch((e) => e);
    assert.equal(err.code, 'timeout');
    ws.reply(req, { id: 1 }); // no crash
    const q = c.getSingle('todo-item', 2, { timeout: 1000 });
    ws.reply(ws.take(), { id: 2 });
    assert.deepEqual(await q, { id: 2 });
    // a queued call (while disconnected) times out too
    ws.drop();
    const z = await c.ping({ timeout: 20 }).catch((e) => e);
    assert.equal(z.code, 'timeout');
    c.disconnect();
  });

  test('heartbeat: an idle connection is pinged; no answer means reconnect', async () => {
    const c = fakeClient({ heartbeat: 1000, timeout: 60 });
    const ws = FakeSocket.last();
    ws.accept();
    await waitUntil(() => ws.sent.some((r) => r.route === 'dragon' && r.verb === 'ping'), 3000);
    await waitUntil(() => FakeSocket.all.length === 2, 1000); // ping timed out: a new socket
    FakeSocket.last().accept();
    assert.equal(c.connected, true);
    c.disconnect();
  });

  test('a resume refused for good is reported; transient failures are retried', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept();
    const got = [];
    const errors = [];
    c.on('error', (e) => errors.push(e));
    const p = c.subscribe('todo-item', {}, (f) => got.push(f));
    ws.reply(ws.take(), { sub: 's1', position: 'p1' });
    const sub = await p;
    ws.drop();
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept();
    ws.fail(ws.take((r) => r.verb === 'subscribe'), 'unavailable', 'db down');
    await waitUntil(() => ws.sent.some((r) => r.verb === 'subscribe'), 1000);
    const again = ws.take((r) => r.verb === 'subscribe');
    assert.equal(again.args.since, 'p1');
    ws.fail(again, 'forbidden', 'no longer allowed');
    await tick();
    assert.equal(errors.at(-1).code, 'forbidden');
    assert.equal(errors.at(-1).subscription, sub);
    assert.equal(got.at(-1).event, 'error');
    c.disconnect();
  });

  test('at most maxInFlight requests on the wire', async () => {
    const c = fakeClient({ maxInFlight: 2 });
    const ws = FakeSocket.last();
    ws.accept();
    const ps = [1, 2, 3].map((i) => c.getSingle('todo-item', i));
    assert.equal(ws.sent.length, 2);
    ws.reply(ws.take(), { id: 1 });
    assert.equal(ws.sent.length, 2, 'the third goes out once one is answered');
    ws.reply(ws.take(), { id: 2 });
    ws.reply(ws.take(), { id: 3 });
    assert.deepEqual((await Promise.all(ps)).map((x) => x.id), [1, 2, 3]);
    c.disconnect();
  });

  test('liveList: snapshot, idempotent events, re-sort, reload on resync frame and on recovered:false', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept();
    const notes = [];
    const ll = liveList(c, 'todo-item', { list_id: 1 }, { order_by: ['-position'], onChange: (items, ch) => notes.push(ch.event) });
    const sreq = ws.take();
    assert.deepEqual(sreq.args, { filter: { list_id: 1 }, snapshot: true });
    ws.reply(sreq, { sub: 's1', position: 'p1', items: [{ id: 1, position: 1 }, { id: 2, position: 5 }] });
    // an event already contained in the snapshot, arriving right after it
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 2, position: 5 }, position: 'p2' });
    await ll.ready;
    assert.deepEqual(ll.items.map((r) => r.id), [2, 1]);
    ws.frame({ event: 'updated', route: 'todo-item', subs: ['s1'], data: { id: 1, position: 9 }, changed: ['position'], position: 'p3' });
    assert.deepEqual(ll.items.map((r) => r.id), [1, 2]);
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 3, position: 5 }, position: 'p4' });
    assert.deepEqual(ll.items.map((r) => r.id), [1, 2, 3], 'ties by id');
    ws.frame({ event: 'deleted', route: 'todo-item', subs: ['s1'], data: { id: 2 }, position: 'p5' });
    assert.deepEqual(ll.items.map((r) => r.id), [1, 3]);
    assert.deepEqual(notes, ['snapshot', 'updated', 'created', 'deleted']);

    // server resync frame: the list reloads itself from a fresh snapshot
    ws.frame({ event: 'resync', route: 'todo-item', subs: ['s1'] });
    const un = ws.take((r) => r.verb === 'unsubscribe');
    assert.deepEqual(un.args, { sub: 's1' });
    const snap = ws.take((r) => r.verb === 'subscribe');
    assert.deepEqual(snap.args, { filter: { list_id: 1 }, snapshot: true });
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 99 }, position: 'p6' }); // old sub: dropped
    ws.reply(snap, { sub: 's2', position: 'p7', items: [{ id: 3, position: 5 }, { id: 4, position: 0 }] });
    assert.deepEqual(ll.items.map((r) => r.id), [3, 4]);

    // reconnect with recovered:false: reload again
    ws.drop(1001);
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept();
    const re = ws.take((r) => r.verb === 'subscribe');
    assert.deepEqual(re.args, { filter: { list_id: 1 }, since: 'p7' });
    ws.reply(re, { sub: 's1', position: 'x0', recovered: false });
    ws.take((r) => r.verb === 'unsubscribe');
    const snap2 = ws.take((r) => r.verb === 'subscribe');
    assert.equal(snap2.args.snapshot, true);
    ws.reply(snap2, { sub: 's2', position: 'x1', items: [{ id: 5, position: 1 }] });
    assert.deepEqual(ll.items, [{ id: 5, position: 1 }]);
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s2'], data: { id: 6, position: 2 }, position: 'x2' });
    assert.deepEqual(ll.items.map((r) => r.id), [6, 5]);
    const closing = ll.close();
    assert.deepEqual(ws.take((r) => r.verb === 'unsubscribe').args, { sub: 's2' });
    c.disconnect();
    await closing; // a disconnect while unsubscribing counts as unsubscribed
    assert.equal(ll.closed, true);
  });
});
