// Revoked access: the server ends subscriptions with an `error` event frame
// {event: 'error', route, subs, data: {code: 'forbidden', message: 'access revoked'}} and drops
// the connection's user. The listed subscriptions end (not re-established after a reconnect),
// their handlers get the frame, the client emits 'error' and clears `user`; a liveList on one
// empties, notifies once, exposes `error` and stops. Driven through a scripted fake WebSocket
// (the test plays the server; test/fake.mjs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import '../dragon.js';
import { tick, sleep, waitUntil, FakeSocket, fakeClient } from './fake.mjs';

const { DragonError } = globalThis.dragon;

const REVOKED = { code: 'forbidden', message: 'access revoked' };
const revoke = (ws, route, subs) => ws.frame({ event: 'error', route, subs, data: REVOKED });
const isSubscribe = (r) => r.verb === 'subscribe';

/** A fake client connected as `user`, its socket, and the 'error' events it emits. */
function connect(user = null, opts = {}) {
  const c = fakeClient(opts);
  const ws = FakeSocket.last();
  ws.accept({ protocol: 1, conn: 'c1', user });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  return { c, ws, errors };
}

/** The server drops `ws`: wait for the client's next socket, accept it and return it. */
async function reconnect(ws) {
  const n = FakeSocket.all.length;
  ws.drop();
  await waitUntil(() => FakeSocket.all.length === n + 1, 1000);
  const next = FakeSocket.last();
  next.accept();
  return next;
}

/** Subscribe with a handler recording its frames; the fake server answers with `subId`. */
async function subscribeAs(c, ws, route, filter, subId, extra = {}) {
  const frames = [];
  const p = c.subscribe(route, filter, (f, s) => frames.push({ f, s }), extra.options);
  await tick();
  const req = ws.take(isSubscribe);
  ws.reply(req, { sub: subId, position: 'p0', ...(extra.reply || {}) });
  const sub = await p;
  return { sub, frames, req };
}

/** Open a liveList whose subscribe the fake server answers with `subId` and `items`. */
async function liveListAs(c, ws, route, filter, subId, items, options) {
  const ll = c.liveList(route, filter, options);
  await tick();
  const req = ws.take(isSubscribe);
  assert.equal(req.args.snapshot, true);
  ws.reply(req, { sub: subId, position: 'p0', items });
  await ll.ready;
  return ll;
}

describe('revoked access: subscriptions', () => {
  test('the error event ends the listed subscriptions; handlers get it; the client emits error', async () => {
    const { c, ws, errors } = connect({ id: 7, name: 'ann' });
    const a = await subscribeAs(c, ws, 'todo-item', { list_id: 1 }, 's1');
    const b = await subscribeAs(c, ws, 'todo-item', { list_id: 2 }, 's2');
    const d = await subscribeAs(c, ws, 'todo-item', { list_id: 3 }, 's3');
    assert.deepEqual(c.user, { id: 7, name: 'ann' });

    revoke(ws, 'todo-item', ['s1', 's3']);

    // the handlers of s1 and s3 got the frame as sent, plus the DragonError
    for (const [h, id] of [[a, 's1'], [d, 's3']]) {
      assert.equal(h.frames.length, 1, id);
      const { f, s } = h.frames[0];
      assert.equal(f.event, 'error');
      assert.equal(f.route, 'todo-item');
      assert.deepEqual(f.subs, ['s1', 's3']);
      assert.deepEqual(f.data, REVOKED);
      assert.ok(f.error instanceof DragonError);
      assert.equal(f.error.code, 'forbidden');
      assert.equal(f.error.message, 'access revoked');
      assert.equal(s, h.sub);
      // ended: inactive, with the error, no id
      assert.equal(h.sub.active, false, id);
      assert.equal(h.sub.error, f.error);
      assert.equal(h.sub.id, null);
    }
    assert.equal(b.frames.length, 0, 's2 is not concerned');
    assert.equal(b.sub.active, true);
    assert.equal(b.sub.error, null);
    assert.equal(b.sub.id, 's2');

    // one client-level error, with the route and the subscriptions
    assert.equal(errors.length, 1);
    const e = errors[0];
    assert.ok(e instanceof DragonError);
    assert.equal(e.code, 'forbidden');
    assert.equal(e.message, 'access revoked');
    assert.equal(e.route, 'todo-item');
    assert.deepEqual(e.subs, ['s1', 's3']);
    assert.deepEqual(e.subscriptions, [a.sub, d.sub]);

    // the server dropped the user
    assert.equal(c.user, null);

    // ended subscriptions need no unsubscribe: nothing is sent
    await a.sub.unsubscribe();
    await d.sub.unsubscribe();
    assert.equal(ws.sent.filter((r) => r.verb === 'unsubscribe').length, 0);
    // and cannot be reloaded
    await assert.rejects(a.sub.reload(), (err) => err.code === 'forbidden');
    assert.equal(ws.sent.length, 0);

    // stray frames for the ended ids are not delivered; s2 keeps working
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1', 's2', 's3'], data: { id: 1 }, position: 'p1' });
    assert.equal(a.frames.length, 1);
    assert.equal(d.frames.length, 1);
    assert.equal(b.frames.length, 1);
    assert.equal(b.frames[0].f.event, 'created');
    assert.equal(b.sub.position, 'p1');
    c.disconnect();
  });

  test('after a reconnect the ended subscriptions are not resubscribed, the others are', async () => {
    const { c, ws } = connect();
    const a = await subscribeAs(c, ws, 'todo-item', { list_id: 1 }, 's1');
    const b = await subscribeAs(c, ws, 'todo-item', { list_id: 2 }, 's2');
    const d = await subscribeAs(c, ws, 'todo-item', { list_id: 3 }, 's3');
    revoke(ws, 'todo-item', ['s1', 's3']);
    ws.frame({ event: 'updated', route: 'todo-item', subs: ['s2'], data: { id: 5, done: true }, position: 'p5' });

    const ws2 = await reconnect(ws);
    await tick();
    const subs = ws2.sent.filter(isSubscribe);
    assert.equal(subs.length, 1, 'only s2 is re-established: ' + JSON.stringify(subs));
    assert.deepEqual(subs[0].args.filter, { list_id: 2 });
    assert.equal(subs[0].args.since, 'p5');
    ws2.reply(ws2.take(isSubscribe), { sub: 's9', position: 'p5', recovered: true });
    await tick();
    assert.equal(b.sub.id, 's9');
    ws2.frame({ event: 'created', route: 'todo-item', subs: ['s9'], data: { id: 6 }, position: 'p6' });
    assert.deepEqual(b.frames.map((x) => x.f.event), ['updated', 'created']);
    assert.equal(a.frames.length, 1);
    assert.equal(d.frames.length, 1);
    assert.equal(a.sub.active, false);
    assert.equal(d.sub.active, false);

    // once more: still not resubscribed
    const ws3 = await reconnect(ws2);
    await tick();
    assert.equal(ws3.sent.filter(isSubscribe).length, 1);
    c.disconnect();
  });

  test('client.user becomes null, and auth() sets it again', async () => {
    const { c, ws } = connect({ id: 7 }, { token: 't1' });
    await subscribeAs(c, ws, 'todo-item', {}, 's1');
    assert.deepEqual(c.user, { id: 7 });
    revoke(ws, 'todo-item', ['s1']);
    assert.equal(c.user, null);

    const p = c.auth('t2');
    await tick();
    const req = ws.take((r) => r.verb === 'auth');
    assert.deepEqual(req.args, { token: 't2' });
    ws.reply(req, { id: 7 });
    assert.deepEqual(await p, { id: 7 });
    assert.deepEqual(c.user, { id: 7 });
    c.disconnect();
  });

  test('an error frame naming only unknown ids still clears the user and reports the error', async () => {
    const { c, ws, errors } = connect({ id: 7 });
    const b = await subscribeAs(c, ws, 'todo-item', {}, 's2');
    revoke(ws, 'todo-item', ['s8']);
    assert.equal(c.user, null);
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0].subscriptions, []);
    assert.equal(b.sub.active, true);
    assert.equal(b.frames.length, 0);
    c.disconnect();
  });
});

describe('revoked access: liveList', () => {
  test('a liveList on a revoked subscription empties, notifies once, exposes .error and does not reload', async () => {
    const { c, ws, errors } = connect({ id: 7 });
    const calls = [];
    const ll = await liveListAs(c, ws, 'todo-item', { list_id: 1 }, 's1',
      [{ id: 2, text: 'b' }, { id: 1, text: 'a' }], { onChange: (items, change) => calls.push({ items, change }) });
    assert.deepEqual(ll.items.map((r) => r.id), [1, 2]);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].change.event, 'snapshot');
    const other = [];
    ll.onChange((items) => other.push(items));

    revoke(ws, 'todo-item', ['s1']);

    assert.deepEqual(ll.items, []);
    assert.equal(ll.get(1), undefined);
    assert.equal(calls.length, 2, 'onChange once more');
    assert.deepEqual(calls[1].items, []);
    assert.equal(calls[1].change.event, 'error');
    assert.deepEqual(calls[1].change.data, REVOKED);
    assert.deepEqual(other, [[]]);
    assert.ok(ll.error instanceof DragonError);
    assert.equal(ll.error.code, 'forbidden');
    assert.equal(ll.error.message, 'access revoked');
    assert.equal(ll.error, errors[0]);
    assert.equal(ll.closed, true);
    assert.equal(ll.subscription.active, false);
    assert.equal(c.user, null);

    // no reload: nothing is sent, now or later
    await tick();
    assert.deepEqual(ws.sent, []);
    // a late resync or change for the old id does nothing
    ws.frame({ event: 'resync', route: 'todo-item', subs: ['s1'] });
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s1'], data: { id: 3 } });
    await tick();
    assert.deepEqual(ws.sent, []);
    assert.deepEqual(ll.items, []);
    assert.equal(calls.length, 2);
    // reload() changes nothing either; close() sends nothing
    assert.deepEqual(await ll.reload(), []);
    await ll.close();
    assert.deepEqual(ws.sent, []);
    // nor after a reconnect
    const ws2 = await reconnect(ws);
    await sleep(20);
    assert.deepEqual(ws2.sent.filter(isSubscribe), []);
    assert.equal(calls.length, 2);
    assert.equal(errors.length, 1);
    c.disconnect();
  });

  test('ready rejects with the error if access is revoked before it resolved', async () => {
    const { c, ws } = connect();
    const calls = [];
    const ll = c.liveList('todo-item', { list_id: 1 }, { onChange: (items, change) => calls.push({ items, change }) });
    await tick();
    const req = ws.take(isSubscribe);
    // the reply and the revocation arrive together, before `ready` had a chance to resolve
    ws.reply(req, { sub: 's1', position: 'p0', items: [{ id: 1 }] });
    revoke(ws, 'todo-item', ['s1']);
    await assert.rejects(ll.ready, (err) => err instanceof DragonError && err.code === 'forbidden' && err === ll.error);
    assert.deepEqual(ll.items, []);
    assert.deepEqual(calls.map((x) => [x.change.event, x.items.length]), [['snapshot', 1], ['error', 0]]);
    assert.equal(ll.closed, true);
    await tick();
    assert.deepEqual(ws.sent, [], 'no reload, no unsubscribe');
    c.disconnect();
  });

  test('an empty liveList still gets onChange([]) once', async () => {
    const { c, ws } = connect();
    const ll = await liveListAs(c, ws, 'todo-item', {}, 's1', []);
    const calls = [];
    ll.onChange((items, change) => calls.push([items, change.event]));
    revoke(ws, 'todo-item', ['s1']);
    assert.deepEqual(calls, [[[], 'error']]);
    assert.equal(ll.error.code, 'forbidden');
    c.disconnect();
  });

  test('unrelated subscriptions and liveLists keep working', async () => {
    const { c, ws } = connect({ id: 7 });
    const gone = await liveListAs(c, ws, 'todo-item', { list_id: 1 }, 's1', [{ id: 1 }]);
    const kept = await liveListAs(c, ws, 'todo-item', { list_id: 2 }, 's2', [{ id: 10 }]);
    const lists = await liveListAs(c, ws, 'todo-list', {}, 's3', [{ id: 100 }]);
    const raw = await subscribeAs(c, ws, 'todo-list', {}, 's4');

    revoke(ws, 'todo-item', ['s1']);
    assert.deepEqual(gone.items, []);
    assert.equal(gone.closed, true);
    for (const ll of [kept, lists]) {
      assert.equal(ll.closed, false);
      assert.equal(ll.error, null);
      assert.equal(ll.subscription.active, true);
    }
    assert.deepEqual(kept.items.map((r) => r.id), [10]);
    assert.deepEqual(lists.items.map((r) => r.id), [100]);

    // events still apply
    ws.frame({ event: 'created', route: 'todo-item', subs: ['s2'], data: { id: 11 }, position: 'p1' });
    ws.frame({ event: 'created', route: 'todo-list', subs: ['s3', 's4'], data: { id: 101 }, position: 'p1' });
    assert.deepEqual(kept.items.map((r) => r.id), [10, 11]);
    assert.deepEqual(lists.items.map((r) => r.id), [100, 101]);
    assert.deepEqual(raw.frames.map((x) => x.f.event), ['created']);
    assert.deepEqual(gone.items, []);

    // a resync still reloads the unrelated liveList
    ws.frame({ event: 'resync', route: 'todo-item', subs: ['s2'] });
    await tick();
    ws.take((r) => r.verb === 'unsubscribe' && r.args.sub === 's2');
    const again = ws.take(isSubscribe);
    assert.deepEqual(again.args, { filter: { list_id: 2 }, snapshot: true });
    ws.reply(again, { sub: 's5', position: 'p2', items: [{ id: 12 }] });
    await tick();
    assert.deepEqual(kept.items.map((r) => r.id), [12]);

    // and a reconnect re-establishes the unrelated ones only
    const ws2 = await reconnect(ws);
    await tick();
    const subs = ws2.sent.filter(isSubscribe);
    assert.equal(subs.length, 3, JSON.stringify(subs));
    assert.ok(!subs.some((r) => r.route === 'todo-item' && r.args.filter && r.args.filter.list_id === 1));
    c.disconnect();
  });

  test('a refused resume after a reconnect (not a revocation) leaves the liveList open', async () => {
    const { c, ws, errors } = connect();
    const ll = await liveListAs(c, ws, 'todo-item', {}, 's1', [{ id: 1 }]);
    const ws2 = await reconnect(ws);
    await tick();
    ws2.fail(ws2.take(isSubscribe), 'forbidden', 'no');
    await tick();
    assert.equal(errors.length, 1);
    assert.equal(ll.closed, false);
    assert.equal(ll.subscription.active, true);
    assert.deepEqual(ll.items.map((r) => r.id), [1]);
    c.disconnect();
  });
});
