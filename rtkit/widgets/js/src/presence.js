// Presence bar: who is in a room, as avatars (initials on the member's color,
// name and connections on hover), updated live as people join and leave.
//
// Inside Jupyter the page joins the room itself with the browser's Jupyter
// login, so each person appears as who they are logged in as. Where the
// browser cannot reach a hub, the kernel joins and sends the member list
// through the comm (see rtkit/widgets/_presence.py).
import { connectWidget } from "./hub.js";

/** @typedef {import("./hub.js").Member} Member */
/**
 * @typedef {object} PresenceState the PresenceBar's traits (rtkit/widgets/_presence.py)
 * @property {string} room
 * @property {Record<string, unknown>} state this page's member state
 * @property {number} max_avatars
 */
/** @typedef {import("./hub.js").HubModelState & PresenceState} PresenceModelState */

const FALLBACK_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/**
 * Up to two initials of a member's name, "?" for none.
 * @param {unknown} name
 */
function initials(name) {
  const parts = String(name || "")
    .replace(/[_.]/g, " ")
    .split(/\s+/)
    .filter(Boolean);
  return parts.slice(0, 2).map((p) => p[0].toUpperCase()).join("") || "?";
}

/** @param {unknown} text */
function hashColor(text) {
  let h = 0;
  for (const c of String(text)) h = (h * 31 + /** @type {number} */ (c.codePointAt(0))) >>> 0;
  return FALLBACK_COLORS[h % FALLBACK_COLORS.length];
}

// The colors a member may have (as the hub allows them, rtkit/hub/presence.py):
// hex, a keyword, or a theme variable by name. Anything else is someone
// else's CSS and is never put into a style.
const SAFE_COLOR = /^(?:#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|var\(--[A-Za-z0-9_-]{1,64}\)|[A-Za-z]{3,24})$/;

// Jupyter names colors as CSS variables of JupyterLab's theme; give them a
// fallback so the avatar keeps a color in other front-ends too.
/** @param {Member} member */
function cssColor(member) {
  const color = typeof member.color === "string" ? member.color : "";
  if (!SAFE_COLOR.test(color)) return hashColor(member.user);
  if (color.startsWith("var(")) return `${color.slice(0, -1)}, ${hashColor(member.user)})`;
  return color;
}

/**
 * @param {Member} member
 * @param {boolean} isMe
 */
function describe(member, isMe) {
  const parts = [member.name || member.user];
  // A display name is the member's own choice and may copy someone else's;
  // the user id beside it is what the hub authenticated.
  if (isMe) parts[0] += " (you)";
  else if (member.name && member.name !== member.user) parts[0] += ` (@${member.user})`;
  const n = member.connections || 1;
  parts.push(n === 1 ? "1 connection" : `${n} connections`);
  const status = member.state && member.state.status;
  if (typeof status === "string" && status) parts.push(status);
  return parts.join(" · ");
}

/** @type {import("@anywidget/types").Render<PresenceModelState>} */
export function render({ model, el }) {
  const bar = document.createElement("div");
  bar.className = "rtkit-presence";
  bar.style.cssText = "display:flex;align-items:center;gap:4px;font:12px sans-serif;min-height:30px";
  const avatars = document.createElement("div");
  avatars.style.cssText = "display:flex;gap:4px";
  const label = document.createElement("span");
  label.className = "rtkit-presence-label";
  label.style.cssText = "margin-left:6px;color:#666";
  bar.append(avatars, label);
  el.appendChild(bar);
  const room = model.get("room");
  bar.dataset.room = room;

  /**
   * @param {Iterable<Member>} members
   * @param {string | null | undefined} me this page's member id
   * @param {string | null | undefined} error
   */
  function draw(members, me, error) {
    const sorted = [...members].sort((a, b) => {
      if ((a.id === me) !== (b.id === me)) return a.id === me ? -1 : 1;
      return String(a.name || a.user).localeCompare(String(b.name || b.user));
    });
    const max = model.get("max_avatars");
    avatars.replaceChildren(
      ...sorted.slice(0, max).map((m) => {
        const isMe = m.id === me;
        const a = document.createElement("span");
        a.className = "rtkit-avatar";
        a.textContent = initials(m.name || m.user);
        a.title = describe(m, isMe);
        a.dataset.user = m.user;
        a.dataset.name = m.name || m.user;
        a.dataset.connections = String(m.connections || 1);
        if (isMe) a.dataset.me = "true";
        a.style.cssText =
          "display:inline-flex;align-items:center;justify-content:center;width:26px;height:26px;" +
          "border-radius:50%;color:#fff;font-weight:600;font-size:11px;cursor:default;" +
          (isMe ? "box-shadow:0 0 0 2px #fff,0 0 0 3px #888;" : "");
        // One property, set on its own: a value it cannot parse is ignored,
        // it can never add other declarations.
        a.style.backgroundColor = cssColor(m);
        return a;
      }),
    );
    if (sorted.length > max) {
      const more = document.createElement("span");
      more.className = "rtkit-avatar-more";
      more.textContent = `+${sorted.length - max}`;
      more.title = sorted.slice(max).map((m) => m.name || m.user).join(", ");
      more.style.cssText = "align-self:center;color:#666";
      avatars.append(more);
    }
    label.textContent = error ? `${room}: ${error}` : `${sorted.length} in ${room}`;
    bar.dataset.members = String(sorted.length);
    if (error) bar.dataset.error = error;
    else delete bar.dataset.error;
  }
  draw([], null, null);

  /** @type {import("./hub.js").Hub | null} */
  let hub = null;
  const onState = () => {
    if (hub) hub.setPresenceState(room, model.get("state"));
  };
  model.on("change:state", onState);
  const stop = connectWidget(model, {
    // Direct: this page joins the room over its shared hub connection.
    direct(h) {
      const stopRoom = h.presence(room, (r) => draw(r.members.values(), r.me, r.error), model.get("state"));
      // Offline, the avatars are the last known room: dim them until the
      // rejoin's answer replaces them.
      const stopWatch = h.watch((state) => {
        bar.dataset.state = state;
        bar.style.opacity = state === "connected" ? "1" : "0.5";
        bar.title = state === "connected" ? "" : `rtkit: ${state}`;
      });
      return () => {
        stopRoom();
        stopWatch();
      };
    },
    onRelay(msg) {
      if (msg.type === "members") draw(msg.members || [], msg.me, msg.error);
    },
    onSource(kind, h) {
      hub = h;
      bar.dataset.source = kind;
    },
  });
  return () => {
    model.off("change:state", onState);
    stop();
  };
}
