// The page of a logged-in user: three sockets to ringwire, each reconnecting on its own.
// Before every (re)connect a socket asks the application for the login's ringwire session
// (GET /api/push-session; the secret stays in the HttpOnly cookie, the page only learns the
// session id). Every tab of the login gets the same session, so tabs never lock each other
// out, and a session the application replaced (expiry) is picked up on the next reconnect.
// A session that fails RENEW_AFTER attempts in a row (ringwire lost it: restarted without
// its sessions.key) is handed back to the application for a new one (renewSession).
// window.ringwireDemo holds what happened (the tests read it; the table shows it).
'use strict';

const MAX_DELAY_MS = 5000;
const RENEW_AFTER = 4; // failed attempts in a row (about 8 s of back-off) before asking for a new session
const state = (window.ringwireDemo = {
  loggedOut: false,
  user: null,
  sessions: [], // every session id this tab was given, in order
  raw: { status: 'connecting', opens: 0, closes: [], received: [] },
  sio: { status: 'connecting', connects: 0, opened: [], upgrades: [], errors: [], disconnects: [], received: [] },
  jwt: { status: 'off', opens: 0, closes: [], received: [] },
});

/** The sockets open now (closed when the login turns out to be over). */
const live = { raw: null, jwt: null, sio: null };

/** The login ended (logout in any tab, or expiry): close every socket of this tab. */
function loggedOut() {
  if (state.loggedOut) return;
  state.loggedOut = true;
  live.raw?.close();
  live.jwt?.close();
  live.sio?.disconnect();
  render();
}

function render() {
  document.getElementById('who').textContent = state.user === null ? '…' : `${state.user.name} (user ${state.user.id})`;
  for (const k of ['raw', 'sio', 'jwt']) {
    document.getElementById(`${k}-status`).textContent = state.loggedOut ? 'logged out' : state[k].status;
    document.getElementById(`${k}-count`).textContent = String(state[k].received.length);
  }
}

function log(line) {
  const el = document.getElementById('log');
  el.textContent = `${new Date().toISOString().slice(11, 23)} ${line}\n${el.textContent}`.slice(0, 5000);
}

/** Wait before attempt `n` (0, 1, ...): 0.5 s doubling up to 5 s, with jitter. */
const backoff = (n) => new Promise((r) => setTimeout(r, Math.min(MAX_DELAY_MS, 500 * 2 ** n) * (0.5 + Math.random() / 2)));

/** The app's answer at `path` (JSON), null once logged out (401); throws on other failures. */
async function fromApp(path, post = undefined) {
  const r = await fetch(path, post === undefined
    ? { credentials: 'same-origin', cache: 'no-store' }
    : { method: 'POST', body: post, credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 401) {
    loggedOut();
    return null;
  }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

/** The login's session; with `failed`, a new one unless the app already replaced that one. */
async function pushSession(failed = null) {
  const s = await (failed === null ? fromApp('/api/push-session') : fromApp('/api/push-session/renew', failed));
  if (s) {
    state.user = { id: s.user, name: s.name };
    if (state.sessions.at(-1) !== s.session) state.sessions.push(s.session);
  }
  return s;
}

/** ws(s)://host of ringwire: the push origin the app names, or this page's own origin. */
const wsOrigin = (pushOrigin) => (pushOrigin || location.origin).replace(/^http/, 'ws');

/**
 * A raw WebSocket that reconnects until the login ends; `open(failures)` makes one (or null:
 * logged out), given the attempts in a row that did not open.
 */
async function keepOpen(s, open) {
  const name = s === state.raw ? 'raw' : 'jwt';
  let failures = 0;
  for (let attempt = 0; !state.loggedOut; attempt++) {
    let ws = null;
    let opened = false;
    try {
      ws = await open(failures);
    } catch (e) {
      log(`${name}: ${e.message}`);
    }
    if (ws === null && state.loggedOut) return;
    if (ws !== null) {
      live[name] = ws;
      const code = await new Promise((resolve) => {
        ws.onopen = () => { attempt = 0; opened = true; s.opens++; s.status = 'open'; render(); };
        ws.onmessage = (e) => { s.received.push(e.data); log(`${name} <- ${e.data}`); render(); };
        ws.onclose = (e) => resolve(e.code);
      });
      live[name] = null;
      s.closes.push(code);
      s.status = `closed ${code}, reconnecting`;
      render();
      failures = opened ? 0 : failures + 1;
      // 4001 (session terminated: a logout) or 4002 (expired): the next pushSession() says
      // whether the login goes on (with a new session) or is over (401).
    }
    await backoff(attempt);
  }
}

function startRaw() {
  keepOpen(state.raw, async (failures) => {
    const renew = failures > 0 && failures % RENEW_AFTER === 0;
    const s = await pushSession(renew ? state.sessions.at(-1) : null);
    return s && new WebSocket(`${wsOrigin(s.push_origin)}/ws?session=${encodeURIComponent(s.session)}`);
  });
}

function startJwt() {
  keepOpen(state.jwt, async () => {
    const t = await fromApp('/api/push-token');
    // Browsers cannot set headers on a WebSocket: the token rides in the subprotocol list,
    // and ringwire answers Sec-WebSocket-Protocol: ringwire.jwt.
    return t && new WebSocket(`${wsOrigin(t.push_origin)}/jwt`, ['ringwire.jwt', t.token]);
  });
}

async function startSocketIo() {
  if (typeof io !== 'function') {
    state.sio.status = 'no socket.io client';
    render();
    return;
  }
  let s = null;
  for (let attempt = 0; s === null; attempt++) {
    s = await pushSession().catch(() => null);
    if (state.loggedOut) return;
    if (s === null) await backoff(attempt);
  }
  // Default transports: long-polling first, then the upgrade to WebSocket. withCredentials
  // sends the cookie on cross-origin polling requests (a push origin other than the page's).
  const socket = io(s.push_origin || undefined, {
    query: { session: s.session },
    withCredentials: true,
    reconnectionDelayMax: MAX_DELAY_MS,
  });
  live.sio = socket;
  socket.io.on('open', () => {
    const engine = socket.io.engine;
    state.sio.opened.push(engine.transport.name);
    engine.on('upgrade', (t) => { state.sio.upgrades.push(t.name); state.sio.status = `connected (${t.name})`; render(); });
  });
  socket.on('connect', () => {
    state.sio.connects++;
    state.sio.status = `connected (${socket.io.engine.transport.name})`;
    render();
  });
  socket.on('news', (d) => { state.sio.received.push(d); log(`socket.io <- news ${JSON.stringify(d)}`); render(); });
  // Before the client's next attempt, ask the app for the login's current session (a new
  // one after RENEW_AFTER failures in a row).
  let failures = 0;
  socket.on('connect', () => { failures = 0; });
  const refresh = async () => {
    const renew = failures > 0 && failures % RENEW_AFTER === 0;
    const fresh = await pushSession(renew ? socket.io.opts.query.session : null).catch(() => undefined);
    if (fresh) socket.io.opts.query.session = fresh.session; // null: logged out, all closed
    return fresh;
  };
  socket.on('connect_error', (e) => {
    state.sio.errors.push(`${e.message} ${e.description ?? ''}`.trim());
    state.sio.status = `error: ${e.message}, retrying`;
    render();
    // A polling request refused 401 (its status is readable on the same origin, or with
    // ringwire's CORS headers) is a session ringwire does not take: renew at once.
    failures = e.description === 401 ? RENEW_AFTER : failures + 1;
    refresh();
  });
  socket.on('disconnect', async (reason) => {
    state.sio.disconnects.push(reason);
    state.sio.status = `disconnected: ${reason}`;
    render();
    // The server ended the Socket.IO session (drain, session ended): the client does not
    // retry by itself then; this page does, with the login's current session.
    if (reason === 'io server disconnect') {
      await backoff(0);
      if ((await refresh()) !== null) socket.connect();
    }
  });
}

document.getElementById('push').onclick = () => {
  fetch('/api/push-me', { method: 'POST', body: document.getElementById('text').value });
};

render();
startRaw();
startSocketIo();
fromApp('/api/push-token').then((t) => {
  if (t) {
    state.jwt.status = 'connecting';
    startJwt();
  }
}, () => {});
