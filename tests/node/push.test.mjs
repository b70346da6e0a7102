// End-to-end: sessions and pushes with the npm `ws` client and the admin API over fetch.
//   POST /v1/sessions -> 201 {session, secret, cookie, expires_at}
//   new WebSocket(ws://.../ws?session=<id>, { headers: { Cookie: cookie } }) -> open
//   POST /v1/push -> 202 {sockets: N}; the message arrives as one text message
//   DELETE /v1/sessions/<id> -> 204; the socket closes with 4001 "session terminated"
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startPushServer } from './server.mjs';

const STEP = 10_000;

function within(promise, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

/** Open a ws with a message queue; rejects with the HTTP status on a refused upgrade. */
function open(url, cookie) {
  const ws = new WebSocket(url, { headers: cookie ? { Cookie: cookie } : {} });
  const messages = [];
  const waiters = [];
  let closedWith = null;
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    const m = { text: data.toString(), isBinary };
    const w = waiters.shift();
    if (w) w.res(m); else messages.push(m);
  });
  ws.closed = new Promise((res) => ws.on('close', (code, reason) => {
    closedWith = { code, reason: reason.toString() };
    for (const w of waiters.splice(0)) w.rej(new Error(`closed (${code} ${closedWith.reason}) while waiting for a message`));
    res(closedWith);
  }));
  ws.next = () => within(new Promise((res, rej) => {
    const m = messages.shift();
    if (m) res(m);
    else if (closedWith) rej(new Error(`closed (${closedWith.code} ${closedWith.reason}) while waiting for a message`));
    else waiters.push({ res, rej });
  }), STEP, 'pushed message');
  ws.pending = () => messages.length;
  return within(new Promise((res, rej) => {
    ws.once('open', () => res(ws));
    ws.once('unexpected-response', (_req, resp) => {
      const err = new Error(`upgrade refused: HTTP ${resp.statusCode}`);
      err.status = resp.statusCode;
      resp.resume();
      ws.terminate?.();
      rej(err);
    });
    ws.once('error', rej);
  }), STEP, `open ${url}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
before(async () => { server = await startPushServer({ token: 'node-admin-token-0123' }); });
after(async () => {
  const alive = server?.alive();
  await server?.stop();
  assert.ok(alive !== false, `ringwire exited during the tests\n${server?.stderr()}`);
});

async function mint(user, context = 1, ttl_secs = 3600) {
  const r = await server.admin('POST', '/v1/sessions', { user, context, ttl_secs });
  assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
  assert.equal(typeof r.json.session, 'string');
  assert.equal(r.json.cookie, `ringwire-secret=${r.json.secret}`);
  return r.json;
}

test('mint, connect with cookie, push, terminate -> 4001', { timeout: 30_000 }, async () => {
  const s = await mint(42, 1);
  const ws = await open(server.wsUrl(s.session), s.cookie);

  const p = await server.admin('POST', '/v1/push', { context: 1, user: 42, path: '/ws', message: 'hello from node' });
  assert.equal(p.status, 202, `POST /v1/push: ${p.status} ${p.text}`);
  assert.equal(p.json?.sockets, 1, p.text);
  const m = await ws.next();
  assert.equal(m.isBinary, false, 'a push on a raw endpoint is a text message');
  assert.equal(m.text, 'hello from node');

  const q = await server.admin('GET', '/v1/sockets?context=1&user=42');
  assert.equal(q.status, 200, q.text);
  assert.equal(q.json.exists, true);
  assert.equal(q.json.count, 1);

  const d = await server.admin('DELETE', `/v1/sessions/${encodeURIComponent(s.session)}`);
  assert.equal(d.status, 204, `DELETE /v1/sessions: ${d.status} ${d.text}`);
  const closed = await within(ws.closed, STEP, 'close after DELETE');
  assert.equal(closed.code, 4001, `close code ${closed.code} ${closed.reason}`);
  assert.equal(closed.reason, 'session terminated');

  // The terminated session can no longer upgrade.
  await assert.rejects(open(server.wsUrl(s.session), s.cookie), (e) => e.status === 401);
});

test('batch push and path filter', { timeout: 30_000 }, async () => {
  const a = await mint(7, 2);
  const b = await mint(8, 2);
  const wa = await open(server.wsUrl(a.session), a.cookie);
  const wb = await open(server.wsUrl(b.session), b.cookie);
  const r = await server.admin('POST', '/v1/push/batch', {
    pushes: [
      { context: 2, user: 7, message: 'for 7' },
      { context: 2, user: 8, path: '/ws', message: 'for 8' },
      { context: 2, user: 8, path: '/socket.io/*', message: 'nobody' },
    ],
  });
  assert.equal(r.status, 202, r.text);
  assert.equal(r.json?.pushes, 3, r.text);
  assert.equal(r.json?.sockets, 2, r.text);
  assert.equal((await wa.next()).text, 'for 7');
  assert.equal((await wb.next()).text, 'for 8');
  await sleep(300);
  assert.equal(wa.pending() + wb.pending(), 0, 'nothing else arrives');
  wa.close(1000);
  wb.close(1000);
  await within(Promise.all([wa.closed, wb.closed]), STEP, 'client close');
});

test('refusals seen by ws: missing cookie 401, wrong secret 401, no session 401', { timeout: 30_000 }, async () => {
  const s = await mint(9, 1);
  await assert.rejects(open(server.wsUrl(s.session), null), (e) => e.status === 401);
  await assert.rejects(open(server.wsUrl(s.session), 'ringwire-secret=nope'), (e) => e.status === 401);
  await assert.rejects(open(`ws://127.0.0.1:${server.port}/ws`, s.cookie), (e) => e.status === 401);
  let stats;
  for (let i = 0; i < 60; i++) {  // closes of the earlier tests are asynchronous: up to 3 s
    stats = await server.admin('GET', '/v1/stats');
    assert.equal(stats.status, 200, stats.text);
    if (stats.json.sockets === 0) break;
    await sleep(50);
  }
  assert.equal(stats.json.sockets, 0, `sockets leaked: ${stats.text}`);
});

test('admin API needs the bearer token', { timeout: 30_000 }, async () => {
  const resp = await fetch(`http://127.0.0.1:${server.adminPort}/v1/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: 1, context: 1, ttl_secs: 60 }),
    signal: AbortSignal.timeout(5_000),
  });
  assert.equal(resp.status, 401);
  await resp.arrayBuffer();
});
