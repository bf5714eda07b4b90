// A stock socket.io-client using rtkit's wire protocol v1 with nothing but
// DESIGN.md in hand: connect, subscribe, publish with acks, receive
// `messages`, reconnect and resume with `since`, page through `history`.
//
//   node protocol_client.mjs URL CHANNEL COUNT
//
// The token comes from RTKIT_TOKEN (none: an anonymous hub). RTKIT_BAD_TOKEN,
// when set, is tried once to check how a refused connect looks. Prints one
// JSON summary on stdout; the Python test (test_js_client.py) asserts on it.
// Exit code 0 when the script ran to the end, 1 on a fatal error.

import { io } from "socket.io-client";

const [url, channel = "js.demo", countArg = "20"] = process.argv.slice(2);
const count = Number.parseInt(countArg, 10);
const token = process.env.RTKIT_TOKEN || null;
const badToken = process.env.RTKIT_BAD_TOKEN || null;
const NAMESPACE = "/rtkit";
const TIMEOUT_MS = 10_000;

const summary = { problems: [] };
const problem = (text) => summary.problems.push(text);

function open(auth) {
  return io(`${url}${NAMESPACE}`, {
    path: "/socket.io/",
    transports: ["websocket"],
    auth: auth ?? {},
    reconnection: false,
    forceNew: true,
    timeout: TIMEOUT_MS,
  });
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("connect timed out")), TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// Every request carries one JSON object and expects an ack.
function request(socket, event, payload) {
  return socket.timeout(TIMEOUT_MS).emitWithAck(event, payload);
}

// Collects envelopes per channel from `messages` events, in arrival order.
function collector(socket) {
  const received = new Map();
  const waiters = [];
  socket.on("messages", (...args) => {
    if (args.length !== 1 || !Array.isArray(args[0]) || args[0].length === 0) {
      problem(`messages must carry one non-empty list, got ${JSON.stringify(args).slice(0, 200)}`);
      return;
    }
    for (const env of args[0]) {
      const keys = Object.keys(env).sort().join(",");
      if (keys !== "channel,data,id,sender,seq,ts") problem(`envelope keys: ${keys}`);
      if (!Number.isInteger(env.seq) || typeof env.ts !== "number") problem("bad seq or ts");
      if (!received.has(env.channel)) received.set(env.channel, []);
      received.get(env.channel).push(env);
    }
    for (const w of [...waiters]) {
      const list = received.get(w.channel) ?? [];
      if (list.length && list[list.length - 1].seq >= w.seq) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  });
  return {
    received,
    seqs: (ch) => (received.get(ch) ?? []).map((e) => e.seq),
    waitForSeq(ch, seq) {
      const list = received.get(ch) ?? [];
      if (list.length && list[list.length - 1].seq >= seq) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { channel: ch, seq, resolve };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for seq ${seq} on ${ch}`));
        }, TIMEOUT_MS);
        waiters.push(w);
      });
    },
  };
}

function consecutive(seqs, first, last) {
  if (seqs.length !== last - first + 1) return false;
  return seqs.every((s, i) => s === first + i);
}

async function main() {
  // 1. A refused connect: Socket.IO connect error with {code, message}.
  if (badToken) {
    const bad = open({ token: badToken });
    try {
      await connected(bad);
      summary.refused = { connected: true };
    } catch (err) {
      summary.refused = { connected: false, data: err.data ?? null, message: err.message };
    } finally {
      bad.close();
    }
  }

  // 2. Connect, subscribe, publish COUNT messages at once, receive them.
  const auth = token ? { token } : {};
  const socket = open(auth);
  await connected(socket);
  const live = collector(socket);
  const sub = await request(socket, "subscribe", { channel });
  summary.subscribe = sub;
  if (!sub.ok) throw new Error(`subscribe failed: ${JSON.stringify(sub)}`);
  const start = sub.seq;

  const acks = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      request(socket, "publish", {
        channel,
        data: { i, text: `héllo ${i}`, pi: 3.25, list: [true, null] },
        id: `js-${i}`,
      }),
    ),
  );
  summary.publish = {
    ok: acks.every((a) => a.ok === true && Number.isInteger(a.seq) && typeof a.ts === "number"),
    seqs: acks.map((a) => a.seq),
  };
  // The same id again: the first seq, stored once.
  const dup = await request(socket, "publish", { channel, data: { i: 0 }, id: "js-0" });
  summary.duplicate = dup;

  // Binary data travels as a Socket.IO attachment.
  const blob = Buffer.from([0, 1, 2, 250, 255]);
  const binAck = await request(socket, "publish", { channel, data: blob });
  summary.binary = { ack: binAck };

  const last = start + count + 1;
  await live.waitForSeq(channel, last);
  const got = live.seqs(channel);
  summary.live = { seqs: got, gapFree: consecutive(got, start + 1, last) };
  const envs = live.received.get(channel);
  summary.live.dataInOrder = envs
    .slice(0, count)
    .every((e, i) => e.data.i === acks.findIndex((a) => a.seq === e.seq) && e.id === `js-${e.data.i}`);
  const binEnv = envs[envs.length - 1];
  summary.binary.roundTrip = Buffer.isBuffer(binEnv.data) && Buffer.compare(binEnv.data, blob) === 0;
  summary.sender = envs[0].sender;

  // 3. A bad request gets a bad_request ack and the socket stays usable.
  summary.badRequest = await request(socket, "publish", { channel: "a b", data: 1 });
  summary.notFound = await request(socket, "unsubscribe", { channel: `${channel}.never` });
  summary.stillConnected = socket.connected;
  socket.close();

  // 4. Reconnect and resume from the middle with since (+ epoch).
  const since = start + Math.floor(count / 2);
  const again = open(auth);
  await connected(again);
  const resumed = collector(again);
  const replay = await request(again, "subscribe", { channel, since, epoch: sub.epoch });
  summary.replay = {
    ok: replay.ok,
    recovered: replay.recovered,
    seq: replay.seq,
    epochKept: replay.epoch === sub.epoch,
    seqs: (replay.messages ?? []).map((m) => m.seq),
    since,
  };
  summary.replay.gapFree = consecutive(summary.replay.seqs, since + 1, last);
  // Live messages continue right after the backlog.
  const next = await request(again, "publish", { channel, data: "after-replay" });
  await resumed.waitForSeq(channel, next.seq);
  summary.replay.liveAfter = resumed.seqs(channel);

  // 5. history: latest, forward pages with since/limit, backward with before.
  const latest = await request(again, "history", { channel, limit: 3 });
  const page = await request(again, "history", { channel, since: start, limit: 5 });
  const before = await request(again, "history", { channel, before: start + 4 });
  summary.history = {
    latest: latest.messages.map((m) => m.seq),
    page: page.messages.map((m) => m.seq),
    before: before.messages.map((m) => m.seq),
    seq: latest.seq,
    epoch: latest.epoch,
  };
  again.close();
  summary.done = true;
}

try {
  await main();
  console.log(JSON.stringify(summary));
  process.exit(0);
} catch (err) {
  summary.fatal = String(err?.stack ?? err);
  console.log(JSON.stringify(summary));
  process.exit(1);
}
