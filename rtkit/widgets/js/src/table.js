// Live table: the last N rows, newest first, redrawn once per animation frame.
import { attach, rows } from "./hub.js";

/**
 * @typedef {object} TableState the LiveTable's traits (rtkit/widgets/_base.py)
 * @property {number} rows
 * @property {string[]} columns
 */
/** @typedef {import("./hub.js").HubModelState & TableState} TableModelState */

/** @param {unknown} v */
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(6);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** @type {import("@anywidget/types").Render<TableModelState>} */
export function render({ model, el }) {
  const table = document.createElement("table");
  table.className = "rtkit-table";
  table.style.cssText = "font: 12px monospace; border-collapse: collapse";
  el.appendChild(table);
  /** @type {[number, import("./hub.js").Row][]} */
  let buffer = []; // [ts, row], oldest first
  let columns = [...(model.get("columns") || [])];
  let scheduled = false;

  // Text nodes only: keys and values come from any publisher on the channel
  // and must never be parsed as HTML in the viewer's page.
  /**
   * @param {"th" | "td"} tag
   * @param {string[]} cells
   */
  function rowOf(tag, cells) {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement(tag);
      cell.textContent = text;
      tr.appendChild(cell);
    }
    return tr;
  }

  function draw() {
    scheduled = false;
    const n = model.get("rows");
    if (buffer.length > n) buffer = buffer.slice(-n);
    const rowsOut = [rowOf("th", ["time", ...columns])];
    for (let i = buffer.length - 1; i >= 0; i--) {
      const [ts, row] = buffer[i];
      const t = new Date(ts * 1000).toISOString().slice(11, 23);
      rowsOut.push(rowOf("td", [t, ...columns.map((c) => fmt(row[c]))]));
    }
    table.replaceChildren(...rowsOut);
  }

  /** @type {import("./hub.js").ChannelListener} */
  const listener = {
    onMessages(envs) {
      const n = model.get("rows");
      for (const env of envs) {
        for (const r of rows(env)) {
          buffer.push(r);
          if (!model.get("columns").length) {
            for (const k of Object.keys(r[1])) if (!columns.includes(k)) columns.push(k);
          }
        }
      }
      if (buffer.length > 4 * n) buffer = buffer.slice(-n);
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(draw);
      }
    },
  };
  const stop = attach(model, model.get("channel"), listener, (kind) => (table.dataset.source = kind));
  return stop;
}
