// Start target/release/ringwire (or $RINGWIRE_BIN) on a free 127.0.0.1 port with a temp
// config, wait for "ringwire ready" on stderr (20 s), and stop it with SIGTERM.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `promise`, or an error naming `what` after `ms`. */
export function within(promise, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` (async) every 50 ms until it returns a truthy value (resolved to); bounded. */
export async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(50);
  }
}
/** Debian's Chromium, which the browser tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';

/** Headless Chromium (playwright-core's `chromium`) with the tests' flags plus `extraArgs`. */
export function launchChromium(chromium, extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
    timeout: 30_000,
  });
}

export const BINARY = process.env.RINGWIRE_BIN || join(ROOT, 'target', 'release', 'ringwire');
const READY = 'ringwire ready';

export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

function config({ port, adminPort, compression = true, maxFrame = 16 << 20, maxMessage = 16 << 20, cores = 2 }) {
  return `[server]
listen = "127.0.0.1:${port}"
cores = ${cores}
drain_secs = 0

[limits]
max_frame_bytes = ${maxFrame}
max_message_bytes = ${maxMessage}
handshake_timeout_ms = 5000

[compression]
enabled = ${compression}

[admin]
listen = "127.0.0.1:${adminPort}"

[[endpoints]]
path = "/"
kind = "echo"
auth = "none"
`;
}

/**
 * Write `makeConfig({ port, adminPort })` to a temp file, start ringwire on it and wait for
 * "ringwire ready". `fixed` may pin { port, adminPort } (a restart on the same ports).
 * Resolves to { port, adminPort, stderr(), alive(), stop() }.
 */
async function launch(makeConfig, fixed = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} not found: run cargo build --release first`);
  const port = fixed.port ?? await freePort();
  let adminPort = fixed.adminPort ?? await freePort();
  while (adminPort === port) adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'ringwire-node-'));
  const cfgPath = join(dir, 'ringwire.toml');
  writeFileSync(cfgPath, makeConfig({ port, adminPort }));

  const child = spawn(BINARY, ['serve', '--config', cfgPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited = null;
  let onStderr = () => {};
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  child.stderr.on('data', (chunk) => { stderr += chunk.toString(); onStderr(); });

  await new Promise((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`ringwire not ready after 20 s\n--- stderr ---\n${stderr}`));
    }, 20_000);
    onStderr = () => {
      if (stderr.includes(READY)) { clearTimeout(timer); onStderr = () => {}; res(); }
    };
    child.once('error', (err) => { clearTimeout(timer); rej(err); });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`ringwire exited (code ${code}, signal ${signal}) before ready\n--- stderr ---\n${stderr}`));
    });
  });

  return {
    port,
    adminPort,
    stderr: () => stderr,
    alive: () => exited === null,
    /** SIGTERM (a drain) without waiting: resolves to { code, signal } once it exited (10 s, then SIGKILL). */
    terminate() {
      if (exited !== null) return Promise.resolve(exited);
      const done = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      return done.finally(() => clearTimeout(t));
    },
    async stop() {
      if (exited === null) {
        const done = new Promise((res) => child.once('exit', res));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await done;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Start a ringwire with the echo config; resolves to { url, port, stderr(), stop() } once ready. */
export async function startServer(opts = {}) {
  const server = await launch((ports) => config({ ...ports, ...opts }));
  return { ...server, url: `ws://127.0.0.1:${server.port}/` };
}

// ----------------------------------------------------------------------------- sessions / push
// Used by push.test.mjs: a ringwire with a session-authenticated raw endpoint at /ws, and its
// admin API (plain fetch).

function sessionConfig({ port, adminPort, cores = 2, token = null, extra = '' }) {
  return `[server]
listen = "127.0.0.1:${port}"
cores = ${cores}
drain_secs = 0

[limits]
handshake_timeout_ms = 5000

[admin]
listen = "127.0.0.1:${adminPort}"
${token === null ? '' : `token = ${JSON.stringify(token)}\n`}
${extra}
[[endpoints]]
path = "/ws"
kind = "raw"
`;
}

/**
 * Start a ringwire serving a raw /ws endpoint with session auth. Resolves to
 * { port, adminPort, wsUrl(sessionId), admin(method, path, body) -> {status, json, text},
 *   stderr(), alive(), stop() }.
 */
export async function startPushServer(opts = {}) {
  const server = await launch((ports) => sessionConfig({ ...ports, ...opts }));
  const { port, adminPort } = server;
  return {
    ...server,
    wsUrl: (sessionId, path = '/ws') => `ws://127.0.0.1:${port}${path}?session=${encodeURIComponent(sessionId)}`,
    admin: adminClient(adminPort, opts.token ?? null),
  };
}

/** admin(method, path, body) -> { status, json, text }: the admin API over fetch (5 s bound). */
function adminClient(adminPort, token) {
  return async function admin(method, path, body) {
    const headers = {};
    if (token !== null) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
    const text = await resp.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: resp.status, json, text };
  };
}

// ----------------------------------------------------------------------------- socket.io
// Used by socketio.test.mjs and browser.test.mjs: a ringwire with a session-authenticated
// socketio endpoint at /socket.io/ (plus the raw /ws), a fixed [sessions] key so that a restart
// on the same ports accepts the sessions minted before it.

function socketIoConfig({
  port, adminPort, cores = 2, token = null, sessionKey, pingIntervalSecs = null, socketio = null,
  allowedOrigins = null, webhookUrl = null, extra = '', drainSecs = 0,
}) {
  const socketioSection = socketio === null ? '' : `[socketio]\n${Object.entries(socketio)
    .map(([k, v]) => `${k} = ${JSON.stringify(v)}\n`).join('')}\n`;
  return `[server]
listen = "127.0.0.1:${port}"
cores = ${cores}
drain_secs = ${drainSecs}

[limits]
handshake_timeout_ms = 5000
${pingIntervalSecs === null ? '' : `ping_interval_secs = ${pingIntervalSecs}\n`}
[admin]
listen = "127.0.0.1:${adminPort}"
${token === null ? '' : `token = ${JSON.stringify(token)}\n`}
${allowedOrigins === null ? '' : `[security]\nallowed_origins = ${JSON.stringify(allowedOrigins)}\n`}
[sessions]
key = "${sessionKey}"

${socketioSection}${webhookUrl === null ? '' : `[webhook]
url = ${JSON.stringify(webhookUrl)}
events = ["connect", "close", "message"]
flush_ms = 50
`}
${extra}
[[endpoints]]
path = "/socket.io/"
kind = "socketio"

[[endpoints]]
path = "/ws"
kind = "raw"
`;
}

/**
 * Start a ringwire with a socketio endpoint at /socket.io/ (session auth) and a raw /ws.
 * opts: { token, pingIntervalSecs, socketio: { ping_timeout_ms, ... }, allowedOrigins: [...],
 *         webhookUrl, extra (TOML placed before [[endpoints]]), cores, drainSecs (default 0) }.
 * Resolves to { port, adminPort, url, config, admin(), stderr(), alive(), restart(), terminate(),
 * stop() }; restart() stops the process (SIGTERM) and starts a new one on the same ports, same
 * config; terminate() sends SIGTERM (a drain) and resolves once the process exited.
 */
export async function startSocketIoServer(opts = {}) {
  const sessionKey = opts.sessionKey ?? randomBytes(32).toString('hex');
  return startConfigured((ports) => socketIoConfig({ ...opts, ...ports, sessionKey }), opts.token ?? null);
}

/**
 * Start a ringwire on the config `makeConfig({ port, adminPort })` returns (its admin API
 * without a token unless `token`). Resolves to what startSocketIoServer does.
 */
export async function startConfigured(makeConfig, token = null) {
  let current = await launch(makeConfig);
  const { port, adminPort } = current;
  return {
    port,
    adminPort,
    url: `http://127.0.0.1:${port}`,
    config: makeConfig({ port, adminPort }),
    admin: adminClient(adminPort, token),
    stderr: () => current.stderr(),
    alive: () => current.alive(),
    /** Stop (SIGTERM) and start again on the same ports, with the same config or `newConfig`'s. */
    async restart(newConfig = makeConfig) {
      await current.stop();
      current = await launch(newConfig, { port, adminPort });
    },
    terminate: () => current.terminate(),
    stop: () => current.stop(),
  };
}

// ----------------------------------------------------------------------------- TLS
// Used by tls.test.mjs: test certificates from `ringwire cluster certs`, the SPKI hash Chromium's
// --ignore-certificate-errors-spki-list wants, and Debian's tinyproxy as an HTTP CONNECT proxy.

/**
 * `ringwire cluster certs --out <new temp dir> ...names` (default 127.0.0.1 localhost).
 * Resolves to { dir, ca, cert(name), key(name), cleanup() } (paths of the PEM files).
 */
export async function makeTestCerts(...names) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} not found: run cargo build --release first`);
  if (names.length === 0) names = ['127.0.0.1', 'localhost'];
  const dir = mkdtempSync(join(tmpdir(), 'ringwire-certs-'));
  const { execFile } = await import('node:child_process');
  await new Promise((res, rej) => {
    execFile(BINARY, ['cluster', 'certs', '--out', dir, ...names], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`ringwire cluster certs failed: ${err.message}\n${stderr}`));
      else res();
    });
  });
  return {
    dir,
    ca: join(dir, 'ca.pem'),
    cert: (name = '127.0.0.1') => join(dir, `${name}.pem`),
    key: (name = '127.0.0.1') => join(dir, `${name}.key`),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** base64(sha256(SubjectPublicKeyInfo DER)) of the first certificate of a PEM file. */
export async function spkiSha256(pemPath) {
  const { X509Certificate, createHash } = await import('node:crypto');
  const { readFileSync } = await import('node:fs');
  const cert = new X509Certificate(readFileSync(pemPath));
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

export const TINYPROXY = '/usr/bin/tinyproxy';

/**
 * Debian's tinyproxy in the foreground on a free 127.0.0.1 port, CONNECT allowed only to
 * `connectPorts`, its log (stderr) kept in memory. Resolves to
 * { port, url, log(), connects(port), stop() } once it accepts connections (10 s bound).
 */
export async function startTinyproxy(connectPorts) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'ringwire-tinyproxy-'));
  const conf = join(dir, 'tinyproxy.conf');
  writeFileSync(conf, [
    `Port ${port}`,
    'Listen 127.0.0.1',
    'Timeout 60',
    'Allow 127.0.0.1',
    ...connectPorts.map((p) => `ConnectPort ${p}`),
    `PidFile "${join(dir, 'tinyproxy.pid')}"`,
    'LogLevel Info',
    'MaxClients 50',
    '',
  ].join('\n'));
  const child = spawn(TINYPROXY, ['-d', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let exited = null;
  child.stdout.on('data', (c) => { log += c.toString(); });
  child.stderr.on('data', (c) => { log += c.toString(); });
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const stop = async () => {
    if (exited === null) {
      const done = new Promise((res) => child.once('exit', res));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited !== null) {
      await stop();
      throw new Error(`tinyproxy exited (${JSON.stringify(exited)}) before listening\n${log}`);
    }
    const ok = await new Promise((res) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => res(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`tinyproxy not listening on ${port} after 10 s\n${log}`);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    log: () => log,
    connects: (p) => log.split(`CONNECT 127.0.0.1:${p}`).length - 1,
    stop,
  };
}

/**
 * A static page server on 127.0.0.1 (a free port) for the browser tests: `files` maps a path
 * to [content type, body]; `/favicon.ico` is 204, anything else 404. With `tls` ({ cert, key }
 * PEM contents) it speaks https. Returns { port, origin, close() }.
 */
export async function startPageServer(files, tls = null) {
  const handler = (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = files[path];
    if (file) {
      res.writeHead(200, { 'Content-Type': file[0], 'Cache-Control': 'no-store' });
      res.end(file[1]);
    } else if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
    }
  };
  const srv = tls ? createHttpsServer(tls, handler) : createHttpServer(handler);
  await new Promise((res) => srv.listen(0, '127.0.0.1', res));
  const port = srv.address().port;
  return {
    port,
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    close: () => new Promise((res) => { srv.closeAllConnections?.(); srv.close(res); }),
  };
}
