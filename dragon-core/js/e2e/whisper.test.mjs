// End-to-end: the Whisper chat example (examples/whisper) in two headless Chromium pages,
// alice (staff) and bob, on the real server binary with a fresh SQLite file and the demo data
// (WHISPER_DEMO=1: alice/alice-pass staff, bob/bob-pass, rooms lobby and staff). Messages,
// edits and deletions reach the other page within a second; presence shows who is here and
// who is typing; bob never sees the staff room; a reload stays signed in, Log out forgets it.
// Screenshots go to artifacts/whisper-*.png.
//
// $WHISPER_BIN: the whisper binary (`cargo build -p whisper`; e.g. <repo>/target/debug/whisper).
// Required: the test fails, rather than skips, without it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Dragon, WebSocket, CHROMIUM_ARGS, ExampleServer, REPO_ROOT, postJson, sleep } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const LIVE_MS = 1000; // "appears in the other page within a second"
const TYPING_IDLE_MS = 2000; // the page stops "typing" after 2 s without input

/** Waits until fn(arg) is true in the page; the milliseconds it took. Fails after `timeout`. */
async function within(page, what, timeout, fn, arg) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 20 });
  } catch {
    throw new Error(`${what}: not within ${timeout} ms`);
  }
  return Date.now() - t0;
}

// ---- read in the page (each function is sent to the page alone: no references outside it) ----

/** [[author, text, edited], ...] of the messages shown, top to bottom. */
function shownMessages() {
  return [...document.querySelectorAll('#messages li[data-message-id]')].map((li) => {
    const edited = li.querySelector('.edited');
    return [
      li.querySelector('.author').textContent,
      li.querySelector('.text').textContent,
      !!edited && !edited.hidden && edited.textContent === '(edited)',
    ];
  });
}
function roomNamesShown() { return [...document.querySelectorAll('#rooms li[data-room-id] .room-name')].map((e) => e.textContent); }
function whoShown() { return [...document.querySelectorAll('#who li')].map((li) => li.dataset.username); }
const roomNames = (page) => page.evaluate(roomNamesShown);
const messages = (page) => page.evaluate(shownMessages);
const who = (page) => page.evaluate(whoShown);
const typingText = (page) => page.textContent('#typing');

/** Polls `read(page)` until it equals `want`; the milliseconds it took. Fails after `timeout`. */
async function waitShown(page, read, want, timeout, what) {
  const t0 = Date.now();
  const goal = JSON.stringify(want);
  let got;
  for (;;) {
    got = await page.evaluate(read);
    if (JSON.stringify(got) === goal) return Date.now() - t0;
    if (Date.now() - t0 > timeout) throw new Error(`${what} did not become ${goal} within ${timeout} ms; shown: ${JSON.stringify(got)}`);
    await sleep(15);
  }
}
const waitMessages = (page, want, timeout = LIVE_MS, what = 'messages') => waitShown(page, shownMessages, want, timeout, what);
const waitRooms = (page, want, timeout = LIVE_MS) => waitShown(page, roomNamesShown, want, timeout, 'rooms');
const waitWho = (page, want, timeout = LIVE_MS) => waitShown(page, whoShown, want, timeout, 'who is here');

/** The message row with exactly this text. */
const message = (page, text) => page.locator('#messages li[data-message-id]', { has: page.locator('.text', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) });
const roomLink = (page, name) => page.locator('#rooms li[data-room-id]', { has: page.locator('.room-name', { hasText: new RegExp(`^${name}$`) }) });

async function logIn(page, username, password) {
  await page.fill('#login-username', username);
  await page.fill('#login-password', password);
  await page.click('#login-button');
  await page.waitForSelector('#rooms li[data-room-id]', { timeout: 5000 });
}

async function openRoom(page, name) {
  await roomLink(page, name).click();
  await page.waitForSelector('#room-body:not([hidden])');
  await page.waitForFunction((n) => document.querySelector('#room-title').textContent.includes(n), name, { timeout: 2000 });
  await page.waitForSelector(`#rooms li.active[data-room-id]`);
}

async function send(page, text) {
  await page.fill('#message-input', text);
  await page.click('#send-button');
}

describe('whisper: chat rooms in two browser pages', () => {
  let server, browser, alice, bob;
  const problems = [];

  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`${name} pageerror: ${err.message}`));
    page.on('console', (msg) => {
      // a refused login shows up as a failed resource; script errors are problems
      if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(msg.text())) problems.push(`${name} console: ${msg.text()}`);
    });
    page.on('dialog', (d) => d.accept());
    await page.goto(server.httpUrl + '/');
    return page;
  };

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install -y chromium); refusing to skip`);
    server = new ExampleServer('whisper');
    await server.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    alice = await open('alice');
    bob = await open('bob');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (process.env.WHISPER_KEEP_LOG) console.log(server?.logTail(200));
    server?.cleanup();
  });

  test('the page, its files and the account endpoints are served', async () => {
    for (const [p, type] of [['/', /text\/html/], ['/static/app.js', /javascript/], ['/static/style.css', /text\/css/], ['/dragon/dragon.js', /javascript/]]) {
      const res = await fetch(server.httpUrl + p);
      assert.equal(res.status, 200, `GET ${p}`);
      assert.match(res.headers.get('content-type') || '', type, `content-type of ${p}`);
    }
    const html = await (await fetch(server.httpUrl + '/')).text();
    assert.match(html, /\/dragon\/dragon\.js/);
    assert.match(html, /\/static\/app\.js/);

    const ok = await postJson(server, '/login', { username: 'alice', password: 'alice-pass' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(typeof ok.body.token, 'string');
    assert.deepEqual({ username: ok.body.user.username, staff: ok.body.user.staff }, { username: 'alice', staff: true });
    assert.equal(typeof ok.body.user.id, 'number');
    const wrong = await postJson(server, '/login', { username: 'alice', password: 'nope-nope' });
    assert.equal(wrong.status, 401, JSON.stringify(wrong.body));
    assert.equal(typeof wrong.body.error, 'string');
    assert.equal((await postJson(server, '/signup', { username: 'bob', password: 'another-pass' })).status, 409);
    assert.equal((await postJson(server, '/signup', { username: 'Not Valid', password: 'long-enough' })).status, 400);
    assert.equal((await postJson(server, '/signup', { username: 'shorty', password: '12345' })).status, 400);
  });

  test('alice and bob log in; bob does not see the staff room, alice does', async () => {
    // a wrong password is shown, and nothing is stored
    await bob.fill('#login-username', 'bob');
    await bob.fill('#login-password', 'wrong-password');
    await bob.click('#login-button');
    await bob.waitForSelector('#login-error:not([hidden])', { timeout: 3000 });
    assert.match(await bob.textContent('#login-error'), /wrong username or password/i);
    assert.equal(await bob.evaluate(() => localStorage.getItem('whisper-token')), null);

    await logIn(alice, 'alice', 'alice-pass');
    await logIn(bob, 'bob', 'bob-pass');
    await waitRooms(alice, ['lobby', 'staff'], 3000);
    await waitRooms(bob, ['lobby'], 3000);
    await sleep(200);
    assert.deepEqual(await roomNames(bob), ['lobby'], 'bob sees no staff-only room');
    assert.ok(!(await bob.textContent('#rooms')).includes('staff'), 'no "staff" anywhere in bob\'s room list');
    assert.ok((await alice.textContent('#rooms')).includes('staff'));
    // only staff get the new-room form
    assert.equal(await alice.isVisible('#new-room-form'), true);
    assert.equal(await bob.isVisible('#new-room-form'), false);
    assert.equal(await alice.isVisible('#logout'), true);
    assert.deepEqual(problems, []);
  });

  test('messages sent in one page show in the other within a second; own ones are marked', async () => {
    await openRoom(alice, 'lobby');
    await openRoom(bob, 'lobby');
    await waitMessages(alice, [], 2000);
    await waitMessages(bob, [], 2000);
    // presence is in before the first message goes out
    await waitWho(alice, ['alice', 'bob'], 3000);

    await send(alice, 'Hello from alice');
    const ms1 = await waitMessages(bob, [['alice', 'Hello from alice', false]], LIVE_MS, 'alice -> bob');
    await waitMessages(alice, [['alice', 'Hello from alice', false]]);
    assert.equal(await alice.inputValue('#message-input'), '', 'the input is cleared after sending');

    await send(bob, 'Hi alice, bob here');
    const ms2 = await waitMessages(alice, [['alice', 'Hello from alice', false], ['bob', 'Hi alice, bob here', false]], LIVE_MS, 'bob -> alice');
    await waitMessages(bob, [['alice', 'Hello from alice', false], ['bob', 'Hi alice, bob here', false]]);
    console.log(`# alice -> bob ${ms1} ms, bob -> alice ${ms2} ms`);

    // own messages: class `own`, Edit and Delete; others' messages: neither (staff may delete)
    assert.match(await message(bob, 'Hi alice, bob here').getAttribute('class'), /\bown\b/);
    assert.doesNotMatch(await message(bob, 'Hello from alice').getAttribute('class'), /\bown\b/);
    assert.match(await message(alice, 'Hello from alice').getAttribute('class'), /\bown\b/);
    assert.doesNotMatch(await message(alice, 'Hi alice, bob here').getAttribute('class'), /\bown\b/);
    assert.equal(await message(bob, 'Hi alice, bob here').locator('.edit').isVisible(), true);
    assert.equal(await message(bob, 'Hi alice, bob here').locator('.delete').isVisible(), true);
    assert.equal(await message(bob, 'Hello from alice').locator('.edit').isVisible(), false);
    assert.equal(await message(bob, 'Hello from alice').locator('.delete').isVisible(), false);
    assert.equal(await message(alice, 'Hi alice, bob here').locator('.edit').isVisible(), false);
    assert.equal(await message(alice, 'Hi alice, bob here').locator('.delete').isVisible(), true, 'staff may delete any message');

    // the server agrees: bob may not change alice's message
    const refused = await bob.evaluate(async () => {
      const c = window.whisperClient;
      const { items } = await c.getList('message', {}, { order_by: ['id'] });
      const theirs = items.find((m) => m.user === 'alice');
      const err = await c.update('message', theirs.id, { text: 'hijacked' }).catch((e) => e);
      return err && err.code;
    });
    assert.equal(refused, 'forbidden');
    await sleep(200);
    assert.deepEqual(await messages(alice), [['alice', 'Hello from alice', false], ['bob', 'Hi alice, bob here', false]]);
    assert.deepEqual(problems, []);
  });

  test('bob edits and deletes his message: alice sees the new text, "(edited)", then nothing', async () => {
    await message(bob, 'Hi alice, bob here').locator('.edit').click();
    await bob.fill('#messages .edit-input', 'Hi alice, it is bob');
    await bob.press('#messages .edit-input', 'Enter');
    const ms1 = await waitMessages(alice, [['alice', 'Hello from alice', false], ['bob', 'Hi alice, it is bob', true]], LIVE_MS, 'the edit in alice\'s page');
    await waitMessages(bob, [['alice', 'Hello from alice', false], ['bob', 'Hi alice, it is bob', true]]);
    assert.equal(await message(alice, 'Hi alice, it is bob').locator('.edited').textContent(), '(edited)');
    assert.equal(await bob.locator('#messages .edit-input').count(), 0, 'the edit field is gone after saving');

    await message(bob, 'Hi alice, it is bob').locator('.delete').click();
    const ms2 = await waitMessages(alice, [['alice', 'Hello from alice', false]], LIVE_MS, 'the deletion in alice\'s page');
    await waitMessages(bob, [['alice', 'Hello from alice', false]]);
    console.log(`# edit ${ms1} ms, delete ${ms2} ms`);
    assert.deepEqual(problems, []);
  });

  test('bob types: alice sees "bob is typing" and bob in who is here; it stops after 2 s idle or on send', async () => {
    assert.deepEqual(await who(alice), ['alice', 'bob']);
    await waitWho(bob, ['alice', 'bob']);
    assert.equal((await typingText(alice)).trim(), '');

    await bob.click('#message-input');
    await bob.keyboard.type('are you th', { delay: 20 });
    const lastKey = Date.now();
    const ms = await within(alice, '"bob is typing" in alice\'s page', LIVE_MS,
      () => /\bbob is typing/.test(document.querySelector('#typing').textContent));
    console.log(`# typing shown after ${ms} ms`);
    assert.equal((await typingText(bob)).trim(), '', 'bob does not see himself typing');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await alice.screenshot({ path: path.join(ARTIFACTS, 'whisper-typing.png') });

    // idle for 2 s: the indicator goes away (within the idle time plus a second)
    await within(alice, 'the typing indicator to clear after bob stopped', TYPING_IDLE_MS + LIVE_MS,
      () => document.querySelector('#typing').textContent.trim() === '');
    const idle = Date.now() - lastKey;
    assert.ok(idle >= TYPING_IDLE_MS - 300, `cleared ${idle} ms after the last key: too early for a 2 s idle`);

    // typing again, then sending: cleared at once, the message arrives
    await bob.keyboard.type('ere?', { delay: 20 });
    await within(alice, '"bob is typing" again', LIVE_MS, () => /\bbob is typing/.test(document.querySelector('#typing').textContent));
    await bob.click('#send-button');
    await within(alice, 'the typing indicator to clear on send', LIVE_MS, () => document.querySelector('#typing').textContent.trim() === '');
    await waitMessages(alice, [['alice', 'Hello from alice', false], ['bob', 'are you there?', false]]);
    assert.deepEqual(problems, []);
  });

  test('staff create rooms live; a staff-only one never reaches bob', async () => {
    await alice.fill('#new-room-name', 'random');
    await alice.click('#new-room-button');
    await waitRooms(alice, ['lobby', 'random', 'staff']);
    await waitRooms(bob, ['lobby', 'random']);
    await alice.waitForFunction(() => document.querySelector('#room-title').textContent.includes('random'));

    await alice.fill('#new-room-name', 'secret');
    await alice.check('#new-room-staff-only');
    await alice.click('#new-room-button');
    await waitRooms(alice, ['lobby', 'random', 'secret', 'staff']);
    await sleep(500);
    assert.deepEqual(await roomNames(bob), ['lobby', 'random']);
    const bobSees = await bob.evaluate(async () => (await window.whisperClient.getList('room', {})).items.map((r) => r.name).sort());
    assert.deepEqual(bobSees, ['lobby', 'random']);
    // bob's attempt to create a room is refused
    const code = await bob.evaluate(() => window.whisperClient.create('room', { name: 'mine', staff_only: false }).then(() => 'created', (e) => e.code));
    assert.equal(code, 'forbidden');
    await openRoom(alice, 'lobby');
    await waitMessages(alice, [['alice', 'Hello from alice', false], ['bob', 'are you there?', false]], 3000);
    assert.deepEqual(problems, []);
  });

  test('a new user signs up and gets the history; older pages load on demand', async () => {
    // 60 more messages in a new room, from alice's own connection (node client)
    const { body: { token } } = await postJson(server, '/login', { username: 'alice', password: 'alice-pass' });
    const node = new Dragon({ url: server.url, WebSocket, token, timeout: 5000 });
    await node.ready();
    const room = await node.create('room', { name: 'busy', staff_only: false });
    for (let i = 1; i <= 60; i++) await node.create('message', { room_id: room.id, text: `line ${i}` });
    node.disconnect();

    const carol = await open('carol');
    try {
      await carol.fill('#login-username', 'bob');
      await carol.fill('#login-password', 'whatever-pass');
      await carol.click('#signup-button');
      await carol.waitForSelector('#login-error:not([hidden])', { timeout: 3000 });
      assert.match(await carol.textContent('#login-error'), /taken/);

      await carol.fill('#login-username', 'carol');
      await carol.fill('#login-password', 'carol-pass');
      await carol.click('#signup-button');
      await carol.waitForSelector('#rooms li[data-room-id]', { timeout: 5000 });
      await waitRooms(carol, ['busy', 'lobby', 'random'], 3000);
      await openRoom(carol, 'lobby');
      await waitMessages(carol, [['alice', 'Hello from alice', false], ['bob', 'are you there?', false]], 3000);
      await waitWho(alice, ['alice', 'bob', 'carol'], 3000);

      await openRoom(carol, 'busy');
      const lines = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => ['alice', `line ${from + i}`, false]);
      await waitMessages(carol, lines(11, 60), 3000, 'the newest 50 of 60, oldest at the top');
      // carol left the lobby when she opened another room
      await waitWho(alice, ['alice', 'bob'], 2000);
      await carol.waitForSelector('#load-older:not([hidden])');
      await carol.click('#load-older');
      await waitMessages(carol, lines(1, 60), 3000, 'all 60 after loading older ones');
      assert.equal(await carol.isVisible('#load-older'), false);
      assert.deepEqual(problems, []);
    } finally {
      await carol.context().close();
    }
  });

  test('a reload stays logged in; Log out forgets the token and leaves the room', async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await alice.screenshot({ path: path.join(ARTIFACTS, 'whisper-alice.png') });
    await bob.screenshot({ path: path.join(ARTIFACTS, 'whisper-bob.png') });

    await bob.reload();
    await bob.waitForSelector('#rooms li[data-room-id]', { timeout: 5000 });
    assert.equal(await bob.isVisible('#login-form'), false, 'still logged in after a reload');
    await waitRooms(bob, ['busy', 'lobby', 'random'], 3000);
    // the room in the address (#room-<id>) is open again
    await waitMessages(bob, [['alice', 'Hello from alice', false], ['bob', 'are you there?', false]], 3000);
    await waitWho(alice, ['alice', 'bob'], 3000);

    await bob.click('#logout');
    await bob.waitForSelector('#login-form', { state: 'visible', timeout: 2000 });
    assert.equal(await bob.evaluate(() => localStorage.getItem('whisper-token')), null);
    await waitWho(alice, ['alice'], 2000);
    await bob.reload();
    await bob.waitForSelector('#login-form', { state: 'visible', timeout: 2000 });
    assert.equal(await bob.locator('#rooms li[data-room-id]').count(), 0);
    assert.deepEqual(problems, []);
  });
});
