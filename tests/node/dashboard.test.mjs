// The admin dashboard (GET / on the admin listener) seen in headless Debian Chromium
// (playwright-core): the page polls /v1/stats with the admin token from its URL fragment or
// its token field (kept in sessionStorage); the first test opens real WebSockets, reads the
// live connection count the page shows, closes some and sees it fall; the second types the
// token, makes traffic (sockets, pushes, echoes, refused upgrades) and checks the sparklines,
// version, uptime, RSS, table headroom and refusal rates with real values, and saves a
// screenshot (target/test-artifacts/dashboard.png, its path printed).
// Skipped only when /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { CHROMIUM, launchChromium, startPushServer, sleep } from './server.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ARTIFACTS = join(ROOT, 'target', 'test-artifacts');
const TOKEN = 'dash-admin-token-0123';

/** playwright-core's chromium, or null with the test skipped (no /usr/bin/chromium). */
async function chromiumOrSkip(t) {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not installed (tests/run.sh installs Debian chromium as root)`);
    return null;
  }
  return (await import('playwright-core')).chromium;
}


function open(url, cookie) {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, { headers: { Cookie: cookie } });
    const t = setTimeout(() => rej(new Error(`open ${url}: timeout`)), 10_000);
    ws.once('open', () => { clearTimeout(t); res(ws); });
    ws.once('error', (e) => { clearTimeout(t); rej(e); });
  });
}

test('dashboard in Chromium shows the live connection count', { timeout: 60_000 }, async (t) => {
  const chromium = await chromiumOrSkip(t);
  if (!chromium) return;
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

/** An upgrade to /ws without a session: refused (401, missing_session) by the server. */
function refusedUpgrade(port) {
  return new Promise((res) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    ws.once('error', () => res());
    ws.once('open', () => { ws.terminate(); res(); });
  });
}

test('dashboard in Chromium: token field, sparklines, process, headroom, refusal rates', { timeout: 90_000 }, async (t) => {
  const chromium = await chromiumOrSkip(t);
  if (!chromium) return;
  const server = await startPushServer({ token: TOKEN });
  let browser;
  const sockets = [];
  try {
    browser = await launchChromium(chromium);
    const page = await browser.newPage({ viewport: { width: 1000, height: 1100 } });
    // No token yet: the page says what is missing.
    await page.goto(`http://127.0.0.1:${server.adminPort}/`);
    await page.waitForFunction(() => /HTTP 401/.test(document.getElementById('error').textContent), null, { timeout: 10_000 });
    await page.fill('#token', TOKEN);
    await page.click('#auth button[type=submit]');
    await page.waitForFunction(() => document.getElementById('sockets').textContent === '0', null, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ringwire-admin-token')), TOKEN);
    assert.equal(await page.textContent('#error'), '');

    // Traffic: 6 sockets, pushes and echoes for a few seconds, refused upgrades.
    for (let user = 1; user <= 6; user++) {
      const { json } = await server.admin('POST', '/v1/sessions', { user, context: 1, ttl_secs: 600 });
      sockets.push(await open(server.wsUrl(json.session), json.cookie));
    }
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      for (let user = 1; user <= 6; user++) {
        const r = await server.admin('POST', '/v1/push', { context: 1, user, path: '/ws', message: 'tick' });
        assert.equal(r.status, 202);
      }
      for (const ws of sockets) ws.send('hello');
      await refusedUpgrade(server.port);
      await sleep(100);
    }

    // Sparklines have points, and the push and refusal lines saw traffic.
    await page.waitForFunction(() => {
      const n = (id, k) => Number(document.getElementById(id).dataset[k] || 0);
      return n('spark-sockets', 'points') >= 5 && n('spark-pushes', 'max') > 1
        && n('spark-in', 'max') > 1 && n('spark-refusals', 'max') > 0;
    }, null, { timeout: 15_000 });
    const points = await page.$eval('#spark-sockets polyline', (p) => p.getAttribute('points').trim().split(' ').length);
    assert.ok(points >= 5, `sparkline points ${points}`);
    assert.equal(await page.textContent('#sockets'), '6');

    // Process and table headroom, with real values.
    const stats = (await server.admin('GET', '/v1/stats')).json;
    assert.match(stats.version, /^\d+\.\d+\.\d+/);
    assert.ok(stats.rss_bytes > 1 << 20, `rss ${stats.rss_bytes}`);
    assert.ok(stats.uptime_secs >= 0 && stats.uptime_secs < 3600, `uptime ${stats.uptime_secs}`);
    const used = stats.cores.reduce((a, c) => a + c.slots_used, 0);
    const cap = stats.cores.reduce((a, c) => a + c.slots_capacity, 0);
    assert.ok(used >= 6 && cap > used, `slots ${used} / ${cap}`);
    assert.equal(await page.textContent('#version'), stats.version);
    assert.match(await page.textContent('#uptime'), /^(\d+m )?\d+s$/);
    const rss = await page.textContent('#rss');
    assert.match(rss, /^\d+\.\d MiB$/);
    assert.ok(Number(rss.split(' ')[0]) > 1, rss);
    assert.match(await page.textContent('#headroom'), /^[\d,]+ free of [\d,]+ slots$/);
    const slotCells = await page.$$eval('#cores tr', (trs) => trs.map((tr) => tr.children[7].textContent));
    assert.equal(slotCells.length, stats.cores.length);
    for (const cell of slotCells) assert.match(cell, /^[\d,]+ \/ [\d,]+ \(\d+\.\d%\)$/, cell);

    // Refusals by reason: a rate over the last seconds next to the total.
    const refused = await page.$$eval('#refused tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    const missing = refused.find((r) => r[0] === 'missing_session');
    assert.ok(missing, `refusal rows ${JSON.stringify(refused)}`);
    assert.ok(Number(missing[1]) > 0 && Number(missing[2].replace(/,/g, '')) >= 10, JSON.stringify(missing));

    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`dashboard screenshot: ${shot}`);

    // The token stays for the tab: a reload without the fragment still reads the stats.
    await page.reload();
    await page.waitForFunction(() => document.getElementById('sockets').textContent === '6', null, { timeout: 10_000 });
    await page.click('#forget');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ringwire-admin-token')), null);
  } finally {
    for (const ws of sockets) ws.terminate();
    await browser?.close();
    await server.stop();
  }
});
