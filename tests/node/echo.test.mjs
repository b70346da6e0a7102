// End-to-end tests of ringwire's echo endpoint with the npm `ws` client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const STEP_TIMEOUT = 15_000;

/** Reject after ms with a clear message; every await below goes through this. */
function within(promise, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

function open(url, opts = {}) {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0, ...opts });
  const messages = [];
  const waiters = [];
  let closedWith = null;
  ws.on('error', () => {}); // surfaced through 'close' (code 1006) and the open() rejection
  ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    const w = waiters.shift();
    if (w) w.res(m); else messages.push(m);
  });
  ws.closed = new Promise((res) => ws.on('close', (code, reason) => {
    closedWith = { code, reason: reason.toString() };
    for (const w of waiters.splice(0)) w.rej(new Error(`connection closed (${code} ${closedWith.reason}) while waiting for ${w.what}`));
    res(closedWith);
  }));
  ws.next = (what = 'message') => within(new Promise((res, rej) => {
    const m = messages.shift();
    if (m) res(m);
    else if (closedWith) rej(new Error(`connection closed (${closedWith.code} ${closedWith.reason}) while waiting for ${what}`));
    else waiters.push({ res, rej, what });
  }), STEP_TIMEOUT, what);
  return within(new Promise((res, rej) => {
    ws.once('open', () => res(ws));
    ws.once('error', rej);
    ws.once('unexpected-response', (_req, resp) => rej(new Error(`upgrade refused: HTTP ${resp.statusCode}`)));
  }), STEP_TIMEOUT, `open ${url}`);
}

async function closeAndExpect(ws, code = 1000) {
  ws.close(1000, 'bye');
  const closed = await within(ws.closed, STEP_TIMEOUT, 'close handshake');
  assert.equal(closed.code, code, `close code ${closed.code}`);
}

let server;
before(async () => { server = await startServer(); });
after(async () => {
  const alive = server?.alive();
  await server?.stop();
  assert.ok(alive !== false, `ringwire exited during the tests\n${server?.stderr()}`);
});

test('echo text', { timeout: 30_000 }, async () => {
  const ws = await open(server.url);
  for (const text of ['hello', 'ünïcödé ✓ κόσμε 𝄞', 'x'.repeat(70_000)]) {
    ws.send(text);
    const m = await ws.next('text echo');
    assert.equal(m.isBinary, false);
    assert.equal(m.data.toString('utf8'), text);
  }
  await closeAndExpect(ws);
});

test('echo binary', { timeout: 30_000 }, async () => {
  const ws = await open(server.url);
  for (const size of [0, 1, 125, 126, 65_535, 65_536, 1 << 20]) {
    const buf = randomBytes(size);
    ws.send(buf);
    const m = await ws.next(`binary echo ${size}`);
    assert.equal(m.isBinary, true);
    assert.ok(Buffer.compare(m.data, buf) === 0, `binary payload of ${size} bytes differs`);
  }
  await closeAndExpect(ws);
});

test('echo with permessage-deflate', { timeout: 30_000 }, async () => {
  const ws = await open(server.url, { perMessageDeflate: true });
  assert.match(ws.extensions, /permessage-deflate/, `extensions: ${JSON.stringify(ws.extensions)}`);
  const json = JSON.stringify({ event: 'tick', items: Array.from({ length: 2000 }, (_, i) => ({ i, name: `item ${i}` })) });
  for (let round = 0; round < 3; round++) {
    for (const msg of [json, 'short', Buffer.alloc(1 << 20, 7), randomBytes(50_000)]) {
      ws.send(msg);
      const m = await ws.next('compressed echo');
      if (typeof msg === 'string') {
        assert.equal(m.isBinary, false);
        assert.equal(m.data.toString('utf8'), msg);
      } else {
        assert.equal(m.isBinary, true);
        assert.ok(Buffer.compare(m.data, msg) === 0, 'compressed binary echo differs');
      }
    }
  }
  await closeAndExpect(ws);
});

test('close code: client 1000 is answered with 1000', { timeout: 30_000 }, async () => {
  const ws = await open(server.url);
  ws.send('last');
  await ws.next();
  await closeAndExpect(ws, 1000);
});

test('close code: invalid UTF-8 text is closed with 1007', { timeout: 30_000 }, async () => {
  const ws = await open(server.url);
  // ws validates outgoing text only when asked to; send invalid bytes flagged as text.
  ws.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false });
  const closed = await within(ws.closed, STEP_TIMEOUT, 'server close');
  assert.equal(closed.code, 1007);
});

test('ping is answered with pong', { timeout: 30_000 }, async () => {
  const ws = await open(server.url);
  const pong = within(new Promise((res, rej) => {
    ws.once('pong', res);
    ws.closed.then(({ code, reason }) => rej(new Error(`connection closed (${code} ${reason}) before the pong`)));
  }), STEP_TIMEOUT, 'pong');
  ws.ping(Buffer.from('node ping'));
  assert.equal((await pong).toString(), 'node ping');
  await closeAndExpect(ws);
});

test('100 concurrent clients', { timeout: 60_000 }, async () => {
  const N = 100;
  const MSGS = 20;
  const clients = await Promise.all(Array.from({ length: N }, () => open(server.url)));
  await Promise.all(clients.map(async (ws, i) => {
    for (let j = 0; j < MSGS; j++) {
      const text = `client ${i} message ${j}`;
      ws.send(j % 2 ? Buffer.from(text) : text);
      const m = await ws.next(`client ${i} message ${j}`);
      assert.equal(m.isBinary, j % 2 === 1);
      assert.equal(m.data.toString(), text);
    }
    await closeAndExpect(ws);
  }));
});
