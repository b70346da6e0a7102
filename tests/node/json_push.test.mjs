// JSON payloads: `message` of POST /v1/push may be any JSON value, not only a string. On a
// Socket.IO endpoint the value is the event itself, `["event", args...]`, given as JSON (no
// second encoding): socket.io-client 4.x and 2.x receive the event with its arguments as the
// values they were (objects, arrays, numbers, null), exactly as with the same array sent as a
// string. On the raw endpoint the socket receives the value's compact JSON text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { io as ioV4 } from 'socket.io-client';
import ioV2 from 'socket.io-client-v2';
import { startSocketIoServer, within } from './server.mjs';

const STEP = 10_000;
const CONTEXT = 1;
let server;

before(async () => {
  server = await startSocketIoServer({});
});

after(async () => {
  const alive = server?.alive();
  await server?.stop();
  assert.ok(alive !== false, `ringwire exited during the tests\n${server?.stderr()}`);
});

async function mint(user) {
  const r = await server.admin('POST', '/v1/sessions', { user, context: CONTEXT, ttl_secs: 3600 });
  assert.equal(r.status, 201, r.text);
  return r.json;
}

async function push(user, path, message) {
  const r = await server.admin('POST', '/v1/push', { context: CONTEXT, user, path, message });
  assert.equal(r.status, 202, `POST /v1/push: ${r.status} ${r.text}`);
  return r.json;
}

const VALUE = { id: 7, tags: ['a', 'é'], nested: { ok: true, none: null }, n: 2.5 };

for (const [label, io, user] of [['socket.io-client 4.x', ioV4, 101], ['socket.io-client 2.x', ioV2, 102]]) {
  test(`${label}: a push whose message is a JSON array arrives as the event with its values`, { timeout: 30_000 }, async () => {
    const s = await mint(user);
    const socket = io(server.url, {
      forceNew: true, reconnection: false, timeout: STEP, transports: ['websocket'],
      query: { session: s.session }, extraHeaders: { Cookie: s.cookie },
    });
    try {
      const got = [];
      let wake = () => {};
      socket.on('news', (...args) => { got.push(args); wake(); });
      await within(new Promise((res, rej) => {
        socket.on('connect', res);
        socket.on('connect_error', (e) => rej(new Error(`connect_error ${e?.message}`)));
      }), STEP, 'connect');
      const next = (n) => within(new Promise((res) => { wake = () => got.length >= n && res(); wake(); }), STEP, `news #${n}`);

      assert.equal((await push(user, '/socket.io/*', ['news', VALUE, [1, 2], 42, null])).sockets, 1);
      await next(1);
      assert.deepEqual(got[0], [VALUE, [1, 2], 42, null], 'arguments are the JSON values');
      // The same event as a string of JSON: the same arguments.
      await push(user, '/socket.io/*', JSON.stringify(['news', VALUE]));
      await next(2);
      assert.deepEqual(got[1], [VALUE]);
    } finally {
      socket.close();
    }
  });
}

test('raw endpoint: a JSON value arrives as its compact JSON text', { timeout: 30_000 }, async () => {
  const user = 103;
  const s = await mint(user);
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws?session=${encodeURIComponent(s.session)}`,
    { headers: { Cookie: s.cookie } });
  try {
    const got = [];
    let wake = () => {};
    ws.on('message', (d) => { got.push(String(d)); wake(); });
    await within(new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); }), STEP, 'open');
    const values = [VALUE, [1, 'two'], 3, false, null, 'plain text'];
    for (const v of values) await push(user, '/ws', v);
    await within(new Promise((res) => { wake = () => got.length >= values.length && res(); wake(); }), STEP, 'all pushes');
    assert.deepEqual(got, values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))));
  } finally {
    ws.close();
  }
});
