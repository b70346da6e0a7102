// A socket.io-client 4.8 (unmodified) that loses its node and recovers on another one:
// run by tests/python/test_history_nats.py (two ringwire nodes, the nats history store, a
// real nats-server), which reads the JSON line this prints. Not a test file on its own.
//
//   node sio_failover.mjs <config JSON>
//   config: {a: {url, admin}, b: {url, admin}, session, cookie, context, user, transports, v2}
//   v2: socket.io-client 2.x (Engine.IO v3), opted in with ?recover=1 and resuming with
//   ?offset=<its last event's offset>; `recovered` is then its `ringwire:recovery` event's.
//
// Connects to node a; pushes flow at about 100/s through both nodes' admin APIs (sessions
// are valid on every node); the transport is killed while the client's next connection goes
// to node b (`socket.io.uri`, as a load balancer would send it there); pushes go on during
// the reconnection and the restore, and for a while after. Prints what the client saw.
import { io } from 'socket.io-client';
import ioV2 from 'socket.io-client-v2';

const cfg = JSON.parse(process.argv[2]);
const STEP = 10_000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

const got = { news: [], offsets: [], connects: [], ids: [], pids: [], errors: [] };
let pushed = 0;
const positions = [];
const pushErrors = [];

async function push(admin) {
  const n = pushed++;
  const message = JSON.stringify(['news', { n }]);
  try {
    const r = await fetch(`${admin}/v1/push`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context: cfg.context, user: cfg.user, message }),
      signal: AbortSignal.timeout(5_000),
    });
    const body = await r.json();
    if (r.status !== 202 || body.position === null) pushErrors.push(`${n}: ${r.status} ${JSON.stringify(body)}`);
    positions.push(body.position?.offset ?? null);
  } catch (e) {
    pushErrors.push(`${n}: ${e}`);
  }
}

const opts = {
  query: { session: cfg.session }, extraHeaders: { Cookie: cfg.cookie }, transports: cfg.transports,
  reconnectionDelay: 1_000, reconnectionDelayMax: 1_000, randomizationFactor: 0, timeout: STEP,
};
if (cfg.v2) opts.query.recover = '1';
const socket = cfg.v2 ? ioV2(cfg.a.url, { ...opts, forceNew: true }) : io(cfg.a.url, opts);
socket.on('news', (...args) => {
  got.news.push(args[0].n);
  got.offsets.push(args[args.length - 1]);
});
if (cfg.v2) {
  // Engine.IO v3: the marker event says how each connection started; the next connection's
  // query carries the last offset.
  socket.on('ringwire:recovery', (m) => {
    got.connects.push(m.resumed ? m.recovered : false);
    got.ids.push(null);
    got.pids.push(null);
  });
  socket.on('reconnect_attempt', () => {
    const last = got.offsets[got.offsets.length - 1];
    if (last) socket.io.opts.query.offset = last;
  });
} else {
  socket.on('connect', () => {
    got.connects.push(socket.recovered);
    got.ids.push(socket.id);
    got.pids.push(socket._pid);
  });
}
socket.on('connect_error', (e) => got.errors.push(String(e?.message ?? e)));

let result;
try {
  await until(() => got.connects.length === 1, STEP, 'first connect');
  for (let i = 0; i < 5; i++) await push(cfg.a.admin);
  await until(() => got.news.length === 5, STEP, 'first 5 events');
  // Pushes keep flowing (alternating nodes) through the failover.
  let flowing = true;
  const pusher = (async () => {
    let i = 0;
    while (flowing) {
      await push(i++ % 2 ? cfg.a.admin : cfg.b.admin);
      await sleep(10);
    }
  })();
  await sleep(200);
  socket.io.uri = cfg.b.url; // the next connection goes to node b
  socket.io.engine.close();
  await until(() => got.connects.length === 2, STEP, 'reconnection to b');
  await sleep(500); // pushes still flowing after the restore
  flowing = false;
  await pusher;
  await until(() => got.news.length >= pushed, STEP, `all ${pushed} events`).catch(() => {});
  await sleep(300); // anything extra (a duplicate) shows up
  result = { ok: true, pushed, got, positions, pushErrors };
} catch (e) {
  result = { ok: false, error: String(e), pushed, got, positions, pushErrors };
}
socket.io.reconnection(false);
socket.close();
console.log(JSON.stringify(result));
process.exit(0);
