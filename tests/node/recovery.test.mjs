// End-to-end: Socket.IO connection state recovery with the unmodified npm socket.io-client 4.8
// on a socketio endpoint with [history] on.
//   CONNECT answer {"sid","pid"}; every pushed event's last argument is its offset
//   ("<epoch>-<offset>", kept by the client as _lastOffset); on reconnection the client sends
//   {"pid","offset"} in its CONNECT and, when its session is restored, gets the same pid back
//   (socket.recovered === true) then the events it missed, in order, before live ones.
//   When the history cannot prove it missed nothing (more than `size` pushes, older than the
//   ttl, another epoch after a restart), recovered is false and nothing is replayed.
// The transport is killed with socket.io.engine.close() (a WebSocket close, or the Engine.IO
// close packet over polling) or a TCP reset; the client's own reconnection brings it back.
// socket.io-client 2.x (Engine.IO v3) has no recovery protocol: its events are unchanged.
// Every wait is bounded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import ioV2 from 'socket.io-client-v2';
import { startSocketIoServer, sleep, until } from './server.mjs';

const STEP = 8_000;
const CONTEXT = 1;
const PATH_FILTER = '/socket.io/*';
const TRANSPORTS = [['websocket'], ['polling']];
// The client reconnects this long after losing its transport: time enough for the pushes
// made "while away" (each push checks that it reached no socket).
const AWAY_MS = 3_000;

const history = (size, ttlSecs) => `[history]\nenabled = true\nsize = ${size}\nttl_secs = ${ttlSecs}\n`;

let server;
let nextUser = 1000;

before(async () => {
  server = await startSocketIoServer({ extra: history(100, 60) });
});

after(async () => {
  const alive = server?.alive();
  await server?.stop();
  assert.ok(alive !== false, `ringwire exited during the tests\n${server?.stderr()}`);
});

async function mint(srv, user) {
  const r = await srv.admin('POST', '/v1/sessions', { user, context: CONTEXT, ttl_secs: 3600 });
  assert.equal(r.status, 201, `POST /v1/sessions: ${r.status} ${r.text}`);
  return r.json;
}

async function push(srv, user, n, expectSockets, path = PATH_FILTER) {
  const message = JSON.stringify(['news', { n }]);
  const r = await srv.admin('POST', '/v1/push', { context: CONTEXT, user, path, message });
  assert.equal(r.status, 202, `POST /v1/push: ${r.status} ${r.text}`);
  if (expectSockets !== undefined) {
    assert.equal(r.json.sockets, expectSockets, `push ${n}: ${r.text}`);
  }
  return r.json;
}

async function socketCount(srv, user) {
  const r = await srv.admin('GET', `/v1/sockets?context=${CONTEXT}&user=${user}&path=${PATH_FILTER}`);
  assert.equal(r.status, 200, r.text);
  return r.json.count;
}

async function resumes(srv) {
  const r = await fetch(`http://127.0.0.1:${srv.adminPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await r.text();
  const out = {};
  for (const m of text.matchAll(/^ringwire_history_resumes_total\{outcome="(\w+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/**
 * A socket.io-client 4.8 socket with its own reconnection (after `away` ms, no jitter), and
 * what it received: news(), the `n` of every 'news' event in order; offsets, their last
 * argument; connects, `socket.recovered` at each 'connect'.
 */
function client(srv, s, { transports, nsp = '/', away = AWAY_MS, manager = null } = {}) {
  const opts = {
    forceNew: manager === null, query: { session: s.session }, extraHeaders: { Cookie: s.cookie }, transports,
    reconnectionDelay: away, reconnectionDelayMax: away, randomizationFactor: 0, timeout: STEP,
  };
  const socket = manager ? manager.socket(nsp) : io(srv.url + (nsp === '/' ? '' : nsp), opts);
  const got = { news: [], offsets: [], connects: [], disconnects: [], errors: [] };
  socket.on('news', (...args) => {
    got.news.push(args[0].n);
    got.offsets.push(args[args.length - 1]);
  });
  socket.on('connect', () => got.connects.push(socket.recovered));
  socket.on('disconnect', (r) => got.disconnects.push(r));
  socket.on('connect_error', (e) => got.errors.push(String(e?.message ?? e)));
  return {
    socket,
    got,
    connected: (n, what) => until(() => got.connects.length >= n, STEP, `${what}: connect #${n} (errors ${got.errors})`),
    received: (n, what) => until(() => got.news.length >= n, STEP, `${what}: ${n} events, got ${JSON.stringify(got.news)}`),
    close() { socket.io.reconnection(false); socket.close(); socket.io.engine?.close(); },
  };
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

/** Kill the transport the way the test says and wait until the server lost the socket. */
async function kill(srv, user, c, how) {
  const before = c.got.disconnects.length;
  if (how === 'reset') {
    // A TCP reset under the WebSocket (no close frame).
    c.socket.io.engine.transport.ws._socket.resetAndDestroy();
  } else {
    c.socket.io.engine.close();
  }
  await until(() => c.got.disconnects.length > before, STEP, 'client disconnected');
  await until(async () => (await socketCount(srv, user)) === 0, STEP, 'server lost the socket');
}

for (const transports of TRANSPORTS) {
  const kills = transports[0] === 'websocket' ? ['close', 'reset'] : ['close'];
  for (const how of kills) {
    test(`${transports}: killed (${how}), 50 pushes while away, the client's reconnection recovers them all, in order, once`, { timeout: 40_000 }, async () => {
      const user = nextUser++;
      const s = await mint(server, user);
      const c = client(server, s, { transports });
      try {
        await c.connected(1, 'first');
        assert.equal(c.got.connects[0], false, 'a first connect recovers nothing');
        for (const n of range(0, 3)) await push(server, user, n, 1);
        await c.received(3, 'live');
        assert.ok(c.got.offsets.every((o) => /^[0-9a-f]{16}-\d+$/.test(o)), `offsets: ${c.got.offsets}`);
        const pid = c.socket._pid;
        const before = await resumes(server);

        await kill(server, user, c, how);
        for (const n of range(3, 53)) await push(server, user, n, 0);
        await c.connected(2, 'reconnection');
        assert.equal(c.got.connects[1], true, 'socket.recovered after the reconnection');
        assert.equal(c.socket._pid, pid, 'the same private session');
        await c.received(53, 'replayed');
        for (const n of range(53, 55)) await push(server, user, n, 1);
        await c.received(55, 'live after the replay');
        await sleep(200);
        assert.deepEqual(c.got.news, range(0, 55), 'everything once, in order');
        const offsets = c.got.offsets.map((o) => Number(o.split('-')[1]));
        assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `offsets increase: ${offsets}`);
        const after = await resumes(server);
        assert.equal(after.recovered, before.recovered + 1, JSON.stringify(after));
      } finally {
        c.close();
      }
    });
  }

  test(`${transports}: pushes racing the reconnection each arrive once, in order`, { timeout: 40_000 }, async () => {
    const user = nextUser++;
    const s = await mint(server, user);
    const c = client(server, s, { transports, away: 500 });
    try {
      await c.connected(1, 'first');
      await push(server, user, 0, 1);
      await c.received(1, 'live');
      await kill(server, user, c, 'close');
      // Pushes every few ms from before the reconnection to after it.
      let n = 1;
      let reached = 0;
      while (c.got.connects.length < 2 || reached < 20) {
        const r = await push(server, user, n++);
        if (c.got.connects.length >= 2) reached += r.sockets;
        if (n > 2_000) throw new Error('no reconnection while pushing');
        await sleep(5);
      }
      assert.equal(c.got.connects[1], true, 'recovered');
      await c.received(n, 'every push');
      await sleep(200);
      assert.deepEqual(c.got.news, range(0, n), 'each push once, in order');
    } finally {
      c.close();
    }
  });

  test(`${transports}: only the pushes whose path filter matches the socket are recovered`, { timeout: 40_000 }, async () => {
    const user = nextUser++;
    const s = await mint(server, user);
    const c = client(server, s, { transports });
    try {
      await c.connected(1, 'first');
      await push(server, user, 0, 1);
      await c.received(1, 'live');
      await kill(server, user, c, 'close');
      await push(server, user, 1, 0);
      await push(server, user, 2, 0, '/elsewhere/*');
      await push(server, user, 3, 0, '*');
      await push(server, user, 4, 0, '/ws');
      await c.connected(2, 'reconnection');
      assert.equal(c.got.connects[1], true, 'recovered');
      await c.received(3, 'replayed');
      await push(server, user, 5, 0, '/elsewhere/*');
      await push(server, user, 6, 1);
      await c.received(4, 'live after the replay');
      await sleep(200);
      assert.deepEqual(c.got.news, [0, 1, 3, 6], 'what live delivery would have given it, once');
    } finally {
      c.close();
    }
  });

  test(`${transports}: two namespaces both restored`, { timeout: 40_000 }, async () => {
    const user = nextUser++;
    const s = await mint(server, user);
    const root = client(server, s, { transports });
    const chat = client(server, s, { transports, nsp: '/chat', manager: root.socket.io });
    try {
      await root.connected(1, '/');
      await chat.connected(1, '/chat');
      await push(server, user, 0, 1);
      await root.received(1, 'live on /');
      const pids = [root.socket._pid, chat.socket._pid];
      assert.ok(pids[0] && pids[1] && pids[0] !== pids[1], `one private session per namespace: ${pids}`);
      await kill(server, user, root, 'close');
      for (const n of range(1, 6)) await push(server, user, n, 0);
      await root.connected(2, '/ again');
      await chat.connected(2, '/chat again');
      assert.deepEqual([root.got.connects[1], chat.got.connects[1]], [true, true], 'both recovered');
      assert.deepEqual([root.socket._pid, chat.socket._pid], pids);
      await root.received(6, 'replayed on /');
      await sleep(200);
      assert.deepEqual(root.got.news, range(0, 6));
      assert.deepEqual(chat.got.news, [], 'pushes go to the default namespace only');
    } finally {
      chat.close();
      root.close();
    }
  });
}

/** A server of its own (history `size`, `ttlSecs`) for `body(srv)`; stopped after it. */
async function withServer(size, ttlSecs, body) {
  const srv = await startSocketIoServer({ extra: history(size, ttlSecs) });
  let passed = false;
  try {
    await body(srv);
    passed = true;
  } finally {
    const alive = srv.alive();
    await srv.stop();
    if (passed) assert.ok(alive, `ringwire exited during the test\n${srv.stderr()}`);
  }
}

/** Connected, one live push, killed, `away(srv, user)` while away, reconnected: not recovered, nothing replayed. */
async function notRecovered(srv, awayMs, away) {
  const user = 3;
  const c = client(srv, await mint(srv, user), { transports: ['websocket'], away: awayMs });
  try {
    await c.connected(1, 'first');
    await push(srv, user, 0, 1);
    await c.received(1, 'live');
    await kill(srv, user, c, 'close');
    const n = await away(srv, user);
    await c.connected(2, 'reconnection');
    assert.equal(c.got.connects[1], false, 'socket.recovered');
    await push(srv, user, n, 1);
    await c.received(2, 'live after the failed restore');
    await sleep(200);
    assert.deepEqual(c.got.news, [0, n], 'nothing replayed');
    const r = await resumes(srv);
    assert.deepEqual([r.recovered, r.dropped], [0, 1], JSON.stringify(r));
  } finally {
    c.close();
  }
}

test('websocket: more pushes while away than the history holds: not recovered, nothing replayed', { timeout: 60_000 }, async () => {
  await withServer(5, 60, (srv) => notRecovered(srv, AWAY_MS, async (s, user) => {
    for (const n of range(1, 21)) await push(s, user, n, 0);
    return 21;
  }));
});

test('websocket: away longer than the history ttl: not recovered, nothing replayed', { timeout: 60_000 }, async () => {
  await withServer(100, 1, (srv) => notRecovered(srv, 3_000, async (s, user) => {
    await push(s, user, 1, 0);
    return 2;
  }));
});

test('websocket: after a server restart (new epoch) the client is not recovered and nothing is replayed', { timeout: 60_000 }, async () => {
  await withServer(100, 60, async (srv) => {
    const user = 7;
    const c = client(srv, await mint(srv, user), { transports: ['websocket'], away: 300 });
    try {
      await c.connected(1, 'first');
      for (const n of range(0, 3)) await push(srv, user, n, 1);
      await c.received(3, 'live');
      await srv.restart();
      await c.connected(2, 'reconnection to the restarted server');
      assert.equal(c.got.connects[1], false, 'socket.recovered');
      await push(srv, user, 3, 1);
      await c.received(4, 'live after the restart');
      await sleep(200);
      assert.deepEqual(c.got.news, [0, 1, 2, 3], 'nothing replayed');
      const r = await resumes(srv);
      assert.equal(r.epoch_changed, 1, JSON.stringify(r));
    } finally {
      c.close();
    }
  });
});

test('socket.io-client 2.x (Engine.IO v3) on a history endpoint: events unchanged, no recovery', { timeout: 40_000 }, async () => {
  const user = nextUser++;
  const s = await mint(server, user);
  const socket = ioV2(server.url, {
    forceNew: true, query: { session: s.session }, extraHeaders: { Cookie: s.cookie }, transports: ['websocket'],
    reconnectionDelay: 300, reconnectionDelayMax: 300, randomizationFactor: 0,
  });
  const got = [];
  let connects = 0;
  socket.on('connect', () => { connects += 1; });
  socket.on('news', (...args) => got.push(args));
  try {
    await until(() => connects === 1, STEP, 'connect');
    await push(server, user, 0, 1);
    await until(() => got.length === 1, STEP, 'live');
    socket.io.engine.close();
    await until(async () => (await socketCount(server, user)) === 0, STEP, 'server lost the socket');
    await push(server, user, 1, 0);
    await until(() => connects === 2, STEP, 'reconnection');
    await push(server, user, 2, 1);
    await until(() => got.length === 2, STEP, 'live again');
    await sleep(200);
    assert.deepEqual(got, [[{ n: 0 }], [{ n: 2 }]], 'no offset argument, nothing replayed');
  } finally {
    socket.io.reconnection(false);
    socket.close();
  }
});

for (const transports of TRANSPORTS) {
  test(`socket.io-client 2.x (Engine.IO v3), ${transports}, opted in with ?recover=1: offsets on events; its reconnection with ?offset= gets what it missed, then ringwire:recovery`, { timeout: 40_000 }, async () => {
    const user = nextUser++;
    const s = await mint(server, user);
    const socket = ioV2(server.url, {
      forceNew: true, query: { session: s.session, recover: '1' }, extraHeaders: { Cookie: s.cookie }, transports,
      reconnectionDelay: 1_000, reconnectionDelayMax: 1_000, randomizationFactor: 0,
    });
    const got = [];
    const markers = [];
    let last = null;
    let connects = 0;
    socket.on('connect', () => { connects += 1; });
    socket.on('news', (...args) => { got.push(args[0].n); last = args[args.length - 1]; });
    socket.on('ringwire:recovery', (m) => markers.push(m));
    // As the socket.io 2 docs show for tokens: the next connection's query carries the offset.
    socket.on('reconnect_attempt', () => { if (last) socket.io.opts.query.offset = last; });
    try {
      await until(() => connects === 1 && markers.length === 1, STEP, 'connect and its marker');
      assert.equal(markers[0].resumed, false, JSON.stringify(markers[0]));
      for (const n of range(0, 3)) await push(server, user, n, 1);
      await until(() => got.length === 3, STEP, 'live');
      assert.match(last, /^[0-9a-f]{16}-\d+$/, 'the offset is the last argument');
      socket.io.engine.close();
      await until(async () => (await socketCount(server, user)) === 0, STEP, 'server lost the socket');
      for (const n of range(3, 13)) await push(server, user, n, 0);
      await until(() => connects === 2 && got.length === 13 && markers.length === 2, STEP,
        `reconnection and replay: ${JSON.stringify(got)} ${JSON.stringify(markers)}`);
      assert.deepEqual([markers[1].resumed, markers[1].recovered, markers[1].replayed], [true, true, 10], JSON.stringify(markers[1]));
      await push(server, user, 13, 1);
      await until(() => got.length === 14, STEP, 'live after the replay');
      await sleep(200);
      assert.deepEqual(got, range(0, 14), 'everything once, in order');
    } finally {
      socket.io.reconnection(false);
      socket.close();
    }
  });
}
