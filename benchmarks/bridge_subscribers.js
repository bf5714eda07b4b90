'use strict';
// The subscribers of benchmarks/bridges.py as socket.io-client connections
// (the client rtkit's widgets bundle, so this is what browsers pay), all in
// this one Node.js process. It says the same JSON lines as
// bridge_subscribers.py:
//
//   {"phase":"ready"}                     all subscribed
//   {"phase":"first","at":<unix s>}       the first message arrived
//   {"phase":"done","delivered":n,"last":<unix s>,"first_ts":<hub ts>,"cpu":<s>}
//
// done: when every connection has `count` messages, or none came for 3 s.
// Each connection checks that seqs arrive gap-free and in order, as the
// rtkit clients do, and counts only new ones.
//
// Usage: node bridge_subscribers.js <hub url> <channel> <count> <connections>

const { io } = require('socket.io-client');
const { performance } = require('node:perf_hooks');

const [url, channel, countArg, connectionsArg] = process.argv.slice(2);
const count = Number(countArg);
const connections = Number(connectionsArg);
const IDLE_MS = 3000;

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const say = (fields) => process.stdout.write(JSON.stringify(fields) + '\n');

const subscribers = [];
let started = null; // { cpu, firstTs }
let lastArrival = 0;
let idleTimer = null;

function finish() {
  const cpu = process.cpuUsage(started.cpu);
  say({
    phase: 'done',
    delivered: Math.min(...subscribers.map((s) => s.count)),
    last: lastArrival,
    first_ts: started.firstTs,
    cpu: (cpu.user + cpu.system) / 1e6,
    out_of_order: subscribers.reduce((n, s) => n + s.outOfOrder, 0),
  });
  for (const s of subscribers) s.socket.close();
  process.exit(0);
}

function onMessages(sub, envelopes) {
  for (const env of envelopes) {
    if (env.channel !== channel || env.seq <= sub.last) continue; // a duplicate
    if (sub.last && env.seq !== sub.last + 1) sub.outOfOrder += 1;
    sub.last = env.seq;
    sub.count += 1;
  }
  lastArrival = now();
  if (started === null) {
    started = { cpu: process.cpuUsage(), firstTs: envelopes[0].ts };
    say({ phase: 'first', at: lastArrival });
  }
  clearTimeout(idleTimer);
  if (subscribers.every((s) => s.count >= count)) finish();
  else idleTimer = setTimeout(finish, IDLE_MS);
}

async function main() {
  for (let i = 0; i < connections; i += 1) {
    const socket = io(url + '/rtkit', { transports: ['websocket'], reconnection: false });
    const sub = { socket, count: 0, last: 0, outOfOrder: 0 };
    subscribers.push(sub);
    socket.on('messages', (envelopes) => onMessages(sub, envelopes));
    const ack = await socket.timeout(30000).emitWithAck('subscribe', { channel });
    if (!ack.ok) throw new Error(`subscribe refused: ${JSON.stringify(ack)}`);
  }
  say({ phase: 'ready' });
}

setTimeout(() => {
  process.stderr.write('bridge_subscribers.js: no result within 15 minutes\n');
  process.exit(2);
}, 15 * 60 * 1000).unref();

main().catch((err) => {
  process.stderr.write(`bridge_subscribers.js: ${err.stack || err}\n`);
  process.exit(1);
});
