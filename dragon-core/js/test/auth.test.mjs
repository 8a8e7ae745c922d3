// Tokens and the auth-related close codes: a `token` option that is a function (sync or async)
// called before every (re)connection, close 4003 (token expired: final with a fixed token,
// reconnect with a token function), close 1013 (retried). Driven through a scripted fake
// WebSocket (the test plays the server; test/fake.mjs).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import '../dragon.js';
import { sleep, waitUntil, FakeSocket, fakeClient } from './fake.mjs';

const { DragonError } = globalThis.dragon;

describe('close 4003 (token expired)', () => {
  test('with a string token: final, error token_expired, pending calls fail, state closed', async () => {
    const c = fakeClient({ token: 't1' });
    const errors = [];
    const closes = [];
    c.on('error', (e) => errors.push(e));
    c.on('close', (i) => closes.push(i.code));
    const ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=t1');
    ws.accept();
    const read = c.getSingle('todo-item', 1);     // on the wire: a read, normally resent
    const write = c.create('todo-item', { text: 'x' });
    assert.equal(ws.sent.length, 2);
    ws.drop(4003);
    const [re, we] = await Promise.all([read.catch((e) => e), write.catch((e) => e)]);
    assert.ok(re instanceof DragonError);
    assert.equal(re.code, 'token_expired');
    assert.equal(we.code, 'disconnected', 'a write on the wire may have been applied');
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof DragonError);
    assert.equal(errors[0].code, 'token_expired');
    assert.equal(errors[0].message, 'token expired (close 4003)');
    assert.deepEqual(closes, [4003]);
    assert.equal(c.state, 'closed');
    assert.equal((await c.ping().catch((e) => e)).code, 'disconnected', 'no queueing once closed');
    await sleep(30);
    assert.equal(FakeSocket.all.length, 1, 'no reconnection');
  });

  test('with a token function: reconnects, the new URL carries the new token', async () => {
    let n = 0;
    const c = fakeClient({ token: () => `tok${++n}` });
    const states = [];
    c.on('state', (s) => states.push(s));
    let ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=tok1', 'a synchronous function: the socket opens at once');
    ws.accept();
    const read = c.getSingle('todo-item', 1);
    ws.take();
    ws.drop(4003);
    assert.equal(c.state, 'reconnecting');
    await waitUntil(() => FakeSocket.all.length === 2, 1000);
    ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=tok2');
    ws.accept();
    const again = ws.take();
    assert.equal(again.verb, 'get_single', 'the read is resent on the new connection');
    ws.reply(again, { id: 1 });
    assert.deepEqual(await read, { id: 1 });
    assert.deepEqual(states, ['open', 'reconnecting', 'open']);
    c.disconnect();
  });

  test('a token function returning a promise works (first connection and reconnection)', async () => {
    const tokens = ['a b', 'fresh'];
    const calls = [];
    const c = fakeClient({
      token: () => {
        calls.push(Date.now());
        return sleep(10).then(() => tokens.shift());
      },
    });
    assert.equal(c.state, 'connecting');
    assert.equal(FakeSocket.all.length, 0, 'no socket before the token is there');
    const ready = c.ready();
    await waitUntil(() => FakeSocket.all.length === 1, 1000);
    let ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=a%20b');
    ws.accept();
    await ready;
    ws.drop(4003);
    await waitUntil(() => FakeSocket.all.length === 2, 1000);
    ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=fresh');
    ws.accept();
    assert.equal(c.state, 'open');
    assert.equal(calls.length, 2);
    c.disconnect();
  });

  test('a token function giving null or undefined connects anonymously', async () => {
    const c = fakeClient({ token: async () => null });
    await waitUntil(() => FakeSocket.all.length === 1, 1000);
    assert.equal(FakeSocket.last().url, 'ws://fake/ws');
    c.disconnect();
  });

  test('auth(token) replaces a token function: a later 4003 is final', async () => {
    let n = 0;
    const c = fakeClient({ token: () => `fn${++n}` });
    const ws = FakeSocket.last();
    ws.accept();
    const a = c.auth('renewed');
    const req = ws.take();
    assert.deepEqual([req.route, req.verb, req.args], ['dragon', 'auth', { token: 'renewed' }]);
    ws.reply(req, { id: 7 });
    await a;
    assert.equal(c.token, 'renewed');
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    ws.drop(4003);
    assert.deepEqual(errors, ['token_expired']);
    assert.equal(c.state, 'closed');
    assert.equal(n, 1);
  });

  test('disconnect() while a token promise is pending: no socket is opened afterwards', async () => {
    let release;
    const c = fakeClient({ token: () => new Promise((r) => { release = r; }) });
    assert.equal(c.state, 'connecting');
    c.disconnect();
    assert.equal(c.state, 'closed');
    release('late');
    await sleep(20);
    assert.equal(FakeSocket.all.length, 0);
  });
});

describe('close 1013 (authentication backend failed)', () => {
  test('is retried like any drop, with the same token', async () => {
    const c = fakeClient({ token: 't' });
    const errors = [];
    c.on('error', (e) => errors.push(e));
    const attempts = [];
    c.on('reconnecting', (r) => attempts.push(r.attempt));
    // refused before the hello, twice: the attempts keep counting
    FakeSocket.last().drop(1013);
    await waitUntil(() => FakeSocket.all.length === 2, 1000);
    FakeSocket.last().drop(1013);
    await waitUntil(() => FakeSocket.all.length === 3, 1000);
    const ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=t');
    ws.accept();
    assert.equal(c.state, 'open');
    assert.deepEqual(attempts, [1, 2]);
    assert.equal(errors.length, 0, 'not an error of the client');
    c.disconnect();
  });
});

describe('a failing token function', () => {
  test('a rejection emits error and is retried with backoff', async () => {
    let n = 0;
    const boom = new Error('refresh endpoint down');
    const c = fakeClient({
      token: () => (++n === 1 ? Promise.reject(boom) : Promise.resolve('ok')),
    });
    const errors = [];
    const attempts = [];
    c.on('error', (e) => errors.push(e));
    c.on('reconnecting', (r) => attempts.push(r.attempt));
    await waitUntil(() => FakeSocket.all.length === 1, 1000);
    assert.deepEqual(errors, [boom]);
    assert.deepEqual(attempts, [1]);
    const ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=ok');
    ws.accept();
    assert.equal(c.state, 'open');
    assert.equal(n, 2);
    c.disconnect();
  });

  test('a throw emits error and is retried; calls made meanwhile wait in the queue', async () => {
    let n = 0;
    const c = fakeClient({
      autoConnect: false,
      token: () => {
        if (++n <= 2) throw new Error('no token yet ' + n);
        return 'ok';
      },
    });
    const errors = [];
    c.on('error', (e) => errors.push(e.message));
    const ready = c.connect();
    assert.equal(c.state, 'reconnecting', 'the first attempt failed at once');
    const p = c.ping();
    await waitUntil(() => FakeSocket.all.length === 1, 1000);
    assert.deepEqual(errors, ['no token yet 1', 'no token yet 2']);
    const ws = FakeSocket.last();
    assert.equal(ws.url, 'ws://fake/ws?token=ok');
    ws.accept();
    await ready;
    ws.reply(ws.take(), { time: 1 });
    assert.deepEqual(await p, { time: 1 });
    c.disconnect();
  });

  test('maxAttempts bounds the retries of a failing token function', async () => {
    const c = fakeClient({ token: () => Promise.reject(new Error('down')), maxAttempts: 2 });
    const errors = [];
    c.on('error', (e) => errors.push(e.message));
    const p = c.ping();
    assert.equal((await p.catch((e) => e)).code, 'disconnected');
    await waitUntil(() => c.state === 'closed', 1000);
    assert.equal(FakeSocket.all.length, 0);
    assert.deepEqual(errors, ['down', 'down', 'down']);
  });

  test('a token function that never settles times out as a failed attempt', async () => {
    let n = 0;
    const c = fakeClient({ timeout: 1000, token: () => (++n === 1 ? new Promise(() => {}) : 'late-ok') });
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    await waitUntil(() => FakeSocket.all.length === 1, 3000);
    assert.deepEqual(errors, ['timeout']);
    assert.equal(FakeSocket.last().url, 'ws://fake/ws?token=late-ok');
    c.disconnect();
  });
});
