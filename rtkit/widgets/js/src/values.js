// Values out of messages, and how to show them. Pure functions (no DOM, no
// uPlot): tests/unit/test_widgets_js.py runs them under Node.js against
// pandas' own rendering of the same values.
//
// A frame batch (rtkit/frames.py) carries each column's pandas dtype;
// timestamps travel as integers in their dtype's unit ("datetime64[us,
// UTC]": microseconds since the epoch), missing values as null.

/**
 * The rows of one message, column-oriented: a frame batch as it came, any
 * other JSON object as one row (its keys are columns), anything else as one
 * row of a "value" column.
 * @typedef {object} Block
 * @property {number} n rows
 * @property {string[]} columns
 * @property {(string | null)[]} dtypes each column's pandas dtype, null when unknown (plain JSON)
 * @property {unknown[][]} data one array of n values per column
 */

/**
 * @param {unknown} data a message envelope's data
 * @returns {Block}
 */
export function decode(data) {
  const d = /** @type {any} */ (data);
  if (d !== null && typeof d === "object" && !Array.isArray(d)) {
    if (d.rtkit === "frame" && Array.isArray(d.data) && Array.isArray(d.columns)) {
      const cols = /** @type {unknown[][]} */ (d.data.map((/** @type {unknown} */ c) => (Array.isArray(c) ? c : [])));
      const n = typeof d.rows === "number" ? d.rows : cols.length ? cols[0].length : 0;
      const dtypes = d.columns.map((/** @type {unknown} */ _, /** @type {number} */ j) =>
        Array.isArray(d.dtypes) && typeof d.dtypes[j] === "string" ? d.dtypes[j] : null,
      );
      return { n, columns: d.columns.map(String), dtypes, data: cols };
    }
    const columns = Object.keys(d);
    return { n: 1, columns, dtypes: columns.map(() => null), data: columns.map((k) => [d[k]]) };
  }
  return { n: 1, columns: ["value"], dtypes: [null], data: [[d]] };
}

/** @type {Record<string, number>} nanoseconds per unit of a numpy time dtype */
const UNIT_NS = { s: 1e9, ms: 1e6, us: 1e3, ns: 1 };

/**
 * "datetime64[us, Europe/Paris]" -> {kind: "datetime", unit: "us", tz: "Europe/Paris"}.
 * @param {string | null} dtype
 * @returns {{ kind: "datetime" | "timedelta", unit: string, tz: string } | null}
 */
export function timeDtype(dtype) {
  const m = dtype && /^(datetime64|timedelta64)\[(\w+)(?:,\s*(.+))?\]$/.exec(dtype);
  if (!m || !(m[2] in UNIT_NS)) return null;
  return { kind: m[1] === "datetime64" ? "datetime" : "timedelta", unit: m[2], tz: (m[3] || "").trim() };
}

/**
 * A value as a number for a chart axis: timestamps in seconds since the
 * epoch (what uPlot's time scale takes), numbers as they are, ISO strings
 * parsed; null when the value is missing or not a number.
 * @param {unknown} v
 * @param {string | null} dtype
 * @returns {number | null}
 */
export function toNumber(v, dtype) {
  if (v === null || v === undefined) return null;
  const t = timeDtype(dtype);
  if (t !== null) return typeof v === "number" ? (v * UNIT_NS[t.unit]) / 1e9 : null;
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string" && /^\d{4}-\d\d-\d\d[T ]/.test(v)) {
    const ms = Date.parse(v.replace(" ", "T"));
    return Number.isNaN(ms) ? null : ms / 1000;
  }
  return null;
}

/** True for a dtype or a JSON value that an axis takes as time. */
/**
 * @param {string | null} dtype
 * @param {unknown} sample
 */
export function isTime(dtype, sample) {
  const t = timeDtype(dtype);
  if (t !== null) return t.kind === "datetime";
  return typeof sample === "string" && /^\d{4}-\d\d-\d\d[T ]/.test(sample);
}

// -- showing values as pandas does ---------------------------------------------

/**
 * A float as Python's repr (which pandas uses for one value): the shortest
 * digits that round-trip, always with a decimal point or an exponent, and
 * an exponent below 1e-4 and from 1e16 on.
 * @param {number} v
 */
export function pyFloat(v) {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return Object.is(v, -0) ? "-0.0" : "0.0";
  const [mant, expText] = v.toExponential().split("e");
  const exp = Number(expText);
  const sign = mant.startsWith("-") ? "-" : "";
  const digits = mant.replace("-", "").replace(".", "");
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp);
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${e < 10 ? "0" : ""}${e}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const int = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const frac = digits.slice(exp + 1) || "0";
  return `${sign}${int}.${frac}`;
}

/** @param {number} n @param {number} width */
const pad = (n, width = 2) => String(n).padStart(width, "0");

/** @type {Map<string, Intl.DateTimeFormat>} */
const zoneFormats = new Map();

/**
 * Wall-clock fields and UTC offset (minutes) of a UTC instant in a zone.
 * @param {number} ms milliseconds since the epoch
 * @param {string} tz an IANA zone, "UTC" or a fixed offset "+01:00"
 */
function inZone(ms, tz) {
  const fixed = /^(?:UTC)?([+-])(\d\d):?(\d\d)$/.exec(tz);
  let offset = 0;
  if (fixed) {
    offset = (fixed[1] === "-" ? -1 : 1) * (Number(fixed[2]) * 60 + Number(fixed[3]));
  } else if (tz !== "UTC" && tz !== "") {
    let f = zoneFormats.get(tz);
    if (f === undefined) {
      f = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" });
      zoneFormats.set(tz, f);
    }
    /** @type {Record<string, number>} */
    const p = {};
    for (const part of f.formatToParts(new Date(ms))) if (part.type !== "literal") p[part.type] = Number(part.value);
    const wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
    offset = Math.round((wall - Math.floor(ms / 1000) * 1000) / 60000);
  }
  const d = new Date(ms + offset * 60000);
  return { d, offset };
}

/**
 * A timestamp as pandas shows it: "2025-05-31 23:20:24.999500+00:00"
 * (microseconds when there are any, nanoseconds when there are any, the
 * zone's offset when the dtype has a zone).
 * @param {number} v an integer in `unit` since the epoch
 * @param {string} unit
 * @param {string} tz "" for a naive timestamp
 */
export function formatTimestamp(v, unit, tz) {
  // Nanosecond integers past 2**53 reach the browser rounded by JSON
  // parsing: their microseconds are right, their nanoseconds are not shown.
  let ns = BigInt(Math.round(v)) * BigInt(UNIT_NS[unit]);
  if (!Number.isSafeInteger(v)) ns = ((ns + 500n) / 1000n) * 1000n;
  let msBig = ns / 1000000n;
  if (ns < 0n && msBig * 1000000n !== ns) msBig -= 1n; // floor, not truncation
  const ms = Number(msBig);
  const subMs = Number(ns - msBig * 1000000n);
  const { d, offset } = inZone(ms, tz || "UTC");
  let text =
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  const frac = d.getUTCMilliseconds() * 1e6 + subMs; // nanoseconds within the second
  if (frac % 1000 !== 0) text += "." + pad(frac, 9);
  else if (frac !== 0) text += "." + pad(frac / 1000, 6);
  if (tz) {
    const sign = offset < 0 ? "-" : "+";
    const a = Math.abs(offset);
    text += `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
  }
  return text;
}

/**
 * A timedelta as pandas shows it: "0 days 00:00:01.500000", "-1 days +23:59:59".
 * @param {number} v an integer in `unit`
 * @param {string} unit
 */
export function formatTimedelta(v, unit) {
  const total = BigInt(Math.round(v)) * BigInt(UNIT_NS[unit]);
  const day = 86400n * 1000000000n;
  let days = total / day;
  let rest = total % day;
  if (rest < 0n) {
    rest += day;
    days -= 1n;
  }
  const secs = Number(rest / 1000000000n);
  const frac = Number(rest % 1000000000n);
  let text = `${days} days ${total < 0n ? "+" : ""}${pad(Math.floor(secs / 3600))}:${pad(Math.floor(secs / 60) % 60)}:${pad(secs % 60)}`;
  if (frac % 1000 !== 0) text += "." + pad(frac, 9);
  else if (frac !== 0) text += "." + pad(frac / 1000, 6);
  return text;
}

// pandas' nullable dtypes show a missing value as <NA>.
const NULLABLE = /^(Int|UInt)\d+$|^(boolean|string|Float\d+)$|\[pyarrow\]$/;

/**
 * One value as pandas shows it in a DataFrame cell.
 * @param {unknown} v
 * @param {string | null} dtype the column's pandas dtype, null for plain JSON
 * @returns {string}
 */
export function formatValue(v, dtype) {
  const t = timeDtype(dtype);
  if (v === null || v === undefined) {
    if (t !== null) return "NaT";
    if (dtype === null || dtype === "object") return "None";
    if (NULLABLE.test(dtype)) return "<NA>";
    return "NaN";
  }
  if (t !== null && typeof v === "number") {
    return t.kind === "datetime" ? formatTimestamp(v, t.unit, t.tz) : formatTimedelta(v, t.unit);
  }
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number") {
    const float = dtype !== null ? /^(float|Float)/.test(dtype) : !Number.isInteger(v);
    return float ? pyFloat(v) : String(v);
  }
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/**
 * Hub time (unix seconds, a float) as pandas shows a frame's index.
 * @param {number} ts
 */
export function formatHubTime(ts) {
  return formatTimestamp(Math.round(ts * 1e6), "us", "UTC");
}

// -- axis ticks -------------------------------------------------------------------

const SUFFIXES = ["", "k", "M", "G", "T", "P"];

/**
 * Tick labels short enough to show whole: 217,000 -> "217k", 0.0012 ->
 * "0.0012", with as many decimals as the step between ticks needs, so
 * neighbouring ticks never read the same.
 * @param {number[]} splits the tick values, evenly spaced
 * @returns {string[]}
 */
export function compactTicks(splits) {
  const finite = splits.filter((v) => Number.isFinite(v));
  if (!finite.length) return splits.map(String);
  const big = Math.max(...finite.map(Math.abs));
  const step = finite.length > 1 ? Math.abs(finite[1] - finite[0]) : big || 1;
  let tier = big >= 1e4 ? Math.min(SUFFIXES.length - 1, Math.floor(Math.log10(big) / 3)) : 0;
  if (big >= 1e18 || (big > 0 && big < 1e-4)) {
    const digits = Math.max(1, Math.min(6, Math.ceil(Math.log10(big / step)) + 1));
    return splits.map((v) => (v === 0 ? "0" : v.toExponential(digits - 1).replace("e+", "e")));
  }
  const scale = 10 ** (3 * tier);
  const decimals = Math.max(0, Math.min(10, Math.ceil(-Math.log10(step / scale) - 1e-9)));
  return splits.map((v) => {
    if (!Number.isFinite(v)) return "";
    const text = (v / scale).toFixed(decimals);
    return (/^-0(\.0*)?$/.test(text) ? text.slice(1) : text) + SUFFIXES[tier];
  });
}

// -- downsampling -------------------------------------------------------------------

/**
 * Min/max downsampling to a pixel grid, at most one point per pixel column.
 * The points of one series are taken in pairs of pixel columns: a pair
 * with one point keeps it as it is; a pair with more keeps its lowest and
 * highest, in their order along x, drawn at the centres of the pair's left
 * and right column (at most a column and a half from where they lie). A line
 * keeps its extremes, and nothing is drawn that a pixel could not show.
 * `xs` must be ascending; null values are skipped.
 * @param {ArrayLike<number>} xs
 * @param {ArrayLike<number | null>} ys
 * @param {number} x0 the x at the plot's left edge
 * @param {number} x1 the x at its right edge
 * @param {number} width pixel columns
 * @returns {{ x: number[], y: number[] }}
 */
export function minMax(xs, ys, x0, x1, width) {
  /** @type {number[]} */ const ox = [];
  /** @type {number[]} */ const oy = [];
  const cols = Math.max(1, Math.floor(width));
  // With an odd width the last pair takes the last three columns.
  const pairs = Math.max(1, Math.floor(cols / 2));
  const span = x1 - x0;
  const pairOf = (/** @type {number} */ x) =>
    span > 0
      ? Math.min(pairs - 1, Math.max(0, Math.floor((((x - x0) / span) * cols) / 2)))
      : 0;
  const centre = (/** @type {number} */ col) => x0 + ((Math.min(col, cols - 1) + 0.5) / cols) * span;
  let pair = -1;
  let count = 0;
  let lo = -1;
  let hi = -1;
  const emit = () => {
    if (count === 0) return;
    const a = Math.min(lo, hi);
    const b = Math.max(lo, hi);
    if (count === 1 || span <= 0) {
      // One point, or no span to place two on (a single x): as they are.
      ox.push(xs[a]);
      oy.push(/** @type {number} */ (ys[a]));
      if (b !== a) {
        ox.push(xs[b]);
        oy.push(/** @type {number} */ (ys[b]));
      }
      return;
    }
    ox.push(centre(2 * pair));
    oy.push(/** @type {number} */ (ys[a]));
    if (b !== a) {
      ox.push(centre(2 * pair + 1));
      oy.push(/** @type {number} */ (ys[b]));
    }
  };
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i];
    if (y === null || y === undefined || Number.isNaN(y)) continue;
    const p = pairOf(xs[i]);
    if (p !== pair) {
      emit();
      pair = p;
      count = 1;
      lo = hi = i;
      continue;
    }
    count++;
    if (y < /** @type {number} */ (ys[lo])) lo = i;
    if (y > /** @type {number} */ (ys[hi])) hi = i;
  }
  emit();
  return { x: ox, y: oy };
}

/**
 * Splits series into groups of similar magnitude, each drawn against a y
 * scale of its own: a counter near 217,000 next to prices near 100 would
 * otherwise flatten the prices into a line. Series whose largest absolute
 * values lie within a factor `ratio` of each other share a scale.
 * @param {Map<string, number> | Record<string, number>} magnitudes the largest absolute value of each series (by name)
 * @param {number} [ratio]
 * @returns {string[][]} groups of names, the largest magnitude first
 */
export function scaleGroups(magnitudes, ratio = 20) {
  const entries = magnitudes instanceof Map ? [...magnitudes] : Object.entries(magnitudes);
  const named = entries.sort((a, b) => b[1] - a[1]);
  /** @type {string[][]} */
  const groups = [];
  let top = NaN;
  for (const [name, mag] of named) {
    if (groups.length && (mag === 0 || top / Math.max(mag, Number.MIN_VALUE) <= ratio)) {
      groups[groups.length - 1].push(name);
    } else {
      groups.push([name]);
      top = mag;
    }
  }
  return groups;
}
