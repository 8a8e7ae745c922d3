// Versioned change events (`version` on created/updated/deleted): liveList applies each version
// of an object at most once and never goes back, raw handlers get the frames as sent. Driven
// through a scripted fake WebSocket (the test plays the server; test/fake.mjs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import '../dragon.js';
import { sleep, FakeSocket, fakeClient } from './fake.mjs';

const { liveList } = globalThis.dragon;

/**
 * A connected fake client with a liveList on todo-item (sub `s1`, snapshot `rows`, sorted by
 * position); `ev(event, data, version)` sends one event to it; `changes` records every onChange.
 */
async function setup(rows = [], options = {}) {
  const c = fakeClient();
  const ws = FakeSocket.last();
  ws.accept();
  const changes = [];
  const ll = liveList(c, 'todo-item', { list_id: 1 }, {
    order_by: ['position'],
    onChange: (items, change) => changes.push({ event: change.event, version: change.version, ids: items.map((r) => r.id) }),
    ...options,
  });
  ws.reply(ws.take((r) => r.verb === 'subscribe'), { sub: 's1', position: 'p0', items: rows });
  await ll.ready;
  changes.length = 0; // the snapshot
  let pos = 0;
  const state = { ws, sub: 's1' };
  const ev = (event, data, version, extra = {}) => {
    const f = { event, route: 'todo-item', subs: [state.sub], data, position: `p${++pos}`, ...extra };
    if (version !== undefined) f.version = version;
    state.ws.frame(f);
  };
  return { c, ll, changes, ev, state };
}

describe('versioned events: liveList', () => {
  test('a repeated event (same version) is applied once', async () => {
    const { c, ll, changes, ev } = await setup([{ id: 1, text: 'a', position: 1 }]);
    ev('updated', { id: 1, text: 'b', position: 1 }, 5, { changed: ['text'] });
    ev('updated', { id: 1, text: 'b', position: 1 }, 5, { changed: ['text'] });
    assert.deepEqual(ll.items, [{ id: 1, text: 'b', position: 1 }]);
    assert.equal(changes.length, 1);

    // the version decides, not the content: a frame of a version already applied changes nothing
    ev('updated', { id: 1, text: 'zzz', position: 1 }, 5, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'b');

    ev('created', { id: 2, text: 'x', position: 2 }, 7);
    ev('created', { id: 2, text: 'x', position: 2 }, 7);
    ev('deleted', { id: 1 }, 8);
    ev('deleted', { id: 1 }, 8);
    ev('created', { id: 2, text: 'x', position: 2 }, 7);
    assert.deepEqual(ll.items, [{ id: 2, text: 'x', position: 2 }]);
    assert.deepEqual(changes.map((x) => `${x.event}@${x.version}:${x.ids}`), ['updated@5:1', 'created@7:1,2', 'deleted@8:2']);
    c.disconnect();
  });

  test('an older update after a newer one is ignored (and an older delete)', async () => {
    const { c, ll, changes, ev } = await setup([{ id: 1, text: 'a', position: 1, done: false }]);
    ev('updated', { id: 1, text: 'new', position: 1, done: false }, 10, { changed: ['text'] });
    ev('updated', { id: 1, text: 'old', position: 1, done: false }, 9, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'new');
    ev('updated', { id: 1, text: 'new', position: 1, done: true }, 11, { changed: ['done'] });
    ev('updated', { id: 1, text: 'old', position: 0, done: false }, 3, { changed: ['position'] });
    assert.deepEqual(ll.items, [{ id: 1, text: 'new', position: 1, done: true }]);
    // a deletion older than the state held does not remove the object
    ev('deleted', { id: 1 }, 10);
    assert.equal(ll.items.length, 1);
    // other objects have their own versions
    ev('created', { id: 2, text: 'b', position: 0 }, 1);
    assert.deepEqual(ll.items.map((r) => r.id), [2, 1]);
    assert.deepEqual(changes.map((x) => x.version), [10, 11, 1]);
    c.disconnect();
  });

  test('a created or updated older than a held deletion (tombstone) is ignored', async () => {
    const { c, ll, changes, ev } = await setup();
    ev('created', { id: 1, text: 'a', position: 1 }, 1);
    ev('updated', { id: 1, text: 'b', position: 1 }, 2, { changed: ['text'] });
    ev('deleted', { id: 1, text: 'b', position: 1 }, 4);
    assert.deepEqual(ll.items, []);
    ev('created', { id: 1, text: 'a', position: 1 }, 1);
    ev('updated', { id: 1, text: 'c', position: 1 }, 3, { changed: ['text'] });
    ev('created', { id: 1, text: 'b', position: 1 }, 4);
    assert.deepEqual(ll.items, []);
    // a deletion for an object never seen is remembered too
    ev('deleted', { id: 7 }, 20);
    ev('created', { id: 7, text: 'late', position: 0 }, 19);
    assert.deepEqual(ll.items, []);
    assert.deepEqual(changes.map((x) => x.event), ['created', 'updated', 'deleted']);
    // a newer change brings it back (e.g. it matches the filter again)
    ev('created', { id: 1, text: 'again', position: 1 }, 5);
    assert.deepEqual(ll.items, [{ id: 1, text: 'again', position: 1 }]);
    assert.equal(changes.length, 4);
    c.disconnect();
  });

  test('events without version are applied as before', async () => {
    const { c, ll, changes, ev } = await setup([{ id: 1, text: 'a', position: 1 }]);
    ev('created', { id: 2, text: 'b', position: 2 });
    ev('updated', { id: 1, text: 'a2' }, undefined, { changed: ['text'] });
    ev('updated', { id: 1, text: 'a3' }, undefined, { changed: ['text'] });
    ev('deleted', { id: 2 });
    ev('created', { id: 2, text: 'b', position: 2 });
    assert.deepEqual(ll.items, [{ id: 1, text: 'a3', position: 1 }, { id: 2, text: 'b', position: 2 }]);
    assert.deepEqual(changes.map((x) => x.event), ['created', 'updated', 'updated', 'deleted', 'created']);
    // mixed: a versionless event after a versioned one still applies; an older version still does not
    ev('updated', { id: 1, text: 'v9' }, 9, { changed: ['text'] });
    ev('updated', { id: 1, text: 'plain' }, undefined, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'plain');
    ev('updated', { id: 1, text: 'v8' }, 8, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'plain');
    // custom events change nothing, as before
    ev('message', { id: 1, text: 'hi' }, 10);
    assert.equal(ll.get(1).text, 'plain');
    assert.equal(changes.length, 7);
    c.disconnect();
  });

  test('after a resync reload newer versions apply; repeats after the reload are still ignored', async () => {
    const { c, ll, changes, ev, state } = await setup([{ id: 1, text: 'a', position: 1 }]);
    const ws = state.ws;
    ev('updated', { id: 1, text: 'b', position: 1 }, 10, { changed: ['text'] });
    ev('deleted', { id: 2 }, 12);
    ws.frame({ event: 'resync', route: 'todo-item', subs: ['s1'] });
    ws.take((r) => r.verb === 'unsubscribe');
    const snap = ws.take((r) => r.verb === 'subscribe');
    assert.equal(snap.args.snapshot, true);
    ws.reply(snap, { sub: 's2', position: 'q0', items: [{ id: 1, text: 'c', position: 1 }] });
    state.sub = 's2';
    assert.deepEqual(ll.items, [{ id: 1, text: 'c', position: 1 }]);
    changes.length = 0;

    ev('updated', { id: 1, text: 'd', position: 1 }, 11, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'd', 'newer than the snapshot: applied');
    ev('updated', { id: 1, text: 'd', position: 1 }, 11, { changed: ['text'] });
    ev('updated', { id: 1, text: 'old', position: 1 }, 10, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'd', 'a repeat or older version after the reload: ignored');
    // the bookkeeping started over with the snapshot: the tombstone of id 2 is gone
    ev('created', { id: 2, text: 'x', position: 2 }, 13);
    ev('created', { id: 2, text: 'x', position: 2 }, 13);
    ev('deleted', { id: 2 }, 12);
    assert.deepEqual(ll.items.map((r) => r.id), [1, 2]);
    assert.deepEqual(changes.map((x) => `${x.event}@${x.version}`), ['updated@11', 'created@13']);

    // explicit reload() starts over too
    await sleep(0); // the resync's reload has settled
    const p = ll.reload();
    ws.take((r) => r.verb === 'unsubscribe');
    ws.reply(ws.take((r) => r.verb === 'subscribe'), { sub: 's3', position: 'r0', items: [{ id: 1, text: 'e', position: 1 }] });
    await p;
    state.sub = 's3';
    ev('updated', { id: 1, text: 'f', position: 1 }, 11, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'f');
    ev('updated', { id: 1, text: 'g', position: 1 }, 11, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'f');
    c.disconnect();
  });

  test('a recovered resume keeps the versions (replayed repeats ignored); recovered:false reloads and starts over', async () => {
    const { c, ll, changes, ev, state } = await setup([{ id: 1, text: 'a', position: 1 }]);
    ev('updated', { id: 1, text: 'b', position: 1 }, 5, { changed: ['text'] });
    state.ws.drop(1001);
    await sleep(20);
    let ws = FakeSocket.last();
    state.ws = ws;
    ws.accept();
    const re = ws.take((r) => r.verb === 'subscribe');
    assert.equal(re.args.since, 'p1');
    ws.reply(re, { sub: 's9', position: 'p1', recovered: true });
    state.sub = 's9';
    // after a failover the server replays what the client already had, then newer changes
    ev('updated', { id: 1, text: 'b', position: 1 }, 5, { changed: ['text'] });
    ev('updated', { id: 1, text: 'a', position: 1 }, 4, { changed: ['text'] });
    ev('updated', { id: 1, text: 'c', position: 1 }, 6, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'c');
    assert.deepEqual(changes.map((x) => x.version), [5, 6]);

    ws.drop(1001);
    await sleep(20);
    ws = FakeSocket.last();
    state.ws = ws;
    ws.accept();
    ws.reply(ws.take((r) => r.verb === 'subscribe'), { sub: 's1', position: 'x0', recovered: false });
    ws.take((r) => r.verb === 'unsubscribe');
    ws.reply(ws.take((r) => r.verb === 'subscribe'), { sub: 's2', position: 'x1', items: [{ id: 1, text: 'z', position: 1 }] });
    state.sub = 's2';
    ev('updated', { id: 1, text: 'y', position: 1 }, 6, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'y');
    ev('updated', { id: 1, text: 'x', position: 1 }, 6, { changed: ['text'] });
    assert.equal(ll.get(1).text, 'y');
    c.disconnect();
  });

  test('tombstones are bounded (maxTombstones, oldest forgotten first)', async () => {
    const { c, ll, ev } = await setup([], { maxTombstones: 2 });
    for (const id of [1, 2, 3]) {
      ev('created', { id, position: id }, 10 * id);
      ev('deleted', { id }, 10 * id + 1);
    }
    assert.equal(ll._versions.tombstones.size, 2);
    ev('created', { id: 2, position: 2 }, 20);
    ev('created', { id: 3, position: 3 }, 30);
    assert.deepEqual(ll.items, [], 'the two newest tombstones still hold');
    ev('created', { id: 1, position: 1 }, 10);
    assert.deepEqual(ll.items.map((r) => r.id), [1], 'the oldest was forgotten');
    c.disconnect();
  });

  test('the default bound is 10,000 tombstones', async () => {
    const { c, ll, ev } = await setup();
    for (let id = 1; id <= 10005; id++) ev('deleted', { id }, id);
    assert.equal(ll._versions.tombstones.size, 10000);
    assert.equal(ll._versions.tombstones.has(5), false);
    assert.equal(ll._versions.tombstones.has(6), true);
    c.disconnect();
  });
});

describe('versioned events: raw handlers', () => {
  test('subscribe handlers and onChannelMessage get version unchanged, repeats included', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept();
    const got = [];
    const channel = [];
    c.onChannelMessage((f) => { if (f.event !== 'hello') channel.push(f); });
    const p = c.subscribe('todo-item', {}, (f) => got.push(f));
    ws.reply(ws.take(), { sub: 's1', position: 'p0' });
    await p;
    const frames = [
      { event: 'updated', route: 'todo-item', subs: ['s1'], data: { id: 1, done: true }, changed: ['done'], position: '1-7', version: 42 },
      { event: 'updated', route: 'todo-item', subs: ['s1'], data: { id: 1, done: true }, changed: ['done'], position: '1-7', version: 42 },
      { event: 'updated', route: 'todo-item', subs: ['s1'], data: { id: 1, done: false }, changed: ['done'], position: '1-6', version: 41 },
      { event: 'message', route: 'todo-item', subs: ['s1'], data: { text: 'hi' }, position: '1-8' },
    ];
    for (const f of frames) ws.frame(f);
    assert.deepEqual(got, frames);
    assert.deepEqual(channel, frames);
    assert.deepEqual(got.map((f) => f.version), [42, 42, 41, undefined]);
    c.disconnect();
  });
});
