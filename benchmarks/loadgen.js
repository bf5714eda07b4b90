'use strict';
// Load generator for the rtkit benchmarks.
//
// Speaks Engine.IO v4 / Socket.IO v5 by hand over the raw `ws` package,
// websocket transport only, so the client side costs as little as possible
// and is identical for every server under test:
//
//   ws://127.0.0.1:P/socket.io/?EIO=4&transport=websocket
//   <- 0{"sid":...,"pingInterval":...}        Engine.IO open
//   -> 40/rtkit,{}                            Socket.IO connect (anonymous)
//   <- 40/rtkit,{"sid":...}
//   -> 42/rtkit,<id>["subscribe",{"channel":"bench"}]
//   <- 43/rtkit,<id>[{"ok":true,"seq":...}]
//   <- 42/rtkit,["messages",[{"channel":...,"seq":n,...},...]]
//   <- 2  / -> 3                              Engine.IO ping / pong
//
// Usage: node loadgen.js '<json config>'   (see DEFAULTS below)
// Prints one JSON object with the results on stdout; progress on stderr.
// Every phase has a timeout and the process exits by itself (hard deadline).
//
// Scenarios
//   latency: one publisher paced by a timer at `rate` msg/s (catch-up, not
//            ack-paced), `subscribers` subscribers; each message's data
//            carries the send time (performance.now(), one process, one
//            clock); reports publish-to-delivery percentiles.
//   fanout:  one publisher keeps at most `window` publishes unacked and at
//            most `maxOutstanding` deliveries (published x subscribers -
//            delivered) on their way, so a server that acks faster than it
//            delivers cannot pile up an unbounded backlog; reports
//            envelopes delivered per second to all subscribers, publishes per
//            second, and whether every subscriber got every message.
//   connections: `subscribers` idle connections, each subscribed to channel
//            `bench`, opened `connectConcurrency` at a time; connects/s =
//            subscribers / time until the last subscribe ack. The process
//            then talks to its parent over stdin/stdout so that the parent
//            can read the server's memory at the right moments:
//              stdout {"phase":"idle"}     one connection open (the publisher)
//              stdin  "go"                 -> open the idle connections
//              stdout {"phase":"holding"}  all connected and subscribed, idle
//              stdin  "go"                 -> publish one message
//            and reports how many of the idle connections received it
//            (`served`): an idle connection that no longer answers pings or
//            that the server forgot would not. Without a "go" within
//            `holdTimeout` seconds it carries on by itself.
//
// Throughput counting never JSON-parses a `messages` frame: it finds the first
// and last `"seq":` in the frame (seq is gap-free per channel, so the count is
// last - first + 1) and, to catch gaps or duplicates inside a coalesced frame,
// also counts the `"seq":` occurrences (indexOf in native code).

const { performance, monitorEventLoopDelay } = require('node:perf_hooks');
const fs = require('node:fs');
const os = require('node:os');
const WebSocket = require('ws');

const DEFAULTS = {
  host: '127.0.0.1',
  port: 8765,
  path: '/socket.io/',
  namespace: '/rtkit',
  channel: 'bench',
  scenario: 'fanout', // 'latency' | 'fanout'
  subscribers: 100,
  rate: 1000, // latency: publishes per second
  window: 64, // fanout: max unacked publishes
  maxOutstanding: 20000, // fanout: max (published x subscribers - delivered)
  warmup: 2, // seconds of load before the measurement window
  duration: 10, // seconds of measurement
  drainTimeout: 15, // seconds to wait for the last deliveries
  connectConcurrency: 50, // connections in the handshake at once
  connectTimeout: 120, // seconds for all connections and subscriptions
  padBytes: 16, // bytes of filler in each message's data
  serverPid: 0, // if set, its CPU time over the window is reported
  storePid: 0, // the server's store (redis-server), if any: its CPU is reported too
  hardDeadline: 0, // seconds; 0 = computed from the phases above
  headers: {}, // HTTP headers of every handshake, e.g. {"Authorization": "token ..."}
  holdTimeout: 60, // connections: seconds to wait for each "go" on stdin
};

const cfg = { ...DEFAULTS, ...JSON.parse(process.argv[2] || '{}') };
const NSP = cfg.namespace;
const URL = `ws://${cfg.host}:${cfg.port}${cfg.path}?EIO=4&transport=websocket`;

const MSG_PREFIX = Buffer.from(`42${NSP},["messages",`);
const EVENT_BODY_OFFSET = `42${NSP},`.length;
const ACK_PREFIX = Buffer.from(`43${NSP},`);
const SEQ_KEY = Buffer.from('"seq":');
const CH_0 = 0x30;
const CH_2 = 0x32;
const CH_3 = 0x33;
const CH_4 = 0x34;

function log(...args) {
  process.stderr.write(`[loadgen ${(performance.now() / 1000).toFixed(1)}s] ${args.join(' ')}\n`);
}

const deadlineSeconds = cfg.hardDeadline || (
  cfg.connectTimeout + cfg.warmup + cfg.duration + cfg.drainTimeout + 30);
const hardDeadline = setTimeout(() => {
  log(`hard deadline of ${deadlineSeconds}s reached, exiting`);
  process.stdout.write(`${JSON.stringify({ ok: false, error: 'hard deadline reached', config: cfg })}\n`);
  process.exit(3);
}, deadlineSeconds * 1000);
hardDeadline.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Reads a non-negative integer written in ASCII at buf[i...], skipping spaces.
function readInt(buf, i) {
  while (buf[i] === 0x20) i++;
  let n = 0;
  for (let c = buf[i]; c >= CH_0 && c <= CH_0 + 9; c = buf[++i]) n = n * 10 + (c - CH_0);
  return n;
}

// ---------------------------------------------------------------------------
// Shared counters (one process, one thread: plain numbers are enough).

const stats = {
  delivered: 0, // envelopes received by all subscribers (duplicates included)
  frames: 0, // `messages` packets received by all subscribers
  bytes: 0, // bytes of `messages` packets received
  gaps: 0, // envelopes skipped (seq jumped forward)
  dups: 0, // envelopes at or below the last seq seen
  frameMismatch: 0, // frames whose "seq" count != last - first + 1
  otherPackets: 0,
  errors: [],
};
let onDelivery = null; // set by the fanout publisher to resume when lag shrinks
let latencyWindow = null; // {start, end, samples, n} in latency mode

class Conn {
  constructor(index, role) {
    this.index = index;
    this.role = role;
    this.ws = null;
    this.nextAck = 1;
    this.acks = new Map(); // id -> callback(reply)
    this.lastSeq = 0; // subscriber: highest seq seen
    this.startSeq = 0; // subscriber: seq in the subscribe ack
    this.received = 0;
    this.closed = false;
    this._connected = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(URL, {
        perMessageDeflate: false, // never offer compression: see README.md
        skipUTF8Validation: true,
        handshakeTimeout: 10000,
        headers: cfg.headers,
      });
      this.ws = ws;
      this._connected = { resolve, reject };
      ws.on('message', this.role === 'sub' ? (d) => this.onSubMessage(d) : (d) => this.onControl(d));
      ws.on('error', (err) => {
        if (this._connected) { this._connected.reject(err); this._connected = null; }
        else if (!this.closed) stats.errors.push(`${this.role}${this.index}: ${err.message}`);
      });
      ws.on('close', () => {
        if (this._connected) { this._connected.reject(new Error('closed during connect')); this._connected = null; }
        if (!this.closed) stats.errors.push(`${this.role}${this.index}: closed by server`);
        this.closed = true;
      });
    });
  }

  send(str) {
    this.ws.send(str);
  }

  emitWithAck(event, payload, cb) {
    const id = this.nextAck++;
    this.acks.set(id, cb);
    this.ws.send(`42${NSP},${id}${JSON.stringify([event, payload])}`);
    return id;
  }

  request(event, payload, ms) {
    return withTimeout(new Promise((resolve) => this.emitWithAck(event, payload, resolve)), ms, event);
  }

  // Every packet that is not a `messages` event: open, connect, acks, pings.
  onControl(buf) {
    const c0 = buf[0];
    if (c0 === CH_2 && buf.length === 1) { this.ws.send('3'); return; } // ping -> pong
    if (c0 === CH_4 && buf[1] === CH_3) { // ack: 43/rtkit,<id>[reply]
      let i = ACK_PREFIX.length;
      const id = readInt(buf, i);
      while (buf[i] !== 0x5b /* [ */ && i < buf.length) i++;
      const cb = this.acks.get(id);
      if (cb) {
        this.acks.delete(id);
        cb(JSON.parse(buf.toString('utf8', i))[0]);
      }
      return;
    }
    const s = buf.toString();
    if (s[0] === '0') { // Engine.IO open
      this.eio = JSON.parse(s.slice(1));
      this.ws.send(`40${NSP},{}`);
    } else if (s.startsWith(`40${NSP}`)) {
      if (this._connected) { this._connected.resolve(this); this._connected = null; }
    } else if (s.startsWith(`44${NSP}`)) {
      const err = new Error(`connect refused: ${s}`);
      if (this._connected) { this._connected.reject(err); this._connected = null; }
    } else if (s === '1') {
      // Engine.IO close
    } else if (s.startsWith('42')) {
      stats.otherPackets++;
    } else if (s === '6' || s === '3') {
      // noop / pong
    } else {
      stats.otherPackets++;
    }
  }

  onSubMessage(buf) {
    const len = MSG_PREFIX.length;
    if (buf.length <= len || buf.compare(MSG_PREFIX, 0, len, 0, len) !== 0) {
      this.onControl(buf);
      return;
    }
    if (latencyWindow) { this.onLatencyFrame(buf); return; }
    const i = buf.indexOf(SEQ_KEY, len);
    if (i < 0) { stats.otherPackets++; return; }
    const first = readInt(buf, i + SEQ_KEY.length);
    let n = 1;
    let lastIdx = i;
    for (let j = buf.indexOf(SEQ_KEY, i + 6); j >= 0; j = buf.indexOf(SEQ_KEY, j + 6)) {
      n++;
      lastIdx = j;
    }
    const last = lastIdx === i ? first : readInt(buf, lastIdx + SEQ_KEY.length);
    if (last - first + 1 !== n) stats.frameMismatch++;
    this.account(first, last, n);
    stats.frames++;
    stats.bytes += buf.length;
    if (onDelivery !== null) onDelivery();
  }

  account(first, last, n) {
    const expected = this.lastSeq + 1;
    if (first > expected) stats.gaps += first - expected;
    else if (first < expected) stats.dups += Math.min(n, expected - first);
    if (last > this.lastSeq) this.lastSeq = last;
    this.received += n;
    stats.delivered += n;
  }

  onLatencyFrame(buf) {
    const now = performance.now();
    const envelopes = JSON.parse(buf.toString('utf8', EVENT_BODY_OFFSET))[1];
    const w = latencyWindow;
    for (const env of envelopes) {
      this.account(env.seq, env.seq, 1);
      const t = env.data && env.data.t;
      if (typeof t === 'number' && t >= w.start && t < w.end) {
        if (w.n === w.samples.length) {
          const bigger = new Float64Array(w.samples.length * 2);
          bigger.set(w.samples);
          w.samples = bigger;
        }
        w.samples[w.n++] = now - t;
      }
    }
    stats.frames++;
    stats.bytes += buf.length;
  }

  close() {
    this.closed = true;
    try { this.ws.terminate(); } catch { /* already gone */ }
  }
}

async function connectAll(n, role, concurrency) {
  const conns = [];
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  async function worker() {
    while (next < n) {
      const c = new Conn(next++, role);
      conns.push(c);
      await withTimeout(c.connect(), 15000, `connect ${role}${c.index}`);
      if (role === 'sub') {
        const reply = await c.request('subscribe', { channel: cfg.channel }, 15000);
        if (!reply || reply.ok !== true) throw new Error(`subscribe refused: ${JSON.stringify(reply)}`);
        c.startSeq = c.lastSeq = typeof reply.seq === 'number' ? reply.seq : 0;
      }
      done++;
      if (n >= 200 && done % 200 === 0) log(`${done}/${n} ${role} connected`);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return { conns, seconds: (performance.now() - t0) / 1000 };
}

// ---------------------------------------------------------------------------
// CPU accounting

function procCpuSeconds(pid) {
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11] = utime, fields[12] = stime (clock ticks; 100 Hz on Linux)
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

// Seconds the thread group leader (the event-loop thread of node and of an
// asyncio server) spent runnable but waiting for a CPU: /proc/PID/schedstat
// field 2. A busy machine shows up here before anywhere else.
function runqueueWaitSeconds(pid) {
  if (!pid) return null;
  try {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  } catch {
    return null;
  }
}

// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
function machineCpuSeconds() {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait
    return (v.reduce((a, b) => a + b, 0) - v[3] - v[4]) / 100;
  } catch {
    return null;
  }
}

function procRssMiB(pid) {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

function snapshot(extra = {}) {
  return {
    t: performance.now(),
    cpu: process.cpuUsage(),
    serverCpu: procCpuSeconds(cfg.serverPid),
    storeCpu: procCpuSeconds(cfg.storePid),
    machineCpu: machineCpuSeconds(),
    serverWait: runqueueWaitSeconds(cfg.serverPid),
    loadgenWait: runqueueWaitSeconds(process.pid),
    delivered: stats.delivered,
    frames: stats.frames,
    bytes: stats.bytes,
    ...extra,
  };
}

function cpuShare(a, b) {
  const wall = (b.t - a.t) / 1000;
  const user = (b.cpu.user - a.cpu.user) / 1e6 / wall;
  const system = (b.cpu.system - a.cpu.system) / 1e6 / wall;
  const server = a.serverCpu === null || b.serverCpu === null ? null : (b.serverCpu - a.serverCpu) / wall;
  const store = a.storeCpu === null || b.storeCpu === null ? null : (b.storeCpu - a.storeCpu) / wall;
  const machine = a.machineCpu === null || b.machineCpu === null ? null : (b.machineCpu - a.machineCpu) / wall;
  // Whatever else ran on the machine meanwhile (other jobs, kernel threads).
  const other = machine === null || server === null
    ? null : Math.max(0, machine - server - (store || 0) - user - system);
  const wait = (k) => (a[k] === null || b[k] === null ? null : (b[k] - a[k]) / wall);
  return {
    wall, loadgen: user + system, loadgenUser: user, loadgenSystem: system, server, store, machine, other,
    serverWait: wait('serverWait'), loadgenWait: wait('loadgenWait'),
  };
}

function percentile(sorted, n, p) {
  if (n === 0) return null;
  const idx = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return sorted[idx];
}

function round(x, digits = 3) {
  return x === null || x === undefined ? null : Number(x.toFixed(digits));
}

// ---------------------------------------------------------------------------

async function waitFor(cond, ms, pollMs = 20) {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) return false;
    await sleep(pollMs);
  }
  return true;
}

// Lines from the parent process (the connections scenario's "go").
const stdinLines = [];
let stdinWaiter = null;
function nextStdinLine(ms) {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve) => {
    const timer = setTimeout(() => { stdinWaiter = null; resolve(null); }, ms);
    stdinWaiter = (line) => { clearTimeout(timer); stdinWaiter = null; resolve(line); };
  });
}
function listenStdin() {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (stdinWaiter) stdinWaiter(line); else stdinLines.push(line);
    }
  });
  // Never let a silent parent keep the process alive past its deadlines.
  process.stdin.unref();
}

async function connectionsScenario() {
  listenStdin();
  const N = cfg.subscribers;
  // The publisher first: the server has served one connection (and loaded
  // whatever it loads lazily on the first one) before "idle" is measured.
  const [pub] = (await connectAll(1, 'pub', 1)).conns;
  process.stdout.write(`${JSON.stringify({ phase: 'idle' })}\n`);
  const first = await nextStdinLine(cfg.holdTimeout * 1000);
  const c0 = snapshot();
  const phase = await withTimeout(
    connectAll(N, 'sub', cfg.connectConcurrency), cfg.connectTimeout * 1000, `${N} connections`);
  const c1 = snapshot();
  const subs = phase.conns;
  log(`connected ${N} subscribers in ${phase.seconds.toFixed(2)}s`);
  process.stdout.write(`${JSON.stringify({ phase: 'holding', subscribers: N })}\n`);
  const second = await nextStdinLine(cfg.holdTimeout * 1000);
  const errorsWhileIdle = stats.errors.length;
  const reply = await pub.request('publish', { channel: cfg.channel, data: { t: performance.now() } }, 15000);
  const seq = reply && reply.ok === true ? reply.seq : null;
  let served = 0;
  if (seq !== null) {
    await waitFor(() => subs.every((s) => s.closed || s.lastSeq >= seq), cfg.drainTimeout * 1000);
    served = subs.filter((s) => s.lastSeq >= seq).length;
  }
  const share = cpuShare(c0, c1);
  const result = {
    ok: served === N,
    scenario: 'connections',
    subscribers: N,
    config: cfg,
    connectSeconds: round(phase.seconds, 3),
    connectsPerSec: round(N / phase.seconds, 1),
    serverCpu: round(share.server, 3),
    loadgenCpu: round(share.loadgen, 3),
    otherCpu: round(share.other, 3),
    serverRunqueueWait: round(share.serverWait, 3),
    loadgenRunqueueWait: round(share.loadgenWait, 3),
    parentSaidGo: first === 'go' && second === 'go',
    published: seq !== null,
    lastAckError: seq === null ? reply : null,
    served,
    closedWhileIdle: errorsWhileIdle,
    wsExtensions: pub.ws.extensions || '',
    connectionErrors: stats.errors.slice(0, 5),
    connectionErrorCount: stats.errors.length,
    node: process.version,
    loadavg: os.loadavg(),
  };
  if (!result.ok) result.error = `${served}/${N} idle connections received the publish`;
  for (const c of [...subs, pub]) c.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function main() {
  if (cfg.scenario === 'connections') { await connectionsScenario(); return; }
  const pad = 'x'.repeat(cfg.padBytes);
  const ELD_RESOLUTION_MS = 10;
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
  log(`${cfg.scenario}: ${cfg.subscribers} subscribers -> ${URL}`);

  const subsPhase = await connectAll(cfg.subscribers, 'sub', cfg.connectConcurrency);
  const subs = subsPhase.conns;
  const [pub] = (await connectAll(1, 'pub', 1)).conns;
  log(`connected ${subs.length} subscribers in ${subsPhase.seconds.toFixed(2)}s`);
  const extensions = pub.ws.extensions || '';

  let sent = 0;
  let acked = 0;
  let ackErrors = 0;
  let lastAckError = null;
  let maxAckedSeq = 0;
  let running = true;
  const ackLatency = [];
  const N = subs.length;
  const baseDelivered = stats.delivered;
  const result = {
    ok: true,
    scenario: cfg.scenario,
    subscribers: N,
    config: cfg,
    connectSeconds: round(subsPhase.seconds, 2),
    wsExtensions: extensions,
    engineio: pub.eio ? { pingInterval: pub.eio.pingInterval, maxPayload: pub.eio.maxPayload } : null,
  };

  function onAck(reply, t0) {
    acked++;
    if (reply && reply.ok === true) {
      if (typeof reply.seq === 'number' && reply.seq > maxAckedSeq) maxAckedSeq = reply.seq;
    } else {
      ackErrors++;
      lastAckError = reply;
    }
    if (t0 !== undefined && ackLatency.length < 2_000_000) ackLatency.push(performance.now() - t0);
  }

  let w0;
  let w1;
  if (cfg.scenario === 'latency') {
    latencyWindow = { start: Infinity, end: Infinity, samples: new Float64Array(1 << 17), n: 0 };
    let sentInWindow = 0;
    const t0 = performance.now();
    const interval = 1000 / cfg.rate;
    const measureStart = t0 + cfg.warmup * 1000;
    const measureEnd = measureStart + cfg.duration * 1000;
    latencyWindow.start = measureStart;
    latencyWindow.end = measureEnd;
    await new Promise((resolve) => {
      const tick = () => {
        const now = performance.now();
        if (w0 === undefined && now >= measureStart) { w0 = snapshot({ sent, acked }); eld.enable(); }
        if (now >= measureEnd) {
          w1 = snapshot({ sent, acked });
          eld.disable();
          resolve();
          return;
        }
        // Catch up on every message due by now: a late timer sends a burst
        // instead of silently lowering the rate.
        const due = Math.min(Math.floor((now - t0) / interval) + 1, Math.ceil((measureEnd - t0) / interval));
        while (sent < due) {
          const t = performance.now();
          if (t >= measureStart && t < measureEnd) sentInWindow++;
          sent++;
          pub.emitWithAck('publish', { channel: cfg.channel, data: { t, p: pad } }, (r) => onAck(r, t));
        }
        setTimeout(tick, Math.max(0, Math.min(interval, t0 + sent * interval - performance.now())));
      };
      tick();
    });
    running = false;
    const ackDrained = await waitFor(() => acked === sent, cfg.drainTimeout * 1000);
    const drainStart = performance.now();
    const drained = await waitFor(() => subs.every((s) => s.lastSeq >= maxAckedSeq), cfg.drainTimeout * 1000);
    const lw = latencyWindow;
    const sorted = lw.samples.subarray(0, lw.n).sort();
    let sum = 0;
    for (let i = 0; i < lw.n; i++) sum += sorted[i];
    const expected = sentInWindow * N;
    ackLatency.sort((a, b) => a - b);
    Object.assign(result, {
      rate: cfg.rate,
      sentInWindow,
      expected,
      delivered: lw.n,
      deliveredRatio: expected ? round(lw.n / expected, 5) : null,
      latencyMs: {
        p50: round(percentile(sorted, lw.n, 50)),
        p90: round(percentile(sorted, lw.n, 90)),
        p99: round(percentile(sorted, lw.n, 99)),
        p999: round(percentile(sorted, lw.n, 99.9)),
        max: round(lw.n ? sorted[lw.n - 1] : null),
        mean: round(lw.n ? sum / lw.n : null),
      },
      ackLatencyMs: {
        p50: round(percentile(ackLatency, ackLatency.length, 50)),
        p99: round(percentile(ackLatency, ackLatency.length, 99)),
        max: round(ackLatency.length ? ackLatency[ackLatency.length - 1] : null),
      },
      // Delivery rate inside the window against the offered rate x subscribers:
      // below it, the server fell behind and the latencies are queueing time.
      deliveriesPerSec: round((w1.delivered - w0.delivered) / ((w1.t - w0.t) / 1000), 1),
      offeredDeliveriesPerSec: cfg.rate * N,
      ackDrained,
      drained,
      drainSeconds: round((performance.now() - drainStart) / 1000, 2),
    });
  } else {
    const W = cfg.window;
    const maxOutstanding = cfg.maxOutstanding;
    let inflight = 0;
    let lagBlocked = 0; // times the publisher had to wait for subscribers
    let pumping = false;
    const pump = () => {
      if (pumping) return;
      pumping = true;
      while (running && inflight < W) {
        if (sent * N - (stats.delivered - baseDelivered) > maxOutstanding) {
          if (onDelivery === null) { lagBlocked++; onDelivery = pump; }
          break;
        }
        onDelivery = null;
        inflight++;
        sent++;
        pub.emitWithAck('publish', { channel: cfg.channel, data: { t: performance.now(), p: pad } }, (r) => {
          inflight--;
          onAck(r);
          pump();
        });
      }
      pumping = false;
    };
    pump();
    await sleep(cfg.warmup * 1000);
    w0 = snapshot({ sent, acked });
    eld.enable();
    await sleep(cfg.duration * 1000);
    w1 = snapshot({ sent, acked });
    eld.disable();
    running = false;
    onDelivery = null;
    const drainStart = performance.now();
    const ackDrained = await waitFor(() => inflight === 0, cfg.drainTimeout * 1000);
    const drained = await waitFor(
      () => subs.every((s) => s.lastSeq >= maxAckedSeq),
      Math.max(0, cfg.drainTimeout * 1000 - (performance.now() - drainStart)),
    );
    const drainSeconds = (performance.now() - drainStart) / 1000;
    const wall = (w1.t - w0.t) / 1000;
    const complete = subs.filter((s) => s.lastSeq === maxAckedSeq && s.received === maxAckedSeq - s.startSeq).length;
    Object.assign(result, {
      window: W,
      maxOutstanding,
      publishedTotal: acked,
      lastSeq: maxAckedSeq,
      publishesPerSec: round((w1.acked - w0.acked) / wall, 1),
      deliveriesPerSec: round((w1.delivered - w0.delivered) / wall, 1),
      framesPerSec: round((w1.frames - w0.frames) / wall, 1),
      envelopesPerFrame: w1.frames > w0.frames ? round((w1.delivered - w0.delivered) / (w1.frames - w0.frames), 2) : null,
      bytesPerEnvelope: w1.delivered > w0.delivered ? round((w1.bytes - w0.bytes) / (w1.delivered - w0.delivered), 1) : null,
      lagBlocked,
      ackDrained,
      drained,
      drainSeconds: round(drainSeconds, 2),
      completeSubscribers: complete,
      allComplete: complete === N && stats.gaps === 0 && stats.frameMismatch === 0,
    });
  }

  const share = cpuShare(w0, w1);
  // The histogram records the whole timer period; subtract it to get the lag.
  const lag = (ns) => round(Math.max(0, ns / 1e6 - ELD_RESOLUTION_MS), 2);
  const delay = eld.count ? {
    p50: lag(eld.percentile(50)),
    p99: lag(eld.percentile(99)),
    max: lag(eld.max),
  } : null;
  Object.assign(result, {
    windowSeconds: round(share.wall, 3),
    loadgenCpu: round(share.loadgen, 3), // cores (1.0 = one core busy all the time)
    loadgenCpuUser: round(share.loadgenUser, 3),
    loadgenCpuSystem: round(share.loadgenSystem, 3),
    serverCpu: round(share.server, 3),
    storeCpu: round(share.store, 3),
    machineCpu: round(share.machine, 3),
    otherCpu: round(share.other, 3),
    // Share of the window the event-loop thread was ready to run but had no CPU.
    serverRunqueueWait: round(share.serverWait, 3),
    loadgenRunqueueWait: round(share.loadgenWait, 3),
    serverRssMiB: procRssMiB(cfg.serverPid),
    loadgenEventLoopDelayMs: delay,
    ackErrors,
    lastAckError,
    gaps: stats.gaps,
    dups: stats.dups,
    frameMismatch: stats.frameMismatch,
    otherPackets: stats.otherPackets,
    connectionErrors: stats.errors.slice(0, 5),
    connectionErrorCount: stats.errors.length,
    node: process.version,
    loadavg: os.loadavg(),
  });
  for (const c of [...subs, pub]) c.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    log(`failed: ${err.stack || err}`);
    process.stdout.write(`${JSON.stringify({ ok: false, error: String(err.message || err), config: cfg, connectionErrors: stats.errors.slice(0, 5) })}\n`);
    process.exit(2);
  },
);
