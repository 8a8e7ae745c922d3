// liveList against a real todo-app server: stays equal to get_list under concurrent changes.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, client, waitFor, fetchAll, liveList, DragonError, sleep } from '../e2e/harness.mjs';

const summary = (rows) => rows.map((r) => `${r.id}:${r.text ?? r.name}:${r.done ?? ''}:${r.position ?? ''}`).join(' ');

/** Wait until the liveList's items (order included) equal get_list with the same filter/order. */
async function converges(ll, w, route, filter, order_by, timeout = 3000) {
  let want;
  await waitFor(async () => {
    want = await fetchAll(w, route, filter, order_by);
    return JSON.stringify(ll.items) === JSON.stringify(want);
  }, { timeout, interval: 50, message: 'liveList to equal get_list' }).catch((err) => {
    err.message += `\n  live: ${summary(ll.items)}\n  want: ${summary(want || [])}`;
    throw err;
  });
}

describe('liveList', () => {
  let server, c, w;
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

  test('initial snapshot, sorted by order_by with ties by id', async () => {
    const list = await w.create('todo-list', { name: 'LL1' });
    for (const [text, position, done] of [['b', 2, false], ['a', 1, true], ['c', 2, true], ['d', 0, false], ['e', 1, false]]) {
      await w.create('todo-item', { list_id: list.id, text, position, done });
    }
    const order = ['done', '-position'];
    const ll = liveList(c, 'todo-item', { list_id: list.id }, { order_by: order });
    assert.deepEqual(ll.items, []);
    assert.equal(ll.loaded, false);
    await ll.ready;
    assert.equal(ll.loaded, true);
    const want = await fetchAll(w, 'todo-item', { list_id: list.id }, order);
    assert.deepEqual(ll.items, want);
    assert.deepEqual(ll.items.map((r) => r.text), ['b', 'e', 'd', 'c', 'a']);
    assert.equal(ll.get(want[0].id).text, 'b');
    await ll.close();
  });

  test('applies created/updated/deleted, re-sorts, notifies; equals get_list after random changes', async () => {
    const list = await w.create('todo-list', { name: 'LL2' });
    const other = await w.create('todo-list', { name: 'LL2-other' });
    const filter = { list_id: list.id };
    const order = ['-done', 'position', 'text'];
    const changes = [];
    const ll = c.liveList('todo-item', filter, { order_by: order, onChange: (items, change) => changes.push(change.event) });
    await ll.ready;
    assert.deepEqual(changes, ['snapshot']);

    const a = await w.create('todo-item', { list_id: list.id, text: 'alpha', position: 5 });
    await waitFor(() => ll.items.length === 1);
    assert.deepEqual(ll.items[0], a);
    const b = await w.create('todo-item', { list_id: list.id, text: 'beta', position: 1 });
    await waitFor(() => ll.items.length === 2);
    assert.deepEqual(ll.items.map((r) => r.id), [b.id, a.id], 'sorted by position');
    await w.update('todo-item', a.id, { done: true });
    await waitFor(() => ll.items[0].id === a.id);
    assert.equal(ll.items[0].done, true, 'updated in place and re-sorted (-done first)');
    assert.equal(ll.items.length, 2);
    await w.delete('todo-item', b.id);
    await waitFor(() => ll.items.length === 1);
    assert.ok(changes.includes('created') && changes.includes('updated') && changes.includes('deleted'), changes.join());

    // random concurrent changes from two writers, including moves in and out of the filter
    let seed = 42;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    const w2 = client(server);
    const ids = [a.id];
    const ops = [];
    for (let i = 0; i < 60; i++) {
      const writer = i % 2 ? w : w2;
      const k = rnd(10);
      if (k < 4 || ids.length < 3) {
        ops.push(writer.create('todo-item', { list_id: rnd(4) ? list.id : other.id, text: `t${rnd(5)}`, position: rnd(4), done: !!rnd(2) }).then((r) => ids.push(r.id)));
      } else if (k < 8) {
        const id = ids[rnd(ids.length)];
        const data = [{ done: !!rnd(2) }, { position: rnd(4) }, { text: `u${rnd(5)}` }, { list_id: rnd(2) ? list.id : other.id }][rnd(4)];
        ops.push(writer.update('todo-item', id, data).catch((e) => { if (e.code !== 'not_found') throw e; }));
      } else {
        const id = ids[rnd(ids.length)];
        ops.push(writer.delete('todo-item', id).catch((e) => { if (e.code !== 'not_found') throw e; }));
      }
      if (i % 10 === 9) await Promise.all(ops.splice(0));
    }
    await Promise.all(ops);
    await converges(ll, w, 'todo-item', filter, order);
    assert.ok(ll.items.every((r) => r.list_id === list.id));
    w2.disconnect();
    await ll.close();
  });

  test('the equivalence rule: liveLists with many filters equal get_list after random changes', async () => {
    const list = await w.create('todo-list', { name: 'Equivalence' });
    const other = await w.create('todo-list', { name: 'Equivalence-other' });
    const scope = { list_id__in: [list.id, other.id] };
    const filters = [
      {},
      { done: true },
      { done__ne: true, position__gte: 2 },
      { text__icontains: 'é' },
      { text__contains: 'B' },
      { text__startswith: 'a' },
      { $or: [{ position__lt: 1 }, { text__contains: '%' }] },
      { $not: { $or: [{ done: false }, { position__in: [1, 2] }] } },
      { position__in: [] },
      { list_id: other.id, text__gt: 'a' },
    ];
    const orders = [['text'], ['-position', 'text'], ['done', '-text'], []];
    const lls = filters.map((f, i) => c.liveList('todo-item', { ...scope, ...f }, { order_by: orders[i % orders.length] }));
    await Promise.all(lls.map((l) => l.ready));
    const texts = ['apple', 'Banana', 'ÉCLAIR', 'éclair', 'a%b', 'abc_', 'B', 'a', '\u{1F600}', '\uFFFD', 'zeta'];
    let seed = 7;
    const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    const ids = [];
    for (let round = 0; round < 6; round++) {
      const ops = [];
      for (let i = 0; i < 12; i++) {
        const k = rnd(10);
        if (k < 5 || ids.length < 4) {
          ops.push(w.create('todo-item', { list_id: rnd(3) ? list.id : other.id, text: texts[rnd(texts.length)], position: rnd(4), done: !!rnd(2) }).then((r) => ids.push(r.id)));
        } else if (k < 9) {
          const data = [{ done: !!rnd(2) }, { position: rnd(4) }, { text: texts[rnd(texts.length)] }, { list_id: rnd(2) ? list.id : other.id }][rnd(4)];
          ops.push(w.update('todo-item', ids[rnd(ids.length)], data).catch((e) => { if (e.code !== 'not_found') throw e; }));
        } else {
          ops.push(w.delete('todo-item', ids[rnd(ids.length)]).catch((e) => { if (e.code !== 'not_found') throw e; }));
        }
      }
      await Promise.all(ops);
    }
    for (const [i, ll] of lls.entries()) {
      await converges(ll, w, 'todo-item', { ...scope, ...filters[i] }, orders[i % orders.length]).catch((err) => {
        err.message = `filter ${JSON.stringify(filters[i])} order ${JSON.stringify(orders[i % orders.length])}: ${err.message}`;
        throw err;
      });
    }
    assert.ok(lls[0].items.length > 5, 'the random changes left some rows');
    assert.deepEqual(lls[8].items, [], 'in: [] matches nothing');
    await Promise.all(lls.map((l) => l.close()));
  });

  test('close() stops updates; onChange off works', async () => {
    const list = await w.create('todo-list', { name: 'LL3' });
    const ll = liveList(c, 'todo-item', { list_id: list.id });
    let calls = 0;
    const off = ll.onChange(() => calls++);
    await ll.ready;
    assert.equal(calls, 1, 'the snapshot notifies');
    await w.create('todo-item', { list_id: list.id, text: 'one' });
    await waitFor(() => ll.items.length === 1);
    assert.equal(calls, 2);
    off();
    await w.create('todo-item', { list_id: list.id, text: 'two' });
    await waitFor(() => ll.items.length === 2);
    assert.equal(calls, 2);
    await ll.close();
    assert.equal(ll.closed, true);
    await w.create('todo-item', { list_id: list.id, text: 'three' });
    await sleep(300);
    assert.equal(ll.items.length, 2);
  });

  test('a list of lists, and list deletion emptying an item liveList', async () => {
    const lists = c.liveList('todo-list', {}, { order_by: ['name'] });
    await lists.ready;
    const before = lists.items.length;
    const l = await w.create('todo-list', { name: 'AAA first' });
    const items = c.liveList('todo-item', { list_id: l.id });
    await items.ready;
    await w.create('todo-item', { list_id: l.id, text: 'x' });
    await w.create('todo-item', { list_id: l.id, text: 'y' });
    await waitFor(() => items.items.length === 2 && lists.items.length === before + 1);
    assert.equal(lists.items[0].name, 'AAA first');
    await w.delete('todo-list', l.id);
    await waitFor(() => items.items.length === 0 && lists.items.length === before);
    await converges(lists, w, 'todo-list', {}, ['name']);
    await Promise.all([lists.close(), items.close()]);
  });

  test('a refused subscribe rejects ready and sets error', async () => {
    const ll = liveList(c, 'todo-item', { colour: 'red' });
    const err = await ll.ready.catch((e) => e);
    assert.ok(err instanceof DragonError);
    assert.equal(err.code, 'bad_request');
    assert.equal(ll.error, err);
  });

  test('reload() refreshes from a fresh snapshot', async () => {
    const list = await w.create('todo-list', { name: 'LL5' });
    await w.create('todo-item', { list_id: list.id, text: 'r1' });
    const ll = liveList(c, 'todo-item', { list_id: list.id });
    await ll.ready;
    const oldSub = ll.subscription.id;
    const items = await ll.reload();
    assert.equal(items.length, 1);
    assert.notEqual(ll.subscription.id, oldSub, 'a new server subscription');
    await w.create('todo-item', { list_id: list.id, text: 'r2' });
    await waitFor(() => ll.items.length === 2);
    await ll.close();
  });
});
