// Live line chart (uPlot): y fields against an x column (hub time by
// default), one series per key of a `by` column, y scales by magnitude, a
// rolling window by rows or seconds, min/max downsampling to the pixel width,
// backfill from history, pause/resume, CSV and PNG export, errors shown
// inside the widget. Messages only append to buffers; drawing happens once
// per animation frame at most, so a fast feed never builds a backlog.
import uPlot from "uplot";
import css from "uplot/dist/uPlot.min.css";
import { attach } from "./hub.js";
import { compactTicks, decode, formatValue, isTime, minMax, scaleGroups, timeDtype, toNumber } from "./values.js";

/**
 * @typedef {object} ChartState the LiveChart's traits (rtkit/widgets/_base.py)
 * @property {string[]} series
 * @property {string} x
 * @property {string} by
 * @property {string} y_scale "auto", "shared" or "independent"
 * @property {number} window_rows
 * @property {number} window_seconds
 * @property {number} backfill
 * @property {boolean} paused
 * @property {number} height
 * @property {string} title
 */
/** @typedef {import("./hub.js").HubModelState & ChartState} ChartModelState */

/**
 * What the chart drew last, on its root element as `rtkitChart` (for tests
 * and for anyone inspecting the page).
 * @typedef {object} Drawn
 * @property {{ label: string, field: string, key: string, scale: string, x: number[], y: number[] }[]} series
 * @property {number} width pixel columns of the plot area
 * @property {[number, number]} xRange
 * @property {number} rows rows in the window
 * @property {string[]} scales
 * @property {number} drawMs how long the last draw took (window to pixels), in ms
 */

// matplotlib's tab10, then more: a colour per key.
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"];
const DASHES = [undefined, [6, 3], [2, 2], [8, 3, 2, 3]];
// Rows held at most, whatever the window: every buffer has a bound.
const MAX_ROWS = 200_000;
// A field asked for (series, x, by) and absent from this many messages is
// reported as unknown.
const UNKNOWN_AFTER = 50;
let styled = false;

function addStyle() {
  if (styled) return;
  styled = true;
  const style = document.createElement("style");
  style.textContent = css + `
.rtkit-chart { font: 12px sans-serif; }
.rtkit-chart .rtkit-bar { display: flex; gap: 8px; align-items: center; margin-bottom: 4px; }
.rtkit-chart button { font: inherit; padding: 1px 8px; }
.rtkit-chart .rtkit-info { color: #666; }
.rtkit-chart .rtkit-error { color: #b00020; background: #fdecea; border: 1px solid #f5c2c0; padding: 4px 8px; margin-bottom: 4px; white-space: pre-wrap; }
.rtkit-chart .rtkit-error:empty { display: none; }`;
  document.head.appendChild(style);
}

/** @type {CanvasRenderingContext2D | null} */
let measureCtx = null;
/** @param {string[]} labels */
function labelWidth(labels) {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  if (!measureCtx) return 60;
  measureCtx.font = "12px sans-serif";
  let w = 0;
  for (const l of labels) w = Math.max(w, measureCtx.measureText(l).width);
  return Math.ceil(w);
}

/** @param {string} a @param {string} b */
const natural = (a, b) => a.localeCompare(b, undefined, { numeric: true });

/** @type {import("@anywidget/types").Render<ChartModelState>} */
export function render({ model, el }) {
  addStyle();
  const root = /** @type {HTMLDivElement & { rtkitChart?: Drawn }} */ (document.createElement("div"));
  root.className = "rtkit-chart";
  const bar = document.createElement("div");
  bar.className = "rtkit-bar";
  const button = document.createElement("button");
  const csvButton = document.createElement("button");
  csvButton.textContent = "CSV";
  csvButton.title = "Download the window as CSV";
  csvButton.className = "rtkit-csv";
  const pngButton = document.createElement("button");
  pngButton.textContent = "PNG";
  pngButton.title = "Download the chart as PNG";
  pngButton.className = "rtkit-png";
  const info = document.createElement("span");
  info.className = "rtkit-info";
  bar.append(button, csvButton, pngButton, info);
  const errorBox = document.createElement("div");
  errorBox.className = "rtkit-error";
  errorBox.setAttribute("role", "alert");
  const plotBox = document.createElement("div");
  root.append(bar, errorBox, plotBox);
  el.appendChild(root);

  /** @type {Map<string, string>} what is wrong, by source ("hub", "fields") */
  const errors = new Map();
  function showErrors() {
    const text = [...errors.values()].join("\n");
    errorBox.textContent = text;
    if (text) root.dataset.error = text;
    else delete root.dataset.error;
  }

  // -- the buffers: one entry per row, oldest first ---------------------------
  /** @type {number[]} */ let xs = [];
  /** @type {string[]} */ let keys = [];
  /** @type {Map<string, (number | null)[]>} */ let cols = new Map();
  let xIsTime = !model.get("x"); // hub time unless the x column says otherwise
  let maxX = -Infinity; // the newest x taken in
  let shown = 0; // rows in the window when last drawn
  // The hub's clock as this chart sees it (for the kernel relay, which has
  // no page connection to ask): Date.now() - the smallest (receive - ts).
  /** @type {number | null} */ let clockOffset = null;
  let xTz = "UTC";
  const seen = new Set(); // every column seen
  let messages = 0;
  // Live messages also in a backfill that came first are dropped, up to the
  // backfill's newest seq; past it, the page's connection (or the kernel's
  // client) already drops what was seen, also across a channel restart.
  let backfilledUntil = 0;
  /** @type {number | null} */ let firstLive = null;
  /** @type {string[]} */ let fields = [...(model.get("series") || [])];
  /** @type {import("./hub.js").Hub | null} */ let hub = null;
  let source = "";

  /**
   * The rows of one envelope, appended to the given buffers.
   * @param {import("./hub.js").Envelope} env
   * @param {{ xs: number[], keys: string[], cols: Map<string, (number | null)[]> }} into
   */
  function take(env, into) {
    const block = decode(env.data);
    const idx = new Map(block.columns.map((c, j) => [c, j]));
    for (const c of block.columns) seen.add(c);
    const xName = model.get("x");
    const byName = model.get("by");
    // x: the named column; else a batch's first time column (the frame's
    // time column or index), so the rows of one batch get their own times;
    // else the hub time of the message.
    let xj = xName ? idx.get(xName) : undefined;
    if (!xName) {
      const t = block.dtypes.findIndex((d) => { const t = timeDtype(d); return t !== null && t.kind === "datetime"; });
      if (t >= 0) xj = t;
    }
    if (xj !== undefined) {
      const dt = block.dtypes[xj];
      xIsTime = isTime(dt, block.data[xj][0]);
      const t = timeDtype(dt);
      if (t && t.tz) xTz = t.tz;
    } else if (xName) {
      return; // no x for these rows
    } else {
      xIsTime = true;
    }
    const bj = byName ? idx.get(byName) : undefined;
    if (!model.get("series").length) {
      for (let j = 0; j < block.columns.length; j++) {
        const name = block.columns[j];
        if (j === xj || j === bj || fields.includes(name)) continue;
        const dt = block.dtypes[j];
        const v = block.data[j].find((v) => v !== null);
        const numeric = dt !== null ? /^(float|int|uint|Float|Int|UInt)\d*$/.test(dt) : typeof v === "number";
        if (numeric) fields.push(name);
      }
    }
    const ys = fields.map((f) => {
      const j = idx.get(f);
      return j === undefined ? null : { values: block.data[j], dtype: block.dtypes[j] };
    });
    const targets = fields.map((f) => {
      let c = into.cols.get(f);
      if (c === undefined) {
        c = new Array(into.xs.length).fill(null);
        into.cols.set(f, c);
      }
      return c;
    });
    for (let i = 0; i < block.n; i++) {
      const x = xj === undefined ? env.ts : toNumber(block.data[xj][i], block.dtypes[xj]);
      if (x === null) continue;
      if (x > maxX) maxX = x;
      into.xs.push(x);
      into.keys.push(bj === undefined ? "" : formatValue(block.data[bj][i], block.dtypes[bj]));
      for (let k = 0; k < ys.length; k++) {
        const y = ys[k];
        targets[k].push(y === null ? null : toNumber(y.values[i], y.dtype));
      }
    }
  }

  /** Fields asked for but never seen: an error inside the widget. */
  function checkFields() {
    if (messages < UNKNOWN_AFTER) return;
    const asked = [...model.get("series"), model.get("x"), model.get("by")].filter((f) => f);
    const missing = asked.filter((f) => !seen.has(f));
    if (missing.length) {
      const known = [...seen].sort(natural).slice(0, 20).join(", ");
      errors.set("fields", `no field ${missing.map((m) => JSON.stringify(m)).join(", ")} in ${messages} messages of ${JSON.stringify(model.get("channel"))}; fields seen: ${known || "none"}`);
    } else errors.delete("fields");
    showErrors();
  }

  // -- the window -------------------------------------------------------------
  /** The newest x of the window's end: the hub's clock for hub time, else the newest x. */
  function windowEnd() {
    let end = maxX;
    // The hub's clock ends a window of live times (hub time, or a time
    // column within an hour of it); a replay of old data ends at its newest x.
    const now = (hub && hub.hubNow()) ?? (clockOffset === null ? null : Date.now() / 1000 - clockOffset);
    if (now !== null && xIsTime && (!Number.isFinite(end) || Math.abs(now - end) < 3600)) end = Math.max(end, now);
    return end;
  }

  /** Where the window starts: the first row index, and the oldest x of a time window. */
  function bounds() {
    const rowsWin = model.get("window_rows");
    const secs = model.get("window_seconds");
    const n = xs.length;
    const cap = rowsWin > 0 ? Math.min(rowsWin, MAX_ROWS) : MAX_ROWS;
    return { from: Math.max(0, n - cap), cutoff: secs > 0 ? windowEnd() - secs : -Infinity };
  }

  /**
   * Drops rows out of the window from the buffers' front: at once when
   * `force`, else only once there are many (copying the buffers for every
   * message of a sliding window would cost more than the drawing).
   * @param {boolean} force
   */
  function trim(force) {
    const { from, cutoff } = bounds();
    const n = xs.length;
    let cut = from;
    while (cut < n && xs[cut] < cutoff) cut++;
    if (cut > 0 && (force || cut >= 1024 || cut > n / 4)) {
      xs = xs.slice(cut);
      keys = keys.slice(cut);
      for (const [f, c] of cols) cols.set(f, c.slice(cut));
    }
  }

  /** @param {import("./hub.js").Envelope[]} envs */
  function onMessages(envs) {
    const received = Date.now() / 1000;
    for (const env of envs) {
      if (clockOffset === null || received - env.ts < clockOffset) clockOffset = received - env.ts;
      if (env.seq <= backfilledUntil) continue;
      backfilledUntil = 0;
      if (firstLive === null) firstLive = env.seq;
      take(env, { xs, keys, cols });
      messages += 1;
    }
    trim(false);
    checkFields();
    schedule();
  }

  /** Stored messages from before the first live one, put in front. @param {import("./hub.js").Envelope[]} envs */
  function onBackfill(envs) {
    const older = envs.filter((e) => firstLive === null || e.seq < firstLive);
    if (!older.length) return;
    /** @type {{ xs: number[], keys: string[], cols: Map<string, (number | null)[]> }} */
    const front = { xs: [], keys: [], cols: new Map() };
    for (const env of older) take(env, front);
    messages += older.length;
    if (firstLive === null) backfilledUntil = older[older.length - 1].seq;
    const merged = new Map();
    for (const f of fields) {
      const a = front.cols.get(f) || new Array(front.xs.length).fill(null);
      const b = cols.get(f) || new Array(xs.length).fill(null);
      merged.set(f, a.concat(b));
    }
    xs = front.xs.concat(xs);
    keys = front.keys.concat(keys);
    cols = merged;
    trim(true);
    checkFields();
    schedule();
    root.dataset.backfilled = String(older.length);
  }

  // -- drawing -------------------------------------------------------------------
  /** @type {uPlot | null} */ let plot = null;
  /** @type {string[][]} */ let lastGroups = [];
  let layout = ""; // the series and scales the plot was made for
  let dirty = false;
  let scheduled = false;
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

  function schedule() {
    dirty = true;
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  function plotWidth() {
    return Math.max(300, (el.clientWidth || 600) - 10);
  }

  /** Pixel columns of the plot area (uPlot's bbox is in device pixels). */
  function pixelColumns() {
    if (plot) return Math.max(1, Math.floor(plot.bbox.width / (window.devicePixelRatio || 1)));
    return plotWidth() - 60;
  }

  /**
   * @param {{ label: string, field: string, key: string, scale: string, color: string, dash: number[] | undefined }[]} series
   * @param {string[]} scales
   */
  function makePlot(series, scales) {
    if (plot) plot.destroy();
    /** @type {uPlot.Scales} */
    const scaleOpts = { x: { time: xIsTime } };
    for (const s of scales) scaleOpts[s] = { auto: true };
    /** @type {uPlot.Axis[]} */
    const axes = [{}];
    scales.forEach((s, i) => {
      axes.push({
        scale: s,
        side: i % 2 === 0 ? 3 : 1,
        grid: { show: i === 0 },
        stroke: scales.length > 1 ? series.find((x) => x.scale === s)?.color : undefined,
        values: (_u, splits) => compactTicks(splits),
        // Wide enough for the longest label: labels are never cut (nor is
        // the time axis' date, centred under the plot's left edge).
        size: (_u, values) => Math.max(i === 0 ? 56 : 40, (values ? labelWidth(values) : 30) + 20),
      });
    });
    return new uPlot(
      {
        width: plotWidth(),
        height: model.get("height"),
        title: model.get("title") || undefined,
        tzDate: xIsTime ? (ts) => uPlot.tzDate(new Date(ts * 1e3), xTz.includes("/") || xTz === "UTC" ? xTz : "UTC") : undefined,
        scales: scaleOpts,
        legend: { live: true },
        series: [{}, ...series.map((s) => ({ label: s.label, scale: s.scale, stroke: s.color, dash: s.dash, width: 1.5, spanGaps: false, points: { show: false } }))],
        axes,
      },
      [[], ...series.map(() => [])],
      plotBox,
    );
  }

  /** The window's rows, split into series, sorted by x, downsampled. */
  function build() {
    const n = xs.length;
    const { from, cutoff } = bounds();
    /** @type {Map<string, number[]>} row indices per key */
    const byKey = new Map();
    let count = 0;
    let x0 = Infinity;
    let x1 = -Infinity;
    for (let i = from; i < n; i++) {
      const x = xs[i];
      if (x < cutoff) continue;
      count++;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      let list = byKey.get(keys[i]);
      if (!list) byKey.set(keys[i], (list = []));
      list.push(i);
    }
    const keyList = [...byKey.keys()].sort(natural);
    const width = pixelColumns();
    shown = count;
    const out = [];
    /** @type {Map<string, number>} */
    const magnitudes = new Map();
    for (const [k, key] of keyList.entries()) {
      const rowsOf = /** @type {number[]} */ (byKey.get(key));
      let sorted = true;
      for (let i = 1; i < rowsOf.length; i++) if (xs[rowsOf[i]] < xs[rowsOf[i - 1]]) { sorted = false; break; }
      if (!sorted) rowsOf.sort((a, b) => xs[a] - xs[b] || a - b);
      const sx = rowsOf.map((i) => xs[i]);
      for (const [fi, f] of fields.entries()) {
        const c = cols.get(f) || [];
        const sy = rowsOf.map((i) => c[i] ?? null);
        const d = minMax(sx, sy, x0, x1, width);
        if (!d.x.length) continue;
        let mag = magnitudes.get(f) || 0;
        for (const y of d.y) mag = Math.max(mag, Math.abs(y));
        magnitudes.set(f, mag);
        const label = key === "" ? f : fields.length > 1 ? `${f} · ${key}` : key;
        const color = COLORS[(key === "" ? fi : k) % COLORS.length];
        const dash = key === "" ? undefined : DASHES[fi % DASHES.length];
        out.push({ label, field: f, key, scale: "", color, dash, x: d.x, y: d.y });
      }
    }
    // One y scale per group of fields of similar magnitude ("auto"), one per
    // field ("independent"), or one for all ("shared").
    const mode = model.get("y_scale") || "auto";
    /** @type {string[][]} */
    let groups;
    if (mode === "shared") groups = [[...magnitudes.keys()]];
    else if (mode === "independent") groups = [...magnitudes.keys()].map((f) => [f]);
    else {
      groups = scaleGroups(magnitudes);
      // Keep the axes as they are while they still fit (within twice the
      // grouping's ratio): a series near a boundary must not flip between
      // axes, and rebuild the plot, on every frame.
      const same = lastGroups.flat().sort().join("\u0000") === [...magnitudes.keys()].sort().join("\u0000");
      const fits = lastGroups.every((g) => {
        const mags = g.map((f) => magnitudes.get(f) || 0).filter((m) => m > 0);
        return mags.length < 2 || Math.max(...mags) / Math.min(...mags) <= 40;
      });
      if (same && fits && lastGroups.length) groups = lastGroups;
      lastGroups = groups;
    }
    /** @type {Map<string, string>} */
    const scaleOf = new Map();
    groups.forEach((g, i) => g.forEach((f) => scaleOf.set(f, `y${i}`)));
    for (const s of out) s.scale = scaleOf.get(s.field) || "y0";
    return { series: out, scales: groups.map((_, i) => `y${i}`), width, x0, x1 };
  }

  let rate = 0;
  let rateMessages = 0;
  let rateT = performance.now();
  function showInfo() {
    info.textContent = `${model.get("channel")} · ${source} · ${Math.round(rate).toLocaleString()} msg/s · ${shown} points`;
    root.dataset.rate = String(Math.round(rate));
  }

  function draw() {
    scheduled = false;
    if (!dirty || paused()) return;
    dirty = false;
    const t0 = performance.now();
    const built = build();
    const sig = JSON.stringify([xIsTime, built.scales, built.series.map((s) => [s.label, s.scale])]);
    if (!plot || sig !== layout) {
      plot = makePlot(built.series, built.scales);
      layout = sig;
    }
    const data = built.series.length ? uPlot.join(built.series.map((s) => /** @type {uPlot.AlignedData} */ ([s.x, s.y]))) : [[]];
    plot.setData(/** @type {uPlot.AlignedData} */ (data));
    root.rtkitChart = {
      series: built.series.map(({ label, field, key, scale, x, y }) => ({ label, field, key, scale, x, y })),
      width: built.width,
      xRange: [built.x0, built.x1],
      rows: shown,
      scales: built.scales,
      drawMs: performance.now() - t0,
    };
    root.dataset.series = String(built.series.length);
    showInfo();
  }

  // The readout and a time window move on with the clock, not only with
  // messages: a stopped stream shows 0 msg/s and its rows leave the window.
  const ticker = setInterval(() => {
    const now = performance.now();
    rate = ((messages - rateMessages) * 1000) / (now - rateT);
    rateMessages = messages;
    rateT = now;
    if (model.get("window_seconds") > 0 && xs.length) {
      trim(true);
      schedule();
    }
    showInfo();
  }, 1000);

  // -- export ---------------------------------------------------------------------
  /** @param {string} href @param {string} name */
  function download(href, name) {
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    a.className = "rtkit-download";
    root.appendChild(a);
    a.click();
    a.remove();
  }
  /** The window as CSV: the x column, the by column, then one column per field. */
  function toCsv() {
    const xName = model.get("x") || "ts";
    const byName = model.get("by");
    /** @param {string} v */
    const q = (v) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
    const lines = [[xName, ...(byName ? [byName] : []), ...fields].map(q).join(",")];
    const xText = (/** @type {number} */ x) => (xIsTime ? new Date(x * 1000).toISOString() : String(x));
    const { from, cutoff } = bounds();
    for (let i = from; i < xs.length; i++) {
      if (xs[i] < cutoff) continue;
      const row = [xText(xs[i]), ...(byName ? [q(keys[i])] : [])];
      for (const f of fields) {
        const v = (cols.get(f) || [])[i];
        row.push(v === null || v === undefined ? "" : String(v));
      }
      lines.push(row.join(","));
    }
    return lines.join("\n") + "\n";
  }
  const fileName = () => (model.get("channel") || "chart").replace(/[^\w.-]+/g, "_");
  csvButton.onclick = () => {
    const url = URL.createObjectURL(new Blob([toCsv()], { type: "text/csv" }));
    download(url, `${fileName()}.csv`);
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  pngButton.onclick = () => {
    if (plot) download(plot.ctx.canvas.toDataURL("image/png"), `${fileName()}.png`);
  };

  // -- the channel ------------------------------------------------------------------
  const rowsWin = model.get("window_rows");
  const backfill = model.get("backfill") ?? 0;
  /** @type {import("./hub.js").ChannelListener} */
  const listener = {
    onMessages,
    onGap() {
      // A row of nulls breaks the lines where messages were lost.
      if (xs.length) {
        xs.push(xs[xs.length - 1]);
        keys.push(keys[keys.length - 1]);
        for (const c of cols.values()) c.push(null);
      }
    },
    onError(error) {
      errors.set("hub", `${model.get("channel")}: ${error.message || "refused"}${error.code ? ` (${error.code})` : ""}`);
      showErrors();
    },
    onSubscribed() {
      errors.delete("hub");
      showErrors();
    },
    backfill: backfill > 0 ? (rowsWin > 0 ? Math.min(backfill, rowsWin) : backfill) : 0,
    enough(envs) {
      // Enough once the oldest message is out of a time window (hub time) or
      // the rows fill a row window.
      const secs = model.get("window_seconds");
      if (secs > 0 && envs.length && hub) {
        const now = hub.hubNow() ?? envs[envs.length - 1].ts;
        if (envs[0].ts < now - secs) return true;
      }
      if (rowsWin > 0) {
        let n = 0;
        for (const e of envs) n += decode(e.data).n;
        return n >= rowsWin;
      }
      return false;
    },
    onBackfill,
  };
  /** @type {(() => void)[]} */
  const cleanups = [];
  const stop = attach(model, model.get("channel"), listener, (kind, h) => {
    source = kind;
    hub = h;
    root.dataset.source = kind;
    if (h) {
      const stopWatch = h.watch((state) => {
        if (state === "unreachable" && model.get("mode") === "direct") {
          errors.set("connect", `cannot connect to the hub: ${h.lastError || "unreachable"}`);
        } else if (state === "connected") errors.delete("connect");
        showErrors();
      });
      cleanups.push(stopWatch);
    }
  });
  const resize = new ResizeObserver(() => {
    if (plot) {
      plot.setSize({ width: plotWidth(), height: model.get("height") });
      schedule();
    }
  });
  resize.observe(el);
  showInfo();
  return () => {
    clearInterval(ticker);
    stop();
    for (const fn of cleanups) fn();
    resize.disconnect();
    if (plot) plot.destroy();
  };
}
