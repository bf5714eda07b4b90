// Connection status badge: connected/reconnecting, latency, messages/s and
// the duplicates dropped (direct) or updates coalesced (kernel relay); with
// `bridges`, a line per bridge (state, lag, errors) under it.
import { attach, hubFor, target } from "./hub.js";

// Bridges report on "<index>.<name>" and announce themselves on "<index>"
// (rtkit/bridges/_report.py). The badge reads the newest announcements and
// follows at most MAX_BRIDGES bridges (a subscription each).
const INDEX_SCAN = 256;
const MAX_BRIDGES = 16;
// A bridge silent for this many of its report intervals is stale (as
// rtkit/hub/bridges.py's STALE_AFTER).
const STALE_AFTER = 3;

/** @type {Record<string, string>} */
const BRIDGE_COLORS = { connected: "#2ca02c", connecting: "#999", disconnected: "#d62728", stopped: "#999", stale: "#ff7f0e" };

/**
 * A bridge's last report (rtkit/bridges/_report.py), as far as shown here.
 * @typedef {{ status?: string, every?: number, lag?: number | null, errors?: number, last_error?: string | null, gaps?: number }} BridgeReport
 */

/**
 * A channel followed live, with its newest `backfill` stored messages first
 * (the direct path of hub.js's attach, for a widget that follows several).
 * @param {import("./hub.js").Hub} hub
 * @param {string} name
 * @param {number} backfill
 * @param {(envs: import("./hub.js").Envelope[]) => void} take
 * @returns {() => void}
 */
function follow(hub, name, backfill, take) {
  let live = true;
  const stop = hub.listen(name, { onMessages: take });
  const fetch = () => {
    hub.history(name, backfill, () => false).then(
      (envs) => live && take(envs),
      () => {}, // refused (no right to read it): nothing to show
    );
  };
  if (hub.socket.connected) fetch();
  else hub.socket.once("connect", fetch);
  return () => {
    live = false;
    stop();
  };
}

/**
 * Follows the bridges announced on `index`, calling `changed` when a report
 * comes; returns the stop function and the reports by bridge name.
 * @param {import("./hub.js").Hub} hub
 * @param {string} index
 * @param {() => void} changed
 */
function followBridges(hub, index, changed) {
  /** @type {Map<string, { report: BridgeReport | null, ts: number, seq: number, stop: () => void }>} */
  const bridges = new Map();
  let more = 0;
  /** @param {unknown} name */
  const add = (name) => {
    if (typeof name !== "string" || bridges.has(name)) return;
    if (bridges.size >= MAX_BRIDGES) {
      more += 1;
      return;
    }
    const entry = { report: /** @type {BridgeReport | null} */ (null), ts: 0, seq: 0, stop: () => {} };
    bridges.set(name, entry);
    entry.stop = follow(hub, `${index}.${name}`, 1, (envs) => {
      const last = envs[envs.length - 1];
      // History and live messages may cross: the newest seq wins.
      if (!last || last.seq <= entry.seq || !last.data || typeof last.data !== "object") return;
      entry.report = /** @type {BridgeReport} */ (last.data);
      entry.ts = last.ts;
      entry.seq = last.seq;
      changed();
    });
    changed();
  };
  const stopIndex = follow(hub, index, INDEX_SCAN, (envs) => {
    // Newest announcements first: those are the bridges kept past MAX_BRIDGES.
    for (let i = envs.length - 1; i >= 0; i--) {
      const data = /** @type {{ bridge?: unknown } | null} */ (envs[i].data);
      add(data && typeof data === "object" ? data.bridge : undefined);
    }
  });
  return {
    bridges,
    more: () => more,
    stop() {
      stopIndex();
      for (const entry of bridges.values()) entry.stop();
    },
  };
}

/** @type {Record<string, string>} */
const COLORS = { connected: "#2ca02c", connecting: "#999", reconnecting: "#ff7f0e", unreachable: "#d62728", relay: "#1f77b4" };

/**
 * StatusBadge's traits (rtkit/widgets/_base.py).
 * @typedef {import("./hub.js").HubModelState & { bridges: boolean, bridge_channel: string }} StatusModelState
 */
/** @typedef {import("@anywidget/types").AnyModel<StatusModelState>} StatusModel */

/**
 * What the kernel sends for the bridge lines on the relay (rtkit/widgets/_base.py's _BridgeRelay).
 * @typedef {{ type: "bridges", now?: number, bridges?: { name: string, report: BridgeReport, ts: number }[], more?: number, error?: { message?: string } }} BridgeRelayMessage
 */

/**
 * The bridge lines under the badge: fed by the page's own connection to the
 * hub (direct) or, where the browser cannot reach it, by the kernel (relay).
 * @param {StatusModel} model
 * @param {HTMLElement} el
 */
function bridgeLines(model, el) {
  const index = model.get("bridge_channel") || "bridges";
  const lines = document.createElement("div");
  lines.className = "rtkit-bridges";
  lines.style.cssText = "font:12px sans-serif;margin:2px 0 0 4px";
  el.appendChild(lines);
  /** @type {import("./hub.js").Hub | null} */
  let hub = null;
  /** @type {ReturnType<typeof followBridges> | null} */
  let watched = null;
  /** @type {BridgeRelayMessage | null} */
  let relayed = null;
  let relaying = false;
  let relayNow = { kernel: 0, local: 0 }; // the kernel's clock against this page's
  /** @param {unknown} msg */
  const onCustom = (msg) => {
    const m = /** @type {BridgeRelayMessage | null} */ (msg);
    if (!relaying || !m || m.type !== "bridges") return;
    if (m.error) {
      relayed = null;
      lines.textContent = `bridges: ${m.error.message || "refused"}`;
      return;
    }
    relayed = m;
    relayNow = { kernel: m.now || Date.now() / 1000, local: Date.now() / 1000 };
    draw();
  };
  model.on("msg:custom", onCustom);

  function draw() {
    /** @type {[string, { report: BridgeReport | null, ts: number }][]} */
    let rows;
    let now;
    let more = 0;
    if (watched && hub) {
      rows = [...watched.bridges.entries()];
      now = hub.hubNow() || Date.now() / 1000;
      more = watched.more();
    } else if (relayed) {
      rows = (relayed.bridges || []).map((b) => [b.name, { report: b.report, ts: b.ts }]);
      now = relayNow.kernel + (Date.now() / 1000 - relayNow.local);
      more = relayed.more || 0;
    } else {
      return;
    }
    rows.sort(([a], [b]) => (a < b ? -1 : 1));
    lines.replaceChildren(
      ...rows.map(([name, { report, ts }]) => {
        let status = report ? report.status || "unknown" : "waiting";
        const every = report && typeof report.every === "number" && report.every > 0 ? report.every : 5;
        if (report && status !== "stopped" && now - ts > STALE_AFTER * every) status = "stale";
        const row = document.createElement("div");
        row.className = "rtkit-bridge";
        row.dataset.bridge = name;
        row.dataset.status = status;
        row.style.cssText = "display:flex;gap:6px;align-items:center";
        const dot = document.createElement("span");
        dot.style.cssText = `width:6px;height:6px;border-radius:50%;display:inline-block;background:${BRIDGE_COLORS[status] || "#999"}`;
        const text = document.createElement("span");
        /** @type {string[]} */
        const parts = [`${name}: ${status}`];
        if (report && typeof report.lag === "number") parts.push(`lag ${report.lag.toLocaleString()}`);
        if (report) parts.push(`errors ${report.errors || 0}`);
        if (report && report.gaps) parts.push(`gaps ${report.gaps}`);
        text.textContent = parts.join(" · ");
        if (report && report.last_error) row.title = report.last_error;
        row.append(dot, text);
        return row;
      }),
    );
    if (more) lines.append(`+${more} more`);
  }

  return {
    draw,
    /** @param {import("./hub.js").Hub} h */
    direct(h) {
      if (watched || relaying) return;
      hub = h;
      watched = followBridges(h, index, draw);
    },
    relay() {
      if (relaying) return;
      if (watched) watched.stop();
      watched = hub = null;
      relaying = true;
      lines.textContent = "bridges: asking the kernel…";
      model.send({ type: "bridges" });
    },
    stop() {
      model.off("msg:custom", onCustom);
      if (watched) watched.stop();
      if (relaying) model.send({ type: "bridges.stop" });
    },
  };
}

/** @type {import("@anywidget/types").Render<StatusModelState>} */
export function render({ model, el }) {
  const badge = document.createElement("span");
  badge.className = "rtkit-status";
  badge.style.cssText =
    "display:inline-flex;gap:6px;align-items:center;font:12px sans-serif;padding:2px 8px;border:1px solid #ccc;border-radius:10px";
  const dot = document.createElement("span");
  dot.style.cssText = "width:8px;height:8px;border-radius:50%;display:inline-block";
  const text = document.createElement("span");
  badge.append(dot, text);
  el.appendChild(badge);
  const bridges = model.get("bridges") ? bridgeLines(model, el) : null;

  /** @type {import("./hub.js").Hub | null} */
  let hub = null;
  /** @type {import("./hub.js").HubState | "relay"} */
  let state = "connecting";
  let count = 0;
  let relay = { coalesced: 0, dropped: 0 };
  let lastCount = 0;
  let lastT = performance.now();
  let rate = 0;

  const channel = model.get("channel");
  /** @type {import("./hub.js").ChannelListener} */
  const listener = {
    onMessages(envs) {
      count += envs.length;
    },
    onRelayStats(msg) {
      state = "relay";
      relay = { coalesced: msg.coalesced || 0, dropped: msg.dropped || 0 };
    },
  };
  const stop = channel
    ? attach(model, channel, listener, (kind, h) => {
        hub = h;
        if (kind === "relay") state = "relay";
        if (bridges) {
          if (h) bridges.direct(h);
          else bridges.relay();
        }
      })
    : (() => {
        const t = target(model);
        if (t) hub = hubFor(t);
        if (!bridges) return () => {};
        if (!hub) {
          bridges.relay();
          return () => {};
        }
        bridges.direct(hub);
        // As attach does for a channel: an unreachable hub hands over to the kernel.
        return hub.watch((s) => {
          if (s === "unreachable" && model.get("mode") === "auto") bridges.relay();
        });
      })();
  const stopWatch = hub ? hub.watch((s) => (state = s)) : () => {};

  function update() {
    const now = performance.now();
    const total = channel ? count : hub ? hub.received : 0;
    rate = ((total - lastCount) * 1000) / (now - lastT);
    lastCount = total;
    lastT = now;
    /** @type {string[]} */
    const parts = [state];
    if (hub && hub.latency !== null && state === "connected") parts.push(`${hub.latency.toFixed(1)} ms`);
    parts.push(`${Math.round(rate).toLocaleString()} msg/s`);
    if (state === "relay") parts.push(`coalesced ${relay.coalesced}`, `dropped ${relay.dropped}`);
    else if (hub) parts.push(`dropped ${hub.duplicates}`);
    text.textContent = parts.join(" · ");
    dot.style.background = COLORS[state] || "#999";
    badge.dataset.state = state;
    badge.dataset.rate = String(Math.round(rate));
    if (bridges) bridges.draw(); // also turns a silent bridge stale
  }
  update();
  const timer = setInterval(update, 1000);
  return () => {
    clearInterval(timer);
    stop();
    stopWatch();
    if (bridges) bridges.stop();
  };
}
