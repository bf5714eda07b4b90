// Live table: the last N rows, newest first, redrawn once per animation
// frame; values shown as pandas shows them (values.js), the time column is
// the hub time of each message as a frame view's index shows it.
import { attach } from "./hub.js";
import { decode, formatHubTime, formatValue } from "./values.js";

/**
 * @typedef {object} TableState the LiveTable's traits (rtkit/widgets/_base.py)
 * @property {number} rows
 * @property {string[]} columns
 */
/** @typedef {import("./hub.js").HubModelState & TableState} TableModelState */

/** One row: hub time, and each column's value and dtype. @typedef {[number, Map<string, [unknown, string | null]>]} TableRow */

/** @type {import("@anywidget/types").Render<TableModelState>} */
export function render({ model, el }) {
  const table = document.createElement("table");
  table.className = "rtkit-table";
  table.style.cssText = "font: 12px monospace; border-collapse: collapse";
  el.appendChild(table);
  /** @type {TableRow[]} */
  let buffer = []; // oldest first
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
      // Spaced and right-aligned as pandas' own HTML tables show values.
      cell.style.cssText = "padding: 2px 10px; text-align: right; white-space: nowrap";
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
      const cells = columns.map((c) => {
        const cell = row.get(c);
        return cell === undefined ? "" : formatValue(cell[0], cell[1]);
      });
      rowsOut.push(rowOf("td", [formatHubTime(ts), ...cells]));
    }
    table.replaceChildren(...rowsOut);
  }

  /** @type {import("./hub.js").ChannelListener} */
  const listener = {
    onError(error) {
      table.dataset.error = error.message || "refused";
      const caption = document.createElement("caption");
      caption.className = "rtkit-error";
      caption.style.cssText = "color:#b00020;text-align:left";
      caption.textContent = `${model.get("channel")}: ${error.message || "refused"}`;
      table.replaceChildren(caption);
    },
    onMessages(envs) {
      const n = model.get("rows");
      for (const env of envs) {
        const block = decode(env.data);
        if (!model.get("columns").length) {
          for (const k of block.columns) if (!columns.includes(k)) columns.push(k);
        }
        // Only the last n rows of a big batch can show.
        for (let i = Math.max(0, block.n - n); i < block.n; i++) {
          /** @type {Map<string, [unknown, string | null]>} */
          const row = new Map();
          block.columns.forEach((c, j) => row.set(c, [block.data[j][i], block.dtypes[j]]));
          buffer.push([env.ts, row]);
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
  return () => {
    stop();
    table.remove();
  };
}
