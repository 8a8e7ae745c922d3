// End-to-end: two headless Chromium pages on the real todo-app server stay in step, and both
// recover (without reloading) when the server process is restarted under them.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, client, REPO_ROOT, waitFor } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const LIVE_MS = 1000; // "appears in the other page within a second"

const itemTexts = (page) => page.$$eval('[data-testid="item"] [data-testid="item-text"]', (els) => els.map((e) => e.textContent));
const listNames = (page) => page.$$eval('[data-testid="list-select"]', (els) => els.map((e) => e.textContent));

/** Wait until the page's items (text + done, in order) equal `want` ([[text, done], ...]). */
async function waitItems(page, want, timeout = LIVE_MS) {
  try {
    await page.waitForFunction((w) => {
      const got = [...document.querySelectorAll('[data-testid="item"]')].map((li) => [
        li.querySelector('[data-testid="item-text"]').textContent,
        li.dataset.done === 'true' && li.querySelector('[data-testid="item-toggle"]').checked,
      ]);
      return JSON.stringify(got) === JSON.stringify(w);
    }, want, { timeout, polling: 25 });
  } catch (err) {
    throw new Error(`items did not become ${JSON.stringify(want)} within ${timeout} ms; got ${JSON.stringify(await itemTexts(page))}`);
  }
}

async function waitLists(page, want, timeout = LIVE_MS) {
  try {
    await page.waitForFunction((w) => JSON.stringify([...document.querySelectorAll('[data-testid="list-select"]')].map((e) => e.textContent)) === JSON.stringify(w), want, { timeout, polling: 25 });
  } catch (err) {
    throw new Error(`lists did not become ${JSON.stringify(want)} within ${timeout} ms; got ${JSON.stringify(await listNames(page))}`);
  }
}

const stateOf = (page) => page.getAttribute('[data-testid="connection-status"]', 'data-state');
const waitState = (page, state, timeout = 5000) =>
  page.waitForSelector(`[data-testid="connection-status"][data-state="${state}"]`, { timeout });
const item = (page, text) => page.locator('[data-testid="item"]', { has: page.locator('[data-testid="item-text"]', { hasText: new RegExp(`^${text}$`) }) });

describe('todo-app in two browser pages', () => {
  let server, browser, pageA, pageB;
  const problems = [];

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install -y chromium); refusing to skip`);
    server = await startServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const open = async (name) => {
      const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
      const page = await context.newPage();
      page.on('pageerror', (err) => problems.push(`${name} pageerror: ${err.message}`));
      page.on('console', (msg) => {
        // resource errors while the server is down are expected; script errors are not
        if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(msg.text())) problems.push(`${name} console: ${msg.text()}`);
      });
      page.on('dialog', (d) => d.accept());
      return page;
    };
    pageA = await open('A');
    pageB = await open('B');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    server?.cleanup();
  });

  test('the page is served with the client and connects', async () => {
    for (const p of ['/dragon/dragon.js', '/dragon/dragon.mjs', '/dragon/dragon.d.ts', '/static/app.js', '/static/style.css', '/']) {
      const res = await fetch(server.httpUrl + p);
      assert.equal(res.status, 200, p);
    }
    const js = await (await fetch(server.httpUrl + '/dragon/dragon.js')).text();
    assert.match(js, /globalThis\.dragon|root\.dragon = api/);
    await pageA.goto(server.httpUrl + '/');
    await waitState(pageA, 'connected');
    assert.equal(await pageA.textContent('[data-testid="connection-text"]'), 'Connected');
    assert.equal(await pageA.getAttribute('[data-testid="connection-status"]', 'aria-live'), 'polite');
    // labels for the form fields
    assert.equal(await pageA.locator('label[for="new-list-input"]').count(), 1);
  });

  test('items added, edited, checked and deleted in one page appear in the other within a second', async () => {
    await pageA.fill('[data-testid="new-list-input"]', 'Groceries');
    await pageA.click('[data-testid="new-list-submit"]');
    await waitLists(pageA, ['Groceries']);
    await pageA.waitForFunction(() => /^#list-\d+$/.test(location.hash));
    await pageB.goto(server.httpUrl + '/');
    await waitState(pageB, 'connected');
    await waitLists(pageB, ['Groceries']);
    await pageB.click('[data-testid="list-select"] >> text=Groceries');
    await pageB.waitForSelector('[data-testid="new-item-form"]:not([hidden])');
    assert.equal(await pageB.textContent('[data-testid="current-list-name"]'), 'Groceries');

    // add in A, see in B
    for (const t of ['Milk', 'Bread', 'Eggs']) {
      await pageA.fill('[data-testid="new-item-input"]', t);
      await pageA.press('[data-testid="new-item-input"]', 'Enter');
      await waitItems(pageA, [['Milk', false], ['Bread', false], ['Eggs', false]].slice(0, ['Milk', 'Bread', 'Eggs'].indexOf(t) + 1));
    }
    await waitItems(pageB, [['Milk', false], ['Bread', false], ['Eggs', false]]);

    // inline edit in A
    await item(pageA, 'Milk').locator('[data-testid="item-edit"]').click();
    await pageA.fill('[data-testid="item-edit-input"]', 'Oat milk');
    await pageA.press('[data-testid="item-edit-input"]', 'Enter');
    await waitItems(pageB, [['Oat milk', false], ['Bread', false], ['Eggs', false]]);

    // check in B, see in A
    await item(pageB, 'Bread').locator('[data-testid="item-toggle"]').check();
    await waitItems(pageA, [['Oat milk', false], ['Bread', true], ['Eggs', false]]);
    assert.equal(await pageA.textContent('[data-testid="items-left"]'), '2 of 3 left');

    // edit by double-click in B, escape cancels, enter saves
    await item(pageB, 'Eggs').locator('[data-testid="item-text"]').dblclick();
    await pageB.fill('[data-testid="item-edit-input"]', 'nope');
    await pageB.press('[data-testid="item-edit-input"]', 'Escape');
    await item(pageB, 'Eggs').locator('[data-testid="item-text"]').dblclick();
    await pageB.fill('[data-testid="item-edit-input"]', 'A dozen eggs');
    await pageB.press('[data-testid="item-edit-input"]', 'Enter');
    await waitItems(pageA, [['Oat milk', false], ['Bread', true], ['A dozen eggs', false]]);

    // delete in A, gone in B
    await item(pageA, 'Bread').locator('[data-testid="item-delete"]').click();
    await waitItems(pageB, [['Oat milk', false], ['A dozen eggs', false]]);

    // a validation error is shown, not swallowed
    await item(pageA, 'Oat milk').locator('[data-testid="item-edit"]').click();
    await pageA.fill('[data-testid="item-edit-input"]', '');
    await pageA.press('[data-testid="item-edit-input"]', 'Enter');
    await pageA.waitForSelector('[data-testid="error"]:not([hidden])', { timeout: 2000 });
    assert.match(await pageA.textContent('[data-testid="error-text"]'), /text/);
    await waitItems(pageA, [['Oat milk', false], ['A dozen eggs', false]]);

    // a second list made in B shows up in A; deleting it in A removes it from B
    await pageB.fill('[data-testid="new-list-input"]', 'Errands');
    await pageB.click('[data-testid="new-list-submit"]');
    await waitLists(pageA, ['Errands', 'Groceries']);
    await pageB.waitForFunction(() => document.querySelector('[data-testid="current-list-name"]').textContent === 'Errands');
    await pageB.fill('[data-testid="new-item-input"]', 'Post office');
    await pageB.press('[data-testid="new-item-input"]', 'Enter');
    await waitItems(pageB, [['Post office', false]]);
    await pageA.locator('[data-testid="list"]', { hasText: 'Errands' }).locator('[data-testid="list-delete"]').click();
    await waitLists(pageB, ['Groceries']);
    // B was looking at the deleted list: it moves away instead of showing stale items
    await pageB.click('[data-testid="list-select"] >> text=Groceries');
    await waitItems(pageB, [['Oat milk', false], ['A dozen eggs', false]]);
    assert.deepEqual(problems, []);
  });

  test('the server restarts under both pages: they recover without reloading and show what changed meanwhile', async () => {
    // mark the documents: a reload would lose the marks
    for (const p of [pageA, pageB]) await p.evaluate(() => { window.__noReload = 'still here'; });
    const node = client(server);
    const { items: [groceries] } = await node.getList('todo-list', { name: 'Groceries' });
    const rows = (await node.getList('todo-item', { list_id: groceries.id }, { order_by: ['position'] })).items;
    node.disconnect();

    await server.kill();
    await Promise.all([pageA, pageB].map((p) => p.waitForFunction(
      () => document.querySelector('[data-testid="connection-status"]').dataset.state !== 'connected', null, { timeout: 5000 })));
    assert.match(await stateOf(pageA), /^(reconnecting|offline)$/);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await pageA.screenshot({ path: path.join(ARTIFACTS, 'todo-app-reconnecting.png') });
    assert.match(await pageA.textContent('[data-testid="connection-text"]'), /Reconnecting|Offline/);
    await new Promise((r) => setTimeout(r, 1500)); // stay down a moment

    await server.start();
    // changes made right after the restart, most likely before the pages are back
    const w = client(server);
    await w.ready();
    const oat = rows.find((r) => r.text === 'Oat milk');
    const eggs = rows.find((r) => r.text === 'A dozen eggs');
    await w.update('todo-item', oat.id, { text: 'Soy milk', done: true });
    await w.delete('todo-item', eggs.id);
    await w.create('todo-item', { list_id: groceries.id, text: 'Made while you were away', position: 10 });
    await w.create('todo-list', { name: 'Appeared meanwhile' });

    await Promise.all([waitState(pageA, 'connected', 20000), waitState(pageB, 'connected', 20000)]);
    const want = [['Soy milk', true], ['Made while you were away', false]];
    await waitItems(pageA, want, 3000);
    await waitItems(pageB, want, 3000);
    await waitLists(pageA, ['Appeared meanwhile', 'Groceries'], 3000);
    await waitLists(pageB, ['Appeared meanwhile', 'Groceries'], 3000);

    // and they are live again: page to page, and node to pages
    await pageB.fill('[data-testid="new-item-input"]', 'After the restart');
    await pageB.press('[data-testid="new-item-input"]', 'Enter');
    await waitItems(pageA, [...want, ['After the restart', false]]);
    await w.update('todo-item', oat.id, { done: false });
    await waitItems(pageA, [['Soy milk', false], ['Made while you were away', false], ['After the restart', false]]);
    await waitItems(pageB, [['Soy milk', false], ['Made while you were away', false], ['After the restart', false]]);
    w.disconnect();

    for (const p of [pageA, pageB]) assert.equal(await p.evaluate(() => window.__noReload), 'still here', 'no page reload');
    for (const p of [pageA, pageB]) {
      if (await p.isVisible('[data-testid="error"]')) await p.click('[data-testid="error-dismiss"]');
      await p.mouse.move(0, 0);
    }
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await pageA.screenshot({ path: path.join(ARTIFACTS, 'todo-app-page-a.png'), fullPage: true });
    await pageB.screenshot({ path: path.join(ARTIFACTS, 'todo-app-page-b.png'), fullPage: true });
    assert.deepEqual(problems, []);
  });

  test('the classic script works too: global dragon on a plain page', async () => {
    const page = await browser.newPage();
    await page.goto(server.httpUrl + '/healthz').catch(() => {});
    await page.setContent('<!doctype html><title>classic</title>');
    await page.addScriptTag({ url: server.httpUrl + '/dragon/dragon.js' });
    const result = await page.evaluate(async (url) => {
      const c = new window.dragon.Dragon({ url });
      await c.ready();
      const list = await c.create('todo-list', { name: 'from classic script' });
      const err = await c.getSingle('todo-list', -5).catch((e) => e);
      const l = c.liveList('todo-list', { id: list.id });
      await l.ready;
      c.disconnect();
      return { name: list.name, code: err.code, isError: err instanceof window.dragon.DragonError, items: l.items.length };
    }, server.url);
    assert.deepEqual(result, { name: 'from classic script', code: 'not_found', isError: true, items: 1 });
    await page.close();
  });
});
