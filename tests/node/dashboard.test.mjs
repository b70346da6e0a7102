// The admin dashboard (GET / on the admin listener) seen in headless Debian Chromium
// (playwright-core): the page polls /v1/stats with the admin token from its URL fragment;
// the test opens real WebSockets, reads the live connection count the page shows, closes
// some and sees it fall, and saves a screenshot (target/test-artifacts/dashboard.png).
// Skipped only when /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { CHROMIUM, launchChromium, startPushServer } from './server.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ARTIFACTS = join(ROOT, 'target', 'test-artifacts');
const TOKEN = 'dash-admin-token-0123';

function open(url, cookie) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, { headers: { Cookie: cookie } });
    const t = setTimeout(() => rej(new Error(`open ${url}: timeout`)), 10_000);
    ws.once('open', () => { clearTimeout(t); res(ws); });
    ws.once('error', (e) => { clearTimeout(t); rej(e); });
  });
}

test('dashboard in Chromium shows the live connection count', { timeout: 60_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not installed (tests/run.sh installs Debian chromium as root)`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const server = await startPushServer({ token: TOKEN });
  let browser;
  const sockets = [];
  try {
    // The page itself is served without a token; its data needs one.
    const page0 = await fetch(`http://127.0.0.1:${server.adminPort}/`);
    assert.equal(page0.status, 200);
    assert.match(page0.headers.get('content-type'), /text\/html/);
    const bare = await fetch(`http://127.0.0.1:${server.adminPort}/v1/stats`);
    assert.equal(bare.status, 401, 'stats without the token');

    browser = await launchChromium(chromium);
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await page.goto(`http://127.0.0.1:${server.adminPort}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.getElementById('sockets').textContent === '0', null, { timeout: 10_000 });

    for (let user = 1; user <= 7; user++) {
      const { json } = await server.admin('POST', '/v1/sessions', { user, context: 1, ttl_secs: 600 });
      sockets.push(await open(server.wsUrl(json.session), json.cookie));
    }
    await page.waitForFunction(() => document.getElementById('sockets').textContent === '7', null, { timeout: 10_000 });
    const perCore = await page.$$eval('#cores tr', (trs) => trs.map((tr) => Number(tr.children[1].textContent)));
    assert.equal(perCore.reduce((a, b) => a + b, 0), 7, `per-core rows ${perCore}`);
    assert.equal(await page.textContent('#state'), 'serving');

    const push = await server.admin('POST', '/v1/push', { context: 1, user: 3, path: '/ws', message: 'hi' });
    assert.equal(push.status, 202);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    for (const ws of sockets.splice(0, 3)) ws.close();
    await page.waitForFunction(() => document.getElementById('sockets').textContent === '4', null, { timeout: 10_000 });
    assert.equal(await page.textContent('#error'), '');
  } finally {
    for (const ws of sockets) ws.terminate();
    await browser?.close();
    await server.stop();
  }
});
