// The front-end of rtkit's widgets: one module that renders any of them.
//
//   widgets.js   this entry: picks the renderer by the model's `_kind`
//   chart.js     LiveChart (uPlot), table.js LiveTable, status.js
//                StatusBadge, presence.js PresenceBar, monitor.js
//                HubMonitor: one `render` each
//   hub.js       the page's connections to hubs, shared by every widget,
//                and the fallback to the kernel relay
//   protocol.js  the wire names used, as rtkit/protocol.py defines them
//
// The sources are plain ESM with JSDoc types: `npm run check` type-checks
// them (tsc, jsconfig.json), `npm run build` bundles them (esbuild).
//
// anywidget hands the browser each widget model's `_esm` as a string and
// imports it through a blob: URL of its own. A relative import, such as a
// split build's shared chunk, cannot resolve against a blob: URL, and the
// kernel cannot name an http(s) URL that the browser is sure to reach (it
// knows neither the page's origin nor the Jupyter base URL). So esbuild
// bundles this one entry, with socket.io-client and uPlot once, into
// ../static/widgets.js; every widget class ships that file and names the
// render function that draws it in its `_kind` trait.
//
// The same blob: import makes every widget model a module instance of its
// own: what the widgets on one page share lives in hub.js's page registry.
import { render as chart } from "./chart.js";
import { render as monitor } from "./monitor.js";
import { render as presence } from "./presence.js";
import { render as status } from "./status.js";
import { render as table } from "./table.js";

/** @typedef {import("@anywidget/types").Render<any>} AnyRender */

/** @type {Map<string, AnyRender>} */
const RENDERERS = new Map(/** @type {[string, AnyRender][]} */ ([
  ["chart", chart],
  ["table", table],
  ["status", status],
  ["presence", presence],
  ["monitor", monitor],
]));

/** @type {import("@anywidget/types").Render<{ _kind: string }>} */
function render(props) {
  const kind = props.model.get("_kind");
  const draw = RENDERERS.get(kind);
  if (draw === undefined) {
    props.el.textContent = `rtkit: this front-end has no widget ${JSON.stringify(kind)}`;
    return;
  }
  // A new channel (``widget.channel = "other"``) starts the widget afresh.
  let stop = draw(props);
  const restart = () => {
    if (typeof stop === "function") stop();
    props.el.replaceChildren();
    stop = draw(props);
  };
  props.model.on("change:channel", restart);
  return () => {
    props.model.off("change:channel", restart);
    if (typeof stop === "function") stop();
  };
}

export default { render };
