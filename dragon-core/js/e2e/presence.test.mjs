// End-to-end presence: two headless Chromium pages on the same todo list. When page A puts the
// focus in an item's edit field, page B marks the item "being edited" within a second; when
// A blurs, or the tab closes, B clears it within two seconds.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, client, REPO_ROOT, CHROMIUM_ARGS } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');

const item = (page, text) => page.locator('[data-testid="item"]', { has: page.locator('[data-testid="item-text"]', { hasText: new RegExp(`^${text}$`) }) });

/** Waits until fn(page) holds, measuring how long it took; fails after `timeout` ms. */
async function within(page, what, timeout, fn, arg) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 20 });
  } catch {
    throw new Error(`${what}: not within ${timeout} ms`);
  }
  return Date.now() - t0;
}

/** In the page: the editing mark of the item with this text. */
function editingOn(text) {
  const li = [...document.querySelectorAll('[data-testid="item"]')].find((x) => x.querySelector('[data-testid="item-text"]')?.textContent === text);
  if (!li) return null;
  return {
    by: li.dataset.editingBy || null,
    badge: li.querySelector('[data-testid="item-editing"]')?.textContent || null,
    chips: [...li.querySelectorAll('[data-testid="presence-chip"]')].map((c) => c.getAttribute('aria-label')),
  };
}

describe('presence in the todo-app: who is viewing, who is editing', () => {
  let server, browser;
  const problems = [];
  let listId;

  /** A page on the party list; `context` to share one (tabs of one browser), `guest` to name it. */
  const open = async (name, { guest, context, setup } = {}) => {
    if (!context) {
      context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
      if (guest) await context.addInitScript((g) => { if (!localStorage.getItem('dragon-todos-guest')) localStorage.setItem('dragon-todos-guest', JSON.stringify(g)); }, guest);
    }
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`${name} pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(msg.text())) problems.push(`${name} console: ${msg.text()}`);
    });
    if (setup) await setup(page);
    await page.goto(`${server.httpUrl}/#list-${listId}`);
    await page.waitForSelector('[data-testid="connection-status"][data-state="connected"]');
    await page.waitForSelector('[data-testid="item"]');
    return page;
  };

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install -y chromium); refusing to skip`);
    server = await startServer();
    const w = client(server);
    const list = await w.create('todo-list', { name: 'Party' });
    listId = list.id;
    let position = 0;
    for (const text of ['Balloons', 'Cake', 'Candles', 'Music']) await w.create('todo-item', { list_id: list.id, text, position: ++position });
    w.disconnect();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    server?.cleanup();
  });

  test('A edits an item: B shows "being edited by A" within 1 s; closing A clears it within 2 s', async () => {
    const pageA = await open('A', { guest: { id: 'guest-ann', name: 'Ann Otter' } });
    const pageB = await open('B', { guest: { id: 'guest-bob', name: 'Bob Badger' } });
    assert.equal(await pageA.inputValue('[data-testid="guest-name"]'), 'Ann Otter');

    // both see each other as viewers of the list and of every item
    await within(pageB, 'B sees A on the list', 2000, () => document.querySelector('[data-testid="list-viewers"]')?.getAttribute('aria-label') === 'Also viewing this list: Ann Otter');
    assert.equal(await pageB.textContent('[data-testid="list-viewers-text"]'), 'Ann Otter is here too');
    await within(pageA, 'A sees B on the items', 2000, () => document.querySelectorAll('[data-testid="item"] [data-testid="presence-chip"]').length === 4);
    await within(pageB, 'B sees A on the items', 2000, () => document.querySelectorAll('[data-testid="item"] [data-testid="presence-chip"]').length === 4);
    assert.deepEqual(await pageB.evaluate(editingOn, 'Cake'), { by: null, badge: null, chips: ['Ann Otter is viewing this item'] });
    assert.equal(await pageB.locator('[data-testid="item"] [data-testid="presence-chip"]').first().textContent(), 'AO');

    // A puts the focus in the edit field of "Cake"
    await item(pageA, 'Cake').locator('[data-testid="item-edit"]').click();
    await pageA.waitForSelector('[data-testid="item-edit-input"]');
    assert.equal(await pageA.evaluate(() => document.activeElement?.dataset.testid), 'item-edit-input');
    const shown = await within(pageB, 'B shows Cake being edited by Ann Otter', 1000, (t) => {
      const li = [...document.querySelectorAll('[data-testid="item"]')].find((x) => x.querySelector('[data-testid="item-text"]')?.textContent === t);
      return li && li.dataset.editingBy === 'Ann Otter' && !!li.querySelector('[data-testid="item-editing"]');
    }, 'Cake');
    assert.deepEqual(await pageB.evaluate(editingOn, 'Cake'), { by: 'Ann Otter', badge: '✎Ann Otter is editing', chips: ['Ann Otter is editing this item'] });
    assert.equal(await pageB.locator('[data-testid="item-editing"]').count(), 1, 'only Cake is marked');
    assert.equal(await pageA.locator('[data-testid="item-editing"]').count(), 0, 'A does not mark its own edit');
    // announced politely for screen readers
    await within(pageB, 'B announces it', 1000, () => document.querySelector('[data-testid="presence-announcer"]').textContent.includes('Ann Otter is editing “Cake”'));
    assert.equal(await pageB.getAttribute('[data-testid="presence-announcer"]', 'aria-live'), 'polite');

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await pageB.mouse.move(0, 0);
    await pageB.screenshot({ path: path.join(ARTIFACTS, 'todo-app-presence-editing.png'), fullPage: true });
    await pageA.screenshot({ path: path.join(ARTIFACTS, 'todo-app-presence-editor.png'), fullPage: true });

    // blur (Escape) clears it; focus on another item marks that one
    await pageA.press('[data-testid="item-edit-input"]', 'Escape');
    await within(pageB, 'B clears the mark after A blurs', 2000, (t) => {
      const li = [...document.querySelectorAll('[data-testid="item"]')].find((x) => x.querySelector('[data-testid="item-text"]')?.textContent === t);
      return li && !li.dataset.editingBy && !li.querySelector('[data-testid="item-editing"]');
    }, 'Cake');
    await within(pageB, 'B announces the stop', 1000, () => document.querySelector('[data-testid="presence-announcer"]').textContent.includes('Ann Otter stopped editing “Cake”'));
    await item(pageA, 'Music').locator('[data-testid="item-text"]').dblclick();
    await within(pageB, 'B shows Music being edited', 1000, (t) => {
      const li = [...document.querySelectorAll('[data-testid="item"]')].find((x) => x.querySelector('[data-testid="item-text"]')?.textContent === t);
      return li && li.dataset.editingBy === 'Ann Otter';
    }, 'Music');

    // A's tab closes while editing: B clears the mark and A's chips
    await pageA.context().close();
    const cleared = await within(pageB, 'B clears the mark after A closed', 2000, () =>
      !document.querySelector('[data-testid="item-editing"]') && !document.querySelector('[data-testid="item"] [data-testid="presence-chip"]') &&
      document.querySelector('[data-testid="list-viewers"]').hidden);
    assert.ok(shown <= 1000 && cleared <= 2000, `shown after ${shown} ms, cleared after ${cleared} ms`);
    assert.deepEqual(problems, []);
    await pageB.context().close();
  });

  test('two tabs of one guest show once; a rename reaches the others and the other tab', async () => {
    const tab1 = await open('tab1', { guest: { id: 'guest-dee', name: 'Dee' } });
    const tab2 = await open('tab2', { context: tab1.context() });
    const other = await open('other', { guest: { id: 'guest-cy', name: 'Cy Seal' } });
    const chipsOf = (page, text) => page.evaluate(editingOn, text).then((x) => x && x.chips);
    await within(other, "Dee's two tabs as one chip", 2000, () => [...document.querySelectorAll('[data-testid="item"]')]
      .every((li) => li.querySelectorAll('[data-testid="presence-chip"]').length === 1));
    assert.deepEqual(await chipsOf(other, 'Balloons'), ['Dee is viewing this item']);
    await within(tab1, 'tab 1 sees Cy and its other tab', 2000, () => document.querySelectorAll('[data-testid="item"]:first-child [data-testid="presence-chip"]').length === 2);
    assert.deepEqual((await chipsOf(tab1, 'Balloons')).sort(), ['Cy Seal is viewing this item', 'You are viewing this item in another tab'].sort());

    await tab1.fill('[data-testid="guest-name"]', 'Dee Puffin');
    await tab1.press('[data-testid="guest-name"]', 'Enter');
    await within(other, 'the rename reaches the other guest', 2000, () => [...document.querySelectorAll('[data-testid="item"] [data-testid="presence-chip"]')]
      .every((c) => c.getAttribute('aria-label') === 'Dee Puffin is viewing this item'));
    await within(tab2, 'and the other tab of the same browser', 2000, () => document.querySelector('[data-testid="guest-name"]').value === 'Dee Puffin');
    assert.deepEqual(problems, []);
    for (const p of [tab1, other]) await p.context().close();
  });

  test('the page keeps working when presence fails', async () => {
    // presence is refused by the server (the app asks on a route without presence): unknown_verb
    const broken = await open('broken', {
      guest: { id: 'guest-eve', name: 'Eve' },
      setup: (page) => page.route('**/dragon/dragon.js', async (route) => {
        const res = await route.fetch();
        const body = (await res.text()) + `
;(function () {
  var P = dragon.Dragon.prototype, join = P.presence, watch = P.watchPresence;
  P.presence = function (route, key, state, o) { return join.call(this, 'todo-list', key, state, o); };
  P.watchPresence = function (route, key, o) { return watch.call(this, 'todo-list', key, o); };
})();`;
        await route.fulfill({ response: res, body });
      }),
    });
    const warnings = [];
    broken.on('console', (msg) => { if (msg.type() === 'warning') warnings.push(msg.text()); });
    await broken.waitForFunction(() => true);
    await broken.fill('[data-testid="new-item-input"]', 'Napkins');
    await broken.press('[data-testid="new-item-input"]', 'Enter');
    await broken.waitForFunction(() => [...document.querySelectorAll('[data-testid="item-text"]')].some((e) => e.textContent === 'Napkins'));
    await item(broken, 'Napkins').locator('[data-testid="item-edit"]').click();
    await broken.fill('[data-testid="item-edit-input"]', 'Paper napkins');
    await broken.press('[data-testid="item-edit-input"]', 'Enter');
    await broken.waitForFunction(() => [...document.querySelectorAll('[data-testid="item-text"]')].some((e) => e.textContent === 'Paper napkins'));
    assert.equal(await broken.isVisible('[data-testid="error"]'), false, 'no error shown for presence');
    assert.deepEqual(problems, [], 'no page errors');
    await broken.context().close();
  });
});
