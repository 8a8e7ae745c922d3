// Close 4009 (idle): the server closed a connection that sent no request for its idle timeout.
// The client does not reconnect by itself: it goes to state 'idle' and reconnects when it is
// needed again (a call, connect()/reconnectNow(), a presence join or update, or in a browser
// the page becoming visible or focused); then subscriptions and liveLists resume as after any
// reconnection. Driven through the scripted fake WebSocket (test/fake.mjs).
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import '../dragon.js';
import { sleep, tick, waitUntil, FakeSocket, fakeClient as makeClient } from './fake.mjs';

const { DragonError } = globalThis.dragon;

// Every client made here is disconnected after its test, so a failing test leaves no client
// reconnecting into the next test's sockets.
const clients = [];
function fakeClient(opts) {
  const c = makeClient(opts);
  clients.push(c);
  return c;
}

/** The server closes the socket as idle. */
function idleClose(ws) { ws.onclose?.({ code: 4009, reason: 'idle', wasClean: true }); }

/** Record the client's connection events. */
function track(c) {
  const log = [];
  for (const name of ['open', 'close', 'reconnecting', 'state']) c.on(name, (info) => log.push({ name, info }));
  return log;
}

/** A minimal event target (a fake `document` or `window`): add/removeEventListener, dispatch. */
function fakeTarget(props = {}) {
  const listeners = new Map();
  return Object.assign({
    addEventListener(name, cb) {
      if (!listeners.has(name)) listeners.set(name, new Set());
      listeners.get(name).add(cb);
    },
    removeEventListener(name, cb) { listeners.get(name)?.delete(cb); },
    dispatch(name) { for (const cb of [...(listeners.get(name) || [])]) cb({ type: name }); },
    count(name) { return listeners.get(name)?.size || 0; },
  }, props);
}

/** Set globals for the duration of fn, then put back exactly what was there. */
async function withGlobals(values, fn) {
  const saved = {};
  for (const k of Object.keys(values)) saved[k] = Object.getOwnPropertyDescriptor(globalThis, k);
  try {
    for (const [k, v] of Object.entries(values)) {
      Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true, enumerable: false });
    }
    return await fn();
  } finally {
    for (const k of Object.keys(values)) {
      if (saved[k]) Object.defineProperty(globalThis, k, saved[k]);
      else delete globalThis[k];
    }
  }
}

/** A connected client with one liveList (sub s1 at position p2, items 1 and 2). */
async function withLiveList(opts) {
  const c = fakeClient(opts);
  const ws = FakeSocket.last();
  ws.accept();
  const ll = c.liveList('todo-item', { list_id: 1 }, { order_by: ['id'] });
  const sub = ws.take((r) => r.verb === 'subscribe');
  assert.deepEqual(sub.args, { filter: { list_id: 1 }, snapshot: true });
  ws.reply(sub, { sub: 's1', position: 'p1', items: [{ id: 1, text: 'a' }] });
  await ll.ready;
  ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 2, text: 'b' }, position: 'p2' });
  assert.deepEqual(ll.items.map((r) => r.id), [1, 2]);
  return { c, ws, ll };
}

describe('close 4009 (idle)', () => {
  afterEach(() => { clients.splice(0).forEach((c) => c.disconnect()); });

  test('no reconnection by itself: state idle, close event 4009, no socket within the backoff window', async () => {
    const { c, ws } = await withLiveList();
    const log = track(c);
    idleClose(ws);
    assert.equal(c.state, 'idle');
    assert.equal(c.connected, false);
    assert.deepEqual(log.map((e) => e.name), ['close', 'state']);
    assert.deepEqual(log[0].info, { code: 4009, reason: 'idle', wasClean: true });
    assert.equal(log[1].info, 'idle');
    await sleep(100); // the backoff is 5 ms: a normal drop would have reconnected many times over
    assert.equal(FakeSocket.all.length, 1, 'no new socket');
    assert.equal(c.state, 'idle');
    assert.ok(!log.some((e) => e.name === 'reconnecting'), 'no reconnecting event');
    c.disconnect();
  });

  test('a call made while idle opens a socket, is sent after the hello, and resolves', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept();
    const log = track(c);
    idleClose(ws);
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1);

    const p = c.getSingle('todo-item', 7);
    assert.equal(FakeSocket.all.length, 2, 'the call opened a socket at once');
    assert.equal(c.state, 'reconnecting');
    ws = FakeSocket.last();
    await tick();
    assert.equal(ws.sent.length, 0, 'nothing sent before the hello');
    ws.accept();
    assert.equal(c.state, 'open');
    const req = ws.take();
    assert.deepEqual([req.route, req.verb, req.args], ['todo-item', 'get_single', { id: 7 }]);
    ws.reply(req, { id: 7, text: 'x' });
    assert.deepEqual(await p, { id: 7, text: 'x' });
    assert.deepEqual(log.filter((e) => e.name === 'state').map((e) => e.info), ['idle', 'reconnecting', 'open']);
    assert.equal(log.find((e) => e.name === 'open').info.reconnect, true);
    c.disconnect();
  });

  test('writes and subscribe wake it too; a ping while idle as well', async () => {
    for (const call of [
      (c) => c.create('todo-item', { text: 'w' }),
      (c) => c.subscribe('todo-item', () => {}),
      (c) => c.ping(),
    ]) {
      const c = fakeClient();
      FakeSocket.last().accept();
      idleClose(FakeSocket.last());
      const p = call(c);
      assert.equal(FakeSocket.all.length, 2);
      const ws = FakeSocket.last();
      ws.accept();
      const req = ws.take();
      ws.reply(req, req.verb === 'subscribe' ? { sub: 's9', position: 'p' } : { ok: 1 });
      await p;
      c.disconnect();
    }
  });

  test('a liveList that existed resubscribes with since after the call-triggered reconnect, and goes on', async () => {
    const { c, ws: first, ll } = await withLiveList();
    const changes = [];
    ll.onChange((items, change) => changes.push(change.event));
    idleClose(first);
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(ll.subscription.id, null, 'the sub id died with the socket');
    assert.deepEqual(ll.items.map((r) => r.id), [1, 2], 'the items stay while idle');

    const p = c.getList('todo-item', { list_id: 2 });
    const ws = FakeSocket.last();
    assert.notEqual(ws, first);
    ws.accept();
    const re = ws.take((r) => r.verb === 'subscribe');
    assert.deepEqual(re.args, { filter: { list_id: 1 }, since: 'p2' }, 'resubscribed with since = the last position');
    const gl = ws.take((r) => r.verb === 'get_list');
    ws.reply(gl, [], { page: 1, per_page: 50, total: 0, pages: 0, position: 'p9' });
    await p;
    ws.reply(re, { sub: 's2', position: 'p3', recovered: true });
    assert.equal(ll.subscription.id, 's2');
    // an event missed while idle, replayed on the new sub id
    ws.frame({ event: 'deleted', route: 'todo-item', subs: ['s2'], data: { id: 1 }, position: 'p3' });
    assert.deepEqual(ll.items.map((r) => r.id), [2]);
    assert.deepEqual(changes, ['deleted']);
    c.disconnect();
  });

  test('recovered: false after the idle gap reloads the liveList from a fresh snapshot', async () => {
    const { c, ws: first, ll } = await withLiveList();
    idleClose(first);
    const p = c.ping();
    const ws = FakeSocket.last();
    ws.accept();
    ws.reply(ws.take((r) => r.verb === 'ping'), { time: 1 });
    await p;
    const re = ws.take((r) => r.verb === 'subscribe');
    assert.equal(re.args.since, 'p2');
    ws.reply(re, { sub: 's2', position: 'p8', recovered: false });
    const reload = await (async () => {
      await waitUntil(() => ws.sent.some((r) => r.verb === 'subscribe'), 1000);
      return ws.take((r) => r.verb === 'subscribe');
    })();
    assert.deepEqual(reload.args, { filter: { list_id: 1 }, snapshot: true });
    ws.reply(reload, { sub: 's3', position: 'p8', items: [{ id: 5, text: 'new' }] });
    await waitUntil(() => ll.items.length === 1 && ll.items[0].id === 5, 1000);
    c.disconnect();
  });

  test('page visible again (document visibilitychange) reconnects; hidden does not', async () => {
    const doc = fakeTarget({ visibilityState: 'visible', hidden: false });
    await withGlobals({ document: doc }, async () => {
      const { c, ws: first, ll } = await withLiveList();
      assert.equal(doc.count('visibilitychange'), 0, 'no listener while connected');
      doc.visibilityState = 'hidden';
      doc.hidden = true;
      idleClose(first);
      assert.equal(c.state, 'idle');
      assert.equal(doc.count('visibilitychange'), 1, 'listening while idle');
      doc.dispatch('visibilitychange'); // still hidden
      await sleep(30);
      assert.equal(FakeSocket.all.length, 1, 'hidden: stays idle');

      doc.visibilityState = 'visible';
      doc.hidden = false;
      doc.dispatch('visibilitychange');
      assert.equal(FakeSocket.all.length, 2, 'visible: reconnects');
      assert.equal(doc.count('visibilitychange'), 0, 'listener removed once awake');
      const ws = FakeSocket.last();
      ws.accept();
      assert.equal(c.state, 'open');
      const re = ws.take((r) => r.verb === 'subscribe');
      assert.equal(re.args.since, 'p2');
      ws.reply(re, { sub: 's2', position: 'p3', recovered: true });
      assert.equal(ll.subscription.id, 's2');
      c.disconnect();
    });
    assert.equal(globalThis.document, undefined, 'globals restored');
  });

  test('window focus reconnects; going online does not wake an idle client', async () => {
    const doc = fakeTarget({ visibilityState: 'visible', hidden: false });
    const win = fakeTarget();
    // a browser-like global: window === globalThis, with add/removeEventListener on it
    await withGlobals({
      document: doc,
      window: globalThis,
      addEventListener: win.addEventListener,
      removeEventListener: win.removeEventListener,
    }, async () => {
      const c = fakeClient();
      FakeSocket.last().accept();
      idleClose(FakeSocket.last());
      assert.equal(win.count('focus'), 1);
      win.dispatch('online');
      await sleep(30);
      assert.equal(FakeSocket.all.length, 1, 'online: stays idle');
      win.dispatch('focus');
      assert.equal(FakeSocket.all.length, 2, 'focus: reconnects');
      assert.equal(win.count('focus'), 0);
      assert.equal(doc.count('visibilitychange'), 0);
      FakeSocket.last().accept();
      assert.equal(c.state, 'open');
      c.disconnect();
      assert.equal(win.count('online'), 0);
    });
    assert.equal(globalThis.window, undefined);
    assert.equal(globalThis.addEventListener, undefined);
  });

  test('connect() and reconnectNow() wake it', async () => {
    for (const wake of [(c) => c.connect(), (c) => c.reconnectNow()]) {
      const c = fakeClient();
      FakeSocket.last().accept();
      idleClose(FakeSocket.last());
      const ready = wake(c);
      assert.equal(FakeSocket.all.length, 2);
      FakeSocket.last().accept();
      assert.equal(await ready, c);
      assert.equal(c.state, 'open');
      c.disconnect();
    }
  });

  test('ready() alone does not wake it', async () => {
    const c = fakeClient();
    FakeSocket.last().accept();
    idleClose(FakeSocket.last());
    let done = false;
    c.ready().then(() => { done = true; });
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(done, false);
    c.ping().catch(() => {});
    FakeSocket.last().accept();
    await tick();
    assert.equal(done, true, 'resolves on the reconnection');
    c.disconnect();
  });

  test('a read on the wire when the 4009 comes: reconnects at once (backoff) and resends it', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept();
    const r = c.getSingle('todo-item', 1);
    assert.equal(ws.sent.length, 1);
    idleClose(ws);
    assert.equal(c.state, 'reconnecting', 'the read needs the server: not idle');
    await waitUntil(() => FakeSocket.all.length === 2, 1000);
    ws = FakeSocket.last();
    ws.accept();
    const again = ws.take();
    assert.equal(again.verb, 'get_single');
    ws.reply(again, { id: 1 });
    assert.deepEqual(await r, { id: 1 });
    c.disconnect();
  });

  test('a write on the wire when the 4009 comes rejects with disconnected (as on any drop)', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept();
    const w = c.create('todo-item', { text: 'x' });
    idleClose(ws);
    const err = await w.catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.equal(err.code, 'disconnected');
    assert.equal(c.state, 'idle');
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1);
    c.disconnect();
  });

  test('presence: an update while idle wakes the client; the re-join carries the new state', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 42, { n: 1 });
    ws.reply(ws.take(), { members: [{ conn: 'c1', user: null, state: { n: 1 } }] });
    await h.ready;
    idleClose(ws);
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1, 'a settled presence handle does not keep it awake');
    const u = h.update({ n: 2 });
    assert.equal(FakeSocket.all.length, 2);
    ws = FakeSocket.last();
    ws.accept();
    const join = ws.take();
    assert.deepEqual([join.verb, join.args], ['presence_join', { key: 42, state: { n: 2 } }]);
    ws.reply(join, { members: [{ conn: 'c2', user: null, state: { n: 2 } }] });
    assert.deepEqual((await u).map((m) => m.state), [{ n: 2 }]);
    c.disconnect();
  });

  test('disconnect() while idle: closed, listeners removed, calls reject with disconnected', async () => {
    const doc = fakeTarget({ visibilityState: 'hidden', hidden: true });
    await withGlobals({ document: doc }, async () => {
      const c = fakeClient();
      FakeSocket.last().accept();
      const closes = [];
      c.on('close', (i) => closes.push(i.code));
      idleClose(FakeSocket.last());
      assert.equal(doc.count('visibilitychange'), 1);
      c.disconnect();
      assert.equal(c.state, 'closed');
      assert.deepEqual(closes, [4009], 'no second close event');
      assert.equal(doc.count('visibilitychange'), 0);
      assert.equal((await c.ping().catch((e) => e)).code, 'disconnected');
      doc.visibilityState = 'visible';
      doc.dispatch('visibilitychange');
      await sleep(20);
      assert.equal(FakeSocket.all.length, 1);
    });
  });

  test('regression: a 1006 drop still reconnects by itself, and so does 4008', async () => {
    for (const code of [1006, 4008]) {
      const { c, ws } = await withLiveList();
      const log = track(c);
      ws.drop(code);
      assert.equal(c.state, 'reconnecting');
      await waitUntil(() => FakeSocket.all.length === 2, 1000);
      const ws2 = FakeSocket.last();
      ws2.accept();
      const re = ws2.take((r) => r.verb === 'subscribe');
      assert.equal(re.args.since, 'p2');
      assert.ok(log.some((e) => e.name === 'reconnecting'));
      assert.ok(!log.some((e) => e.name === 'state' && e.info === 'idle'));
      c.disconnect();
    }
  });

  test('after waking, a later 1006 drop reconnects automatically again', async () => {
    const c = fakeClient();
    FakeSocket.last().accept();
    idleClose(FakeSocket.last());
    const p = c.ping();
    FakeSocket.last().accept();
    const ws = FakeSocket.last();
    ws.reply(ws.take(), { time: 1 });
    await p;
    ws.drop(1006);
    await waitUntil(() => FakeSocket.all.length === 3, 1000);
    FakeSocket.last().accept();
    assert.equal(c.state, 'open');
    c.disconnect();
  });
});
