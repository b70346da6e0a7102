// WebSocket echo server on node `ws` (installed in ./node, pinned by its package-lock.json;
// `bufferutil` is ws's optional native masking add-on, loaded from its bundled prebuild).
// Echoes text and binary messages; ws answers pings (autoPong) and close frames by itself.
// permessage-deflate off (ws's server default, set explicitly). One process = one event loop
// thread, the usual way to run it; an optional second argument forks that many processes
// with node:cluster sharing the port.
//
//   node ws-echo.mjs 127.0.0.1:9003 [processes]
import cluster from 'node:cluster';
import { createRequire } from 'node:module';

const require = createRequire(new URL('./node/package.json', import.meta.url));
const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] ?? '127.0.0.1:9003').split(':');
const processes = Number(process.argv[3] ?? 1);

if (processes > 1 && cluster.isPrimary) {
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on('exit', () => process.exit(1));
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
      process.exit(0);
    });
  }
} else {
  const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  wss.on('listening', () => {
    console.error(`ws-echo listening on ${host}:${port} (pid ${process.pid})`);
  });
  process.on('SIGTERM', () => process.exit(0));
}
