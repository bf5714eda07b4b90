// HubMonitor: what `rtkit top` shows, live in the notebook. Inside Jupyter
// the browser reads the status API itself ({base_url}rtkit/api/status, with
// the page's Jupyter login), so it keeps moving while the kernel is busy.
// Elsewhere (a standalone hub, which wants its API key) the kernel reads it
// and sets the model's `status` trait.
import { jupyterBaseUrl } from "./hub.js";

/**
 * @typedef {object} ChannelFigures
 * @property {number} subscribers
 * @property {number} seq
 * @property {number} rate
 * @property {number} bytes_rate
 * @property {number} publishers
 * @property {number | null} last_activity
 */
/**
 * @typedef {object} HubStatus the status API's answer (Hub.status in rtkit/hub/core.py)
 * @property {string} [state]
 * @property {number} [connections]
 * @property {number} [users]
 * @property {Record<string, ChannelFigures>} [channels]
 * @property {Record<string, number>} [connections_by_user]
 * @property {{ disconnected: number, queued: { sid: string, user: string, packets: number, bytes: number }[] }} [slow_consumers]
 * @property {Record<string, { status: string, lag?: number | null, errors?: number, last_position?: string | null }>} [bridges]
 * @property {string} [error] set by the kernel when it cannot read the status
 */
/**
 * @typedef {object} MonitorState the HubMonitor's traits (rtkit/widgets/_monitor.py)
 * @property {string} mode "auto", "browser" or "kernel"
 * @property {number} interval seconds between reads
 * @property {number} rows channels shown at most
 * @property {HubStatus} status the kernel's latest read (kernel mode)
 */

/** @param {number} value */
function rate(value) {
  return value < 10000 ? value.toFixed(1) : Math.round(value).toLocaleString();
}

/** @param {number | null} when unix seconds */
function ago(when) {
  if (!when) return "-";
  const s = Math.max(0, Date.now() / 1000 - when);
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

/**
 * Text nodes only: channel and user names come from any client of the hub.
 * @param {"th" | "td"} tag
 * @param {string[]} cells
 * @param {string} [name] data-channel of the row
 */
function row(tag, cells, name) {
  const tr = document.createElement("tr");
  if (name !== undefined) tr.dataset.channel = name;
  cells.forEach((text, i) => {
    const cell = document.createElement(tag);
    cell.textContent = text;
    cell.style.cssText = `padding: 1px 8px; white-space: nowrap; text-align: ${i ? "right" : "left"}`;
    tr.appendChild(cell);
  });
  return tr;
}

/** @type {import("@anywidget/types").Render<MonitorState>} */
export function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "rtkit-monitor";
  root.style.cssText = "font: 12px monospace";
  const header = document.createElement("div");
  header.className = "rtkit-monitor-header";
  const error = document.createElement("div");
  error.className = "rtkit-error";
  error.style.cssText = "color: #d62728";
  const channels = document.createElement("table");
  channels.className = "rtkit-monitor-channels";
  const users = document.createElement("table");
  users.className = "rtkit-monitor-users";
  const behind = document.createElement("table");
  behind.className = "rtkit-monitor-behind";
  const bridges = document.createElement("table");
  bridges.className = "rtkit-monitor-bridges";
  for (const t of [channels, users, bridges, behind]) t.style.cssText = "border-collapse: collapse; margin-top: 4px";
  root.append(header, error, channels, users, bridges, behind);
  el.appendChild(root);

  /** @param {HubStatus} s */
  function draw(s) {
    if (s.error) {
      error.textContent = s.error;
      root.dataset.state = "error";
      return;
    }
    error.textContent = "";
    const figures = Object.entries(s.channels || {});
    const total = figures.reduce((sum, [, c]) => sum + (c.rate || 0), 0);
    const slow = s.slow_consumers || { disconnected: 0, queued: [] };
    header.textContent =
      `${s.state || "?"} · ${s.connections ?? 0} connections · ${s.users ?? 0} users · ` +
      `${figures.length} channels · ${rate(total)} msg/s · ${slow.queued.length} behind · ` +
      `${slow.disconnected} slow disconnects`;
    root.dataset.state = s.state || "";
    figures.sort(([, a], [, b]) => b.rate - a.rate || b.subscribers - a.subscribers);
    const shown = figures.slice(0, Math.max(1, model.get("rows") || 15));
    channels.replaceChildren(
      row("th", ["channel", "msg/s", "KB/s", "subs", "pubs", "seq", "last"]),
      ...shown.map(([name, c]) =>
        row(
          "td",
          [name, rate(c.rate), (c.bytes_rate / 1024).toFixed(1), String(c.subscribers),
            String(c.publishers), c.seq.toLocaleString(), ago(c.last_activity)],
          name,
        ),
      ),
    );
    root.dataset.channels = JSON.stringify(shown.map(([name]) => name));
    const byUser = Object.entries(s.connections_by_user || {}).slice(0, 5);
    users.replaceChildren(
      row("th", ["user", "connections"]),
      ...byUser.map(([user, n]) => row("td", [user, String(n)])),
    );
    const reporting = Object.entries(s.bridges || {}).slice(0, 8);
    bridges.replaceChildren(
      ...(reporting.length
        ? [row("th", ["bridge", "state", "lag", "errors", "position"]),
          ...reporting.map(([name, b]) =>
            row("td", [name, b.status, b.lag == null ? "-" : String(b.lag), String(b.errors || 0),
              b.last_position || "-"]))]
        : []),
    );
    behind.replaceChildren(
      ...(slow.queued.length
        ? [row("th", ["falling behind", "user", "packets", "KB"]),
          ...slow.queued.slice(0, 5).map((q) =>
            row("td", [q.sid, q.user, String(q.packets), (q.bytes / 1024).toFixed(1)]))]
        : []),
    );
  }

  const base = jupyterBaseUrl();
  const inBrowser = model.get("mode") !== "kernel" && base !== null;
  root.dataset.source = inBrowser ? "browser" : "kernel";
  if (!inBrowser) {
    // The kernel reads the status and sets `status`.
    const onStatus = () => draw(model.get("status") || {});
    model.on("change:status", onStatus);
    model.send({ type: "poll" });
    onStatus();
    return () => {
      model.off("change:status", onStatus);
      model.send({ type: "stop" });
    };
  }

  let stopped = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  async function poll() {
    try {
      const answer = await fetch(`${base}rtkit/api/status`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (answer.ok) draw(/** @type {HubStatus} */ (await answer.json()));
      else if (answer.status === 404) draw({ error: "rtkit's server extension is not loaded in this Jupyter server" });
      else draw({ error: `the status API answered ${answer.status}: log in to Jupyter (the rtkit resource's read right)` });
    } catch (err) {
      draw({ error: `cannot reach the Jupyter server: ${err}` });
    }
    if (!stopped) timer = setTimeout(poll, Math.max(0.2, model.get("interval") || 1) * 1000);
  }
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
