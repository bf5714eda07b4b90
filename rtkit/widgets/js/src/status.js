// Connection status badge: connected/reconnecting, latency, messages/s and
// the duplicates dropped (direct) or updates coalesced (kernel relay).
import { attach, hubFor, target } from "./hub.js";

/** @type {Record<string, string>} */
const COLORS = { connected: "#2ca02c", connecting: "#999", reconnecting: "#ff7f0e", unreachable: "#d62728", relay: "#1f77b4" };

/** @type {import("@anywidget/types").Render<import("./hub.js").HubModelState>} */
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
      })
    : (() => {
        const t = target(model);
        if (t) hub = hubFor(t);
        return () => {};
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
  }
  update();
  const timer = setInterval(update, 1000);
  return () => {
    clearInterval(timer);
    stop();
    stopWatch();
  };
}
