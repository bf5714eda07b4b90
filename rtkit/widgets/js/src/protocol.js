// The wire names the widgets use, as rtkit/protocol.py defines them (the
// hub's single source of truth). tests/unit/test_widgets_protocol.py reads
// this file and fails when a name or code here differs from protocol.py, or
// when the other sources spell an event name as a literal instead.

export const NAMESPACE = "/rtkit";
export const SOCKETIO_PATH = "socket.io";

// client -> hub
export const SUBSCRIBE = "subscribe";
export const HISTORY = "history";
export const PRESENCE_JOIN = "presence.join";
export const PRESENCE_UPDATE = "presence.update";
export const PRESENCE_LEAVE = "presence.leave";

// hub -> client
export const MESSAGES = "messages";
export const PRESENCE = "presence";

// The kinds of a presence event (protocol.py's PresenceEventName).
export const PRESENCE_EVENT_LEAVE = "leave";

// Ack error codes worth another try later (DESIGN's ack error codes); any
// other refusal (forbidden, bad request, ...) lasts.
/** @type {ReadonlySet<string>} */
export const TRANSIENT_ERROR_CODES = new Set(["rate_limited", "unavailable", "internal"]);
