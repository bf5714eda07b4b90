// One Socket.IO connection per hub and page, shared by every rtkit widget on it.
//
// Inside Jupyter the page's origin serves the hub at {base_url}rtkit/socket.io/
// and the browser's Jupyter login authenticates it: the data never passes
// through the kernel, so widgets keep moving while a cell runs. Elsewhere the
// widget asks its kernel to relay (see rtkit/widgets/_base.py).
import { io } from "socket.io-client";

const NAMESPACE = "/rtkit";
// Error codes worth another try later (DESIGN's ack error codes).
const TRANSIENT = new Set(["rate_limited", "unavailable", "internal"]);
// Shared across the separately bundled widget modules of one page.
const hubs = (globalThis.__rtkitHubs ??= new Map());

export function jupyterBaseUrl() {
  const el = document.getElementById("jupyter-config-data");
  if (!el) return null;
  try {
    const base = JSON.parse(el.textContent).baseUrl || "/";
    return base.endsWith("/") ? base : base + "/";
  } catch {
    return null;
  }
}

// Where this widget's browser side should connect, or null to use the relay.
export function target(model) {
  const mode = model.get("mode");
  if (mode === "relay") return null;
  const url = model.get("url");
  if (mode === "direct" && url) {
    const token = model.get("token");
    return { origin: url, path: model.get("path") || "/socket.io/", auth: token ? { token } : {} };
  }
  const base = jupyterBaseUrl();
  if (base === null) return null;
  return { origin: location.origin, path: base + "rtkit/socket.io/", auth: {} };
}

class Hub {
  constructor({ origin, path, auth }) {
    this.state = "connecting";
    this.everConnected = false;
    this.latency = null;
    this.received = 0;
    this.duplicates = 0;
    this.channels = new Map(); // name -> {seq, epoch, listeners: Set}
    this.rooms = new Map(); // name -> {members: Map(id -> member), me, state, listeners: Set}
    this.watchers = new Set(); // state listeners
    this.socket = io(origin + NAMESPACE, {
      path,
      auth,
      transports: ["websocket"],
      withCredentials: true,
      reconnectionDelay: 250,
      reconnectionDelayMax: 2000,
    });
    this.socket.on("connect", () => {
      this.everConnected = true;
      this.setState("connected");
      for (const name of this.channels.keys()) this.subscribe(name);
      for (const name of this.rooms.keys()) this.join(name);
    });
    this.socket.on("disconnect", () => this.setState("reconnecting"));
    this.socket.on("connect_error", (err) => {
      this.lastError = err && err.message;
      this.setState(this.everConnected ? "reconnecting" : "unreachable");
    });
    this.socket.on("messages", (envs) => this.onMessages(envs));
    this.socket.on("presence", (ev) => this.onPresence(ev));
    this.pinger = setInterval(() => this.ping(), 2000);
  }

  setState(state) {
    this.state = state;
    for (const fn of this.watchers) fn(state);
  }

  ping() {
    const name = this.channels.keys().next().value;
    if (!this.socket.connected || name === undefined) return;
    const t0 = performance.now();
    this.socket.timeout(5000).emit("history", { channel: name, limit: 1 }, (err) => {
      if (!err) this.latency = performance.now() - t0;
    });
  }

  subscribe(name) {
    const ch = this.channels.get(name);
    const req = { channel: name };
    if (ch.seq !== null) req.since = ch.seq;
    this.socket.timeout(10000).emit("subscribe", req, (err, ack) => {
      if (this.channels.get(name) !== ch) return; // no longer wanted
      if (err || !ack || !ack.ok) {
        ch.error = err ? "no answer from the hub" : (ack && ack.error && ack.error.message) || "refused";
        this.retryLater(err, ack, ch, () => this.subscribe(name));
        return;
      }
      ch.error = null;
      ch.attempts = 0;
      const gap = ch.epoch !== null && (ack.recovered === false || ack.epoch !== ch.epoch);
      ch.epoch = ack.epoch;
      if (gap) {
        ch.seq = null;
        for (const l of ch.listeners) if (l.onGap) l.onGap(ack);
      }
      if (ack.messages && ack.messages.length) this.onMessages(ack.messages);
      if (ch.seq === null || ch.seq < ack.seq) ch.seq = ack.seq;
    });
  }

  // A subscribe or join that timed out or was refused for now (rate
  // limited, hub unavailable) is tried again with backoff, as the Python
  // client does; a lasting refusal (forbidden, bad request) is not.
  retryLater(err, ack, target, again) {
    const code = ack && ack.error && ack.error.code;
    if (!err && !TRANSIENT.has(code)) return;
    target.attempts = (target.attempts || 0) + 1;
    const delay = Math.min(10000, 250 * 2 ** Math.min(target.attempts, 6)) * (0.5 + Math.random());
    setTimeout(() => {
      if (this.socket.connected) again();
    }, delay);
  }

  onMessages(envs) {
    // Group by channel so each listener gets one call per packet.
    let current = null;
    let batch = [];
    const flush = () => {
      if (current && batch.length) for (const l of current.listeners) l.onMessages(batch);
      batch = [];
    };
    for (const env of envs) {
      const ch = this.channels.get(env.channel);
      if (!ch) continue;
      if (ch.seq !== null && env.seq <= ch.seq) {
        this.duplicates += 1;
        continue;
      }
      ch.seq = env.seq;
      this.received += 1;
      if (ch !== current) {
        flush();
        current = ch;
      }
      batch.push(env);
    }
    flush();
  }

  listen(name, listener) {
    let ch = this.channels.get(name);
    if (!ch) {
      ch = { seq: null, epoch: null, listeners: new Set() };
      this.channels.set(name, ch);
      if (this.socket.connected) this.subscribe(name);
    }
    ch.listeners.add(listener);
    return () => ch.listeners.delete(listener);
  }

  // -- presence: one membership per room and page, shared by its widgets --

  join(name) {
    const room = this.rooms.get(name);
    this.socket.timeout(10000).emit("presence.join", { room: name, state: room.state }, (err, ack) => {
      if (this.rooms.get(name) !== room) return; // left meanwhile
      if (err || !ack || !ack.ok) {
        room.error = err ? "no answer from the hub" : (ack && ack.error && ack.error.message) || "refused";
        this.retryLater(err, ack, room, () => this.join(name));
      } else {
        room.error = null;
        room.attempts = 0;
        // The ack's list is the room as the hub saw it after our join; events
        // queued before it (and flushed after) apply on top.
        room.members = new Map(ack.members.map((m) => [m.id, m]));
        room.me = ack.member ? ack.member.id : null;
      }
      this.notifyRoom(room);
    });
  }

  onPresence(ev) {
    const room = ev && this.rooms.get(ev.room);
    if (!room || !ev.member) return;
    if (ev.event === "leave") room.members.delete(ev.member.id);
    else room.members.set(ev.member.id, ev.member);
    this.notifyRoom(room);
  }

  notifyRoom(room) {
    for (const fn of room.listeners) fn(room);
  }

  // Calls fn(room) whenever the room's members change; returns a stop function.
  presence(name, fn, state) {
    let room = this.rooms.get(name);
    if (!room) {
      room = { name, members: new Map(), me: null, state: state || {}, error: null, listeners: new Set() };
      this.rooms.set(name, room);
      if (this.socket.connected) this.join(name);
    }
    room.listeners.add(fn);
    fn(room);
    return () => {
      room.listeners.delete(fn);
      if (room.listeners.size || this.rooms.get(name) !== room) return;
      this.rooms.delete(name);
      if (this.socket.connected) this.socket.emit("presence.leave", { room: name });
    };
  }

  setPresenceState(name, state) {
    const room = this.rooms.get(name);
    if (!room) return;
    room.state = state;
    if (this.socket.connected) this.socket.emit("presence.update", { room: name, state });
  }

  watch(fn) {
    this.watchers.add(fn);
    fn(this.state);
    return () => this.watchers.delete(fn);
  }
}

export function hubFor(t) {
  const key = `${t.origin}|${t.path}|${t.auth.token || ""}`;
  if (!hubs.has(key)) hubs.set(key, new Hub(t));
  return hubs.get(key);
}

// Runs a widget on the direct path when the browser can reach the hub, else
// (or once the hub proves unreachable, in "auto" mode) on the kernel relay:
// direct(hub) starts the direct path and returns its stop function;
// onRelay(msg) takes what the kernel sends. Returns the widget's stop function.
export function connectWidget(model, { direct, onRelay, onSource, relayRequest = {} }) {
  let stopDirect = null;
  let stopWatch = null;
  let relaying = false;
  const startRelay = () => {
    if (relaying) return;
    relaying = true;
    if (stopDirect) stopDirect();
    if (stopWatch) stopWatch();
    stopDirect = stopWatch = null;
    model.send({ type: "relay", ...relayRequest });
    onSource("relay", null);
  };
  const onCustom = (msg) => {
    if (relaying && msg) onRelay(msg);
  };
  model.on("msg:custom", onCustom);
  const t = target(model);
  if (t === null) {
    startRelay();
  } else {
    const hub = hubFor(t);
    stopDirect = direct(hub);
    stopWatch = hub.watch((state) => {
      if (state === "unreachable" && model.get("mode") === "auto") startRelay();
    });
    onSource("direct", hub);
  }
  return () => {
    model.off("msg:custom", onCustom);
    if (stopDirect) stopDirect();
    if (stopWatch) stopWatch();
    if (relaying) model.send({ type: "stop" });
  };
}

// Connects a widget to its channel: directly when the browser can reach the
// hub, else through the kernel relay. Returns its stop function.
export function attach(model, name, listener, onSource) {
  return connectWidget(model, {
    direct: (hub) => hub.listen(name, listener),
    onRelay(msg) {
      if (msg.type !== "messages") return;
      if (msg.envs && msg.envs.length) listener.onMessages(msg.envs);
      if (listener.onRelayStats) listener.onRelayStats(msg);
    },
    onSource,
    relayRequest: { channel: name },
  });
}

// Numeric points out of an envelope: [ts, {name: value}] per row. A frame
// batch (rtkit.frames) gives one row per batch row.
export function* rows(env) {
  const data = env.data;
  if (data !== null && typeof data === "object" && !Array.isArray(data)) {
    if (data.rtkit === "frame" && Array.isArray(data.data)) {
      const n = data.rows || (data.data[0] ? data.data[0].length : 0);
      for (let i = 0; i < n; i++) {
        const row = {};
        data.columns.forEach((c, j) => (row[c] = data.data[j][i]));
        yield [env.ts, row];
      }
      return;
    }
    yield [env.ts, data];
    return;
  }
  yield [env.ts, { value: data }];
}
