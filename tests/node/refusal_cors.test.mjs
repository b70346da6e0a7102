// Refusals a page can see: headless Chromium (/usr/bin/chromium through playwright-core) loads a
// page that connects to ringwire's /socket.io/ with socket.io-client 4.x over long-polling and a
// session ringwire refuses (unknown session: 401). From an allowed origin, the refusal carries
// Access-Control-Allow-Origin / -Credentials, so socket.io-client's connect_error reports the
// real status (`xhr poll error`, description 401). From an origin that is not allowed, the 403
// carries them too (a static answer), so the page sees 403 rather than a network error, and
// ringwire's log says which origin was refused. Each refusal is one line in ringwire's stderr.
// Skipped (with a message) only when /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { startPageServer, startSocketIoServer, until, within } from './server.mjs';

const CHROMIUM = '/usr/bin/chromium';
const STEP = 10_000;
const require = createRequire(import.meta.url);
const CLIENT_JS = join(dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringwire refusal</title>
<script src="/socket.io.min.js"></script></head>
<body><script>
const p = new URLSearchParams(location.search);
window.state = { connected: false, errors: [] };
const socket = io('http://127.0.0.1:' + p.get('port'), {
  query: { session: p.get('session') },
  transports: ['polling'],
  withCredentials: true,
  reconnection: false,
  timeout: 5000,
});
socket.on('connect', () => { state.connected = true; });
socket.on('connect_error', (e) => state.errors.push({ message: String(e && e.message), description: Number(e && e.description) }));
</script></body></html>
`;

const pageServer = () => startPageServer({
  '/': ['text/html; charset=utf-8', PAGE],
  '/socket.io.min.js': ['text/javascript; charset=utf-8', readFileSync(CLIENT_JS)],
});

test('Chromium: socket.io-client over polling sees the status of a refusal from an allowed origin', { timeout: 90_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not found: install Debian's chromium (tests/run.sh does, as root)`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const allowed = await pageServer();
  const other = await pageServer();
  let server = null;
  let browser = null;
  try {
    server = await startSocketIoServer({ allowedOrigins: [allowed.origin] });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 30_000,
    });
    const connectError = async (origin) => {
      const page = await (await browser.newContext()).newPage();
      page.setDefaultTimeout(STEP);
      const statuses = [];
      page.on('response', (r) => {
        if (new URL(r.url()).port === String(server.port)) statuses.push(r.status());
      });
      await page.goto(`${origin}/?port=${server.port}&session=no-such-session`);
      await page.waitForFunction(() => window.state.connected || window.state.errors.length > 0);
      const state = await page.evaluate(() => window.state);
      await page.context().close();
      return { state, statuses };
    };

    const ok = await connectError(allowed.origin);
    assert.equal(ok.state.connected, false);
    assert.deepEqual(ok.state.errors, [{ message: 'xhr poll error', description: 401 }],
      `the page sees the real status\n${server.stderr()}`);
    await until(() => server.stderr().includes(`status=401 reason="unknown_session" path="/socket.io/" origin="${allowed.origin}"`),
      STEP, 'the 401 logged with its reason, path and origin');

    const refused = await connectError(other.origin);
    assert.equal(refused.state.connected, false);
    assert.deepEqual(refused.state.errors, [{ message: 'xhr poll error', description: 403 }],
      'a disallowed origin sees the 403 (its CORS headers let the page read the status)');
    await until(() => server.stderr().includes(`status=403 reason="origin" path="/socket.io/" origin="${other.origin}"`),
      STEP, 'the 403 logged with the origin that is not allowed');
  } finally {
    if (browser) await within(browser.close(), STEP, 'browser.close()').catch(() => {});
    if (server) await server.stop();
    await allowed.close();
    await other.close();
  }
});
