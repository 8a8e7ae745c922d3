// End-to-end: the Liveblog example (examples/liveblog) in two headless Chromium pages, a
// reader on /blog?slug=news (no account) and the author ann on /author, on the real server
// binary with a fresh SQLite file and the demo data (LIVEBLOG_DEMO=1: ann/ann-pass staff, the
// blog `news`). A published post shows at the top of the reader's page within a second, an
// edit changes it in place, likes count up (coalesced) within two seconds, a deletion removes
// it; the front page lists the blog with its latest post. Screenshots go to
// artifacts/liveblog-*.png.
//
// $LIVEBLOG_BIN: the liveblog binary (`cargo build -p liveblog`; e.g. <repo>/target/debug/liveblog).
// Required: the test fails, rather than skips, without it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, ExampleServer, REPO_ROOT, postJson, sleep } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const LIVE_MS = 1000; // "appears in the other page within a second"
const LIKES_MS = 2000; // like counts are published coalesced (every 250 ms at most)


// ---- read in the page (each function is sent to the page alone: no references outside it) ----

/** [[title, body, updated, likes], ...] of the posts shown, top to bottom. */
function shownPosts() {
  return [...document.querySelectorAll('#posts li[data-post-id]')].map((li) => {
    const updated = li.querySelector('.updated');
    const body = li.querySelector('.body');
    return [
      li.querySelector('.title').textContent,
      body ? body.textContent : '',
      !!updated && !updated.hidden && updated.textContent === '(updated)',
      Number(li.querySelector('.likes').textContent.replace(/[^0-9]/g, '')),
    ];
  });
}
function shownBlogs() {
  return [...document.querySelectorAll('#blogs li[data-blog-id]')].map((li) => [
    li.querySelector('.blog-title').textContent,
    new URL(li.querySelector('a').href).pathname + new URL(li.querySelector('a').href).search,
    li.querySelector('.latest-title').textContent,
  ]);
}
const posts = (page) => page.evaluate(shownPosts);

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
const waitPosts = (page, want, timeout = LIVE_MS, what = 'posts') => waitShown(page, shownPosts, want, timeout, what);
const waitBlogs = (page, want, timeout = LIVE_MS) => waitShown(page, shownBlogs, want, timeout, 'blogs');

/** The post row with exactly this title. */
const postRow = (page, title) => page.locator('#posts li[data-post-id]', { has: page.locator('.title', { hasText: new RegExp(`^${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) });

async function logIn(page, username, password) {
  await page.fill('#login-username', username);
  await page.fill('#login-password', password);
  await page.click('#login-button');
  await page.waitForSelector('#author-view:not([hidden])', { timeout: 5000 });
  await page.waitForSelector('#blog-select option', { state: 'attached', timeout: 5000 });
}

async function publish(page, title, body) {
  await page.fill('#post-title', title);
  await page.fill('#post-body', body);
  await page.click('#publish-button');
}

describe('liveblog: an author publishes, a reader sees it live', () => {
  let server, browser, reader, author;
  const problems = [];

  const open = async (name, p) => {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`${name} pageerror: ${err.message}`));
    page.on('console', (msg) => {
      // a refused login shows up as a failed resource; script errors are problems
      if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(msg.text())) problems.push(`${name} console: ${msg.text()}`);
    });
    page.on('dialog', (d) => d.accept()); // "Delete ...?"
    await page.goto(server.httpUrl + p);
    return page;
  };

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install -y chromium); refusing to skip`);
    server = new ExampleServer('liveblog');
    await server.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    reader = await open('reader', '/blog?slug=news');
    author = await open('author', '/author');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (process.env.LIVEBLOG_KEEP_LOG) console.log(server?.logTail(200));
    server?.cleanup();
  });

  test('the pages, their files and login are served', async () => {
    for (const [p, type] of [['/', /text\/html/], ['/blog', /text\/html/], ['/author', /text\/html/], ['/static/liveblog.js', /javascript/], ['/static/style.css', /text\/css/], ['/dragon/dragon.js', /javascript/]]) {
      const res = await fetch(server.httpUrl + p);
      assert.equal(res.status, 200, `GET ${p}`);
      assert.match(res.headers.get('content-type') || '', type, `content-type of ${p}`);
    }
    for (const p of ['/', '/blog', '/author']) {
      const html = await (await fetch(server.httpUrl + p)).text();
      assert.match(html, /\/dragon\/dragon\.js/, `${p} loads dragon.js`);
      assert.match(html, /\/static\/liveblog\.js/, `${p} loads liveblog.js`);
      assert.match(html, /\/static\/style\.css/, `${p} loads style.css`);
    }
    const ok = await postJson(server, '/login', { username: 'ann', password: 'ann-pass' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(typeof ok.body.token, 'string');
    assert.deepEqual({ username: ok.body.user.username, staff: ok.body.user.staff }, { username: 'ann', staff: true });
    const wrong = await postJson(server, '/login', { username: 'ann', password: 'nope-nope' });
    assert.equal(wrong.status, 401, JSON.stringify(wrong.body));
  });

  test('the reader sees the empty news blog; the author logs in (a wrong password is shown)', async () => {
    await reader.waitForFunction(() => document.querySelector('#blog-title').textContent === 'News', null, { timeout: 5000 });
    await reader.waitForSelector('#posts-empty:not([hidden])', { timeout: 5000 });
    assert.deepEqual(await posts(reader), []);
    assert.equal(await reader.title(), 'News · Liveblog');

    await author.fill('#login-username', 'ann');
    await author.fill('#login-password', 'wrong-password');
    await author.click('#login-button');
    await author.waitForSelector('#login-error:not([hidden])', { timeout: 3000 });
    assert.match(await author.textContent('#login-error'), /wrong username or password/i);
    assert.equal(await author.evaluate(() => localStorage.getItem('liveblog-token')), null);

    await logIn(author, 'ann', 'ann-pass');
    assert.equal(typeof await author.evaluate(() => localStorage.getItem('liveblog-token')), 'string');
    assert.equal(await author.isVisible('#logout'), true);
    assert.match(await author.textContent('#me'), /ann/);
    assert.equal(await author.$eval('#blog-select', (s) => s.selectedOptions[0].textContent), 'News');
    assert.equal(await author.isVisible('#not-staff'), false, 'ann is an author');
    await author.waitForSelector('#posts-empty:not([hidden])', { timeout: 3000 });
    assert.deepEqual(problems, []);
  });

  test('published posts show at the top of the reader\'s page within a second', async () => {
    await publish(author, 'Doors open', 'The hall is filling up.');
    const ms1 = await waitPosts(reader, [['Doors open', 'The hall is filling up.', false, 0]], LIVE_MS, 'the first post in the reader\'s page');
    await waitPosts(author, [['Doors open', 'The hall is filling up.', false, 0]]);
    assert.equal(await author.inputValue('#post-title'), '', 'the form is cleared after publishing');
    assert.equal(await author.inputValue('#post-body'), '');

    // the body is text, never HTML
    const body = 'First results are in.\n<b>Not bold</b> & <img src=x onerror="window.pwned=1">';
    await publish(author, 'Results <soon>', body);
    const ms2 = await waitPosts(reader, [['Results <soon>', body, false, 0], ['Doors open', 'The hall is filling up.', false, 0]], LIVE_MS, 'the newest post at the top');
    await waitPosts(author, [['Results <soon>', body, false, 0], ['Doors open', 'The hall is filling up.', false, 0]]);
    assert.equal(await postRow(reader, 'Results <soon>').locator('.body b, .body img').count(), 0, 'no HTML made from the body');
    assert.equal(await reader.evaluate(() => window.pwned), undefined);
    assert.equal(await postRow(reader, 'Results <soon>').locator('.body').evaluate((e) => getComputedStyle(e).whiteSpace), 'pre-wrap', 'line breaks are kept');
    assert.match(await postRow(reader, 'Doors open').locator('time.time').textContent(), /just now/);
    console.log(`# published -> reader ${ms1} ms, ${ms2} ms`);

    // the server refuses what it must, and the page says what it said
    await publish(author, '', 'no title');
    await author.waitForSelector('#error:not([hidden])', { timeout: 3000 });
    assert.match(await author.textContent('#error-text'), /Cannot publish: title/);
    await author.click('#error-dismiss');
    await author.fill('#post-body', '');
    // a reader may not write
    const code = await reader.evaluate(async () => {
      const c = window.liveblogClient;
      const { items } = await c.getList('blog', { slug: 'news' });
      return c.create('post', { blog_id: items[0].id, title: 'x', body: '' }).then(() => 'created', (e) => e.code);
    });
    assert.equal(code, 'unauthenticated');
    await sleep(200);
    assert.equal((await posts(reader)).length, 2);
    assert.deepEqual(problems, []);
  });

  test('an edit shows in place within a second, marked "(updated)"', async () => {
    await postRow(author, 'Results <soon>').locator('.edit').click();
    assert.equal(await author.isVisible('#save-button'), true);
    assert.equal(await author.isVisible('#publish-button'), false);
    assert.equal(await author.inputValue('#post-title'), 'Results <soon>');
    await author.fill('#post-title', 'Results: a landslide');
    await author.fill('#post-body', 'Counted: 98%.');
    await author.click('#save-button');
    const want = [['Results: a landslide', 'Counted: 98%.', true, 0], ['Doors open', 'The hall is filling up.', false, 0]];
    const ms = await waitPosts(reader, want, LIVE_MS, 'the edit in the reader\'s page');
    await waitPosts(author, want);
    console.log(`# edit -> reader ${ms} ms`);
    assert.equal(await author.isVisible('#publish-button'), true, 'back to writing a new post after saving');
    assert.equal(await author.inputValue('#post-title'), '');
    assert.equal(await postRow(reader, 'Results: a landslide').locator('.updated').textContent(), '(updated)');
    assert.deepEqual(problems, []);
  });

  test('three likes reach 3 in the reader\'s page (coalesced) within two seconds', async () => {
    const row = postRow(reader, 'Results: a landslide');
    const t0 = Date.now();
    for (let i = 0; i < 3; i++) await row.locator('button.like').click();
    await waitPosts(reader, [['Results: a landslide', 'Counted: 98%.', true, 3], ['Doors open', 'The hall is filling up.', false, 0]], LIKES_MS, 'the like count');
    console.log(`# 3 likes -> 3 shown after ${Date.now() - t0} ms`);
    await waitPosts(author, [['Results: a landslide', 'Counted: 98%.', true, 3], ['Doors open', 'The hall is filling up.', false, 0]], LIKES_MS, 'the like count in the author\'s list');
    const stored = await reader.evaluate(async () => (await window.liveblogClient.getList('post', {}, { order_by: ['-likes'] })).items[0].likes);
    assert.equal(stored, 3);
    // a like changes no order and marks nothing as updated
    await sleep(300);
    assert.deepEqual((await posts(reader)).map((p) => p[0]), ['Results: a landslide', 'Doors open']);

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await reader.screenshot({ path: path.join(ARTIFACTS, 'liveblog-reader.png'), fullPage: true });
    await author.screenshot({ path: path.join(ARTIFACTS, 'liveblog-author.png') });
    assert.deepEqual(problems, []);
  });

  test('a deletion vanishes from the reader\'s page within a second', async () => {
    await postRow(author, 'Results: a landslide').locator('.delete').click();
    const ms = await waitPosts(reader, [['Doors open', 'The hall is filling up.', false, 0]], LIVE_MS, 'the deletion in the reader\'s page');
    await waitPosts(author, [['Doors open', 'The hall is filling up.', false, 0]]);
    console.log(`# delete -> reader ${ms} ms`);
    assert.deepEqual(problems, []);
  });

  test('the front page lists the news blog with its latest post, live, and links to it', async () => {
    const front = await open('front', '/');
    try {
      await waitBlogs(front, [['News', '/blog?slug=news', 'Doors open']], 5000);
      await publish(author, 'Polls closed', 'Counting starts.');
      await waitBlogs(front, [['News', '/blog?slug=news', 'Polls closed']], LIVE_MS);
      await waitPosts(reader, [['Polls closed', 'Counting starts.', false, 0], ['Doors open', 'The hall is filling up.', false, 0]]);
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await front.screenshot({ path: path.join(ARTIFACTS, 'liveblog-front.png') });

      await front.click('#blogs li[data-blog-id] a');
      await front.waitForURL(/\/blog\?slug=news$/, { timeout: 3000 });
      await waitPosts(front, [['Polls closed', 'Counting starts.', false, 0], ['Doors open', 'The hall is filling up.', false, 0]], 3000);

      // an unknown blog says so
      await front.goto(server.httpUrl + '/blog?slug=nope');
      await front.waitForSelector('#blog-missing:not([hidden])', { timeout: 3000 });
    } finally {
      await front.context().close();
    }
    assert.deepEqual(problems, []);
  });

  test('the author stays signed in after a reload, starts a new blog (live on the front page); Log out forgets the token', async () => {
    await author.reload();
    await author.waitForSelector('#author-view:not([hidden])', { timeout: 5000 });
    assert.equal(await author.isVisible('#login-form'), false, 'still logged in after a reload');
    await waitPosts(author, [['Polls closed', 'Counting starts.', false, 0], ['Doors open', 'The hall is filling up.', false, 0]], 3000);

    // a new blog: on the front page at once, chosen in the author's page, with no posts yet
    const front = await open('front', '/');
    try {
      await waitBlogs(front, [['News', '/blog?slug=news', 'Polls closed']], 5000);
      await author.click('#new-blog summary');
      await author.fill('#new-blog-title', 'Election night');
      assert.equal(await author.inputValue('#new-blog-slug'), 'election-night', 'the address follows the title');
      await author.click('#new-blog-button');
      await waitBlogs(front, [['Election night', '/blog?slug=election-night', 'No posts yet'], ['News', '/blog?slug=news', 'Polls closed']], LIVE_MS);
      await author.waitForFunction(() => document.querySelector('#blog-select').selectedOptions[0]?.textContent === 'Election night', null, { timeout: 2000 });
      await author.waitForSelector('#posts-empty:not([hidden])', { timeout: 2000 });
      assert.equal(await author.getAttribute('#blog-link', 'href'), '/blog?slug=election-night');
      await publish(author, 'Good evening', '');
      await waitBlogs(front, [['Election night', '/blog?slug=election-night', 'Good evening'], ['News', '/blog?slug=news', 'Polls closed']], LIVE_MS);
      await waitPosts(author, [['Good evening', '', false, 0]]);
      // a slug that is taken: the server says so (the form closed after the first blog)
      assert.equal(await author.isVisible('#new-blog-title'), false);
      await author.click('#new-blog summary');
      await author.fill('#new-blog-title', 'News again');
      await author.fill('#new-blog-slug', 'news');
      await author.click('#new-blog-button');
      await author.waitForSelector('#error:not([hidden])', { timeout: 3000 });
      assert.match(await author.textContent('#error-text'), /^Cannot create the blog: /);
      await author.click('#error-dismiss');
      // back to News; the reader's page never saw any of it
      await author.selectOption('#blog-select', { label: 'News' });
      await waitPosts(author, [['Polls closed', 'Counting starts.', false, 0], ['Doors open', 'The hall is filling up.', false, 0]], 2000);
      assert.deepEqual(await posts(reader), [['Polls closed', 'Counting starts.', false, 0], ['Doors open', 'The hall is filling up.', false, 0]]);
    } finally {
      await front.context().close();
    }

    await author.click('#logout');
    await author.waitForSelector('#login-form', { state: 'visible', timeout: 2000 });
    assert.equal(await author.evaluate(() => localStorage.getItem('liveblog-token')), null);
    await author.reload();
    await author.waitForSelector('#login-form', { state: 'visible', timeout: 2000 });
    assert.equal(await author.locator('#posts li[data-post-id]').count(), 0);
    assert.deepEqual(problems, []);
  });
});
