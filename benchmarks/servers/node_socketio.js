'use strict';
// Node socket.io 4.8 reference server for the rtkit benchmarks.
//
// Same events, namespace, path and envelope as benchmarks/servers/plain_socketio.py:
// `subscribe` joins a room and acks {ok, seq}; `publish` numbers the message,
// emits `messages` with a one-element list to the room and acks {ok, seq, ts}.
// permessage-deflate is off (also socket.io's default), stated here so the
// benchmark does not depend on a default.
//
//   node benchmarks/servers/node_socketio.js --host 127.0.0.1 --port 8765

const http = require('node:http');
const crypto = require('node:crypto');
const { Server } = require('socket.io');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '8765'));

const httpServer = http.createServer();
const io = new Server(httpServer, {
  path: '/socket.io/',
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
  cors: { origin: '*' },
});

const nsp = io.of('/rtkit');
const seqs = new Map();

nsp.on('connection', (socket) => {
  socket.on('subscribe', (req, ack) => {
    const channel = req.channel;
    socket.join(channel);
    if (typeof ack === 'function') ack({ ok: true, seq: seqs.get(channel) || 0 });
  });
  socket.on('publish', (req, ack) => {
    const channel = req.channel;
    const seq = (seqs.get(channel) || 0) + 1;
    seqs.set(channel, seq);
    const ts = Date.now() / 1000;
    const envelope = {
      channel,
      seq,
      ts,
      id: req.id || crypto.randomUUID().replace(/-/g, ''),
      sender: socket.id,
      data: req.data,
    };
    nsp.to(channel).emit('messages', [envelope]);
    if (typeof ack === 'function') ack({ ok: true, seq, ts });
  });
});

httpServer.listen(port, host);

function shutdown() {
  io.close();
  httpServer.close();
  // io.close() waits for clients; the benchmark kills us anyway, do not linger.
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
