// End-to-end in a real browser: headless Debian Chromium (/usr/bin/chromium, driven by
// playwright-core) loads a page from another origin (a small node http server on its own
// 127.0.0.1 port) that connects to ringwire's /socket.io/ with socket.io-client 4.x
// (dist/socket.io.min.js): default transports (polling, then the upgrade to websocket),
// withCredentials so that the secret cookie goes along with the cross-origin polling requests.
// ringwire allows the page's origin ([security] allowed_origins) and answers its polling
// requests with Access-Control-Allow-Origin: <origin> and Access-Control-Allow-Credentials: true.
// The test pushes through the admin API and reads the event out of the page.
// A second test checks permessage-deflate as Chromium negotiates it (no context takeover both
// ways): 2 KB pushes to a raw /ws and 2 KB echoes, compressed in both directions.
// Skipped (with a message) only when /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { CHROMIUM, launchChromium, startPageServer, startPushServer, startSocketIoServer, within } from './server.mjs';

const STEP = 10_000;
const CONTEXT = 1;
const USER = 42;

const require = createRequire(import.meta.url);
const CLIENT_JS = join(dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringwire socket.io</title>
<script src="/socket.io.min.js"></script></head>
<body><script>
const p = new URLSearchParams(location.search);
window.state = { initial: null, connected: false, upgraded: null, received: [], errors: [], disconnects: [] };
const socket = io('http://127.0.0.1:' + p.get('port'), {
  query: { session: p.get('session') },
  withCredentials: true,
  reconnection: false,
  timeout: 5000,
});
state.initial = socket.io.engine.transport.name; // the engine opens its first transport at once
socket.on('connect', () => { state.connected = true; });
socket.io.engine.on('upgrade', (t) => { state.upgraded = t.name; });
socket.on('connect_error', (e) => state.errors.push(String(e && e.message) + ' ' + String(e && e.description)));
socket.on('disconnect', (r) => state.disconnects.push(String(r)));
socket.on('news', (d) => state.received.push(d));
window.currentTransport = () => socket.io.engine.transport.name;
</script></body></html>
`;

/** playwright-core's chromium, or None with the test skipped (no /usr/bin/chromium). */
async function chromiumOrSkip(t) {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not found: install Debian's chromium (tests/run.sh does, as root)`);
    return null;
  }
  return (await import('playwright-core')).chromium;
}

/** A page whose context holds the session's secret cookie. */
async function pageWithCookie(browser, secret) {
  const context = await browser.newContext();
  // Cookies are per host, not per port: the page's origin and ringwire share 127.0.0.1.
  await context.addCookies([{
    name: 'ringwire-secret', value: secret, domain: '127.0.0.1', path: '/', httpOnly: true, sameSite: 'Lax',
  }]);
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  return page;
}

/** A page server for `html`, which loads socket.io-client 4.x from /socket.io.min.js. */
function clientPage(html) {
  return startPageServer({
    '/': ['text/html; charset=utf-8', html],
    '/socket.io.min.js': ['text/javascript; charset=utf-8', readFileSync(CLIENT_JS)],
  });
}

/** Close what a test started; a server that died fails the test if its body ran to its end. */
async function tearDown(browser, server, pageServer, passed) {
  if (browser) await within(browser.close(), STEP, 'browser.close()').catch(() => {});
  if (server) {
    const alive = server.alive();
    await server.stop();
    if (passed) assert.ok(alive, `ringwire exited during the test\n${server.stderr()}`);
  }
  await pageServer.close();
}

test('Chromium: cross-origin page, cookie + withCredentials, polling then websocket, receives a push', { timeout: 90_000 }, async (t) => {
  const chromium = await chromiumOrSkip(t);
  if (!chromium) return;
  const pageServer = await clientPage(PAGE);
  let server = null;
  let browser = null;
  let passed = false; // the body ran to its end: only then may the finally block fail the test
  const diag = { console: [], pollingResponses: [], websockets: [], failed: [], timeline: [] };
  const t0 = Date.now();
  const mark = (what) => { if (diag.timeline.length < 60) diag.timeline.push(`${Date.now() - t0} ms ${what}`); };
  try {
    server = await startSocketIoServer({ allowedOrigins: [pageServer.origin] });
    const r = await server.admin('POST', '/v1/sessions', { user: USER, context: CONTEXT, ttl_secs: 3600 });
    assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
    const s = r.json;

    browser = await launchChromium(chromium);
    const page = await pageWithCookie(browser, s.secret);
    page.on('console', (m) => diag.console.push(`${m.type()}: ${m.text()}`));
    page.on('requestfailed', (q) => diag.failed.push(`${q.method()} ${q.url()}: ${q.failure()?.errorText}`));
    page.on('response', async (resp) => {
      const url = new URL(resp.url());
      if (url.port !== String(server.port) || url.searchParams.get('transport') !== 'polling') return;
      if (!['GET', 'POST'].includes(resp.request().method())) return; // a preflight is not expected, but not polling either
      mark(`polling ${resp.request().method()} answered ${resp.status()}`);
      const h = await resp.allHeaders().catch(() => ({}));
      diag.pollingResponses.push({
        method: resp.request().method(),
        status: resp.status(),
        acao: h['access-control-allow-origin'],
        acac: h['access-control-allow-credentials'],
        cookieSent: (await resp.request().allHeaders().catch(() => ({}))).cookie?.includes(`ringwire-secret=${s.secret}`) ?? false,
      });
    });
    page.on('websocket', (ws) => {
      diag.websockets.push(ws.url());
      mark('websocket open');
      ws.on('framesent', (f) => mark(`ws -> ${String(f.payload).slice(0, 80)}`));
      ws.on('framereceived', (f) => mark(`ws <- ${String(f.payload).slice(0, 80)}`));
      ws.on('close', () => mark('ws closed'));
    });
    page.on('request', (q) => {
      if (new URL(q.url()).searchParams.get('transport') === 'polling') mark(`polling ${q.method()} sent`);
    });
    const why = () => `\ndiagnostics: ${JSON.stringify(diag)}`;
    const waitPage = (fn, what) => page.waitForFunction(fn).catch(async (e) => {
      const state = await page.evaluate(() => window.state).catch(() => null);
      throw new Error(`${what}: ${e.message}\npage state: ${JSON.stringify(state)}${why()}`);
    });

    await page.goto(`${pageServer.origin}/?port=${server.port}&session=${encodeURIComponent(s.session)}`);
    await waitPage(() => window.state.connected || window.state.errors.length > 0, 'connect');
    let state = await page.evaluate(() => window.state);
    assert.deepEqual(state.errors, [], `connect_error in the page${why()}`);
    assert.equal(state.initial, 'polling', `first transport${why()}`);

    await waitPage(() => window.state.upgraded !== null, 'upgrade to websocket');
    assert.equal(await page.evaluate(() => window.currentTransport()), 'websocket');

    // The cross-origin polling requests carried the cookie and were answered with CORS headers.
    assert.ok(diag.pollingResponses.length > 0, `no polling response seen${why()}`);
    for (const p of diag.pollingResponses) {
      assert.equal(p.status, 200, `polling ${p.method}${why()}`);
      assert.equal(p.acao, pageServer.origin, `Access-Control-Allow-Origin on a polling ${p.method}${why()}`);
      assert.equal(p.acac, 'true', `Access-Control-Allow-Credentials on a polling ${p.method}${why()}`);
      assert.ok(p.cookieSent, `the secret cookie on a polling ${p.method}${why()}`);
    }
    assert.ok(diag.websockets.some((u) => u.startsWith(`ws://127.0.0.1:${server.port}/socket.io/`)), `websocket url${why()}`);

    const q = await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${USER}&path=/socket.io/*`);
    assert.equal(q.status, 200, q.text);
    assert.equal(q.json.count, 1, `one socket for the browser's connection: ${q.text}`);

    const pushed = await server.admin('POST', '/v1/push', {
      context: CONTEXT, user: USER, path: '/socket.io/*', message: JSON.stringify(['news', { n: 7, from: 'node' }]),
    });
    assert.equal(pushed.status, 202, `POST /v1/push: ${pushed.status} ${pushed.text}`);
    assert.equal(pushed.json?.sockets, 1, pushed.text);
    await waitPage(() => window.state.received.length > 0, 'the pushed event');
    state = await page.evaluate(() => window.state);
    assert.deepEqual(state.received, [{ n: 7, from: 'node' }]);
    assert.deepEqual(state.disconnects, [], `disconnects${why()}`);
    passed = true;
  } finally {
    await tearDown(browser, server, pageServer, passed);
  }
});

// permessage-deflate as Chromium negotiates it: it offers `permessage-deflate;
// client_max_window_bits` and ringwire answers `server_no_context_takeover;
// client_no_context_takeover` (unoffered, as RFC 7692 7.1.1.1/7.1.1.2 allow). Chromium must
// accept the answer, decode pushes compressed by the per-core shared compressor, and compress
// its own messages without context takeover (a second message referring to the first would
// not inflate with the inflater ringwire lends per message: 1007).
const DEFLATE_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringwire deflate</title></head>
<body><script>
const p = new URLSearchParams(location.search);
window.state = { push: { ext: null, got: [], closed: null }, echo: { ext: null, got: [], closed: null }, errors: [] };
function open(name, url) {
  const ws = new WebSocket(url);
  ws.onopen = () => { state[name].ext = ws.extensions; };
  ws.onmessage = (e) => state[name].got.push(e.data);
  ws.onerror = () => state.errors.push(name + ' error');
  ws.onclose = (e) => { state[name].closed = e.code; };
  return ws;
}
window.pushWs = open('push', 'ws://127.0.0.1:' + p.get('port') + '/ws?session=' + encodeURIComponent(p.get('session')));
window.echoWs = open('echo', 'ws://127.0.0.1:' + p.get('port') + '/echo');
</script></body></html>
`;

function feed(n) {
  const items = [];
  for (let i = 0; i < 16; i++) {
    items.push({ id: n * 100 + i, kind: ['message', 'like', 'follow', 'mention'][i % 4], from: `user-${(n * 7 + i * 13) % 997}`, text: `event ${i} for ${n}: the quick brown fox jumps over the lazy dog`, ts: 1790000000 + i * 37 });
  }
  return JSON.stringify({ type: 'feed', n, items });
}

test('Chromium: permessage-deflate without context takeover, pushes and echoes of 2 KB', { timeout: 90_000 }, async (t) => {
  const chromium = await chromiumOrSkip(t);
  if (!chromium) return;
  const pageServer = await startPageServer({ '/': ['text/html; charset=utf-8', DEFLATE_PAGE] });
  let server = null;
  let browser = null;
  let passed = false;
  try {
    server = await startPushServer({
      extra: `[security]\nallowed_origins = ["${pageServer.origin}"]\n\n[[endpoints]]\npath = "/echo"\nkind = "echo"\nauth = "none"\n`,
    });
    const r = await server.admin('POST', '/v1/sessions', { user: USER, context: CONTEXT, ttl_secs: 3600 });
    assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
    const s = r.json;
    browser = await launchChromium(chromium);
    const page = await pageWithCookie(browser, s.secret);
    const frames = [];
    page.on('websocket', (ws) => {
      ws.on('framereceived', (f) => frames.push(`<- ${String(f.payload).length} chars`));
      ws.on('framesent', (f) => frames.push(`-> ${String(f.payload).length} chars`));
    });
    const waitPage = (fn, what) => page.waitForFunction(fn).catch(async (e) => {
      const state = await page.evaluate(() => window.state).catch(() => null);
      throw new Error(`${what}: ${e.message}\npage state: ${JSON.stringify(state)}\nframes: ${frames}\n${server.stderr()}`);
    });
    await page.goto(`${pageServer.origin}/?port=${server.port}&session=${encodeURIComponent(s.session)}`);
    await waitPage(() => window.state.push.ext !== null && window.state.echo.ext !== null, 'both sockets open');
    let state = await page.evaluate(() => window.state);
    const answer = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
    assert.equal(state.push.ext, answer);
    assert.equal(state.echo.ext, answer);

    const pushes = [feed(1), feed(2), feed(3)];
    for (const m of pushes) {
      const pushed = await server.admin('POST', '/v1/push', { context: CONTEXT, user: USER, path: '/ws', message: m });
      assert.equal(pushed.status, 202, pushed.text);
      assert.equal(pushed.json?.sockets, 1, pushed.text);
    }
    const sent = [feed(4), feed(5), feed(6)];
    await page.evaluate((msgs) => { for (const m of msgs) window.echoWs.send(m); }, sent);
    await waitPage(() => window.state.push.got.length >= 3 && window.state.echo.got.length >= 3, 'pushes and echoes');
    state = await page.evaluate(() => window.state);
    assert.deepEqual(state.push.got, pushes);
    assert.deepEqual(state.echo.got, sent);
    assert.equal(state.push.closed, null);
    assert.equal(state.echo.closed, null);
    assert.deepEqual(state.errors, []);
    passed = true;
  } finally {
    await tearDown(browser, server, pageServer, passed);
  }
});

// Connection state recovery in the browser: the page's socket.io-client (default transports,
// its own reconnection) loses its transport (socket.io.engine.close()), misses 5 pushes, and
// reconnects: socket.recovered is true and the 5 arrive, in order, after the ones it had.
const RECOVERY_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringwire recovery</title>
<script src="/socket.io.min.js"></script></head>
<body><script>
const p = new URLSearchParams(location.search);
window.state = { connects: [], received: [], offsets: [], errors: [], disconnects: [], upgraded: false };
const socket = io('http://127.0.0.1:' + p.get('port'), {
  query: { session: p.get('session') },
  withCredentials: true,
  reconnectionDelay: 4000,
  reconnectionDelayMax: 4000,
  randomizationFactor: 0,
  timeout: 5000,
});
// (The engine exists from the start; its upgrade may come before the CONNECT answer.)
socket.io.engine.on('upgrade', () => { state.upgraded = true; });
socket.on('connect', () => { state.connects.push(socket.recovered); });
socket.on('connect_error', (e) => state.errors.push(String(e && e.message)));
socket.on('disconnect', (r) => state.disconnects.push(String(r)));
socket.on('news', (d, offset) => { state.received.push(d.n); state.offsets.push(offset); });
window.kill = () => socket.io.engine.close();
</script></body></html>
`;

test('Chromium: the transport is lost, pushes are missed, the reconnection recovers them (socket.recovered)', { timeout: 90_000 }, async (t) => {
  const chromium = await chromiumOrSkip(t);
  if (!chromium) return;
  const pageServer = await clientPage(RECOVERY_PAGE);
  let server = null;
  let browser = null;
  let passed = false;
  try {
    server = await startSocketIoServer({ allowedOrigins: [pageServer.origin], extra: '[history]\nenabled = true\n' });
    const r = await server.admin('POST', '/v1/sessions', { user: USER, context: CONTEXT, ttl_secs: 3600 });
    assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
    const s = r.json;
    browser = await launchChromium(chromium);
    const page = await pageWithCookie(browser, s.secret);
    const waitPage = (fn, what) => page.waitForFunction(fn).catch(async (e) => {
      const state = await page.evaluate(() => window.state).catch(() => null);
      throw new Error(`${what}: ${e.message}\npage state: ${JSON.stringify(state)}\n${server.stderr()}`);
    });
    const push = async (n, sockets) => {
      const pushed = await server.admin('POST', '/v1/push', {
        context: CONTEXT, user: USER, path: '/socket.io/*', message: JSON.stringify(['news', { n }]),
      });
      assert.equal(pushed.status, 202, pushed.text);
      assert.equal(pushed.json?.sockets, sockets, `push ${n}: ${pushed.text}`);
    };
    const count = async () => (await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${USER}&path=/socket.io/*`)).json.count;

    await page.goto(`${pageServer.origin}/?port=${server.port}&session=${encodeURIComponent(s.session)}`);
    await waitPage(() => window.state.connects.length === 1 && window.state.upgraded, 'connected and upgraded');
    await push(0, 1);
    await push(1, 1);
    await waitPage(() => window.state.received.length === 2, 'the live pushes');

    await page.evaluate(() => window.kill());
    await waitPage(() => window.state.disconnects.length === 1, 'disconnected');
    for (let i = 0; i < 100 && (await count()) !== 0; i++) await new Promise((res) => setTimeout(res, 20));
    for (let n = 2; n < 7; n++) await push(n, 0);
    await waitPage(() => window.state.connects.length === 2, 'reconnected');
    await waitPage(() => window.state.received.length === 7, 'the missed pushes');
    await push(7, 1);
    await waitPage(() => window.state.received.length === 8, 'live again');
    const state = await page.evaluate(() => window.state);
    assert.deepEqual(state.connects, [false, true], 'socket.recovered at each connect');
    assert.deepEqual(state.received, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.ok(state.offsets.every((o) => /^[0-9a-f]{16}-\d+$/.test(o)), `offsets: ${state.offsets}`);
    assert.deepEqual(state.errors, []);
    passed = true;
  } finally {
    await tearDown(browser, server, pageServer, passed);
  }
});
