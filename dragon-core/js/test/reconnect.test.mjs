// Reconnection against a real todo-app server: the server process is killed and restarted on
// the same port and database; network drops are simulated by terminating the client's socket.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, client, waitFor, fetchAll, Events, DragonError, sleep } from '../e2e/harness.mjs';

async function converges(ll, w, route, filter, order_by, timeout = 5000) {
  let want;
  await waitFor(async () => {
    want = await fetchAll(w, route, filter, order_by);
    return JSON.stringify(ll.items) === JSON.stringify(want);
  }, { timeout, interval: 50, message: 'liveList to equal get_list' }).catch((err) => {
    err.message += `\n  live: ${JSON.stringify(ll.items)}\n  want: ${JSON.stringify(want)}`;
    throw err;
  });
}

/** Record the client's connection events. */
function track(c) {
  const log = [];
  for (const name of ['open', 'close', 'reconnecting', 'resync', 'state']) c.on(name, (info) => log.push({ name, info }));
  return log;
}

describe('reconnection', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => {
    await server?.stop();
    server?.cleanup();
  });

  test('server killed and restarted: subscriptions and liveLists come back, changes made while down are shown', async () => {
    const w = client(server);
    const list = await w.create('todo-list', { name: 'Restart' });
    const keep = await w.create('todo-item', { list_id: list.id, text: 'keep', position: 1 });
    const change = await w.create('todo-item', { list_id: list.id, text: 'change', position: 2 });
    const drop = await w.create('todo-item', { list_id: list.id, text: 'drop', position: 3 });

    // the watcher reconnects only after a fixed 1.5 s, so the changes below happen while it is away
    const c = client(server, { backoff: () => 1500 });
    const log = track(c);
    const order = ['position'];
    const ll = c.liveList('todo-item', { list_id: list.id }, { order_by: order });
    const lists = c.liveList('todo-list', {}, { order_by: ['-id'] });
    const ev = new Events();
    const established = [];
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler, { onSubscribed: (info) => established.push(info) });
    await Promise.all([ll.ready, lists.ready]);
    assert.deepEqual(ll.items.map((r) => r.text), ['keep', 'change', 'drop']);
    const oldSubId = sub.id;
    const oldLlSub = ll.subscription.id;
    const oldConn = c.conn;

    await server.kill(); // SIGKILL: no goodbye
    await waitFor(() => c.state === 'reconnecting', { message: 'state reconnecting' });
    assert.equal(c.connected, false);
    assert.ok(log.some((e) => e.name === 'close'));
    assert.ok(log.some((e) => e.name === 'reconnecting'));
    // a call made while disconnected is queued and completes after the reconnection
    const queued = c.create('todo-item', { list_id: list.id, text: 'queued while down', position: 9 }, { timeout: 20000 });

    await server.start();
    const w2 = client(server);
    await w2.ready();
    // changes made while the watcher is still disconnected
    await w2.update('todo-item', change.id, { text: 'changed', done: true });
    await w2.delete('todo-item', drop.id);
    const added = await w2.create('todo-item', { list_id: list.id, text: 'added', position: 0 });
    const newList = await w2.create('todo-list', { name: 'made while down' });
    assert.equal(c.connected, false, 'the watcher has not reconnected yet (backoff 1.5 s)');

    await c.ready();
    assert.notEqual(c.conn, oldConn, 'a new connection');
    const made = await queued;
    assert.equal(made.text, 'queued while down');
    assert.ok(log.some((e) => e.name === 'open' && e.info.reconnect === true));

    await converges(ll, w2, 'todo-item', { list_id: list.id }, order);
    await converges(lists, w2, 'todo-list', {}, ['-id']);
    assert.deepEqual(ll.items.map((r) => r.text), ['added', 'keep', 'changed', 'queued while down']);
    assert.equal(ll.items.find((r) => r.id === keep.id).text, 'keep');
    assert.equal(lists.items[0].id, newList.id);

    // the plain subscription was re-established (the server chose a new id; ids are only
    // unique per connection, so it may be spelled like the old one)
    await waitFor(() => established.length === 2, { message: 'resubscribed' });
    assert.equal(established[1].resumed, true);
    assert.equal(sub.id, established[1].sub);
    assert.ok(typeof oldSubId === 'string' && typeof oldLlSub === 'string');
    assert.ok(ll.subscription.id);
    // after a restart the old positions are unknown: the client says so (resync) or the server replayed
    const resynced = ev.frames.some((f) => f.event === 'resync');
    const replayed = ev.frames.some((f) => f.event === 'deleted' && f.data.id === drop.id);
    assert.ok(resynced || replayed, `resync or replay expected, got ${JSON.stringify(ev.frames.map((f) => f.event))}`);
    if (resynced) {
      const r = ev.frames.find((f) => f.event === 'resync');
      assert.equal(r.route, 'todo-item');
      assert.equal(r.reason, 'not_recovered');
      assert.ok(log.some((e) => e.name === 'resync' && e.info.subscription === sub));
    }

    // live events flow again to every subscription
    const live = await w2.create('todo-item', { list_id: list.id, text: 'after', position: 5 });
    const got = await ev.next((f) => f.event === 'created' && f.data.id === live.id);
    assert.ok(got.subs.includes(sub.id), JSON.stringify(got.subs));
    await waitFor(() => ll.items.some((r) => r.id === live.id));
    await converges(ll, w2, 'todo-item', { list_id: list.id }, order);
    assert.equal(added.position, 0);

    c.disconnect();
    w.disconnect();
    w2.disconnect();
  });

  test('graceful restart (SIGTERM) and restarts while clients keep retrying', async () => {
    const c = client(server);
    const log = track(c);
    await c.ready();
    const list = await c.create('todo-list', { name: 'Graceful' });
    const ll = c.liveList('todo-item', { list_id: list.id });
    await ll.ready;
    await server.stop();
    await waitFor(() => log.some((e) => e.name === 'close'), { message: 'close event' });
    const close = log.find((e) => e.name === 'close').info;
    assert.equal(close.code, 1001, 'a graceful shutdown closes with 1001 (going away)');
    // down for a while: several reconnection attempts with growing delays
    await sleep(1200);
    const attempts = log.filter((e) => e.name === 'reconnecting').map((e) => e.info);
    assert.ok(attempts.length >= 2, `retrying (${attempts.length} attempts)`);
    assert.ok(attempts[attempts.length - 1].attempt > attempts[0].attempt);
    await server.start();
    await waitFor(() => c.connected, { timeout: 5000, message: 'reconnected' });
    const w = client(server);
    const it = await w.create('todo-item', { list_id: list.id, text: 'after graceful restart' });
    await waitFor(() => ll.items.some((r) => r.id === it.id), { message: 'liveList live again' });
    await converges(ll, w, 'todo-item', { list_id: list.id }, []);
    c.disconnect();
    w.disconnect();
  });

  test('network drop while the server stays up: resubscribe with since, missed events replayed', async () => {
    const w = client(server);
    const c = client(server, { backoff: () => 600 });
    await Promise.all([w.ready(), c.ready()]);
    const list = await w.create('todo-list', { name: 'Blip' });
    const a = await w.create('todo-item', { list_id: list.id, text: 'a' });
    const ev = new Events();
    const resyncs = [];
    c.on('resync', (r) => resyncs.push(r));
    let subscribedInfo = null;
    let subscribedCount = 0;
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler, { onSubscribed: (info) => { subscribedInfo = info; subscribedCount++; } });
    const ll = c.liveList('todo-item', { list_id: list.id }, { order_by: ['text'] });
    await ll.ready;
    await w.update('todo-item', a.id, { text: 'a1' });
    await ev.next((f) => f.event === 'updated');
    const oldId = sub.id;

    c._ws.terminate(); // the connection drops (as on a network failure)
    await waitFor(() => !c.connected);
    await w.update('todo-item', a.id, { done: true });
    const b = await w.create('todo-item', { list_id: list.id, text: 'b' });
    await w.delete('todo-item', a.id);

    await c.ready();
    await waitFor(() => subscribedCount === 2, { message: 'resubscribed' });
    assert.ok(sub.id !== null && typeof oldId === 'string');
    assert.equal(subscribedInfo.resumed, true);
    assert.equal(typeof subscribedInfo.recovered, 'boolean');
    if (subscribedInfo.recovered) {
      // the missed events are replayed in order, as ordinary events on the new sub id
      const u = await ev.next((f) => f.event === 'updated' && f.data.id === a.id && f.data.done === true);
      const cr = await ev.next((f) => f.event === 'created' && f.data.id === b.id);
      const d = await ev.next((f) => f.event === 'deleted' && f.data.id === a.id);
      assert.deepEqual(u.changed, ['done']);
      assert.ok(cr.subs.includes(sub.id));
      assert.ok(ev.frames.indexOf(u) < ev.frames.indexOf(cr) && ev.frames.indexOf(cr) < ev.frames.indexOf(d), 'in order');
      assert.equal(resyncs.length, 0, 'no resync when recovered');
    } else {
      assert.ok(resyncs.length >= 1, 'recovered:false must signal resync');
    }
    await converges(ll, w, 'todo-item', { list_id: list.id }, ['text']);
    assert.deepEqual(ll.items.map((r) => r.text), ['b']);
    c.disconnect();
    w.disconnect();
  });

  test('in-flight writes reject with disconnected, in-flight reads are retried', async () => {
    const c = client(server, { backoff: () => 100 });
    await c.ready();
    const list = await c.create('todo-list', { name: 'InFlight' });
    await server.pause();
    let write, read;
    try {
      write = c.create('todo-item', { list_id: list.id, text: 'maybe' }).then(() => null, (e) => e);
      read = c.getSingle('todo-list', list.id);
      await sleep(100);
      c._ws.terminate();
    } finally {
      server.resume();
    }
    const err = await write;
    assert.ok(err instanceof DragonError, 'the write rejected');
    assert.equal(err.code, 'disconnected');
    assert.deepEqual(await read, list);
    c.disconnect();
  });

  test('unsubscribed subscriptions are not re-established', async () => {
    const w = client(server);
    const c = client(server, { backoff: () => 100 });
    await Promise.all([w.ready(), c.ready()]);
    const list = await w.create('todo-list', { name: 'Gone' });
    const ev = new Events();
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler);
    await sub.unsubscribe();
    c._ws.terminate();
    await waitFor(() => !c.connected);
    await c.ready();
    await w.create('todo-item', { list_id: list.id, text: 'nobody listens' });
    await ev.none(() => true, 400);
    assert.equal(sub.id, null);
    c.disconnect();
    w.disconnect();
  });
});
