#!/usr/bin/env node
// A tiny web application that logs a user in and lets the browser receive ringwire pushes.
// Node 18+, no dependencies (the socket.io client bundle is served from socket.io-client's
// dist/ when it is installed). See README.md here and docs/browser.md.
//
// What it shows (each step is what tests/node/browser_app.test.mjs does in headless Chromium):
//   - POST /login: the application's own login (cookie `demo-login`), then ONE ringwire
//     session for that login (POST /v1/sessions on ringwire's admin API) whose secret goes to
//     the browser in ringwire's secret cookie (Set-Cookie: HttpOnly, SameSite=Lax, Path=/,
//     Max-Age = the session's ttl, Secure on https, Domain= for a push subdomain).
//   - GET /api/push-session: every tab asks for the login's session before each (re)connect;
//     all tabs share it, so no tab overwrites another tab's cookie. A session that expired
//     (or is about to) is replaced by a new one, cookie included.
//   - POST /api/push-session/renew (body: the session id a tab failed with, again and again):
//     a new session when that one is still the login's (ringwire lost it: restarted without
//     its sessions.key, or a new key), else the login's current one.
//   - GET /api/push-token: a short-lived HS256 JSON Web Token for `auth = "jwt"` endpoints
//     (with --jwt-secret), for pages that use tokens instead of the cookie.
//   - POST /logout: DELETE /v1/sessions/{id} (every tab's sockets close with 4001 on every
//     node), and the cookies are cleared.
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));

const { values: opt } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:3000' },
    // ringwire's admin API, as this application reaches it (never the browser).
    admin: { type: 'string', default: 'http://127.0.0.1:8081' },
    'admin-token': { type: 'string', default: process.env.RINGWIRE_ADMIN_TOKEN ?? '' },
    // ringwire's public origin as the browser reaches it: "" = this page's own origin (a
    // reverse proxy sends /socket.io/ and /ws to ringwire), or e.g. https://push.example.com.
    'push-origin': { type: 'string', default: '' },
    'cookie-name': { type: 'string', default: 'ringwire-secret' }, // ringwire's security.cookie_name
    'cookie-domain': { type: 'string', default: '' }, // e.g. example.com for push.example.com
    secure: { type: 'boolean', default: false }, // Secure cookies (also when X-Forwarded-Proto is https)
    context: { type: 'string', default: '1' },
    'ttl-secs': { type: 'string', default: '28800' }, // the ringwire session lives as long as a login
    'jwt-secret': { type: 'string', default: process.env.RINGWIRE_JWT_SECRET ?? '' }, // [jwt] secret (hex)
    'jwt-ttl-secs': { type: 'string', default: '300' },
    'socketio-client': { type: 'string', default: '' }, // path of socket.io.min.js
  },
});

const CONTEXT = Number(opt.context);
const TTL = Number(opt['ttl-secs']);
const RENEW_BEFORE = Math.min(300, Math.floor(TTL / 10)); // re-mint this close to expiry
const LOGIN_COOKIE = 'demo-login';

/** The login of each `demo-login` cookie: { user, name, ringwire: { session, secret, expires_at } | null }. */
const logins = new Map();
/** User names to numeric ids (ringwire user ids are u32): "42" is 42, other names get the next free id. */
const userIds = new Map();
let nextUserId = 1000;

function userIdOf(name) {
  if (/^\d{1,9}$/.test(name)) return Number(name);
  if (!userIds.has(name)) userIds.set(name, nextUserId++);
  return userIds.get(name);
}

/** ringwire's admin API: { status, json }; bounded at 5 s. */
async function admin(method, path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (opt['admin-token']) headers.Authorization = `Bearer ${opt['admin-token']}`;
  const resp = await fetch(new URL(path, opt.admin), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await resp.text();
  return { status: resp.status, json: text ? JSON.parse(text) : null };
}

function parseCookies(header = '') {
  const out = {};
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** A Set-Cookie value with the attributes this guide recommends. */
function cookie(req, name, value, maxAge) {
  const secure = opt.secure || req.headers['x-forwarded-proto'] === 'https';
  return [
    `${name}=${value}`,
    'Path=/',
    `Max-Age=${maxAge}`,
    'HttpOnly', // page scripts never see the secret (an XSS cannot read it)
    'SameSite=Lax', // sent on the page's same-site WebSocket and polling requests, not cross-site
    ...(secure ? ['Secure'] : []),
    ...(opt['cookie-domain'] ? [`Domain=${opt['cookie-domain']}`] : []),
  ].join('; ');
}

/**
 * The login's ringwire session, minted when it has none, it is about to expire, or it is
 * `failed` (the id a tab could not connect with).
 */
async function pushSession(login, failed = null) {
  const now = Math.floor(Date.now() / 1000);
  const current = login.ringwire;
  if (current && current.expires_at - RENEW_BEFORE > now && current.session !== failed) return current;
  const r = await admin('POST', '/v1/sessions', { user: login.user, context: CONTEXT, ttl_secs: TTL });
  if (r.status !== 201) throw new Error(`POST /v1/sessions answered ${r.status}`);
  login.ringwire = r.json; // { session, secret, cookie, expires_at }
  return login.ringwire;
}

/** An HS256 JSON Web Token for `auth = "jwt"` endpoints (claims `sub`, `ctx`, `exp`). */
function jwt(login) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + Number(opt['jwt-ttl-secs']);
  const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: String(login.user), ctx: CONTEXT, exp })}`;
  const sig = createHmac('sha256', Buffer.from(opt['jwt-secret'], 'hex')).update(signed).digest('base64url');
  return { token: `${signed}.${sig}`, expires_at: exp };
}

function socketIoBundle() {
  const candidates = [opt['socketio-client']];
  for (const base of [HERE, join(HERE, '..', '..', 'tests', 'node')]) {
    try {
      const pkg = createRequire(join(base, 'x.js')).resolve('socket.io-client/package.json');
      candidates.push(join(dirname(pkg), 'dist', 'socket.io.min.js'));
    } catch { /* not installed there */ }
  }
  const found = candidates.find((p) => p && existsSync(p));
  return found ? readFileSync(found) : null;
}
const SOCKETIO_JS = socketIoBundle();

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store', ...headers });
  res.end(body);
}
const json = (res, status, v, headers) => send(res, status, 'application/json', JSON.stringify(v), headers);
const file = (name) => readFileSync(join(HERE, name));

async function body(req) {
  let data = '';
  for await (const chunk of req) {
    data += chunk;
    if (data.length > 10_000) throw new Error('body too large');
  }
  return data;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://app');
  const loginId = parseCookies(req.headers.cookie)[LOGIN_COOKIE];
  const login = loginId ? logins.get(loginId) : undefined;

  if (req.method === 'GET' && url.pathname === '/') {
    return send(res, 200, 'text/html; charset=utf-8', file(login ? 'app.html' : 'login.html'));
  }
  if (req.method === 'GET' && url.pathname === '/page.js') {
    return send(res, 200, 'text/javascript; charset=utf-8', file('page.js'));
  }
  if (req.method === 'GET' && url.pathname === '/socket.io.min.js') {
    if (!SOCKETIO_JS) return send(res, 404, 'text/plain', 'socket.io-client is not installed\n');
    return send(res, 200, 'text/javascript; charset=utf-8', SOCKETIO_JS);
  }
  if (req.method === 'POST' && url.pathname === '/login') {
    const name = new URLSearchParams(await body(req)).get('user')?.trim() ?? '';
    if (!/^[\w.@-]{1,64}$/.test(name)) return send(res, 400, 'text/plain', 'bad user name\n');
    const id = randomBytes(24).toString('base64url');
    const fresh = { user: userIdOf(name), name, ringwire: null };
    const rw = await pushSession(fresh);
    logins.set(id, fresh);
    return send(res, 303, 'text/plain', 'logged in\n', {
      Location: '/',
      'Set-Cookie': [cookie(req, LOGIN_COOKIE, id, TTL), cookie(req, opt['cookie-name'], rw.secret, TTL)],
    });
  }
  if (req.method === 'POST' && url.pathname === '/logout') {
    if (login) {
      logins.delete(loginId);
      if (login.ringwire) await admin('DELETE', `/v1/sessions/${encodeURIComponent(login.ringwire.session)}`);
    }
    return send(res, 303, 'text/plain', 'logged out\n', {
      Location: '/',
      'Set-Cookie': [cookie(req, LOGIN_COOKIE, '', 0), cookie(req, opt['cookie-name'], '', 0)],
    });
  }
  if (!login) return json(res, 401, { error: 'not logged in' });

  const renew = req.method === 'POST' && url.pathname === '/api/push-session/renew';
  if (renew || (req.method === 'GET' && url.pathname === '/api/push-session')) {
    const rw = await pushSession(login, renew ? (await body(req)).trim() : null);
    // Set again on every answer (same value while the session lives): heals a cleared cookie.
    const maxAge = Math.max(0, rw.expires_at - Math.floor(Date.now() / 1000));
    return json(res, 200, {
      session: rw.session,
      expires_at: rw.expires_at,
      user: login.user,
      name: login.name,
      push_origin: opt['push-origin'],
    }, { 'Set-Cookie': cookie(req, opt['cookie-name'], rw.secret, maxAge) });
  }
  if (req.method === 'GET' && url.pathname === '/api/push-token') {
    if (!opt['jwt-secret']) return json(res, 404, { error: 'no --jwt-secret' });
    return json(res, 200, { ...jwt(login), user: login.user, push_origin: opt['push-origin'] });
  }
  if (req.method === 'POST' && url.pathname === '/api/push-me') {
    const text = (await body(req)).slice(0, 1000);
    const r = await admin('POST', '/v1/push', {
      context: CONTEXT, user: login.user, path: '*', message: ['news', text],
    });
    return json(res, r.status, r.json);
  }
  return send(res, 404, 'text/plain', 'not found\n');
}

const [host, port] = opt.listen.split(/:(?=\d+$)/);
const server = createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (!res.headersSent) send(res, 502, 'text/plain', `${e.message}\n`);
    else res.destroy();
  });
});
server.listen(Number(port), host, () => {
  const a = server.address();
  // One line when ready (the tests wait for it): the address actually bound (port 0 = any).
  console.log(`browser-app listening on http://${a.address}:${a.port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
