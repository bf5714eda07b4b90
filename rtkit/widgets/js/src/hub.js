// One Socket.IO connection per hub and page, shared by every rtkit widget on it.
//
// Inside Jupyter the page's origin serves the hub at {base_url}rtkit/socket.io/
// and the browser's Jupyter login authenticates it: the data never passes
// through the kernel, so widgets keep moving while a cell runs. Elsewhere the
// widget asks its kernel to relay (see rtkit/widgets/_base.py).
import { io } from "socket.io-client";
import {
  HISTORY,
  MESSAGES,
  NAMESPACE,
  PRESENCE,
  PRESENCE_EVENT_LEAVE,
  PRESENCE_JOIN,
  PRESENCE_LEAVE,
  PRESENCE_UPDATE,
  SOCKETIO_PATH,
  SUBSCRIBE,
  TRANSIENT_ERROR_CODES,
} from "./protocol.js";

/**
 * The traits every hub widget syncs (rtkit/widgets/_base.py's _HubWidget).
 * @typedef {object} HubModelState
 * @property {string} channel
 * @property {"auto" | "direct" | "relay"} mode
 * @property {string} url
 * @property {string} path
 * @property {string} token
 */
/** @typedef {import("@anywidget/types").AnyModel<HubModelState>} HubModel */

/**
 * Where a page connects: a hub's origin, Socket.IO path and credentials.
 * @typedef {{ origin: string, path: string, auth: { token?: string } }} Target
 */

/**
 * One message as every subscriber sees it (protocol.py's Envelope).
 * @typedef {object} Envelope
 * @property {string} channel
 * @property {number} seq
 * @property {number} ts
 * @property {string} id
 * @property {string} sender
 * @property {unknown} data
 */

/** @typedef {{ code?: string, message?: string }} ErrorBody */
/**
 * An ack as the hub sends it: ok with the event's fields, or an error.
 * @typedef {{ ok: boolean, error?: ErrorBody, [field: string]: any }} Ack
 */

/**
 * A member of a presence room (protocol.py's MemberDict).
 * @typedef {object} Member
 * @property {string} id
 * @property {string} user
 * @property {string} [name]
 * @property {string} [color]
 * @property {number} [connections]
 * @property {Record<string, unknown>} [state]
 */

/**
 * What a widget is told about its channel.
 * @typedef {object} ChannelListener
 * @property {(envs: Envelope[]) => void} onMessages
 * @property {(ack: Ack) => void} [onGap] the hub could not fill a gap: messages were lost
 * @property {(msg: RelayMessages) => void} [onRelayStats] the kernel relay's counters
 * @property {(error: ErrorBody) => void} [onError] the hub (or the kernel relay) refused the channel
 * @property {() => void} [onSubscribed] the hub accepted the subscription
 * @property {number} [backfill] how many stored messages to fetch once, when the widget starts
 * @property {(envs: Envelope[]) => boolean} [enough] whether the messages fetched so far fill the widget's window
 * @property {(envs: Envelope[]) => void} [onBackfill] the stored messages fetched, oldest first
 */

/**
 * What the kernel relay sends for a channel (rtkit/widgets/_base.py's _Relay).
 * @typedef {{ type: "messages" | "backfill" | "error", envs?: Envelope[], coalesced?: number, dropped?: number, error?: ErrorBody }} RelayMessages
 */

/**
 * @typedef {object} Channel
 * @property {number | null} seq the newest seq delivered
 * @property {string | null} epoch
 * @property {Set<ChannelListener>} listeners
 * @property {ErrorBody | null} [error]
 * @property {number} [attempts]
 */

/**
 * @typedef {object} Room
 * @property {string} name
 * @property {Map<string, Member>} members
 * @property {string | null} me this page's member id
 * @property {Record<string, unknown>} state this page's member state
 * @property {string | null} error
 * @property {Set<(room: Room) => void>} listeners
 * @property {number} [attempts]
 */

/** @typedef {"connecting" | "connected" | "reconnecting" | "unreachable"} HubState */

/**
 * The page's hubs by target. anywidget evaluates each widget model's `_esm`
 * as a module of its own (a fresh blob: URL per model), so a module-level
 * Map would be one per widget: the one registry a page shares lives on the
 * page, under a registered symbol rather than a global name.
 * @type {Map<string, Hub>}
 */
const hubs = /** @type {any} */ (globalThis)[Symbol.for("rtkit.widgets.hubs")] ??= new Map();

/** The Jupyter server's base URL, read from the page, or null outside Jupyter. */
export function jupyterBaseUrl() {
  const el = document.getElementById("jupyter-config-data");
  if (!el) return null;
  try {
    const base = JSON.parse(el.textContent || "").baseUrl || "/";
    return base.endsWith("/") ? base : base + "/";
  } catch {
    return null;
  }
}

/**
 * Where this widget's browser side should connect, or null to use the relay.
 * @param {HubModel} model
 * @returns {Target | null}
 */
export function target(model) {
  const mode = model.get("mode");
  if (mode === "relay") return null;
  const url = model.get("url");
  if (mode === "direct" && url) {
    const token = model.get("token");
    return { origin: url, path: model.get("path") || `/${SOCKETIO_PATH}/`, auth: token ? { token } : {} };
  }
  const base = jupyterBaseUrl();
  if (base === null) return null;
  return { origin: location.origin, path: `${base}rtkit/${SOCKETIO_PATH}/`, auth: {} };
}

export class Hub {
  /** @param {Target} target */
  constructor({ origin, path, auth }) {
    /** @type {HubState} */
    this.state = "connecting";
    this.everConnected = false;
    /** @type {number | null} round trip of the last ping, in ms */
    this.latency = null;
    this.received = 0;
    this.duplicates = 0;
    /** @type {string | undefined} */
    this.lastError = undefined;
    // The hub's clock, estimated without a request: hub time = Date.now()
    // - offset, where offset is the smallest (receive time - ts) seen, that
    // is the message that came fastest; a backlog's old messages never win.
    /** @type {number | null} seconds */
    this.clockOffset = null;
    /** @type {Map<string, Channel>} */
    this.channels = new Map();
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
    /** @type {Set<(state: HubState) => void>} */
    this.watchers = new Set();
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
      // A refusal carries rtkit's error in `data` (DESIGN: Connect).
      const data = /** @type {{ data?: ErrorBody }} */ (/** @type {unknown} */ (err)).data;
      this.lastError = (data && data.message) || (err && err.message);
      this.setState(this.everConnected ? "reconnecting" : "unreachable");
    });
    this.socket.on(MESSAGES, (/** @type {Envelope[]} */ envs) => this.onMessages(envs));
    this.socket.on(PRESENCE, (/** @type {PresenceEvent} */ ev) => this.onPresence(ev));
    this.pinger = setInterval(() => this.ping(), 2000);
  }

  /** @param {HubState} state */
  setState(state) {
    this.state = state;
    for (const fn of this.watchers) fn(state);
  }

  ping() {
    const name = this.channels.keys().next().value;
    if (!this.socket.connected || name === undefined) return;
    const t0 = performance.now();
    this.socket.timeout(5000).emit(HISTORY, { channel: name, limit: 1 }, (/** @type {Error | null} */ err) => {
      if (!err) this.latency = performance.now() - t0;
    });
  }

  /** @param {string} name */
  subscribe(name) {
    const ch = /** @type {Channel} */ (this.channels.get(name));
    /** @type {{ channel: string, since?: number }} */
    const req = { channel: name };
    if (ch.seq !== null) req.since = ch.seq;
    this.socket.timeout(10000).emit(SUBSCRIBE, req, (/** @type {Error | null} */ err, /** @type {Ack | undefined} */ ack) => {
      if (this.channels.get(name) !== ch) return; // no longer wanted
      if (err || !ack || !ack.ok) {
        ch.error = err ? { message: "no answer from the hub" } : (ack && ack.error) || { message: "refused" };
        for (const l of ch.listeners) if (l.onError) l.onError(ch.error);
        this.retryLater(err, ack, ch, () => this.subscribe(name));
        return;
      }
      ch.error = null;
      ch.attempts = 0;
      for (const l of ch.listeners) if (l.onSubscribed) l.onSubscribed();
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

  /**
   * A subscribe or join that timed out or was refused for now (rate
   * limited, hub unavailable) is tried again with backoff, as the Python
   * client does; a lasting refusal (forbidden, bad request) is not.
   * @param {Error | null} err
   * @param {Ack | undefined} ack
   * @param {{ attempts?: number }} target the channel or room, which counts its attempts
   * @param {() => void} again
   */
  retryLater(err, ack, target, again) {
    const code = ack && ack.error && ack.error.code;
    if (!err && !(code !== undefined && TRANSIENT_ERROR_CODES.has(code))) return;
    target.attempts = (target.attempts || 0) + 1;
    const delay = Math.min(10000, 250 * 2 ** Math.min(target.attempts, 6)) * (0.5 + Math.random());
    setTimeout(() => {
      if (this.socket.connected) again();
    }, delay);
  }

  /** The hub's clock now (unix seconds), as estimated, or null before any message. */
  hubNow() {
    return this.clockOffset === null ? null : Date.now() / 1000 - this.clockOffset;
  }

  /**
   * Stored messages of a channel, newest `limit` first asked for, oldest
   * first returned; asks for earlier pages (at most `pages`) while the hub
   * says there are more and `enough` says the widget wants more.
   * @param {string} name
   * @param {number} limit
   * @param {(envs: Envelope[]) => boolean} enough
   * @param {number} [pages]
   * @returns {Promise<Envelope[]>}
   */
  async history(name, limit, enough, pages = 5) {
    /** @type {Envelope[]} */
    let out = [];
    /** @type {{ channel: string, limit: number, before?: number }} */
    const req = { channel: name, limit };
    for (let page = 0; page < pages; page++) {
      /** @type {Ack} */
      const ack = await this.socket.timeout(15000).emitWithAck(HISTORY, req);
      if (!ack || !ack.ok) throw Object.assign(new Error((ack && ack.error && ack.error.message) || "history refused"), { body: ack && ack.error });
      /** @type {Envelope[]} */
      const msgs = ack.messages || [];
      out = msgs.concat(out);
      if (!ack.more || !msgs.length || out.length >= limit || enough(out)) break;
      req.before = msgs[0].seq;
      req.limit = limit - out.length;
    }
    return out;
  }

  /** @param {Envelope[]} envs */
  onMessages(envs) {
    const now = Date.now() / 1000;
    for (const env of envs) {
      const offset = now - env.ts;
      if (this.clockOffset === null || offset < this.clockOffset) this.clockOffset = offset;
    }
    // Group by channel so each listener gets one call per packet.
    /** @type {Channel | null} */
    let current = null;
    /** @type {Envelope[]} */
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

  /**
   * Subscribes this page to a channel (once, whatever the number of
   * listeners); returns the listener's stop function.
   * @param {string} name
   * @param {ChannelListener} listener
   * @returns {() => void}
   */
  listen(name, listener) {
    let ch = this.channels.get(name);
    if (!ch) {
      ch = { seq: null, epoch: null, listeners: new Set() };
      this.channels.set(name, ch);
      if (this.socket.connected) this.subscribe(name);
    }
    const listeners = ch.listeners;
    listeners.add(listener);
    if (ch.error && listener.onError) listener.onError(ch.error);
    return () => {
      listeners.delete(listener);
    };
  }

  // -- presence: one membership per room and page, shared by its widgets --

  /** @param {string} name */
  join(name) {
    const room = /** @type {Room} */ (this.rooms.get(name));
    this.socket.timeout(10000).emit(PRESENCE_JOIN, { room: name, state: room.state }, (/** @type {Error | null} */ err, /** @type {Ack | undefined} */ ack) => {
      if (this.rooms.get(name) !== room) return; // left meanwhile
      if (err || !ack || !ack.ok) {
        room.error = err ? "no answer from the hub" : (ack && ack.error && ack.error.message) || "refused";
        this.retryLater(err, ack, room, () => this.join(name));
      } else {
        room.error = null;
        room.attempts = 0;
        // The ack's list is the room as the hub saw it after our join; events
        // queued before it (and flushed after) apply on top.
        room.members = new Map(ack.members.map((/** @type {Member} */ m) => [m.id, m]));
        room.me = ack.member ? ack.member.id : null;
      }
      this.notifyRoom(room);
    });
  }

  /** @param {PresenceEvent | undefined} ev */
  onPresence(ev) {
    const room = ev && this.rooms.get(ev.room);
    if (!ev || !room || !ev.member) return;
    if (ev.event === PRESENCE_EVENT_LEAVE) room.members.delete(ev.member.id);
    else room.members.set(ev.member.id, ev.member);
    this.notifyRoom(room);
  }

  /** @param {Room} room */
  notifyRoom(room) {
    for (const fn of room.listeners) fn(room);
  }

  /**
   * Calls fn(room) whenever the room's members change; returns a stop function.
   * @param {string} name
   * @param {(room: Room) => void} fn
   * @param {Record<string, unknown>} [state] this page's member state, if it joins now
   * @returns {() => void}
   */
  presence(name, fn, state) {
    let room = this.rooms.get(name);
    if (!room) {
      room = { name, members: new Map(), me: null, state: state || {}, error: null, listeners: new Set() };
      this.rooms.set(name, room);
      if (this.socket.connected) this.join(name);
    }
    const joined = room;
    joined.listeners.add(fn);
    fn(joined);
    return () => {
      joined.listeners.delete(fn);
      if (joined.listeners.size || this.rooms.get(name) !== joined) return;
      this.rooms.delete(name);
      if (this.socket.connected) this.socket.emit(PRESENCE_LEAVE, { room: name });
    };
  }

  /**
   * @param {string} name
   * @param {Record<string, unknown>} state
   */
  setPresenceState(name, state) {
    const room = this.rooms.get(name);
    if (!room) return;
    room.state = state;
    if (this.socket.connected) this.socket.emit(PRESENCE_UPDATE, { room: name, state });
  }

  /**
   * Calls fn(state) now and on every change of the connection's state.
   * @param {(state: HubState) => void} fn
   * @returns {() => void}
   */
  watch(fn) {
    this.watchers.add(fn);
    fn(this.state);
    return () => {
      this.watchers.delete(fn);
    };
  }
}

/**
 * A presence event as the hub sends it.
 * @typedef {{ room: string, event: string, member?: Member }} PresenceEvent
 */

/**
 * The page's connection to a target, opened on first use.
 * @param {Target} t
 * @returns {Hub}
 */
export function hubFor(t) {
  const key = `${t.origin}|${t.path}|${t.auth.token || ""}`;
  let hub = hubs.get(key);
  if (!hub) {
    hub = new Hub(t);
    hubs.set(key, hub);
  }
  return hub;
}

/**
 * How a widget runs on either path (see connectWidget).
 * @typedef {object} WidgetPaths
 * @property {(hub: Hub) => () => void} direct starts the direct path, returns its stop function
 * @property {(msg: any) => void} onRelay takes what the kernel sends
 * @property {(kind: "direct" | "relay", hub: Hub | null) => void} onSource told which path runs
 * @property {Record<string, unknown>} [relayRequest] sent with the request to relay
 */

/**
 * Runs a widget on the direct path when the browser can reach the hub, else
 * (or once the hub proves unreachable, in "auto" mode) on the kernel relay.
 * Returns the widget's stop function.
 * @param {HubModel} model
 * @param {WidgetPaths} paths
 * @returns {() => void}
 */
export function connectWidget(model, { direct, onRelay, onSource, relayRequest = {} }) {
  /** @type {(() => void) | null} */
  let stopDirect = null;
  /** @type {(() => void) | null} */
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
  /** @param {unknown} msg */
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

/**
 * Connects a widget to its channel: directly when the browser can reach the
 * hub, else through the kernel relay. Returns its stop function.
 * @param {HubModel} model
 * @param {string} name
 * @param {ChannelListener} listener
 * @param {(kind: "direct" | "relay", hub: Hub | null) => void} onSource
 * @returns {() => void}
 */
export function attach(model, name, listener, onSource) {
  const wanted = listener.backfill || 0;
  return connectWidget(model, {
    direct(hub) {
      let live = true;
      const stop = hub.listen(name, listener);
      if (wanted > 0 && listener.onBackfill) {
        const take = listener.onBackfill;
        const fetch = () => {
          hub.history(name, wanted, listener.enough || (() => false)).then(
            (envs) => live && take(envs),
            (/** @type {Error & { body?: ErrorBody }} */ err) => {
              if (live && err.body && listener.onError) listener.onError(err.body);
            },
          );
        };
        // Asked once the connection is up (a history request on a socket
        // still connecting would wait in its buffer anyway).
        if (hub.socket.connected) fetch();
        else hub.socket.once("connect", fetch);
      }
      return () => {
        live = false;
        stop();
      };
    },
    onRelay(msg) {
      if (msg.type === "error") {
        if (listener.onError) listener.onError(msg.error || { message: "refused" });
        return;
      }
      if (msg.type === "backfill") {
        if (listener.onBackfill) listener.onBackfill(msg.envs || []);
        return;
      }
      if (msg.type !== "messages") return;
      if (msg.envs && msg.envs.length) listener.onMessages(msg.envs);
      if (listener.onRelayStats) listener.onRelayStats(msg);
    },
    onSource,
    relayRequest: { channel: name, history: wanted },
  });
}
