// End-to-end on a GENERATED project: `dragon createproject` into a temp dir, `cargo build` it
// (into this repo's target dir, so the compiled crates are reused), run it on a free port with
// a fresh SQLite file, and drive its page (templates/project/static/) in two headless Chromium
// pages: a task added in A shows in B within 1 s, and focusing its title in A shows "being
// edited by" in B within 1 s (cleared on blur and when A's tab closes). Screenshots go to
// artifacts/generated-app-*.png.
//
// $DRAGON_BIN: the dragon binary (scripts/test-js.sh builds it; default <repo>/target/debug/dragon).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, REPO_ROOT, freePort, sleep } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const DRAGON_BIN = process.env.DRAGON_BIN || path.join(REPO_ROOT, 'target', 'debug', 'dragon');
const TARGET = path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR || 'target');
const NAME = 'team-tasks';

/** Runs a command to its end; rejects with its output if it fails. */
function run(cmd, args, options) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${out.slice(-4000)}`))));
  });
}

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

/** In the page: the <li> of the task whose title field holds `title`. */
const rowText = (title) => {
  const li = [...document.querySelectorAll('#tasks li')].find((x) => x.querySelector('.title')?.value === title);
  return li ? li.textContent : null;
};

describe('a generated project, in two browser pages', () => {
  let dir, server, serverLog, port, browser;
  const problems = [];

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install -y chromium); refusing to skip`);
    if (!fs.existsSync(DRAGON_BIN)) throw new Error(`${DRAGON_BIN} not found: run \`cargo build -p dragon-cli\` (scripts/test-js.sh does)`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragon-generated-'));
    await run(DRAGON_BIN, ['createproject', NAME], { cwd: dir });
    const project = path.join(dir, NAME);
    await run('cargo', ['build'], { cwd: project, env: { ...process.env, CARGO_TARGET_DIR: TARGET } });

    port = await freePort();
    serverLog = path.join(dir, 'server.log');
    const log = fs.openSync(serverLog, 'a');
    server = spawn(path.join(TARGET, 'debug', NAME), [], {
      cwd: project,
      env: { ...process.env, DRAGON_ADDR: `127.0.0.1:${port}`, DATABASE_URL: `sqlite://${path.join(dir, 'x.sqlite')}` },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    const deadline = Date.now() + 30000;
    for (;;) {
      if (server.exitCode !== null) throw new Error(`the app exited:\n${fs.readFileSync(serverLog, 'utf8')}`);
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`the app did not start:\n${fs.readFileSync(serverLog, 'utf8')}`);
      await sleep(100);
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  }, { timeout: 20 * 60 * 1000 });

  after(async () => {
    await browser?.close();
    if (server && server.exitCode === null) {
      const gone = new Promise((r) => server.once('exit', r));
      server.kill('SIGTERM');
      await gone;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A page of its own browser context (its own localStorage), as the guest `name`. */
  async function open(label, name, viewport = { width: 960, height: 640 }) {
    const context = await browser.newContext({ viewport });
    await context.addInitScript((g) => localStorage.setItem('dragon-guest', JSON.stringify(g)), { id: `guest-${label}`, name });
    const page = await context.newPage();
    page.on('pageerror', (err) => problems.push(`${label} pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(msg.text())) problems.push(`${label} console: ${msg.text()}`);
    });
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForSelector('#status[data-state="open"]');
    await page.waitForFunction(() => document.querySelector('#empty').textContent.startsWith('No tasks') || document.querySelector('#tasks li'));
    return page;
  }

  test('add in A shows in B; editing in A shows "being edited by" in B', async () => {
    const a = await open('a', 'Ann Otter');
    const b = await open('b', 'Bob Badger');
    assert.equal(await a.title(), NAME);
    assert.equal(await a.inputValue('#guest-name'), 'Ann Otter');
    assert.equal(await a.textContent('#status-text'), 'Live');

    // an empty title: the server's validation error shows next to the field
    await a.getByRole('button', { name: 'Add task' }).click();
    await a.waitForFunction(() => document.querySelector('#new-error').textContent === 'Title may not be empty.');
    assert.equal(await a.getAttribute('#new-title', 'aria-invalid'), 'true');

    // A adds a task (typing clears the error): B has it within 1 s
    const newTask = a.getByLabel('New task');
    await newTask.fill('Water the plants');
    assert.equal(await a.textContent('#new-error'), '');
    await newTask.press('Enter');
    const added = await within(b, 'B shows the new task', 1000, (t) => [...document.querySelectorAll('#tasks .title')].some((i) => i.value === t), 'Water the plants');
    for (const title of ['Book the train tickets', 'Write the release notes']) {
      await newTask.fill(title);
      await newTask.press('Enter');
      await within(b, `B shows "${title}"`, 1000, (t) => [...document.querySelectorAll('#tasks .title')].some((i) => i.value === t), title);
    }
    assert.equal(await newTask.inputValue(), '', 'the field is emptied');

    // B ticks one off; A sees it
    await b.getByRole('checkbox', { name: 'Done: Book the train tickets' }).check();
    await within(a, 'A shows it done', 1000, () => document.querySelector('#count').textContent === '1 of 3 done');

    // each sees the other as a viewer of every task
    await within(b, 'B sees A on every task', 2000, () => [...document.querySelectorAll('#tasks .chip')].filter((c) => c.getAttribute('aria-label') === 'Ann Otter: viewing').length === 3);
    await within(a, 'A sees B on every task', 2000, () => [...document.querySelectorAll('#tasks .chip')].filter((c) => c.getAttribute('aria-label') === 'Bob Badger: viewing').length === 3);

    // A focuses the title of "Write the release notes": B shows "being edited by Ann Otter" within 1 s
    await a.getByLabel('Title of “Write the release notes”').focus();
    const shown = await within(b, 'B shows "being edited by"', 1000, (t) => {
      const li = [...document.querySelectorAll('#tasks li')].find((x) => x.querySelector('.title').value === t);
      return li && /being edited by Ann Otter/i.test(li.textContent);
    }, 'Write the release notes');
    assert.match(await b.evaluate(rowText, 'Write the release notes'), /Being edited by Ann Otter/);
    assert.doesNotMatch(await b.evaluate(rowText, 'Water the plants'), /being edited/i, 'only that task');
    assert.doesNotMatch(await a.evaluate(rowText, 'Write the release notes'), /being edited/i, 'A does not mark its own edit');
    await within(b, 'B announces it', 1000, () => document.querySelector('#announcer').textContent === 'Ann Otter is editing “Write the release notes”');
    assert.equal(await b.getAttribute('#announcer', 'aria-live'), 'polite');

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await a.keyboard.type(' for 1.0');
    await b.mouse.move(0, 0);
    await b.screenshot({ path: path.join(ARTIFACTS, 'generated-app-editing.png'), fullPage: true });
    await a.screenshot({ path: path.join(ARTIFACTS, 'generated-app-editor.png'), fullPage: true });

    // Enter saves the edit; Tab leaves the field: B shows the new title and clears the mark
    await a.keyboard.press('Enter');
    await a.keyboard.press('Tab');
    await within(b, 'B shows the edit and clears the mark', 2000, (t) => {
      const li = [...document.querySelectorAll('#tasks li')].find((x) => x.querySelector('.title').value === t);
      return li && !/being edited/i.test(li.textContent);
    }, 'Write the release notes for 1.0');

    // an empty title is refused: the error shows under that task in A
    const edited = a.getByLabel('Title of “Write the release notes for 1.0”');
    await edited.fill('');
    await edited.press('Enter');
    await within(a, 'A shows the validation error on the task', 1000, () => [...document.querySelectorAll('#tasks .field-error')].some((e) => e.textContent === 'Title may not be empty.'));
    await edited.press('Escape');
    assert.equal(await edited.inputValue(), 'Write the release notes for 1.0');

    // B deletes a task; A loses it
    await b.getByRole('button', { name: 'Delete “Water the plants”' }).click();
    await within(a, 'A drops the deleted task', 1000, () => document.querySelectorAll('#tasks li').length === 2);

    // A's tab closes while editing: B clears the mark and A's chips
    await edited.focus();
    await within(b, 'B shows the edit again', 1000, () => /being edited by Ann Otter/i.test(document.querySelector('#tasks').textContent));
    await a.context().close();
    const cleared = await within(b, 'B clears it after A closed', 2000, () => !/being edited/i.test(document.querySelector('#tasks').textContent) && !document.querySelector('#tasks .chip'));
    assert.ok(added <= 1000 && shown <= 1000, `added after ${added} ms, shown after ${shown} ms, cleared after ${cleared} ms`);
    assert.deepEqual(problems, []);
    await b.context().close();
  });

  test('narrow screens and dark mode look right (screenshots)', async () => {
    const phone = await open('phone', 'Cy Seal', { width: 390, height: 720 });
    await phone.emulateMedia({ colorScheme: 'dark' });
    await phone.getByLabel('New task').press('Enter'); // show the validation error too
    await phone.waitForFunction(() => document.querySelector('#new-error').textContent !== '');
    await phone.screenshot({ path: path.join(ARTIFACTS, 'generated-app-phone-dark.png'), fullPage: true });
    assert.deepEqual(problems, []);
    await phone.context().close();
  });
});
