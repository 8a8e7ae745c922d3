// Shared test harness (used by test/*.test.mjs and e2e/*.test.mjs): starts the REAL todo-app
// server binary on a free port with a fresh SQLite file, and gives node clients on it.
// Not a test file itself (node --test only picks *.test.mjs here).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import '../dragon.js';

export const { Dragon, DragonError, liveList } = globalThis.dragon;
export { WebSocket };

const here = path.dirname(fileURLToPath(import.meta.url));
export const JS_DIR = path.resolve(here, '..');
export const REPO_ROOT = path.resolve(JS_DIR, '..', '..');

/** The todo-app binary: $DRAGON_TODO_BIN, else $CARGO_TARGET_DIR/debug/todo-app, else <repo>/target/debug/todo-app. */
export function serverBinary() {
  if (process.env.DRAGON_TODO_BIN) return process.env.DRAGON_TODO_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug', process.platform === 'win32' ? 'todo-app.exe' : 'todo-app');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Flags for the system Chromium in the browser tests (never a downloaded browser). */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Poll fn() until it returns a truthy value (or a promise of one); reject after `timeout` ms. */
export async function waitFor(fn, { timeout = 5000, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(interval);
  }
}

function probeHello(port) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const done = (v) => { clearTimeout(t); try { ws.terminate(); } catch {} resolve(v); };
    const t = setTimeout(() => done(false), 1000);
    ws.on('message', (d) => {
      try { done(JSON.parse(String(d)).event === 'hello'); } catch { done(false); }
    });
    ws.on('error', () => done(false));
    ws.on('close', () => done(false));
  });
}

async function probe(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) });
    if (res.status === 200) return true;
  } catch {
    return false; // not listening yet
  }
  // Listening but /healthz is not 200: ready once the socket says hello.
  return probeHello(port);
}

/**
 * A todo-app server process. start() spawns it (same port and DB file on every start, so
 * restart() keeps data); stop() / kill() end it.
 */
export class TodoServer {
  constructor({ port, dir, dbFile } = {}) {
    this.dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'dragon-js-test-'));
    this.dbFile = dbFile || path.join(this.dir, 'todo.sqlite');
    this.port = port;
    this.proc = null;
    this.logFile = path.join(this.dir, 'server.log');
    this.starts = 0;
  }

  get url() { return `ws://127.0.0.1:${this.port}/ws`; }
  get httpUrl() { return `http://127.0.0.1:${this.port}`; }

  async start({ timeout = 30000 } = {}) {
    if (this.proc) throw new Error('server already running');
    const bin = serverBinary();
    if (!fs.existsSync(bin)) {
      throw new Error(`todo-app binary not found at ${bin}: run \`cargo build -p todo-app\` (scripts/test-js.sh does)`);
    }
    if (!this.port) this.port = await freePort();
    this.starts++;
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `\n===== start #${this.starts} on port ${this.port} =====\n`);
    const proc = spawn(bin, [], {
      env: {
        ...process.env,
        DRAGON_ADDR: `127.0.0.1:${this.port}`,
        DATABASE_URL: `sqlite://${this.dbFile}?mode=rwc`,
        RUST_LOG: process.env.RUST_LOG || 'info',
      },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.proc = proc;
    let exited = null;
    proc.once('exit', (code, signal) => { exited = { code, signal }; if (this.proc === proc) this.proc = null; });
    const deadline = Date.now() + timeout;
    for (;;) {
      if (exited) throw new Error(`todo-app exited during startup (${JSON.stringify(exited)}); log:\n${this.logTail()}`);
      if (await probe(this.port)) return this;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`todo-app did not become ready on port ${this.port} within ${timeout} ms; log:\n${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  logTail(n = 40) {
    try { return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-n).join('\n'); } catch { return '(no log)'; }
  }

  async _end(signal, grace = 5000) {
    const proc = this.proc;
    if (!proc) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch {} }, grace);
    await gone;
    clearTimeout(t);
    this.proc = null;
  }

  /** Graceful stop (SIGTERM; the server should close sockets with 1001). */
  stop() { return this._end('SIGTERM'); }
  /** Abrupt kill (SIGKILL): sockets just drop. */
  kill() { return this._end('SIGKILL'); }
  /**
   * Freeze / thaw the process (to provoke client timeouts). SIGSTOP takes effect a moment
   * after kill() returns, so pause() resolves only once every thread is stopped.
   */
  async pause() {
    const pid = this.proc.pid;
    this.proc.kill('SIGSTOP');
    const stopped = () => fs.readdirSync(`/proc/${pid}/task`).every((t) => {
      try { return /^[tT]$/.test(fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').split(') ').pop()[0]); } catch { return true; }
    });
    await waitFor(stopped, { timeout: 2000, interval: 2, message: 'the server to stop (SIGSTOP)' });
  }
  resume() { this.proc.kill('SIGCONT'); }

  async restart({ signal = 'SIGKILL', downFor = 0 } = {}) {
    await this._end(signal);
    if (downFor) await sleep(downFor);
    return this.start();
  }

  cleanup() {
    try { fs.rmSync(this.dir, { recursive: true, force: true }); } catch {}
  }
}

/** Start a fresh server (new temp dir, new DB, free port). */
export async function startServer(opts) {
  const s = new TodoServer(opts);
  await s.start();
  return s;
}

/** A node Dragon client on the server, with fast reconnection for tests. */
export function client(server, opts = {}) {
  return new Dragon({
    url: server.url,
    WebSocket,
    timeout: 5000,
    backoff: { initial: 50, max: 400, factor: 2, jitter: 0.3 },
    ...opts,
  });
}

/** Collects event frames; next(pred) waits for the first (not yet taken) matching one. */
export class Events {
  constructor() { this.frames = []; this.waiters = []; this.handler = (f) => this.push(f); }
  push(frame) {
    this.frames.push(frame);
    this.waiters = this.waiters.filter((w) => {
      if (w.pred(frame)) { this._take(frame); w.resolve(frame); return false; }
      return true;
    });
  }
  _take(frame) { (this.taken ||= new Set()).add(frame); }
  next(pred = () => true, timeout = 3000) {
    const hit = this.frames.find((f) => !(this.taken && this.taken.has(f)) && pred(f));
    if (hit) { this._take(hit); return Promise.resolve(hit); }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        if (this.waiters.includes(w)) {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`no matching event within ${timeout} ms; got: ${JSON.stringify(this.frames.slice(-5))}`));
        }
      }, timeout);
    });
  }
  /** assert nothing matching arrives within ms */
  async none(pred = () => true, ms = 300) {
    await sleep(ms);
    const hit = this.frames.find((f) => !(this.taken && this.taken.has(f)) && pred(f));
    if (hit) throw new Error(`unexpected event: ${JSON.stringify(hit)}`);
  }
}

/** Canonical sorted JSON of rows, for comparing a liveList with get_list. */
export function canon(rows) {
  return JSON.stringify([...rows].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
}

/** Fetch all rows of a route with a filter and order (all pages). */
export async function fetchAll(c, route, filter, order_by) {
  const out = [];
  for (let page = 1; ; page++) {
    const { items, meta } = await c.getList(route, filter, { order_by, page, per_page: 500 });
    out.push(...items);
    if (page >= (meta?.pages ?? 1) || items.length === 0) return out;
  }
}

/**
 * An example app's server process (`name`: whisper, liveblog): the binary from $<NAME>_BIN
 * (required: the test fails, never skips, without it), a free port, a fresh SQLite file in a
 * temp dir, and the demo data (<NAME>_DEMO=1).
 */
export class ExampleServer {
  constructor(name) {
    this.name = name;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-e2e-`));
    this.dbFile = path.join(this.dir, `${name}.sqlite`);
    this.logFile = path.join(this.dir, 'server.log');
    this.proc = null;
    this.port = null;
  }

  get httpUrl() { return `http://127.0.0.1:${this.port}`; }
  get url() { return `ws://127.0.0.1:${this.port}/ws`; }

  async start({ timeout = 30000 } = {}) {
    const NAME = this.name.toUpperCase();
    const bin = process.env[`${NAME}_BIN`];
    if (!bin) throw new Error(`${NAME}_BIN is not set: build the server (\`cargo build -p ${this.name}\`) and set ${NAME}_BIN=<repo>/target/debug/${this.name}; refusing to skip`);
    if (!fs.existsSync(bin)) throw new Error(`${NAME}_BIN=${bin} does not exist: run \`cargo build -p ${this.name}\`; refusing to skip`);
    this.port = await freePort();
    const log = fs.openSync(this.logFile, 'a');
    const proc = spawn(bin, [], {
      env: {
        ...process.env,
        DRAGON_ADDR: `127.0.0.1:${this.port}`,
        DATABASE_URL: `sqlite://${this.dbFile}`,
        [`${NAME}_DEMO`]: '1',
        RUST_LOG: process.env.RUST_LOG || 'info',
      },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.proc = proc;
    let exited = null;
    proc.once('exit', (code, signal) => { exited = { code, signal }; if (this.proc === proc) this.proc = null; });
    const deadline = Date.now() + timeout;
    for (;;) {
      if (exited) throw new Error(`${this.name} exited during startup (${JSON.stringify(exited)}); log:\n${this.logTail()}`);
      try {
        const res = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return this;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`${this.name} did not answer GET /healthz with 200 on port ${this.port} within ${timeout} ms; log:\n${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  logTail(n = 40) {
    try { return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-n).join('\n'); } catch { return '(no log)'; }
  }

  /** SIGTERM, then SIGKILL if it is still there after `grace` ms. */
  async stop(grace = 5000) {
    const proc = this.proc;
    if (!proc) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch {} }, grace);
    await gone;
    clearTimeout(t);
    this.proc = null;
  }

  cleanup() {
    try { fs.rmSync(this.dir, { recursive: true, force: true }); } catch {}
  }
}

/** POST a JSON body; {status, body} (body parsed when it is JSON). */
export async function postJson(server, p, body) {
  const res = await fetch(server.httpUrl + p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: res.status, body: json ?? text };
}
