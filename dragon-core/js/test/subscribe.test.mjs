// subscribe / events / unsubscribe / onChannelMessage against a real todo-app server.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, client, Events, DragonError } from '../e2e/harness.mjs';

describe('subscriptions', () => {
  let server, c, w; // c subscribes, w writes (another connection)
  before(async () => {
    server = await startServer();
    c = client(server);
    w = client(server);
    await Promise.all([c.ready(), w.ready()]);
  });
  after(async () => {
    c?.disconnect();
    w?.disconnect();
    await server?.stop();
    server?.cleanup();
  });

  test('created / updated (with changed) / deleted events reach the subscriber', async () => {
    const list = await w.create('todo-list', { name: 'Events' });
    const ev = new Events();
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler);
    assert.equal(typeof sub.id, 'string');
    assert.equal(sub.sub, sub.id);
    assert.equal(typeof sub.position, 'string');
    assert.equal(sub.items, undefined, 'no snapshot unless asked');
    assert.equal(sub.route, 'todo-item');

    const item = await w.create('todo-item', { list_id: list.id, text: 'first' });
    const created = await ev.next((f) => f.event === 'created');
    assert.equal(created.route, 'todo-item');
    assert.deepEqual(created.subs, [sub.id]);
    assert.deepEqual(created.data, item);
    assert.equal(typeof created.position, 'string');
    assert.equal(sub.position, created.position, 'the subscription remembers the last position');

    await w.update('todo-item', item.id, { done: true });
    const updated = await ev.next((f) => f.event === 'updated');
    assert.deepEqual(updated.data, { ...item, done: true });
    assert.deepEqual(updated.changed, ['done']);
    assert.notEqual(updated.position, created.position);
    assert.equal(sub.position, updated.position);

    await w.update('todo-item', item.id, { text: 'first!', position: 2 });
    const updated2 = await ev.next((f) => f.event === 'updated');
    assert.deepEqual([...updated2.changed].sort(), ['position', 'text']);

    // an update changing nothing published is not sent
    await w.update('todo-item', item.id, { text: 'first!' });
    await w.delete('todo-item', item.id);
    const deleted = await ev.next((f) => f.event === 'deleted');
    assert.equal(deleted.data.id, item.id);
    assert.deepEqual(ev.frames.map((f) => f.event), ['created', 'updated', 'updated', 'deleted']);
    await sub.unsubscribe();
  });

  test('filters decide what a subscription sees; updates cross the filter as created/deleted', async () => {
    const list = await w.create('todo-list', { name: 'Filtered' });
    const open = new Events();
    const all = new Events();
    const subOpen = await c.subscribe('todo-item', { list_id: list.id, done: false }, open.handler);
    const subAll = await c.subscribe('todo-item', { list_id: list.id }, all.handler);
    assert.notEqual(subOpen.id, subAll.id);

    const a = await w.create('todo-item', { list_id: list.id, text: 'a' });
    const ca = await open.next((f) => f.event === 'created' && f.data.id === a.id);
    await all.next((f) => f.event === 'created' && f.data.id === a.id);
    assert.deepEqual([...ca.subs].sort(), [subOpen.id, subAll.id].sort(), 'one frame for both subscriptions');

    const b = await w.create('todo-item', { list_id: list.id, text: 'b', done: true });
    await all.next((f) => f.event === 'created' && f.data.id === b.id);

    await w.update('todo-item', a.id, { done: true }); // leaves the done:false filter
    const left = await open.next((f) => f.data.id === a.id && f.event !== 'created');
    assert.equal(left.event, 'deleted');
    const upd = await all.next((f) => f.data.id === a.id && f.event === 'updated');
    assert.deepEqual(upd.changed, ['done']);

    await w.update('todo-item', b.id, { done: false }); // enters it
    const entered = await open.next((f) => f.data.id === b.id);
    assert.equal(entered.event, 'created');
    assert.equal(entered.data.done, false);

    // other lists are not seen
    const other = await w.create('todo-list', { name: 'Else' });
    await w.create('todo-item', { list_id: other.id, text: 'not mine' });
    await all.none((f) => f.data && f.data.list_id === other.id, 300);

    // $or / $not / icontains subscriptions
    const fancy = new Events();
    const subF = await c.subscribe('todo-item', { list_id: list.id, $or: [{ text__icontains: 'URG' }, { $not: { position__lte: 5 } }] }, fancy.handler);
    await w.create('todo-item', { list_id: list.id, text: 'calm' });
    const urgent = await w.create('todo-item', { list_id: list.id, text: 'so urgent' });
    const high = await w.create('todo-item', { list_id: list.id, text: 'later', position: 9 });
    await fancy.next((f) => f.data.id === urgent.id);
    await fancy.next((f) => f.data.id === high.id);
    await fancy.none((f) => f.data.text === 'calm', 200);
    await Promise.all([subOpen.unsubscribe(), subAll.unsubscribe(), subF.unsubscribe()]);
  });

  test('unsubscribe stops events', async () => {
    const list = await w.create('todo-list', { name: 'Unsub' });
    const ev = new Events();
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler);
    await w.create('todo-item', { list_id: list.id, text: 'seen' });
    await ev.next((f) => f.event === 'created');
    await sub.unsubscribe();
    assert.equal(sub.active, false);
    await w.create('todo-item', { list_id: list.id, text: 'unseen' });
    await ev.none(() => true, 400);
    await sub.unsubscribe(); // idempotent
    // the server forgot it too: a raw unsubscribe of the old id is not_found
    const err = await c.call('todo-item', 'unsubscribe', { sub: 'no-such-sub' }).catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.equal(err.code, 'not_found');
  });

  test('subscribe with snapshot returns the matching rows; bad filters reject', async () => {
    const list = await w.create('todo-list', { name: 'Snap' });
    const x = await w.create('todo-item', { list_id: list.id, text: 'x', position: 2 });
    const y = await w.create('todo-item', { list_id: list.id, text: 'y', position: 1, done: true });
    const sub = await c.subscribe('todo-item', { list_id: list.id }, () => {}, { snapshot: true });
    assert.deepEqual([...sub.items].sort((a, b) => a.id - b.id), [x, y]);
    const sub2 = await c.subscribe('todo-item', { list_id: list.id, done: true }, () => {}, { snapshot: true });
    assert.deepEqual(sub2.items, [y]);
    await Promise.all([sub.unsubscribe(), sub2.unsubscribe()]);

    let err = await c.subscribe('todo-item', { colour: 'red' }, () => {}).catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.equal(err.code, 'bad_request');
    err = await c.subscribe('nope', {}, () => {}).catch((e) => e);
    assert.equal(err.code, 'unknown_route');
  });

  test('deleting a list publishes each item deletion and the list deletion', async () => {
    const list = await w.create('todo-list', { name: 'Cascade' });
    const i1 = await w.create('todo-item', { list_id: list.id, text: '1' });
    const i2 = await w.create('todo-item', { list_id: list.id, text: '2' });
    const items = new Events();
    const lists = new Events();
    const s1 = await c.subscribe('todo-item', { list_id: list.id }, items.handler);
    const s2 = await c.subscribe('todo-list', {}, lists.handler);
    await w.delete('todo-list', list.id);
    const gone = [await items.next((f) => f.event === 'deleted'), await items.next((f) => f.event === 'deleted')];
    assert.deepEqual(gone.map((f) => f.data.id).sort((a, b) => a - b), [i1.id, i2.id]);
    const lgone = await lists.next((f) => f.event === 'deleted');
    assert.equal(lgone.data.id, list.id);
    await Promise.all([s1.unsubscribe(), s2.unsubscribe()]);
  });

  test('onChannelMessage sees every event frame; off() stops it', async () => {
    const list = await w.create('todo-list', { name: 'Channel' });
    const frames = [];
    const off = c.onChannelMessage((f) => frames.push(f));
    const ev = new Events();
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler);
    const it = await w.create('todo-item', { list_id: list.id, text: 'ch' });
    await ev.next((f) => f.event === 'created');
    assert.ok(frames.some((f) => f.event === 'created' && f.data.id === it.id && f.subs.includes(sub.id)));
    off();
    const n = frames.length;
    await w.update('todo-item', it.id, { done: true });
    await ev.next((f) => f.event === 'updated');
    assert.equal(frames.length, n);
    await sub.unsubscribe();
  });

  test('events arrive in order with increasing positions; many subscriptions', async () => {
    const list = await w.create('todo-list', { name: 'Order' });
    const ev = new Events();
    const sub = await c.subscribe('todo-item', { list_id: list.id }, ev.handler);
    const made = [];
    for (let i = 0; i < 20; i++) made.push(w.create('todo-item', { list_id: list.id, text: `n${i}`, position: i }));
    const rows = await Promise.all(made);
    for (let i = 0; i < 20; i++) await ev.next((f) => f.event === 'created' && f.data.id === rows[i].id);
    const positions = ev.frames.map((f) => f.position);
    assert.equal(new Set(positions).size, positions.length, 'distinct positions');
    assert.deepEqual(ev.frames.map((f) => f.data.id), [...rows.map((r) => r.id)].sort((a, b) => a - b), 'commit order');
    await sub.unsubscribe();
  });
});
