// The browser integration guide (docs/browser.md), step by step, in headless Debian Chromium
// (playwright-core) against the example application examples/browser-app/ and a ringwire
// started on examples/browser-app/ringwire.toml (only the lines marked `# @NAME` rewritten:
// ports, the page's origin, a fresh sessions.key and jwt secret).
//
// Three layouts, one test each:
//   - push origin: the app on http://127.0.0.1:A, ringwire's public listener on
//     http://127.0.0.1:B (an origin other than the page's, as a push subdomain is;
//     allowed_origins names the page's origin). Cookies are per host, not per port, so the
//     cookie the app sets reaches ringwire.
//   - push subdomain: the app on http://app.example.test:A, ringwire on
//     http://push.example.test:B (Chromium resolves both names to 127.0.0.1 with
//     --host-resolver-rules); the app sets the cookie with Domain=example.test so that it
//     reaches the push host; allowed_origins names the app's origin.
//   - same origin behind nginx: Debian's nginx runs tuning/proxies/nginx.conf (lines marked
//     `# @NAME` rewritten, @NODE_B dropped: one node) with the two locations the guide adds to
//     its server block: `/jwt` (the example's extra endpoint) to ringwire and `/` to the app.
//     The browser sees one origin; allowed_origins stays [] (same host). Skipped when
//     /usr/sbin/nginx is missing.
//
// One browser profile, two tabs of one login:
//   - the user logs in through the app's form: the cookies come from the app's Set-Cookie
//     (never injected), ringwire's secret cookie HttpOnly, SameSite=Lax, Path=/;
//   - each tab opens a raw WebSocket (/ws, session + cookie), socket.io-client (/socket.io/,
//     long-polling first, then the upgrade to WebSocket, withCredentials) and a raw WebSocket
//     with a JSON Web Token in the subprotocol list (/jwt); both tabs use the login's one
//     ringwire session (the design of docs/browser.md, "Tabs");
//   - a push through the admin API reaches all six sockets, and so does the page's
//     "Push to me" (the app pushes to its user);
//   - ringwire restarts (SIGTERM, drain, start on the same ports with the same key): every
//     socket of both tabs reconnects by itself (socket.io again polling then WebSocket) and
//     the next push reaches all six again;
//   - (push origin and nginx layouts) ringwire restarts with another key, as one without
//     sessions.key does: the login's session is refused; the tabs hand it back to the app
//     after 4 failed attempts in a row (socket.io-client: at once on a 401 it can read, the
//     same origin), get a new session, and the next push reaches all six again;
//   - logout in tab 1 (DELETE /v1/sessions/{id}): the session's sockets close (4001) in both
//     tabs, both tabs learn the login is over, and the user has no socket left.
// Skipped (with a message) only when /usr/bin/chromium is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BINARY, CHROMIUM, freePort, launchChromium, startConfigured, until, within } from './server.mjs';

const NGINX = '/usr/sbin/nginx';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const APP_DIR = join(ROOT, 'examples', 'browser-app');
const STEP = 30_000; // one step on a loaded 2-core machine (a restart drains 5 s, clients back off up to 5 s)
const CONTEXT = 1;
const SOCKETS_PER_TAB = 3;

const require = createRequire(import.meta.url);
const CLIENT_JS = join(dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');

/** examples/browser-app/ringwire.toml with the value of each `# @NAME` line replaced. */
function exampleConfig(values) {
  let text = readFileSync(join(APP_DIR, 'ringwire.toml'), 'utf8');
  for (const [name, value] of Object.entries(values)) {
    const re = new RegExp(`^(\\s*[\\w.]+\\s*=\\s*).*?(\\s*# @${name})$`, 'm');
    assert.match(text, re, `@${name} line in examples/browser-app/ringwire.toml`);
    text = text.replace(re, (_, head, mark) => `${head}${value}${mark}`);
  }
  return text;
}

/** node examples/browser-app/app.mjs with `args`; resolves once it prints its ready line. */
async function startApp(args) {
  const child = spawn(process.execPath, [join(APP_DIR, 'app.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  await within(new Promise((res, rej) => {
    child.stdout.on('data', () => { if (out.includes('browser-app listening')) res(); });
    child.once('exit', (code) => rej(new Error(`browser-app exited (${code}) before ready\n${out}`)));
  }), 10_000, `browser-app ready\n${out}`);
  return {
    output: () => out,
    stop: () => new Promise((res) => {
      if (child.exitCode !== null) return res();
      child.once('exit', res);
      child.kill('SIGTERM');
    }),
  };
}

/** `text` with the address:port on each line marked `# @NAME` replaced by `value`. */
function setMarked(text, name, value) {
  const re = new RegExp(`^(.*?)\\d+\\.\\d+\\.\\d+\\.\\d+:\\d+(.*# @${name})$`, 'gm');
  assert.ok(new RegExp(re.source, 'm').test(text), `@${name} line in tuning/proxies/nginx.conf`);
  return text.replace(re, (_, head, tail) => `${head}${value}${tail}`);
}

/**
 * nginx on 127.0.0.1:`port` with tuning/proxies/nginx.conf in front of ringwire (`ringwire`,
 * host:port) plus the guide's two locations: /jwt to ringwire, / to the app (`app`, host:port).
 */
async function startNginx(port, ringwire, app) {
  const dir = mkdtempSync(join(tmpdir(), 'ringwire-nginx-'));
  let site = readFileSync(join(ROOT, 'tuning', 'proxies', 'nginx.conf'), 'utf8');
  site = setMarked(site, 'LISTEN', `127.0.0.1:${port}`);
  site = setMarked(site, 'NODE_A', ringwire);
  site = site.replace(/^.*# @NODE_B\n/m, '');
  const end = site.lastIndexOf('}');
  site = `${site.slice(0, end)}
    location /jwt {
        proxy_pass http://ringwire;
    }

    location / {
        proxy_pass http://${app};
    }
}
`;
  writeFileSync(join(dir, 'ringwire.conf'), site);
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `    ${k}_temp_path ${dir}/${k};`).join('\n');
  writeFileSync(join(dir, 'main.conf'), `daemon off;
master_process on;
worker_processes 1;
${process.geteuid() === 0 ? 'user root root;' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 512; }
http {
    access_log ${dir}/access.log;
${temps}
    include ${dir}/ringwire.conf;
}
`);
  const child = spawn(NGINX, ['-e', join(dir, 'startup.log'), '-p', `${dir}/`, '-c', join(dir, 'main.conf')],
    { stdio: 'ignore', detached: true });
  const log = () => ['startup.log', 'error.log'].map((f) => {
    try { return readFileSync(join(dir, f), 'utf8').slice(-3000); } catch { return ''; }
  }).join('\n');
  await until(() => new Promise((res) => {
    if (child.exitCode !== null) return res(true);
    const c = createConnection(port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); res(true); });
    c.once('error', () => res(false));
  }), 15_000, 'nginx listening');
  assert.equal(child.exitCode, null, `nginx exited at start:\n${log()}`);
  return {
    log,
    async stop() {
      if (child.exitCode === null) {
        const done = new Promise((res) => child.once('exit', res));
        child.kill('SIGTERM');
        await within(done, 10_000, 'nginx exit').catch(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Background tabs must not be throttled: both tabs keep their timers (reconnects).
const UNTHROTTLED = ['--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows'];

const tabState = (page) => page.evaluate(() => window.ringwireDemo);

/** Wait until `cond(state)` holds for the tab's window.ringwireDemo; fails with the state. */
async function waitTab(page, name, what, cond, ms = STEP) {
  let last = null;
  try {
    await until(async () => {
      last = await tabState(page);
      return cond(last);
    }, ms, `${name}: ${what}`);
  } catch (e) {
    throw new Error(`${e.message}\n${name} state: ${JSON.stringify(last)}`);
  }
}

/** Every socket of the tab is connected for the `n`th time (socket.io: polling, then websocket). */
const connected = (n) => (s) => s.raw.opens >= n && s.raw.status === 'open'
  && s.sio.connects >= n && s.sio.opened.length >= n && s.sio.opened.every((t) => t === 'polling')
  && s.sio.upgrades.length >= n && s.sio.upgrades.every((t) => t === 'websocket')
  && s.sio.status === 'connected (websocket)'
  && s.jwt.opens >= n && s.jwt.status === 'open';

/** Push `payload` as a Socket.IO event `news` (raw sockets get the JSON text); expect `sockets`. */
async function push(server, user, payload, sockets) {
  const r = await server.admin('POST', '/v1/push', {
    context: CONTEXT, user, path: '*', message: ['news', payload],
  });
  assert.equal(r.status, 202, `push: ${r.status} ${r.text}`);
  assert.equal(r.json.sockets, sockets, `push reached ${r.text}`);
}

const received = (payload) => (s) => {
  const text = JSON.stringify(['news', payload]);
  return s.raw.received.includes(text) && s.jwt.received.includes(text)
    && s.sio.received.some((d) => JSON.stringify(d) === JSON.stringify(payload));
};

/** The guide's steps with `layout` 'push-origin', 'subdomain' or 'proxy' (see the top of this file). */
async function guide(t, layout) {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not found: install Debian's chromium (tests/run.sh does, as root)`);
    return;
  }
  if (layout === 'proxy' && !existsSync(NGINX)) {
    t.skip(`${NGINX} not found: install Debian's nginx (tests/run.sh does, as root)`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const appPort = await freePort();
  const proxyPort = layout === 'proxy' ? await freePort() : null;
  // The origin of the pages: the app itself, or nginx in front of app and ringwire.
  const host = layout === 'subdomain' ? 'app.example.test' : '127.0.0.1';
  const appOrigin = `http://${host}:${proxyPort ?? appPort}`;
  const pushHost = layout === 'subdomain' ? 'push.example.test' : '127.0.0.1';
  const cookieDomain = layout === 'subdomain' ? '.example.test' : '127.0.0.1';
  let proxy = null;
  const key = execFileSync(BINARY, ['keygen'], { encoding: 'utf8' }).trim(); // the guide's `ringwire keygen`
  const jwtSecret = randomBytes(32).toString('hex');
  let server = null;
  let app = null;
  let browser = null;
  try {
    const configWith = (sessionKey) => ({ port, adminPort }) => exampleConfig({
      LISTEN: `"127.0.0.1:${port}"`,
      ADMIN: `"127.0.0.1:${adminPort}"`,
      ORIGINS: JSON.stringify(layout === 'proxy' ? [] : [appOrigin]),
      KEY: `"${sessionKey}"`,
      JWT_SECRET: `"${jwtSecret}"`,
    });
    server = await startConfigured(configWith(key));
    app = await startApp([
      '--listen', `127.0.0.1:${appPort}`,
      '--admin', `http://127.0.0.1:${server.adminPort}`,
      '--push-origin', layout === 'proxy' ? '' : `http://${pushHost}:${server.port}`,
      ...(layout === 'subdomain' ? ['--cookie-domain', 'example.test'] : []),
      '--jwt-secret', jwtSecret,
      '--socketio-client', CLIENT_JS,
    ]);
    if (layout === 'proxy') proxy = await startNginx(proxyPort, `127.0.0.1:${server.port}`, `127.0.0.1:${appPort}`);
    browser = await launchChromium(chromium, [...UNTHROTTLED, ...(layout === 'subdomain'
      ? ['--host-resolver-rules=MAP app.example.test 127.0.0.1, MAP push.example.test 127.0.0.1'] : [])]);
    const context = await browser.newContext(); // one browser profile: one cookie jar
    const tab1 = await context.newPage();
    tab1.setDefaultTimeout(STEP);

    // Log in through the app's form: the cookies come from its Set-Cookie.
    await tab1.goto(`${appOrigin}/`);
    await tab1.fill('input[name=user]', 'alice');
    await tab1.click('button[type=submit]');
    await tab1.waitForSelector('#raw-status'); // the app's page after the 303 to /
    const cookies = await context.cookies(appOrigin);
    const secret = cookies.filter((c) => c.name === 'ringwire-secret');
    assert.equal(secret.length, 1, `one ringwire-secret cookie: ${JSON.stringify(cookies)}`);
    assert.deepEqual(
      { httpOnly: secret[0].httpOnly, sameSite: secret[0].sameSite, path: secret[0].path, domain: secret[0].domain },
      { httpOnly: true, sameSite: 'Lax', path: '/', domain: cookieDomain },
    );
    assert.ok(secret[0].expires > Date.now() / 1000 + 3600, `a persistent cookie (Max-Age): ${secret[0].expires}`);

    const tab2 = await context.newPage();
    tab2.setDefaultTimeout(STEP);
    await tab2.goto(`${appOrigin}/`); // logged in already: the app's page
    const tabs = [['tab 1', tab1], ['tab 2', tab2]];
    for (const [name, tab] of tabs) await waitTab(tab, name, 'first connect', connected(1));

    const [s1, s2] = [await tabState(tab1), await tabState(tab2)];
    assert.equal(s1.sessions.length, 1);
    assert.deepEqual(s2.sessions, s1.sessions, 'both tabs use the login\'s one session');
    assert.equal((await context.cookies(appOrigin)).filter((c) => c.name === 'ringwire-secret').length, 1);
    const user = s1.user.id;
    const sockets = await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${user}&path=*`);
    assert.equal(sockets.json?.count, 2 * SOCKETS_PER_TAB, `GET /v1/sockets: ${sockets.text}`);

    await push(server, user, { n: 1 }, 2 * SOCKETS_PER_TAB);
    for (const [name, tab] of tabs) await waitTab(tab, name, 'push 1', received({ n: 1 }));
    // The page's own button: the app pushes to its user (POST /api/push-me).
    await tab2.fill('#text', 'from tab 2');
    await tab2.click('#push');
    for (const [name, tab] of tabs) await waitTab(tab, name, '"Push to me"', received('from tab 2'));

    // Restart with the same key: the session id and the cookie stay valid.
    await server.restart();
    for (const [name, tab] of tabs) await waitTab(tab, name, 'reconnect after the restart', connected(2));
    await until(async () => (await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${user}&path=*`))
      .json?.count === 2 * SOCKETS_PER_TAB, STEP, 'six sockets after the restart');
    await push(server, user, { n: 2 }, 2 * SOCKETS_PER_TAB);
    for (const [name, tab] of tabs) await waitTab(tab, name, 'push 2', received({ n: 2 }));
    for (const [name, tab] of tabs) {
      const s = await tabState(tab);
      assert.ok(s.raw.closes.includes(1001), `${name}: the drain closed the raw socket with 1001: ${s.raw.closes}`);
      assert.ok(s.sio.disconnects.includes('transport close'), `${name}: socket.io-client saw the drain: ${s.sio.disconnects}`);
    }
    // (A tab whose attempts failed RENEW_AFTER times in a row while ringwire was down may have
    // asked for a new session meanwhile: harmless, the other tab picks it up on its next
    // reconnect, so which session each tab holds now is not asserted.)

    if (layout !== 'subdomain') {
      // A restart with another key (as one without sessions.key makes): the login's session
      // is refused now; each tab hands it back after RENEW_AFTER failures, the app mints a
      // new session for the login (once: the second tab's hand-back of the same id gets
      // the new one), and both tabs connect with it.
      const lost = (await tabState(tab1)).sessions.at(-1);
      await server.restart(configWith(execFileSync(BINARY, ['keygen'], { encoding: 'utf8' }).trim()));
      for (const [name, tab] of tabs) await waitTab(tab, name, 'reconnect with a new session', connected(3), 3 * STEP);
      for (const [name, tab] of tabs) assert.notEqual((await tabState(tab)).sessions.at(-1), lost, `${name}: a new session`);
      await push(server, user, { n: 3 }, 2 * SOCKETS_PER_TAB);
      for (const [name, tab] of tabs) await waitTab(tab, name, 'push 3', received({ n: 3 }));
    }

    // Logout in tab 1 ends the login's session: every socket of both tabs closes.
    await tab1.click('text=Log out');
    await tab1.waitForSelector('input[name=user]'); // the login form after the 303 to /
    // Tab 2 learns it from ringwire (raw close 4001, or socket.io's DISCONNECT, whichever
    // comes first), asks the app, gets 401 and closes the rest.
    await waitTab(tab2, 'tab 2', 'logged out', (s) => s.loggedOut
      && (s.raw.closes.includes(4001) || s.sio.disconnects.includes('io server disconnect')));
    await until(async () => (await server.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${user}&path=*`))
      .json?.count === 0, STEP, 'no socket left after the logout');
    assert.equal((await context.cookies(appOrigin)).filter((c) => c.name === 'ringwire-secret').length, 0,
      'the logout cleared the cookie');
  } catch (e) {
    throw new Error(`${e.message}\n--- browser-app ---\n${app?.output() ?? ''}\n--- ringwire ---\n${server?.stderr().slice(-3000) ?? ''}\n--- nginx ---\n${proxy?.log() ?? ''}`);
  } finally {
    if (browser) await within(browser.close(), 10_000, 'browser.close()').catch(() => {});
    if (proxy) await proxy.stop();
    if (app) await app.stop();
    if (server) await server.stop();
  }
}

test('browser-app, push origin (another port of the host, allowed_origins): login, two tabs, restart, logout', { timeout: 240_000 }, (t) => guide(t, 'push-origin'));

test('browser-app, push subdomain (cookie Domain=, allowed_origins): login, two tabs, restart, logout', { timeout: 240_000 }, (t) => guide(t, 'subdomain'));

test('browser-app, same origin behind nginx (tuning/proxies/nginx.conf): login, two tabs, restart, logout', { timeout: 240_000 }, (t) => guide(t, 'proxy'));
