"""Wire protocol v1: event names, payload shapes and request validation.

This module is the single source of truth for what travels between a client
and the hub; both sides import it. It does no I/O.

Every client-to-hub event carries one JSON object and expects an ack of the
form ``{"ok": true, ...}`` or ``{"ok": false, "error": {"code", "message"}}``.
Validation functions below turn a raw payload into a typed request or raise
:class:`rtkit.errors.BadRequest` with a message a person can act on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NotRequired, TypedDict

import orjson

from .errors import BadRequest, HubError, TooLarge

PROTOCOL_VERSION: Final = 1
NAMESPACE: Final = "/rtkit"
SOCKETIO_PATH: Final = "socket.io"

# client -> hub
SUBSCRIBE: Final = "subscribe"
UNSUBSCRIBE: Final = "unsubscribe"
PUBLISH: Final = "publish"
HISTORY: Final = "history"
PRESENCE_JOIN: Final = "presence.join"
PRESENCE_UPDATE: Final = "presence.update"
PRESENCE_LEAVE: Final = "presence.leave"
PRESENCE_LIST: Final = "presence.list"
DOC_SYNC: Final = "doc.sync"
DOC_UPDATE: Final = "doc.update"
# Hands the hub a fresh token on a live connection (same user): its grants
# and its expiry deadline are replaced, without a reconnect.
AUTH_REFRESH: Final = "auth.refresh"

# hub -> client
MESSAGES: Final = "messages"
PRESENCE: Final = "presence"
# DOC_UPDATE also goes hub -> client: another client's update of a synced doc.
# Sent just before the hub ends a connection, with {"code", "message"} saying
# why (e.g. unauthorized: the token has expired or was revoked): Socket.IO's
# DISCONNECT packet carries no reason a client could show.
CLOSING: Final = "closing"
# A subscription, room membership or document sync the hub ended because a
# refreshed token no longer grants it: {"kind", "name", "code", "message"}.
REVOKED: Final = "revoked"

CLIENT_EVENTS: Final = frozenset(
    {
        SUBSCRIBE,
        UNSUBSCRIBE,
        PUBLISH,
        HISTORY,
        PRESENCE_JOIN,
        PRESENCE_UPDATE,
        PRESENCE_LEAVE,
        PRESENCE_LIST,
        DOC_SYNC,
        DOC_UPDATE,
        AUTH_REFRESH,
    }
)

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "too_large",
    "rate_limited",
    "unavailable",
    "internal",
]
ERROR_CODES: Final = frozenset(
    {
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "too_large",
        "rate_limited",
        "unavailable",
        "internal",
    }
)

# Channel names: printable, no spaces or wildcards, so that token patterns
# (fnmatch globs such as "prices.*") can never be confused with a name.
CHANNEL_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@/\-]{0,199}")
MAX_CLIENT_ID_LENGTH: Final = 128
# Most messages one ``publish`` may carry as a batch (``messages``). A batch
# counts as one publish against the publish rate, its bytes against the byte
# quota; it must also fit one transport frame (1 MB).
MAX_PUBLISH_BATCH: Final = 500
MAX_HISTORY_LIMIT: Final = 10_000
# The largest seq on the wire: the largest integer a JavaScript client holds
# exactly, far inside what every store can hold (SQLite INTEGER and Redis
# stream ids are 64-bit), so that ``since + 1`` and its kin never overflow one.
MAX_SEQ: Final = 2**53 - 1
# Longest token an auth.refresh may carry (a JWT with long pattern lists
# stays far below it).
MAX_TOKEN_LENGTH: Final = 16_384


class ErrorBody(TypedDict):
    code: ErrorCode
    message: str


class ErrorAck(TypedDict):
    ok: Literal[False]
    error: ErrorBody


class Envelope(TypedDict):
    """One message as every subscriber sees it."""

    channel: str
    seq: int
    ts: float
    id: str
    sender: str
    data: Any


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a channel, as every subscriber sees it.

    >>> msg = Message("prices", 7, 1718000000.0, "a1b2", "ada", {"px": 1.0})
    >>> msg.seq, msg.data["px"]
    (7, 1.0)
    """

    channel: str
    seq: int  # per channel, gap-free, from 1
    ts: float  # hub clock, unix seconds
    id: str  # the publisher's message id (or one the hub made)
    sender: str  # user id of the publisher
    data: Any  # any JSON value, or bytes

    def envelope(self) -> Envelope:
        return {
            "channel": self.channel,
            "seq": self.seq,
            "ts": self.ts,
            "id": self.id,
            "sender": self.sender,
            "data": self.data,
        }


def parse_envelope(env: Any) -> Message:
    """A :class:`Message` from a wire envelope; ValueError if it is malformed."""
    # Every delivery to every subscriber comes through here: the envelope
    # the hub writes (exact types, every key) takes one test, anything else
    # the checks below.
    try:
        channel, seq, ts, msg_id, sender = (
            env["channel"],
            env["seq"],
            env["ts"],
            env["id"],
            env["sender"],
        )
    except (KeyError, TypeError):
        pass
    else:
        if (
            type(channel) is str
            and type(seq) is int
            and type(ts) is float
            and type(msg_id) is str
            and type(sender) is str
        ):
            return Message(channel, seq, ts, msg_id, sender, env.get("data"))
    if not isinstance(env, dict):
        raise ValueError(f"a message envelope must be an object, got {type(env).__name__}")
    channel = env.get("channel")
    seq = env.get("seq")
    ts = env.get("ts", 0.0)
    if not isinstance(channel, str):
        raise ValueError("envelope without a channel name")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ValueError(f"envelope of {channel!r} without an integer seq")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError(f"envelope {channel!r}#{seq}: ts must be a number")
    return Message(
        channel=channel,
        seq=seq,
        ts=float(ts),
        id=str(env.get("id", "")),
        sender=str(env.get("sender", "")),
        data=env.get("data"),
    )


class SubscribeAck(TypedDict):
    ok: Literal[True]
    seq: int
    epoch: str
    recovered: bool
    messages: list[Envelope]


class PublishAck(TypedDict):
    ok: Literal[True]
    seq: int
    ts: float


class PublishBatchAck(TypedDict):
    """The ack of a ``publish`` carrying ``messages``: one seq and one ts
    per message, in the order sent (a repeated id gets its first seq). A
    message refused on its own (malformed, forbidden, too large) has
    ``null`` for both and its error in ``errors`` (present only then)."""

    ok: Literal[True]
    seqs: list[int | None]
    ts: list[float | None]
    errors: NotRequired[list[ErrorBody | None]]


class HistoryAck(TypedDict):
    ok: Literal[True]
    messages: list[Envelope]
    seq: int
    epoch: str
    complete: bool  # False: 'since' asked for messages no longer retained
    # True when the range asked for holds more than fits in one ack: the ack
    # carries the part nearest 'since' (else the newest); ask again from
    # where it stops. Absent otherwise.
    more: NotRequired[bool]


class ConnectError(TypedDict):
    code: ErrorCode
    message: str


def error_ack(err: HubError) -> ErrorAck:
    return {"ok": False, "error": {"code": err.code, "message": err.message}}  # type: ignore[typeddict-item]


# -- requests ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    channel: str
    since: int | None = None
    history: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    channel: str


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: str
    data: Any
    id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishBatchRequest:
    """A ``publish`` carrying ``messages``: stored in order, as if published
    one after another by one client. A malformed message is its
    :class:`~rtkit.errors.BadRequest`, refused alone."""

    items: tuple[PublishRequest | BadRequest, ...]


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    channel: str
    since: int | None = None
    before: int | None = None
    limit: int | None = None


def _require_object(payload: Any, event: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadRequest(f"{event}: the payload must be a JSON object, got {_kind(payload)}")
    return payload


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    return type(value).__name__


def validate_channel(name: Any, event: str = "request") -> str:
    return validate_name(name, "channel", event)


def _optional_seq(obj: dict[str, Any], key: str, event: str, *, minimum: int = 0) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{event}: {key!r} must be an integer, got {_kind(value)}")
    if value < minimum:
        raise BadRequest(f"{event}: {key!r} must be >= {minimum}, got {value}")
    if value > MAX_SEQ:
        raise BadRequest(f"{event}: {key!r} must be <= {MAX_SEQ} (2**53 - 1), got {value}")
    return value


def _reject_unknown(obj: dict[str, Any], allowed: frozenset[str], event: str) -> None:
    unknown = obj.keys() - allowed
    if unknown:
        names = ", ".join(sorted(repr(k) for k in unknown)[:5])
        raise BadRequest(f"{event}: unknown field(s) {names}")


_SUBSCRIBE_FIELDS = frozenset({"channel", "since", "history", "epoch"})
_UNSUBSCRIBE_FIELDS = frozenset({"channel"})
_PUBLISH_FIELDS = frozenset({"channel", "data", "id"})
_PUBLISH_BATCH_FIELDS = frozenset({"messages"})
_HISTORY_FIELDS = frozenset({"channel", "since", "before", "limit"})


def parse_subscribe(payload: Any) -> SubscribeRequest:
    obj = _require_object(payload, SUBSCRIBE)
    _reject_unknown(obj, _SUBSCRIBE_FIELDS, SUBSCRIBE)
    channel = validate_channel(obj.get("channel"), SUBSCRIBE)
    since = _optional_seq(obj, "since", SUBSCRIBE)
    history = _optional_seq(obj, "history", SUBSCRIBE)
    if since is not None and history is not None:
        raise BadRequest("subscribe: give either 'since' or 'history', not both")
    if history is not None and history > MAX_HISTORY_LIMIT:
        raise BadRequest(f"subscribe: 'history' is at most {MAX_HISTORY_LIMIT}")
    epoch = obj.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise BadRequest(f"subscribe: 'epoch' must be a string, got {_kind(epoch)}")
    return SubscribeRequest(channel, since, history, epoch)


def parse_unsubscribe(payload: Any) -> UnsubscribeRequest:
    obj = _require_object(payload, UNSUBSCRIBE)
    _reject_unknown(obj, _UNSUBSCRIBE_FIELDS, UNSUBSCRIBE)
    return UnsubscribeRequest(validate_channel(obj.get("channel"), UNSUBSCRIBE))


def parse_publish(payload: Any) -> PublishRequest:
    obj = _require_object(payload, PUBLISH)
    _reject_unknown(obj, _PUBLISH_FIELDS, PUBLISH)
    channel = validate_channel(obj.get("channel"), PUBLISH)
    if "data" not in obj:
        raise BadRequest("publish: 'data' is required (any JSON value or binary)")
    msg_id = obj.get("id")
    if msg_id is not None:
        if not isinstance(msg_id, str) or not msg_id:
            raise BadRequest(f"publish: 'id' must be a non-empty string, got {_kind(msg_id)}")
        if len(msg_id) > MAX_CLIENT_ID_LENGTH:
            raise BadRequest(f"publish: 'id' is at most {MAX_CLIENT_ID_LENGTH} characters")
    return PublishRequest(channel, obj["data"], msg_id)


def parse_publish_any(payload: Any) -> PublishRequest | PublishBatchRequest:
    """A single publish, or a batch: ``{"messages": [publish, ...]}`` with
    1 to :data:`MAX_PUBLISH_BATCH` objects shaped like a single publish."""
    obj = _require_object(payload, PUBLISH)
    if "messages" not in obj:
        return parse_publish(obj)
    _reject_unknown(obj, _PUBLISH_BATCH_FIELDS, PUBLISH)
    items = obj["messages"]
    if not isinstance(items, list) or not items:
        raise BadRequest(
            f"publish: 'messages' must be a non-empty array of messages, got {_kind(items)}"
        )
    if len(items) > MAX_PUBLISH_BATCH:
        raise BadRequest(
            f"publish: 'messages' holds {len(items)} messages; at most {MAX_PUBLISH_BATCH}"
        )
    parsed: list[PublishRequest | BadRequest] = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse_publish(item))
        except BadRequest as exc:
            detail = exc.message.removeprefix(f"{PUBLISH}: ")
            parsed.append(BadRequest(f"publish: messages[{index}]: {detail}"))
    return PublishBatchRequest(tuple(parsed))


def parse_history(payload: Any) -> HistoryRequest:
    obj = _require_object(payload, HISTORY)
    _reject_unknown(obj, _HISTORY_FIELDS, HISTORY)
    channel = validate_channel(obj.get("channel"), HISTORY)
    since = _optional_seq(obj, "since", HISTORY)
    before = _optional_seq(obj, "before", HISTORY, minimum=1)
    limit = _optional_seq(obj, "limit", HISTORY, minimum=1)
    if limit is not None and limit > MAX_HISTORY_LIMIT:
        raise BadRequest(f"history: 'limit' is at most {MAX_HISTORY_LIMIT}")
    return HistoryRequest(channel, since, before, limit)


# -- presence ---------------------------------------------------------------

PresenceEventName = Literal["join", "leave", "update"]
PRESENCE_EVENTS: Final = ("join", "leave", "update")


class MemberDict(TypedDict):
    """A room member on the wire (DESIGN's Member)."""

    id: str
    user: str
    name: str
    color: str
    state: dict[str, Any]
    connections: int


@dataclass(frozen=True, slots=True)
class Member:
    """One user in a presence room, however many connections (tabs, kernels) it has.

    >>> m = Member("5f2b", "ada", "Ada", "#1f77b4", {"cell": 3}, 2)
    >>> m.state["cell"], m.connections
    (3, 2)
    """

    id: str  # connection-independent, derived from the user
    user: str
    name: str
    color: str
    state: dict[str, Any]
    connections: int

    def to_wire(self) -> MemberDict:
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "color": self.color,
            "state": self.state,
            "connections": self.connections,
        }


def parse_member(obj: Any) -> Member:
    """A :class:`Member` from its wire form; ValueError if it is malformed."""
    if not isinstance(obj, dict):
        raise ValueError(f"a member must be an object, got {_kind(obj)}")
    member_id, user = obj.get("id"), obj.get("user")
    state, connections = obj.get("state"), obj.get("connections")
    if not isinstance(member_id, str) or not member_id:
        raise ValueError("a member needs a string id")
    if not isinstance(user, str):
        raise ValueError(f"member {member_id!r}: 'user' must be a string")
    if not isinstance(state, dict):
        raise ValueError(f"member {member_id!r}: 'state' must be an object")
    if isinstance(connections, bool) or not isinstance(connections, int):
        raise ValueError(f"member {member_id!r}: 'connections' must be an integer")
    return Member(
        id=member_id,
        user=user,
        name=str(obj.get("name") or user),
        color=str(obj.get("color") or ""),
        state=state,
        connections=connections,
    )


def member_id_for(user: str) -> str:
    """The member id of a user: stable across connections, hubs and restarts,
    and safe to use as an HTML id or a CSS class (unlike a user name)."""
    return "m" + hashlib.sha256(user.encode()).hexdigest()[:20]


def merge_state(old: dict[str, Any], patch: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``old`` with ``patch`` merged in (top level; a ``None`` value deletes
    its key), as a new dict; :class:`TooLarge` if it encodes to more than
    ``max_bytes``.

    >>> merge_state({"a": 1, "b": 2}, {"b": None, "c": 3}, 4096)
    {'a': 1, 'c': 3}
    """
    merged = dict(old)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    size = json_size(merged)
    if size > max_bytes:
        raise TooLarge(f"presence state is {size} bytes encoded, over the {max_bytes}-byte limit")
    return merged


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON; BadRequest when it is not JSON."""
    try:
        return len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise BadRequest(f"not a JSON value: {exc}") from None


@dataclass(frozen=True, slots=True)
class PresenceJoinRequest:
    room: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PresenceUpdateRequest:
    room: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PresenceRoomRequest:
    """``presence.leave`` and ``presence.list``."""

    room: str


_JOIN_FIELDS = frozenset({"room", "state"})
_ROOM_FIELDS = frozenset({"room"})


def validate_name(name: Any, field: str, event: str) -> str:
    """A channel, room or document name (one namespace, one rule, so that
    token patterns cover all three alike)."""
    if not isinstance(name, str):
        raise BadRequest(f"{event}: {field!r} must be a string, got {_kind(name)}")
    if not CHANNEL_NAME_RE.fullmatch(name):
        raise BadRequest(
            f"{event}: invalid {field} name {name[:60]!r}: use 1-200 characters "
            "from letters, digits and _ . : @ / - (not starting with a punctuation mark)"
        )
    return name


def _state(obj: dict[str, Any], event: str, *, required: bool) -> dict[str, Any]:
    if "state" not in obj and not required:
        return {}
    state = obj.get("state")
    if state is None and not required:
        return {}
    if not isinstance(state, dict):
        raise BadRequest(f"{event}: 'state' must be an object, got {_kind(state)}")
    return state


def parse_presence_join(payload: Any) -> PresenceJoinRequest:
    obj = _require_object(payload, PRESENCE_JOIN)
    _reject_unknown(obj, _JOIN_FIELDS, PRESENCE_JOIN)
    room = validate_name(obj.get("room"), "room", PRESENCE_JOIN)
    return PresenceJoinRequest(room, _state(obj, PRESENCE_JOIN, required=False))


def parse_presence_update(payload: Any) -> PresenceUpdateRequest:
    obj = _require_object(payload, PRESENCE_UPDATE)
    _reject_unknown(obj, _JOIN_FIELDS, PRESENCE_UPDATE)
    room = validate_name(obj.get("room"), "room", PRESENCE_UPDATE)
    return PresenceUpdateRequest(room, _state(obj, PRESENCE_UPDATE, required=True))


def parse_presence_leave(payload: Any) -> PresenceRoomRequest:
    obj = _require_object(payload, PRESENCE_LEAVE)
    _reject_unknown(obj, _ROOM_FIELDS, PRESENCE_LEAVE)
    return PresenceRoomRequest(validate_name(obj.get("room"), "room", PRESENCE_LEAVE))


def parse_presence_list(payload: Any) -> PresenceRoomRequest:
    obj = _require_object(payload, PRESENCE_LIST)
    _reject_unknown(obj, _ROOM_FIELDS, PRESENCE_LIST)
    return PresenceRoomRequest(validate_name(obj.get("room"), "room", PRESENCE_LIST))


# -- shared documents -------------------------------------------------------

# The pycrdt Map a shared document's dict-like view shows; other root types
# (arrays, text) live next to it in the same Doc under names of their own.
SHARED_MAP: Final = "state"


@dataclass(frozen=True, slots=True)
class DocSyncRequest:
    doc: str
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class DocUpdateRequest:
    doc: str
    update: bytes


_SYNC_FIELDS = frozenset({"doc", "state_vector"})
_UPDATE_FIELDS = frozenset({"doc", "update"})


def _binary(obj: dict[str, Any], key: str, event: str) -> bytes:
    value = obj.get(key)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise BadRequest(
        f"{event}: {key!r} must be binary (a Socket.IO attachment: bytes, "
        f"ArrayBuffer or Uint8Array), got {_kind(value)}"
    )


def parse_doc_sync(payload: Any) -> DocSyncRequest:
    obj = _require_object(payload, DOC_SYNC)
    _reject_unknown(obj, _SYNC_FIELDS, DOC_SYNC)
    doc = validate_name(obj.get("doc"), "doc", DOC_SYNC)
    if obj.get("state_vector") is None:
        return DocSyncRequest(doc, b"\x00")  # an empty state vector: send everything
    return DocSyncRequest(doc, _binary(obj, "state_vector", DOC_SYNC))


def parse_doc_update(payload: Any) -> DocUpdateRequest:
    obj = _require_object(payload, DOC_UPDATE)
    _reject_unknown(obj, _UPDATE_FIELDS, DOC_UPDATE)
    doc = validate_name(obj.get("doc"), "doc", DOC_UPDATE)
    return DocUpdateRequest(doc, _binary(obj, "update", DOC_UPDATE))


# -- token refresh ----------------------------------------------------------

RevokedKind = Literal["channel", "room", "doc"]


class AuthRefreshAck(TypedDict):
    """The ack of ``auth.refresh``: when the hub will now end the connection
    unless refreshed again (unix seconds; null: never)."""

    ok: Literal[True]
    expires: float | None


class RevokedEvent(TypedDict):
    """The ``revoked`` event: the hub ended one subscription (``kind``
    "channel"), room membership ("room") or document sync ("doc") of the
    connection because the token it was refreshed with no longer grants it.
    Sent before the ``auth.refresh`` ack; nothing more of ``name`` follows."""

    kind: RevokedKind
    name: str
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class AuthRefreshRequest:
    token: str = field(repr=False)


_REFRESH_FIELDS = frozenset({"token"})


def parse_auth_refresh(payload: Any) -> AuthRefreshRequest:
    obj = _require_object(payload, AUTH_REFRESH)
    _reject_unknown(obj, _REFRESH_FIELDS, AUTH_REFRESH)
    token = obj.get("token")
    if not isinstance(token, str) or not token:
        raise BadRequest(f"auth.refresh: 'token' must be a non-empty string, got {_kind(token)}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadRequest(f"auth.refresh: 'token' is at most {MAX_TOKEN_LENGTH} characters")
    return AuthRefreshRequest(token)
