// Shared harness for the client tests that run without a server: a scripted fake WebSocket (the
// test plays the server), a client wired to it, and small timing helpers. Not a test file itself.
import '../dragon.js';

const { Dragon } = globalThis.dragon;

export const tick = () => new Promise((r) => setTimeout(r, 0));
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export async function waitUntil(fn, timeout) {
  const end = Date.now() + timeout;
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(5);
  }
}

/** A scripted WebSocket: the test plays the server. */
export class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  static last() { return FakeSocket.all[FakeSocket.all.length - 1]; }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code, reason) { this.closed = { code, reason }; }
  // server side
  accept(hello = { protocol: 1, conn: 'c' + FakeSocket.all.length, user: null }) {
    this.onopen?.({});
    this.frame({ event: 'hello', data: hello });
  }
  frame(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
  drop(code = 1006) { this.onclose?.({ code, reason: '', wasClean: false }); }
  reply(req, data, meta) { this.frame(meta ? { id: req.id, ok: true, data, meta } : { id: req.id, ok: true, data }); }
  fail(req, code, message, details) { this.frame({ id: req.id, ok: false, error: { code, message, details } }); }
  take(pred = () => true) {
    const i = this.sent.findIndex(pred);
    if (i < 0) throw new Error('no such request; sent: ' + JSON.stringify(this.sent));
    return this.sent.splice(i, 1)[0];
  }
}

/** A client on a fresh FakeSocket list (`FakeSocket.last()` is its socket): quick backoff, no heartbeat. */
export function fakeClient(opts = {}) {
  FakeSocket.all = [];
  return new Dragon({ url: 'ws://fake/ws', WebSocket: FakeSocket, backoff: () => 5, heartbeat: 0, ...opts });
}
