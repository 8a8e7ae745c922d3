// Presence (PROTOCOL.md section 7, docs/presence.md): the client's handles against a scripted
// socket (ordering, coalescing, re-joins, refusals), then against the real todo-app server
// (which enables presence on `todo-item`: integer item ids and free strings; not on `todo-list`).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, client, waitFor, sleep, DragonError } from '../e2e/harness.mjs';

const { Dragon, Presence, groupByUser } = globalThis.dragon;
const tick = () => new Promise((r) => setTimeout(r, 0));

/** A scripted WebSocket: the test plays the server. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  static last() { return FakeSocket.all[FakeSocket.all.length - 1]; }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() {}
  accept(conn = 'c' + FakeSocket.all.length) {
    this.onopen?.({});
    this.frame({ event: 'hello', data: { protocol: 1, conn, user: null } });
  }
  frame(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  drop(code = 1006) { this.onclose?.({ code, reason: '', wasClean: false }); }
  reply(req, data) { this.frame({ id: req.id, ok: true, data }); }
  fail(req, code, message = code, details) { this.frame({ id: req.id, ok: false, error: { code, message, details } }); }
  take(pred = () => true) {
    const i = this.sent.findIndex(pred);
    if (i < 0) throw new Error('no such request; sent: ' + JSON.stringify(this.sent));
    return this.sent.splice(i, 1)[0];
  }
  verbs() { return this.sent.map((r) => r.verb); }
}

function fakeClient(opts = {}) {
  FakeSocket.all = [];
  return new Dragon({ url: 'ws://fake/ws', WebSocket: FakeSocket, backoff: () => 5, heartbeat: 0, ...opts });
}

const m = (conn, state = {}, user = null) => ({ conn, user, state });
const ev = (key, joins = [], leaves = [], route = 'todo-item') => ({ event: 'presence', route, key, joins, leaves });
const conns = (members) => members.map((x) => x.conn);

describe('presence (scripted server)', () => {
  test('join: request shape, members from the reply, then events in order; self and others', async () => {
    const c = fakeClient();
    const h = c.presence('todo-item', 42, { name: 'Ann', editing: false });
    assert.ok(h instanceof Presence);
    const ws = FakeSocket.last();
    assert.equal(ws.sent.length, 0, 'nothing before the hello');
    ws.accept('me');
    const req = ws.take();
    assert.deepEqual([req.route, req.verb, req.args], ['todo-item', 'presence_join', { key: 42, state: { name: 'Ann', editing: false } }]);
    const calls = [];
    h.onChange((members, change) => calls.push({ members: conns(members), joins: conns(change.joins), leaves: conns(change.leaves) }));
    ws.reply(req, { members: [m('x', { name: 'Bob' }), m('me', { name: 'Ann', editing: false })] });
    assert.equal(await h.ready, h);
    assert.deepEqual(conns(h.members), ['x', 'me']);
    assert.deepEqual(calls, [{ members: ['x', 'me'], joins: ['x', 'me'], leaves: [] }], 'first call lists everyone as joining');
    assert.equal(h.conn, 'me');
    assert.deepEqual(h.self, m('me', { name: 'Ann', editing: false }));
    assert.deepEqual(conns(h.others), ['x']);

    ws.frame(ev(42, [m('y', { name: 'Cy' })]));
    ws.frame(ev(42, [m('x', { name: 'Bob', editing: true })])); // a state change: replaced in place
    ws.frame(ev(42, [], [m('y', { name: 'Cy' })]));
    ws.frame(ev(42, [], [m('zz')])); // unknown conn: nothing
    ws.frame(ev('42', [m('q')])); // another key ("42" is not 42)
    ws.frame(ev(42, [m('q')], [], 'todo-list')); // another route
    assert.deepEqual(conns(h.members), ['x', 'me']);
    assert.deepEqual(h.members[0].state, { name: 'Bob', editing: true });
    assert.deepEqual(calls.slice(1), [
      { members: ['x', 'me', 'y'], joins: ['y'], leaves: [] },
      { members: ['x', 'me', 'y'], joins: ['x'], leaves: [] },
      { members: ['x', 'me'], joins: [], leaves: ['y'] },
    ]);
    // a repeated join with the same state changes nothing
    ws.frame(ev(42, [m('x', { name: 'Bob', editing: true })]));
    assert.equal(calls.length, 4);
    c.disconnect();
  });

  test('events that arrive right after the reply (same socket read) are applied after it', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 1, {});
    const req = ws.take();
    // the reply and an event in one go, before any microtask could run
    ws.reply(req, { members: [m('me')] });
    ws.frame(ev(1, [m('b')]));
    await h.ready;
    assert.deepEqual(conns(h.members), ['me', 'b']);
    c.disconnect();
  });

  test('an event for the key before the reply is tolerated and then replaced by the reply', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 1, {});
    const req = ws.take();
    ws.frame(ev(1, [m('early')]));
    ws.frame(ev(1, [], [m('ghost')]));
    ws.reply(req, { members: [m('me'), m('b')] });
    await h.ready;
    assert.deepEqual(conns(h.members), ['me', 'b']);
    c.disconnect();
  });

  test('update: the latest state wins, one request at a time; promises resolve to the members', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 7, { n: 0 });
    const join = ws.take();
    const u1 = h.update({ n: 1 });
    const u2 = h.update({ n: 2 });
    assert.deepEqual(h.state, { n: 2 });
    assert.equal(ws.sent.length, 0, 'updates wait for the join reply');
    ws.reply(join, { members: [m('me', { n: 0 })] });
    await tick();
    const up = ws.take();
    assert.deepEqual([up.verb, up.args], ['presence_update', { key: 7, state: { n: 2 } }], 'one update with the latest state');
    const u3 = h.update({ n: 3 });
    ws.reply(up, { members: [m('me', { n: 2 })] });
    assert.deepEqual(conns(await u1), ['me']);
    assert.deepEqual((await u2)[0].state, { n: 2 });
    await tick();
    const up3 = ws.take();
    assert.deepEqual(up3.args.state, { n: 3 });
    ws.reply(up3, { members: [m('me', { n: 3 })] });
    assert.deepEqual((await u3)[0].state, { n: 3 });
    assert.deepEqual(h.self.state, { n: 3 });
    // a state that is not an object is refused locally
    for (const bad of [null, [], 'x', 5]) {
      const err = await h.update(bad).catch((e) => e);
      assert.ok(err instanceof DragonError);
      assert.equal(err.code, 'bad_request');
    }
    assert.deepEqual(h.state, { n: 3 });
    c.disconnect();
  });

  test('a refused update rejects and the previous state stays (and is what a re-join sends)', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 7, { ok: 1 });
    ws.reply(ws.take(), { members: [m('me', { ok: 1 })] });
    await h.ready;
    const big = h.update({ big: 'x'.repeat(2000) });
    const req = ws.take();
    ws.fail(req, 'validation', 'too big', { state: ['at most 1024 bytes of JSON'] });
    const err = await big.catch((e) => e);
    assert.equal(err.code, 'validation');
    assert.deepEqual(err.details, { state: ['at most 1024 bytes of JSON'] });
    assert.deepEqual(h.state, { ok: 1 });
    assert.equal(h.closed, false);
    await tick();
    assert.equal(ws.sent.length, 0, 'nothing more to send');
    ws.drop();
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept('me2');
    assert.deepEqual(ws.take().args, { key: 7, state: { ok: 1 } });
    c.disconnect();
  });

  test('reconnect: re-joins with the latest state (also one set while offline); members diffed', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept('c-old');
    const h = c.presence('todo-item', 3, { v: 1 });
    ws.reply(ws.take(), { members: [m('c-old', { v: 1 }), m('other', { v: 9 }), m('gone')] });
    await h.ready;
    const changes = [];
    h.onChange((members, ch) => changes.push({ joins: conns(ch.joins), leaves: conns(ch.leaves) }));
    ws.drop();
    assert.equal(c.state, 'reconnecting');
    const offline = h.update({ v: 2 });
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept('c-new');
    const rejoin = ws.take();
    assert.deepEqual([rejoin.verb, rejoin.args], ['presence_join', { key: 3, state: { v: 2 } }]);
    assert.equal(ws.sent.length, 0, 'no extra update: the join carries the state');
    ws.reply(rejoin, { members: [m('other', { v: 9 }), m('c-new', { v: 2 })] });
    assert.deepEqual((await offline).map((x) => x.conn), ['other', 'c-new']);
    assert.deepEqual(changes, [{ joins: ['c-new'], leaves: ['c-old', 'gone'] }]);
    assert.equal(h.conn, 'c-new');
    assert.deepEqual(h.self.state, { v: 2 });
    c.disconnect();
  });

  test('a request queued behind the in-flight limit is not sent on a later connection', async () => {
    const c = fakeClient({ maxInFlight: 1 });
    let ws = FakeSocket.last();
    ws.accept('a');
    const slow = c.getSingle('todo-item', 1); // occupies the only slot
    const h = c.presence('todo-item', 5, {});
    assert.deepEqual(ws.verbs(), ['get_single']);
    ws.drop();
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept('b');
    // the retried read and exactly one join (the fresh one), never the stale one as well
    await tick();
    const get = ws.take((r) => r.verb === 'get_single');
    ws.reply(get, { id: 1 });
    await slow;
    await tick();
    assert.deepEqual(ws.verbs(), ['presence_join']);
    ws.reply(ws.take(), { members: [m('b')] });
    await h.ready;
    assert.equal(ws.sent.length, 0);
    c.disconnect();
  });

  test('leave: one request, stops re-joining, resolves on the reply; offline it resolves at once', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-item', 9, {});
    ws.reply(ws.take(), { members: [m('me')] });
    await h.ready;
    let calls = 0;
    h.onChange(() => calls++);
    let left = false;
    const p = h.leave().then(() => { left = true; });
    assert.equal(h.closed, true);
    const req = ws.take();
    assert.deepEqual([req.verb, req.args], ['presence_leave', { key: 9 }]);
    await tick();
    assert.equal(left, false);
    ws.reply(req, { key: 9 });
    await p;
    ws.frame(ev(9, [m('late')]));
    assert.equal(calls, 0, 'no events after leaving');
    assert.equal((await h.update({ a: 1 }).catch((e) => e)).code, 'bad_request');
    ws.drop();
    await sleep(20);
    FakeSocket.last().accept('again');
    await tick();
    assert.deepEqual(FakeSocket.last().sent, [], 'no re-join after leave');
    assert.equal(c._presence.size, 0);

    // leave while the connection is down: nothing to tell the server
    const h2 = c.presence('todo-item', 10, {});
    ws = FakeSocket.last();
    ws.reply(ws.take(), { members: [m('again')] });
    await h2.ready;
    ws.drop();
    await h2.leave();
    await sleep(20);
    FakeSocket.last().accept('third');
    await tick();
    assert.deepEqual(FakeSocket.last().sent, []);
    c.disconnect();
  });

  test('leave during the join, and join again at once: the server ends up joined with the new state', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const a = c.presence('todo-item', 4, { who: 'a' });
    const join = ws.take();
    const leaving = a.leave();
    const b = c.presence('todo-item', 4, { who: 'b' });
    ws.reply(join, { members: [m('me', { who: 'a' })] });
    await tick();
    const next = ws.take();
    assert.deepEqual([next.verb, next.args], ['presence_join', { key: 4, state: { who: 'b' } }]);
    ws.reply(next, { members: [m('me', { who: 'b' })] });
    await b.ready;
    await leaving; // the server holds b's join now, not a's
    assert.deepEqual(b.self.state, { who: 'b' });
    assert.equal((await a.ready.catch((e) => e)).code, 'disconnected', 'a left before it was ready');
    c.disconnect();
  });

  test('a second join of the same key on one client is a conflict; watchers share the key', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const w = c.watchPresence('todo-item', 8);
    const watchReq = ws.take();
    assert.deepEqual([watchReq.verb, watchReq.args], ['presence_watch', { key: 8 }]);
    ws.reply(watchReq, { members: [m('x')] });
    await w.ready;
    const j = c.presence('todo-item', 8, { a: 1 });
    const dup = c.presence('todo-item', 8, { a: 2 });
    const err = await dup.ready.catch((e) => e);
    assert.equal(err.code, 'conflict');
    assert.equal(dup.closed, true);
    const jr = ws.take();
    assert.equal(jr.verb, 'presence_join');
    assert.equal(ws.sent.length, 0);
    ws.reply(jr, { members: [m('x'), m('me', { a: 1 })] });
    await j.ready;
    assert.deepEqual(conns(w.members), ['x', 'me'], 'the watcher sees the join too');
    // a second watcher is ready at once
    const w2 = c.watchPresence('todo-item', 8);
    await w2.ready;
    assert.deepEqual(conns(w2.members), ['x', 'me']);
    assert.equal(ws.sent.length, 0);
    // the joiner leaves: the watchers keep watching (leave, then watch again)
    const left = j.leave();
    const l = ws.take();
    assert.equal(l.verb, 'presence_leave');
    ws.reply(l, { key: 8 });
    await tick();
    const again = ws.take();
    assert.deepEqual([again.verb, again.args], ['presence_watch', { key: 8 }]);
    ws.reply(again, { members: [m('x')] });
    await left;
    assert.deepEqual(conns(w.members), ['x']);
    ws.frame(ev(8, [m('y')]));
    assert.deepEqual(conns(w2.members), ['x', 'y']);
    await w.leave();
    assert.equal(ws.sent.length, 0, 'w2 still watches');
    const last = w2.leave();
    ws.reply(ws.take((r) => r.verb === 'presence_leave'), { key: 8 });
    await last;
    assert.equal(c._presence.size, 0);
    c.disconnect();
  });

  test('count watch: count from the reply and the events; onChange(count); derives from members when shared', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const n = c.watchPresence('todo-item', 'lobby', { count: true });
    const req = ws.take();
    assert.deepEqual(req.args, { key: 'lobby', count: true });
    const seen = [];
    n.onChange((count) => seen.push(count));
    assert.equal(n.count, null);
    ws.reply(req, { count: 3 });
    await n.ready;
    assert.equal(n.count, 3);
    ws.frame({ event: 'presence', route: 'todo-item', key: 'lobby', count: 5 });
    ws.frame({ event: 'presence', route: 'todo-item', key: 'lobby', count: 5 });
    ws.frame({ event: 'presence', route: 'todo-item', key: 'lobby', count: 4 });
    assert.deepEqual(seen, [3, 5, 4]);
    assert.deepEqual(n.members, []);
    // joining the same key switches the connection to members: the count follows the list
    const j = c.presence('todo-item', 'lobby', {});
    const jr = ws.take();
    ws.reply(jr, { members: [m('a'), m('b'), m('me')] });
    await j.ready;
    assert.equal(n.count, 3);
    ws.frame(ev('lobby', [], [m('a')]));
    assert.equal(n.count, 2);
    assert.deepEqual(seen, [3, 5, 4, 3, 2]);
    // the joiner leaves: back to count mode
    j.leave();
    ws.reply(ws.take(), { key: 'lobby' });
    await tick();
    const back = ws.take();
    assert.deepEqual(back.args, { key: 'lobby', count: true });
    ws.reply(back, { count: 1 });
    assert.equal(n.count, 1);
    assert.equal((await n.update({}).catch((e) => e)).code, 'bad_request');
    c.disconnect();
  });

  test('refusals: ready rejects with the DragonError and the handle closes; transient ones are retried', async () => {
    const c = fakeClient();
    const ws = FakeSocket.last();
    ws.accept('me');
    const h = c.presence('todo-list', 1, {});
    ws.fail(ws.take(), 'unknown_verb', 'no presence here');
    const err = await h.ready.catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.equal(err.code, 'unknown_verb');
    assert.equal(h.closed, true);
    assert.equal(h.error, err);

    const t = c.presence('todo-item', 2, {});
    ws.fail(ws.take(), 'unavailable', 'broker down');
    assert.equal((await t.ready.catch((e) => e)).code, 'unavailable', 'ready reports the first failure');
    assert.equal(t.closed, false);
    await waitFor(() => ws.sent.length === 1, { timeout: 1000 });
    const retry = ws.take();
    assert.equal(retry.verb, 'presence_join');
    ws.reply(retry, { members: [m('me')] });
    assert.deepEqual(conns(t.members), ['me']);
    assert.equal(t.error, null);
    c.disconnect();
  });

  test('a re-join refused after a reconnect (the item was deleted meanwhile) empties the list and reports it', async () => {
    const c = fakeClient();
    let ws = FakeSocket.last();
    ws.accept('a');
    const errors = [];
    c.on('error', (e) => errors.push(e));
    const h = c.presence('todo-item', 6, {});
    ws.reply(ws.take(), { members: [m('a'), m('b')] });
    await h.ready;
    const changes = [];
    h.onChange((members, ch) => changes.push([conns(members), conns(ch.leaves), ch.error?.code]));
    ws.drop();
    await sleep(20);
    ws = FakeSocket.last();
    ws.accept('a2');
    ws.fail(ws.take(), 'not_found', 'no such object');
    await tick();
    assert.equal(h.closed, true);
    assert.deepEqual(changes, [[[], ['a', 'b'], 'not_found']]);
    assert.equal(errors.at(-1).code, 'not_found');
    assert.equal(errors.at(-1).presence, h);
    c.disconnect();
  });

  test('byUser groups several connections of one user; null users stay apart; keyOf groups by state', () => {
    const members = [
      m('c1', { tab: 1 }, { id: 7, name: 'Ann' }),
      m('c2', { tab: 2 }, null),
      m('c3', { tab: 3 }, { id: 7, name: 'Ann' }),
      m('c4', { tab: 4 }, null),
      m('c5', { tab: 5 }, 'bob'),
      m('c6', { tab: 6 }, 'bob'),
      m('c7', { tab: 7 }, { name: 'no id', x: 1 }),
      m('c8', { tab: 8 }, { x: 1, name: 'no id' }),
    ];
    const groups = groupByUser(members);
    assert.deepEqual(groups.map((g) => g.members.map((x) => x.conn)), [['c1', 'c3'], ['c2'], ['c4'], ['c5', 'c6'], ['c7', 'c8']]);
    assert.deepEqual(groups[0].user, { id: 7, name: 'Ann' });
    assert.deepEqual(groups[0].states, [{ tab: 1 }, { tab: 3 }]);
    assert.equal(groups[1].user, null);
    const byTab = groupByUser(members, (x) => (x.state.tab % 2 ? 'odd' : null));
    assert.deepEqual(byTab.map((g) => g.members.length), [4, 1, 1, 1, 1]);
  });
});

// ---------------------------------------------------------------------------------------------
// Against the real todo-app server

/** Waits until `handle.members` (as [conn, state] pairs, order ignored) satisfies pred. */
function waitMembers(handle, pred, message, timeout = 3000) {
  return waitFor(() => pred(handle.members), { timeout, message: `${message}; members: ${JSON.stringify(handle.members)}` });
}
const byConn = (members, conn) => members.find((x) => x.conn === conn);

describe('presence (real server)', () => {
  let server, w;
  let list, milk, bread;
  before(async () => {
    server = await startServer();
    w = client(server);
    list = await w.create('todo-list', { name: 'Presence' });
    milk = await w.create('todo-item', { list_id: list.id, text: 'milk' });
    bread = await w.create('todo-item', { list_id: list.id, text: 'bread' });
  });
  after(async () => {
    w?.disconnect();
    await server?.stop();
    server?.cleanup();
  });

  test('join, update and leave on an item are seen live by a second client that joined too', async () => {
    const a = client(server);
    const b = client(server);
    const ha = a.presence('todo-item', milk.id, { name: 'Ann', editing: false });
    await ha.ready;
    assert.equal(ha.members.length, 1);
    assert.deepEqual(ha.self, { conn: a.conn, user: null, state: { name: 'Ann', editing: false } });
    assert.equal(typeof a.conn, 'string');

    const seen = [];
    const hb = b.presence('todo-item', milk.id, { name: 'Bob', editing: false });
    hb.onChange((members, change) => seen.push({ n: members.length, joins: change.joins.map((x) => x.state.name), leaves: change.leaves.map((x) => x.state.name) }));
    await hb.ready;
    assert.deepEqual(hb.members.map((x) => x.state.name).sort(), ['Ann', 'Bob'], 'the reply lists everyone, the caller too');
    assert.deepEqual(hb.others.map((x) => x.conn), [a.conn]);
    await waitMembers(ha, (ms) => ms.length === 2, 'A sees B join');
    assert.deepEqual(byConn(ha.members, b.conn).state, { name: 'Bob', editing: false });

    // A starts editing: B sees the new state, in place of the old one
    const after = await ha.update({ name: 'Ann', editing: true });
    assert.equal(byConn(after, a.conn).state.editing, true, 'update resolves to the members with the new state');
    await waitMembers(hb, (ms) => byConn(ms, a.conn)?.state.editing === true, 'B sees A editing');
    assert.equal(hb.members.length, 2);
    // several quick updates: the last one wins everywhere
    await Promise.all([1, 2, 3, 4, 5].map((i) => ha.update({ name: 'Ann', editing: i % 2 === 0, i })));
    await waitMembers(hb, (ms) => byConn(ms, a.conn)?.state.i === 5, 'B sees the last state');
    assert.deepEqual(ha.self.state, { name: 'Ann', editing: false, i: 5 });

    // A leaves: B sees the leave (with A's last state); A gets nothing more
    await ha.leave();
    await waitMembers(hb, (ms) => ms.length === 1, 'B sees A leave');
    assert.deepEqual({ ...seen[0], joins: [...seen[0].joins].sort() }, { n: 2, joins: ['Ann', 'Bob'], leaves: [] }, 'the first call lists everyone');
    assert.deepEqual(seen.at(-1).leaves, ['Ann']);
    assert.equal(ha.closed, true);
    // B closes its connection: a watcher sees it leave at once
    const watcher = w.watchPresence('todo-item', milk.id);
    await watcher.ready;
    assert.deepEqual(watcher.members.map((x) => x.conn), [b.conn]);
    b.disconnect();
    await waitMembers(watcher, (ms) => ms.length === 0, 'the watcher sees B go when its connection closes', 2000);
    await watcher.leave();
    a.disconnect();
  });

  test('watchPresence: sees joins, updates and leaves without being a member; string keys are their own', async () => {
    const watcher = client(server);
    const wh = watcher.watchPresence('todo-item', `list:${list.id}`);
    const changes = [];
    wh.onChange((members, change) => changes.push(change));
    await wh.ready;
    assert.deepEqual(wh.members, []);
    assert.equal(wh.self, null);
    assert.equal(typeof wh.update, 'function'); // present, but refuses
    assert.equal((await wh.update({}).catch((e) => e)).code, 'bad_request');

    const a = client(server);
    const ha = a.presence('todo-item', `list:${list.id}`, { name: 'Ann' });
    await ha.ready;
    // an integer key and a string key that looks like it are different keys
    const other = a.presence('todo-item', String(milk.id), { name: 'string key' });
    await other.ready;
    await waitMembers(wh, (ms) => ms.length === 1, 'the watcher sees the join');
    assert.deepEqual(wh.members[0], { conn: a.conn, user: null, state: { name: 'Ann' } });
    const intKey = w.watchPresence('todo-item', milk.id);
    await intKey.ready;
    assert.equal(intKey.members.some((x) => x.conn === a.conn), false, `"${milk.id}" is not ${milk.id}`);
    await intKey.leave();
    await ha.update({ name: 'Ann B.' });
    await waitMembers(wh, (ms) => ms[0]?.state.name === 'Ann B.', 'the watcher sees the update');
    a.disconnect();
    await waitMembers(wh, (ms) => ms.length === 0, 'the watcher sees the leave');
    assert.deepEqual(changes.at(-1).leaves.map((x) => x.state.name), ['Ann B.'], 'a leave carries the last state');
    watcher.disconnect();
  });

  test('byUser: the members grouped (no login here: every member is its own group unless grouped by a state key)', async () => {
    const tabs = [client(server), client(server), client(server)];
    const hs = [
      tabs[0].presence('todo-item', bread.id, { name: 'Ann', guest: 'g-ann' }),
      tabs[1].presence('todo-item', bread.id, { name: 'Ann', guest: 'g-ann' }),
      tabs[2].presence('todo-item', bread.id, { name: 'Bob', guest: 'g-bob' }),
    ];
    await Promise.all(hs.map((h) => h.ready));
    await waitMembers(hs[0], (ms) => ms.length === 3, 'three members');
    const groups = hs[0].byUser();
    assert.equal(groups.length, 3, 'user null: one group per connection');
    assert.ok(groups.every((g) => g.user === null && g.members.length === 1));
    const byGuest = hs[0].byUser((x) => x.state.guest);
    assert.deepEqual(byGuest.map((g) => [g.states[0].name, g.members.length]).sort(), [['Ann', 2], ['Bob', 1]]);
    assert.deepEqual(byGuest.find((g) => g.states[0].name === 'Ann').members.map((x) => x.conn).sort(), [tabs[0].conn, tabs[1].conn].sort());
    // the same grouping as the exported helper, over what the server sent
    assert.deepEqual(groupByUser(hs[0].members, (x) => x.state.guest), byGuest);
    tabs.forEach((t) => t.disconnect());
  });

  test('count watch: the number of members, live', async () => {
    const counter = client(server);
    const n = counter.watchPresence('todo-item', 'lobby', { count: true });
    const counts = [];
    n.onChange((c) => counts.push(c));
    await n.ready;
    assert.equal(n.count, 0);
    assert.deepEqual(n.members, []);
    const people = [client(server), client(server), client(server)];
    const hs = people.map((p, i) => p.presence('todo-item', 'lobby', { i }));
    await Promise.all(hs.map((h) => h.ready));
    await waitFor(() => n.count === 3, { message: `count 3 (got ${n.count})` });
    await hs[1].leave();
    await waitFor(() => n.count === 2, { message: `count 2 (got ${n.count})` });
    people[2].disconnect();
    await waitFor(() => n.count === 1, { message: `count 1 (got ${n.count})` });
    assert.equal(counts[0], 0);
    assert.equal(counts.at(-1), 1);
    // a state change is not a change of the count
    const before = counts.length;
    await hs[0].update({ i: 'changed' });
    await sleep(300);
    assert.equal(counts.length, before);
    people.forEach((p) => p.disconnect());
    counter.disconnect();
  });

  test('error codes: unknown_verb on todo-list, validation over 1024 bytes, not_found for an item that does not exist', async () => {
    const c = client(server);
    const onList = c.presence('todo-list', list.id, {});
    const e1 = await onList.ready.catch((e) => e);
    assert.ok(e1 instanceof DragonError, String(e1));
    assert.equal(e1.code, 'unknown_verb');
    assert.equal(onList.closed, true);
    const e1w = await c.watchPresence('todo-list', list.id).ready.catch((e) => e);
    assert.equal(e1w.code, 'unknown_verb');

    const big = { text: 'x'.repeat(1100) };
    const tooBig = c.presence('todo-item', milk.id, big);
    const e2 = await tooBig.ready.catch((e) => e);
    assert.equal(e2.code, 'validation');
    assert.deepEqual(e2.details, { state: ['at most 1024 bytes of JSON'] });
    // a good join, then a too large update: refused, the old state stays, the handle too
    const ok = c.presence('todo-item', milk.id, { small: true });
    await ok.ready;
    const e3 = await ok.update(big).catch((e) => e);
    assert.equal(e3.code, 'validation');
    assert.deepEqual(ok.state, { small: true });
    assert.equal(ok.closed, false);
    assert.deepEqual(ok.self.state, { small: true });
    assert.deepEqual((await ok.update({ small: 'still works' }))[0].state, { small: 'still works' });

    const e4 = await c.presence('todo-item', 987654321, {}).ready.catch((e) => e);
    assert.equal(e4.code, 'not_found');
    const e5 = await c.watchPresence('todo-item', 987654321).ready.catch((e) => e);
    assert.equal(e5.code, 'not_found');
    const e6 = await c.presence('todo-item', 1.5, {}).ready.catch((e) => e);
    assert.equal(e6.code, 'bad_request');
    // the connection is fine after all that
    assert.deepEqual(await c.getSingle('todo-item', milk.id), milk);
    await ok.leave();
    c.disconnect();
  });

  test('a dropped connection: the others see it leave, and it joins again by itself with its latest state', async () => {
    const a = client(server, { backoff: () => 400 });
    const b = client(server);
    const ha = a.presence('todo-item', bread.id, { name: 'Ann', editing: true });
    const hb = b.presence('todo-item', bread.id, { name: 'Bob' });
    await Promise.all([ha.ready, hb.ready]);
    await waitMembers(hb, (ms) => ms.length === 2, 'B sees A');
    const oldConn = a.conn;
    a._ws.terminate(); // the network drops
    await waitMembers(hb, (ms) => !byConn(ms, oldConn), 'B sees A leave when its socket ends', 2000);
    const offline = ha.update({ name: 'Ann', editing: false }); // while A is away
    await a.ready();
    assert.notEqual(a.conn, oldConn);
    const members = await offline;
    assert.deepEqual(byConn(members, a.conn).state, { name: 'Ann', editing: false });
    await waitMembers(hb, (ms) => byConn(ms, a.conn)?.state.editing === false && ms.length === 2, 'B sees A back with its latest state');
    assert.deepEqual(ha.members.map((x) => x.conn).sort(), [a.conn, b.conn].sort(), 'no ghost of the old connection');
    a.disconnect();
    b.disconnect();
  });

  test('server restart: joins and watches come back with the latest state', async () => {
    const a = client(server, { backoff: () => 300 });
    const b = client(server, { backoff: () => 300 });
    const ha = a.presence('todo-item', milk.id, { name: 'Ann', editing: false });
    const watch = b.watchPresence('todo-item', milk.id);
    const count = b.watchPresence('todo-item', `list:${list.id}`, { count: true });
    const hl = a.presence('todo-item', `list:${list.id}`, { name: 'Ann' });
    await Promise.all([ha.ready, watch.ready, count.ready, hl.ready]);
    await waitMembers(watch, (ms) => ms.length === 1, 'B watches A');
    await waitFor(() => count.count === 1, { message: 'count 1' });

    await server.kill();
    await waitFor(() => !a.connected && !b.connected, { message: 'both disconnected' });
    const offline = ha.update({ name: 'Ann', editing: true }, { timeout: 20000 });
    await server.start();
    await Promise.all([a.ready(), b.ready()]);
    const members = await offline;
    assert.deepEqual(byConn(members, a.conn).state, { name: 'Ann', editing: true });
    await waitMembers(watch, (ms) => ms.length === 1 && ms[0].conn === a.conn && ms[0].state.editing === true,
      'B sees A (new connection, latest state) after the restart', 5000);
    await waitFor(() => count.count === 1, { message: `count 1 after the restart (got ${count.count})` });
    // and it is live again
    await ha.leave();
    await waitMembers(watch, (ms) => ms.length === 0, 'B sees A leave after the restart');
    await hl.leave();
    await waitFor(() => count.count === 0, { message: 'count 0' });
    a.disconnect();
    b.disconnect();
    // the writer client of this suite reconnected too
    await w.ready();
  });
});
