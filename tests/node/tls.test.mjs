// TLS on ringwire's public listener ([tls] cert/key), end to end from node:
//   - the npm `ws` client over wss:// trusting the test CA (`ringwire cluster certs`): an upgrade
//     with a session (cookie + ?session=), an admin push arrives, an echo round trip; a client
//     that does not trust the CA fails the handshake and the server keeps serving;
//   - headless Debian Chromium (/usr/bin/chromium via playwright-core) loads a page from a small
//     node https server (same test certificate) and opens `new WebSocket("wss://127.0.0.1:PORT/ws
//     ?session=...")` with the secret cookie set through context.addCookies; Chromium trusts the
//     certificate only through --ignore-certificate-errors-spki-list=<sha256 of its SPKI>; the
//     test pushes through the admin API (plain HTTP) and reads the message out of the page;
//   - the same through Debian's tinyproxy (--proxy-server, --proxy-bypass-list=<-loopback> so
//     that loopback goes through the proxy too): tinyproxy logs the CONNECT to ringwire's port.
// The browser tests skip (with a message) only when /usr/bin/chromium is missing; the proxy one
// also when /usr/bin/tinyproxy is missing (tests/run.sh installs both as root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { CHROMIUM, TINYPROXY, launchChromium, makeTestCerts, spkiSha256, startPageServer, startPushServer, startTinyproxy } from './server.mjs';

const STEP = 10_000;
const CONTEXT = 1;

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringwire wss</title></head>
<body><script>
const p = new URLSearchParams(location.search);
window.state = { url: null, open: false, received: [], errors: [], closed: null };
state.url = 'wss://127.0.0.1:' + p.get('port') + '/ws?session=' + encodeURIComponent(p.get('session'));
const ws = new WebSocket(state.url);
ws.onopen = () => { state.open = true; };
ws.onmessage = (e) => { state.received.push(e.data); };
ws.onerror = () => { state.errors.push('error event'); };
ws.onclose = (e) => { state.closed = { code: e.code, reason: e.reason }; };
window.sendEcho = (t) => ws.send(t);
</script></body></html>
`;

function within(promise, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

/** A TLS ringwire (raw /ws with sessions), the page's origin allowed. */
async function startTlsServer(certs, extra = '') {
  return startPushServer({
    extra: `[tls]\ncert = ${JSON.stringify(certs.cert())}\nkey = ${JSON.stringify(certs.key())}\n\n${extra}`,
  });
}

async function mint(server, user) {
  const r = await server.admin('POST', '/v1/sessions', { user, context: CONTEXT, ttl_secs: 3600 });
  assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
  return r.json;
}

async function push(server, user, message) {
  const r = await server.admin('POST', '/v1/push', { context: CONTEXT, user, path: '/ws', message });
  assert.equal(r.status, 202, `POST /v1/push: ${r.status} ${r.text}`);
  return r.json.sockets;
}

async function waitCount(server, user, n) {
  const deadline = Date.now() + 5_000;
  let last = null;
  while (Date.now() < deadline) {
    last = await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${user}&path=/ws`);
    if (last.json?.count === n) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`user ${user}: socket count never ${n}: ${last?.text}`);
}

/** Open a `ws` client; resolves with { ws, messages, next() } once open, rejects on error. */
function openWs(url, opts) {
  return within(new Promise((res, rej) => {
    const ws = new WebSocket(url, { handshakeTimeout: 5_000, ...opts });
    const messages = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      messages.push(isBinary ? data : data.toString());
      while (waiters.length) waiters.shift()();
    });
    ws.once('open', () => res({
      ws,
      messages,
      next: (what) => within(new Promise((ok) => {
        if (messages.length) ok(messages.shift());
        else waiters.push(() => ok(messages.shift()));
      }), 5_000, what),
    }));
    ws.once('error', rej);
  }), 8_000, `open ${url}`);
}

test('ws client over wss: push and echo with the test CA; an untrusting client fails', { timeout: 60_000 }, async () => {
  const certs = await makeTestCerts();
  let server = null;
  const clients = [];
  try {
    server = await startTlsServer(certs, '[[endpoints]]\npath = "/echo"\nkind = "echo"\nauth = "none"\n');
    const s = await mint(server, 31);
    const ca = readFileSync(certs.ca);
    const url = `wss://127.0.0.1:${server.port}/ws?session=${encodeURIComponent(s.session)}`;

    // No CA given: Node's default trust store does not know the test CA.
    await assert.rejects(openWs(url, { headers: { Cookie: s.cookie } }),
      (e) => /self[- ]signed|unable to (get|verify)|certificate/i.test(`${e.code} ${e.message}`),
      'a client without the test CA must fail the handshake');

    const c = await openWs(url, { ca, headers: { Cookie: s.cookie } });
    clients.push(c.ws);
    await waitCount(server, 31, 1);
    assert.equal(await push(server, 31, 'hello from node over tls'), 1);
    assert.equal(await c.next('the push'), 'hello from node over tls');

    const e = await openWs(`wss://127.0.0.1:${server.port}/echo`, { ca, perMessageDeflate: true });
    clients.push(e.ws);
    assert.match(e.ws.extensions, /permessage-deflate/, 'compression negotiated over TLS');
    const text = 'tls echo '.repeat(4_000); // 36 KB, compressible
    e.ws.send(text);
    assert.equal(await e.next('the echo'), text);

    // An ALPN-offering TLS client gets http/1.1.
    const tls = await import('node:tls');
    const alpn = await within(new Promise((res, rej) => {
      const sock = tls.connect({ host: '127.0.0.1', port: server.port, ca, ALPNProtocols: ['h2', 'http/1.1'] },
        () => { res(sock.alpnProtocol); sock.destroy(); });
      sock.once('error', rej);
    }), 5_000, 'ALPN handshake');
    assert.equal(alpn, 'http/1.1');
    assert.ok(server.alive(), 'ringwire still running');
  } finally {
    for (const ws of clients) ws.terminate();
    if (server) {
      const alive = server.alive();
      await server.stop();
      assert.ok(alive, `ringwire exited during the test\n${server.stderr()}`);
    }
    certs.cleanup();
  }
});

/**
 * Chromium opens the page, the page a wss:// socket to ringwire; a push arrives, an echo-less
 * raw endpoint still accepts a client message (the socket stays open). proxyFor(pagePort,
 * ringwirePort) may return { url, check() } to send the browser through a proxy.
 */
async function browserPush(t, { user, proxyFor = null }) {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not found: install Debian's chromium (tests/run.sh does, as root)`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const certs = await makeTestCerts();
  const spki = await spkiSha256(certs.cert());
  const pageServer = await startPageServer(
    { '/': ['text/html; charset=utf-8', PAGE] },
    { cert: readFileSync(certs.cert()), key: readFileSync(certs.key()) },
  );
  let server = null;
  let browser = null;
  let proxy = null;
  let passed = false;
  const diag = { console: [], websockets: [], failed: [], frames: [] };
  try {
    server = await startTlsServer(certs, `[security]\nallowed_origins = ${JSON.stringify([pageServer.origin])}\n`);
    proxy = proxyFor ? await proxyFor(pageServer.port, server.port) : null;
    const s = await mint(server, user);
    const eq = s.cookie.indexOf('=');
    const [cookieName, cookieValue] = [s.cookie.slice(0, eq), s.cookie.slice(eq + 1).split(';')[0]];

    const args = [`--ignore-certificate-errors-spki-list=${spki}`];
    if (proxy) args.push(`--proxy-server=${proxy.url}`, '--proxy-bypass-list=<-loopback>');
    browser = await launchChromium(chromium, args);
    const context = await browser.newContext();
    await context.addCookies([{
      name: cookieName, value: cookieValue, domain: '127.0.0.1', path: '/', httpOnly: true, secure: true, sameSite: 'Lax',
    }]);
    const page = await context.newPage();
    page.setDefaultTimeout(STEP);
    page.on('console', (m) => diag.console.push(`${m.type()}: ${m.text()}`));
    page.on('requestfailed', (q) => diag.failed.push(`${q.method()} ${q.url()}: ${q.failure()?.errorText}`));
    page.on('websocket', (ws) => {
      diag.websockets.push(ws.url());
      ws.on('framereceived', (f) => diag.frames.push(`<- ${String(f.payload).slice(0, 60)}`));
      ws.on('socketerror', (e) => diag.frames.push(`socket error ${e}`));
    });
    const why = () => `\ndiagnostics: ${JSON.stringify(diag)}${proxy ? `\ntinyproxy log:\n${proxy.log().slice(-3000)}` : ''}`;
    const waitPage = (fn, what) => page.waitForFunction(fn).catch(async (e) => {
      const state = await page.evaluate(() => window.state).catch(() => null);
      throw new Error(`${what}: ${e.message}\npage state: ${JSON.stringify(state)}${why()}\nringwire:\n${server.stderr()}`);
    });

    const resp = await page.goto(`${pageServer.origin}/?port=${server.port}&session=${encodeURIComponent(s.session)}`)
      .catch((e) => { throw new Error(`page.goto over https (SPKI flag): ${e.message}${why()}`); });
    assert.equal(resp.status(), 200);
    await waitPage(() => window.state.open || window.state.closed !== null, 'the wss socket opens');
    let state = await page.evaluate(() => window.state);
    assert.equal(state.open, true, `wss socket did not open: ${JSON.stringify(state)}${why()}`);
    assert.ok(diag.websockets.some((u) => u.startsWith(`wss://127.0.0.1:${server.port}/ws`)), `websocket url${why()}`);

    await waitCount(server, user, 1);
    assert.equal(await push(server, user, `to the browser ${user}`), 1);
    await waitPage(() => window.state.received.length > 0, 'the pushed message');
    await page.evaluate(() => window.sendEcho('from the browser'));
    assert.equal(await push(server, user, 'second'), 1);
    await waitPage(() => window.state.received.length > 1, 'the second push');
    state = await page.evaluate(() => window.state);
    assert.deepEqual(state.received, [`to the browser ${user}`, 'second']);
    assert.deepEqual(state.errors, [], `errors in the page${why()}`);
    assert.equal(state.closed, null, `socket closed${why()}`);
    if (proxy) {
      assert.ok(proxy.connects(server.port) >= 1, `tinyproxy saw no CONNECT to ringwire's port${why()}`);
      assert.ok(proxy.connects(pageServer.port) >= 1, `tinyproxy saw no CONNECT to the page's port${why()}`);
    }
    passed = true;
  } finally {
    if (browser) await within(browser.close(), STEP, 'browser.close()').catch(() => {});
    if (proxy) await proxy.stop();
    if (server) {
      const alive = server.alive();
      await server.stop();
      if (passed) assert.ok(alive, `ringwire exited during the test\n${server.stderr()}`);
    }
    await pageServer.close();
    certs.cleanup();
  }
}

test('Chromium: https page opens wss:// with the session cookie, receives an admin push', { timeout: 90_000 }, async (t) => {
  await browserPush(t, { user: 51 });
});

test('Chromium through tinyproxy (HTTP CONNECT): wss:// push arrives', { timeout: 90_000 }, async (t) => {
  if (!existsSync(TINYPROXY)) {
    t.skip(`${TINYPROXY} not found: install Debian's tinyproxy (tests/run.sh does, as root)`);
    return;
  }
  await browserPush(t, {
    user: 52,
    proxyFor: async (pagePort, ringwirePort) => startTinyproxy([pagePort, ringwirePort]),
  });
});
