// Live line chart: uPlot, several series on a time axis, a rolling window by
// rows or seconds, pause/resume, values under the cursor in the legend.
// Messages only append to buffers; drawing happens once per animation frame
// at most, so a fast feed never builds a backlog of redraws.
import uPlot from "uplot";
import css from "uplot/dist/uPlot.min.css";
import { attach, rows } from "./hub.js";

/**
 * @typedef {object} ChartState the LiveChart's traits (rtkit/widgets/_base.py)
 * @property {string[]} series
 * @property {number} window_rows
 * @property {number} window_seconds
 * @property {boolean} paused
 * @property {number} height
 * @property {string} title
 */
/** @typedef {import("./hub.js").HubModelState & ChartState} ChartModelState */

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
let styled = false;

function addStyle() {
  if (styled) return;
  styled = true;
  const style = document.createElement("style");
  style.textContent = css + `
.rtkit-chart { font: 12px sans-serif; }
.rtkit-chart .rtkit-bar { display: flex; gap: 8px; align-items: center; margin-bottom: 4px; }
.rtkit-chart button { font: inherit; padding: 1px 8px; }
.rtkit-chart .rtkit-info { color: #666; }`;
  document.head.appendChild(style);
}

/** @type {import("@anywidget/types").Render<ChartModelState>} */
export function render({ model, el }) {
  addStyle();
  const root = document.createElement("div");
  root.className = "rtkit-chart";
  const bar = document.createElement("div");
  bar.className = "rtkit-bar";
  const button = document.createElement("button");
  const info = document.createElement("span");
  info.className = "rtkit-info";
  bar.append(button, info);
  const plotBox = document.createElement("div");
  root.append(bar, plotBox);
  el.appendChild(root);

  let names = [...(model.get("series") || [])];
  /** @type {number[]} */
  const xs = [];
  /** @type {(number | null)[][]} */
  const ys = names.map(() => []);
  let start = 0; // index of the first row inside the window
  let dirty = false;
  let scheduled = false;
  /** @type {uPlot | null} */
  let plot = null;
  let messages = 0;
  /** @type {string} */
  let source = "";

  const paused = () => model.get("paused");
  const setButton = () => (button.textContent = paused() ? "Resume" : "Pause");
  setButton();
  button.onclick = () => {
    model.set("paused", !paused());
    model.save_changes();
  };
  model.on("change:paused", () => {
    setButton();
    schedule();
  });

  function makePlot() {
    if (plot) plot.destroy();
    const width = Math.max(300, (el.clientWidth || 600) - 10);
    return new uPlot(
      {
        width,
        height: model.get("height"),
        title: model.get("title") || undefined,
        scales: { x: { time: true } },
        legend: { live: true },
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
        axes: [{}, {}],
      },
      [[], ...names.map(() => [])],
      plotBox,
    );
  }

  function trim() {
    const rowsWin = model.get("window_rows");
    const secs = model.get("window_seconds");
    const end = xs.length;
    if (rowsWin > 0 && end - start > rowsWin) start = end - rowsWin;
    if (secs > 0 && end > start) {
      const cutoff = xs[end - 1] - secs;
      // binary search for the first x >= cutoff
      let lo = start, hi = end - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (xs[mid] < cutoff) lo = mid + 1;
        else hi = mid;
      }
      start = lo;
    }
    // Compact now and then: memory stays bounded by the window.
    if (start > 4096 && start > (end - start)) {
      xs.splice(0, start);
      for (const y of ys) y.splice(0, start);
      start = 0;
    }
  }

  /** @param {import("./hub.js").Envelope} env */
  function onRows(env) {
    for (const [ts, row] of rows(env)) {
      if (names.length === 0 || (model.get("series") || []).length === 0) {
        for (const [k, v] of Object.entries(row)) {
          if ((typeof v === "number" || v === null) && !names.includes(k)) {
            names.push(k);
            ys.push(xs.map(() => null));
            plot = null;
          }
        }
      }
      xs.push(ts);
      for (let i = 0; i < names.length; i++) {
        const v = row[names[i]];
        ys[i].push(typeof v === "number" ? v : null);
      }
    }
  }

  /** @type {import("./hub.js").ChannelListener} */
  const listener = {
    onMessages(envs) {
      for (const env of envs) onRows(env);
      messages += envs.length;
      trim();
      schedule();
    },
    onGap() {
      // A row of nulls breaks the lines where messages were lost.
      if (xs.length) {
        xs.push(xs[xs.length - 1]);
        for (const y of ys) y.push(null);
      }
    },
  };

  function schedule() {
    dirty = true;
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  let lastInfo = 0;
  let rateMessages = 0;
  let rateT = performance.now();
  let rate = 0;
  function draw() {
    scheduled = false;
    if (!dirty || paused()) return;
    dirty = false;
    if (!plot) plot = makePlot();
    const data = /** @type {uPlot.AlignedData} */ ([xs.slice(start), ...ys.map((y) => y.slice(start))]);
    plot.setData(data);
    const now = performance.now();
    if (now - rateT >= 1000) {
      rate = ((messages - rateMessages) * 1000) / (now - rateT);
      rateMessages = messages;
      rateT = now;
    }
    if (now - lastInfo > 250) {
      lastInfo = now;
      info.textContent = `${model.get("channel")} · ${source} · ${Math.round(rate).toLocaleString()} msg/s · ${xs.length - start} points`;
    }
  }

  const stop = attach(model, model.get("channel"), listener, (kind) => {
    source = kind;
    root.dataset.source = kind;
  });
  const resize = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(300, el.clientWidth - 10), height: model.get("height") });
  });
  resize.observe(el);
  return () => {
    stop();
    resize.disconnect();
    if (plot) plot.destroy();
  };
}
