'use strict';
// Calibration server: the cheapest server the load generator can talk to.
//
// It speaks just enough Engine.IO v4 / Socket.IO v5 over a raw `ws` server for
// benchmarks/loadgen.js (open packet, namespace connect, `subscribe` and
// `publish` with acks, `messages` broadcasts, ping/pong), with no Socket.IO
// machinery at all. Its fan-out is the ceiling of what the load generator can
// receive on this machine: if a real server comes close to it, the load
// generator, not the server, is the limit.
//
// Each broadcast is framed once: the WebSocket frame (header + payload) is
// built a single time and the same buffers are written to every subscriber's
// socket, the trick engine.io itself uses (wsPreEncodedFrame) for room
// broadcasts. That needs ws's internal `_sender.sendFrame`; fall back to
// ws.send() if a future ws drops it.
//
//   node benchmarks/servers/raw_ws_broadcast.js --host 127.0.0.1 --port 8765

const crypto = require('node:crypto');
const { WebSocketServer, WebSocket } = require('ws');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '8765'));
const NSP = '/rtkit';
const PING_INTERVAL = 25000;

const wss = new WebSocketServer({
  host,
  port,
  path: '/socket.io/',
  perMessageDeflate: false,
  clientTracking: false,
});

const rooms = new Map(); // channel -> Set<WebSocket>
const seqs = new Map();
let nextSid = 0;

function preFramed(str) {
  const data = Buffer.from(str);
  if (typeof WebSocket.Sender?.frame !== 'function') return null;
  return WebSocket.Sender.frame(data, {
    fin: true, rsv1: false, opcode: 1, mask: false, readOnly: true,
  });
}

function broadcast(members, str) {
  const frame = preFramed(str);
  for (const ws of members) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    if (frame && ws._sender && typeof ws._sender.sendFrame === 'function') {
      ws._sender.sendFrame(frame);
    } else {
      ws.send(str);
    }
  }
}

wss.on('connection', (ws) => {
  const sid = `raw${nextSid++}`;
  const joined = new Set();
  ws.send(`0${JSON.stringify({
    sid, upgrades: [], pingInterval: PING_INTERVAL, pingTimeout: 20000, maxPayload: 1000000,
  })}`);
  const pinger = setInterval(() => ws.send('2'), PING_INTERVAL);

  ws.on('message', (buf) => {
    const s = buf.toString();
    if (s === '3') return; // pong
    if (s.startsWith(`40${NSP},`)) {
      ws.send(`40${NSP},${JSON.stringify({ sid: `${sid}#nsp` })}`);
      return;
    }
    if (!s.startsWith(`42${NSP},`)) return;
    const body = s.slice(NSP.length + 3);
    const bracket = body.indexOf('[');
    const ackId = bracket > 0 ? body.slice(0, bracket) : '';
    const [event, req] = JSON.parse(body.slice(bracket));
    let reply;
    if (event === 'subscribe') {
      let members = rooms.get(req.channel);
      if (!members) rooms.set(req.channel, (members = new Set()));
      members.add(ws);
      joined.add(req.channel);
      reply = { ok: true, seq: seqs.get(req.channel) || 0 };
    } else if (event === 'publish') {
      const seq = (seqs.get(req.channel) || 0) + 1;
      seqs.set(req.channel, seq);
      const ts = Date.now() / 1000;
      const envelope = {
        channel: req.channel, seq, ts,
        id: req.id || crypto.randomUUID().replace(/-/g, ''),
        sender: sid, data: req.data,
      };
      broadcast(rooms.get(req.channel) || [], `42${NSP},${JSON.stringify(['messages', [envelope]])}`);
      reply = { ok: true, seq, ts };
    } else {
      reply = { ok: false, error: { code: 'bad_request', message: `unknown event ${event}` } };
    }
    if (ackId) ws.send(`43${NSP},${ackId}${JSON.stringify([reply])}`);
  });

  ws.on('close', () => {
    clearInterval(pinger);
    for (const ch of joined) rooms.get(ch)?.delete(ws);
  });
});

function shutdown() {
  wss.close();
  setTimeout(() => process.exit(0), 300).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
