"""Plain, frozen configuration objects. Hosts (the CLI, the Jupyter extension)
turn their own options into these; the core never sees traitlets or argv.

The defaults written here are the only ones: ``rtkit hub``'s options and the
Jupyter extension's traits take theirs from :data:`DEFAULT_LIMITS` and
:func:`hub_default`, so a default changed here changes everywhere.
"""

from __future__ import annotations

import ipaddress
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .protocol import CHANNEL_NAME_RE

DEFAULT_PORT = 8765
DEFAULT_STORE = "memory://"
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key as long as the hash
# Bridges report their state as messages on "<this>.<bridge name>" and
# announce themselves on "<this>" (rtkit.bridges._report, rtkit.hub.bridges).
DEFAULT_BRIDGE_CHANNEL = "bridges"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and per-user caps. ``0`` disables a rate cap."""

    max_payload_bytes: int = 256 * 1024
    publish_rate: float = 1000.0  # sustained publishes per second per connection
    publish_burst: int = 2000  # token bucket size
    max_subscriptions: int = 1000  # per connection
    max_connections_per_user: int = 100
    # A subscriber whose socket has this many packets not yet written is too
    # slow to follow; it is disconnected and resumes with `since` when it can.
    # Requests wait while a connection is over it (or over max_pending_bytes),
    # and one over it with max_requests_in_flight requests waiting is
    # disconnected: it sends and does not read.
    max_pending_packets: int = 2000
    # The same in bytes, for acks and deliveries alike: a request whose ack
    # may be large (history, subscribe, doc.sync) waits until the socket has
    # fewer than this many bytes unwritten before it reads anything, and a
    # connection that stays over it for slow_consumer_timeout seconds is
    # disconnected (it resumes with `since`). A delivery finding it over is
    # disconnected at once, as with max_pending_packets.
    max_pending_bytes: int = 16 * 1024 * 1024
    slow_consumer_timeout: float = 30.0
    # Largest history or subscribe backlog in one ack (JSON bytes of its
    # messages); a history ack that would be larger carries what fits and
    # `more: true`, and the Python client asks for the rest.
    max_ack_bytes: int = 4 * 1024 * 1024
    # Requests of one connection being answered at once (publishes aside:
    # the publish rate bounds those); more are refused with rate_limited
    # right away (no store access, nothing queued).
    max_requests_in_flight: int = 32
    # Presence: members per room (one per user, whatever its connections),
    # rooms one connection may join, and a member's state as compact JSON.
    max_room_members: int = 1000
    max_rooms: int = 100
    max_presence_state_bytes: int = 4096
    # Shared documents one connection may keep in sync at once.
    max_docs: int = 100
    # Reads (history, subscribe, presence.list, doc.sync) per second per
    # connection, a token bucket like publishes: a read costs the hub a store
    # query and an ack, so it has a budget too. The burst covers a client
    # resubscribing to max_subscriptions channels and resyncing max_docs
    # documents after a reconnect.
    read_rate: float = 200.0
    read_burst: int = 2000
    # Bytes of message data and document updates one connection may send per
    # second, sustained, and in a burst above that (0 disables). The burst
    # holds a few dozen full-size payloads; the rate is far above what a
    # person or a feed of small messages sends, and bounds what one
    # connection can make the store (and every subscriber) take.
    publish_bytes_rate: float = 2 * 1024 * 1024
    publish_bytes_burst: int = 8 * 1024 * 1024
    # A shared document's stored size (snapshot + updates): an update that
    # would take it over is refused with too_large. Every subscriber holds
    # the whole document, and a sync sends all of it at once.
    max_doc_bytes: int = 16 * 1024 * 1024
    # A presence member's display name, in characters (longer ones are cut).
    max_name_chars: int = 64
    # Binary attachments one Socket.IO packet may announce (rtkit's events
    # carry one or two); more, or more than 1 MB of them, closes the socket.
    max_attachments: int = 4

    def __post_init__(self) -> None:
        if min(self.max_room_members, self.max_rooms, self.max_docs) < 1:
            raise ConfigurationError("max_room_members, max_rooms and max_docs must be >= 1")
        if self.max_presence_state_bytes < 2:
            raise ConfigurationError("max_presence_state_bytes must be at least 2 ('{}')")
        if self.max_payload_bytes <= 0 or self.max_payload_bytes > 900_000:
            # Engine.IO refuses frames over 1 MB by dropping the connection;
            # stay below so an oversize publish gets a too_large ack instead.
            raise ConfigurationError("max_payload_bytes must be between 1 and 900000")
        if self.max_ack_bytes < self.max_payload_bytes + 4096:
            # One message (with its envelope) must always fit in an ack.
            raise ConfigurationError("max_ack_bytes must be at least max_payload_bytes + 4096")
        if self.max_pending_bytes < 1 or self.max_requests_in_flight < 1:
            raise ConfigurationError("max_pending_bytes and max_requests_in_flight must be >= 1")
        if self.slow_consumer_timeout <= 0:
            raise ConfigurationError("slow_consumer_timeout must be positive")
        if self.publish_rate < 0 or self.publish_burst < 1:
            raise ConfigurationError("publish_rate must be >= 0 and publish_burst >= 1")
        if self.read_rate < 0 or self.read_burst < 1:
            raise ConfigurationError("read_rate must be >= 0 and read_burst >= 1")
        if self.publish_bytes_rate < 0:
            raise ConfigurationError("publish_bytes_rate must be >= 0 (0: no byte quota)")
        if self.publish_bytes_rate > 0 and self.publish_bytes_burst < self.max_payload_bytes:
            # Else a full-size payload could never be sent.
            raise ConfigurationError("publish_bytes_burst must be at least max_payload_bytes")
        if self.max_doc_bytes < self.max_payload_bytes:
            raise ConfigurationError("max_doc_bytes must be at least max_payload_bytes")
        if self.max_name_chars < 1:
            raise ConfigurationError("max_name_chars must be >= 1")
        if self.max_attachments < 1:
            raise ConfigurationError("max_attachments must be >= 1")


# The shortest HTTP API key a hub takes (HubConfig.api_key).
MIN_API_KEY_CHARS = 16
# The shortest key that signs webhook bodies (Webhooks.secret).
MIN_WEBHOOK_SECRET_CHARS = 16


@dataclass(frozen=True, slots=True)
class Webhooks:
    """Lifecycle webhooks: where the hub POSTs its events, and how.

    Events (channel occupied/vacated, presence join/leave, connection closed)
    are sent in batches of up to ``max_batch``, at most ``batch_delay``
    seconds after the first of a batch was queued, each POST signed with
    HMAC-SHA256 under ``secret`` (see :mod:`rtkit.hub.webhooks`). A POST that
    fails (no connection, a timeout after ``timeout`` seconds, an HTTP 5xx,
    408 or 429) is retried after ``retry_initial`` seconds, doubling up to
    ``retry_max``, for as long as it takes; meanwhile at most ``max_queue``
    events wait, the oldest dropped (and counted) beyond that.

    >>> Webhooks("https://example.org/rtkit-events", secret=os.environ["WEBHOOK_SECRET"])
    """

    url: str
    secret: str = field(repr=False)
    max_batch: int = 100
    batch_delay: float = 0.2
    max_queue: int = 10_000
    timeout: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigurationError(
                f"the webhook URL must be http:// or https:// with a host, not {self.url[:80]!r}"
            )
        if len(self.secret) < MIN_WEBHOOK_SECRET_CHARS:
            raise ConfigurationError(
                f"the webhook secret must be at least {MIN_WEBHOOK_SECRET_CHARS} characters "
                "(--webhook-secret); make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.max_batch < 1 or self.max_queue < self.max_batch:
            raise ConfigurationError("webhook max_batch must be >= 1 and max_queue >= max_batch")
        if self.batch_delay < 0 or self.timeout <= 0:
            raise ConfigurationError(
                "webhook batch_delay must be >= 0 and timeout positive (seconds)"
            )
        if not 0 < self.retry_initial <= self.retry_max:
            raise ConfigurationError("webhook retry_initial must be > 0 and <= retry_max")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything a hub needs to run, independent of its host.

    >>> config = HubConfig(store="sqlite:///rtkit.db", secret=os.environ["RTKIT_SECRET"])
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    store: str = DEFAULT_STORE
    secret: str | None = None  # HS256 key for tokens
    allow_anonymous: bool = False
    # The HTTP API's key for services (full rights); never shown in a repr.
    api_key: str | None = field(default=None, repr=False)
    # Prometheus metrics at /metrics (rtkit.hub.metrics); off, the hub also
    # skips its per-request counting. The token (else the API key) is asked
    # for as "Authorization: Bearer"; with neither, /metrics is open.
    metrics: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    # Channels and documents with series of their own (the busiest).
    metrics_top_channels: int = 20
    limits: Limits = field(default_factory=Limits)
    # Engine.IO heartbeat: a silent client is dropped after interval + timeout.
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    # Idempotent publish: the same (channel, sender, id) within this many
    # seconds returns the first seq instead of storing again.
    dedup_window: float = 300.0
    # permessage-deflate for websocket frames. Off by default: compressing
    # each recipient's copy costs about a quarter of fan-out throughput (see
    # benchmarks/RESULTS.md); turn it on for slow links.
    websocket_compression: bool = False
    # Under load the fan-out waits this share of its own last run time before
    # running again, so publishes keep flowing and deliveries coalesce.
    max_coalesce_delay: float = 0.02
    # Browser origins allowed to connect besides the hub's own (None: only
    # its own; "*": any). Requests without an Origin header (non-browser
    # clients) are not checked.
    cors_allowed_origins: tuple[str, ...] | str | None = None
    # False when the host checks Origin itself before the hub sees a request
    # (the Jupyter extension, with Jupyter's allow_origin rules).
    check_origin: bool = True
    # Presence: a connection's membership lapses this many seconds after its
    # hub last vouched for it (hubs refresh their live connections every third
    # of it), so members of a killed hub leave even when the store is shared.
    # None: the Engine.IO heartbeat's own deadline, ping_interval + ping_timeout.
    presence_timeout: float | None = None
    # Presence events of a room are batched for this long, so a storm of
    # joins, leaves and updates costs one event per member that changed.
    presence_batch_delay: float = 0.01
    # A shared document's stored updates are compacted into one snapshot
    # after this many, so loading it does not get slower without bound.
    doc_compact_every: int = 500
    # An Engine.IO session that has not joined the hub's namespace (sent
    # its Socket.IO CONNECT and been accepted) within this many seconds is
    # closed; an address may hold this many such sessions at once (0: no
    # cap), further handshakes from it are refused with HTTP 401.
    connect_timeout: float = 10.0
    max_pending_per_address: int = 128
    # Proxies (e.g. the nginx of `rtkit cluster`) whose X-Forwarded-For
    # names the client address for max_pending_per_address.
    trusted_proxies: tuple[str, ...] = ()
    # Lifecycle webhooks (rtkit.hub.webhooks); None: none are sent.
    webhooks: Webhooks | None = None
    # The channel bridges announce themselves on (their states are on
    # "<it>.<bridge name>"); status() lists them. None: no bridges listed.
    bridge_channel: str | None = DEFAULT_BRIDGE_CHANNEL

    @property
    def presence_expiry(self) -> float:
        """Seconds a presence connection entry lives without a refresh."""
        if self.presence_timeout is not None:
            return self.presence_timeout
        return self.ping_interval + self.ping_timeout

    def __post_init__(self) -> None:
        if not self.secret and not self.allow_anonymous:
            raise ConfigurationError(
                "the hub needs a token secret (--secret or RTKIT_SECRET); "
                "for a local experiment pass --allow-anonymous instead"
            )
        if self.secret and len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"the token secret must be at least {MIN_SECRET_BYTES} bytes (HS256); make one "
                "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.api_key is not None and len(self.api_key) < MIN_API_KEY_CHARS:
            raise ConfigurationError(
                f"the API key must be at least {MIN_API_KEY_CHARS} characters; make one "
                "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.metrics_token is not None and len(self.metrics_token) < MIN_API_KEY_CHARS:
            raise ConfigurationError(
                f"the metrics token must be at least {MIN_API_KEY_CHARS} characters; make one "
                "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.metrics_top_channels < 0:
            raise ConfigurationError("metrics_top_channels must be >= 0")
        if self.allow_anonymous and not is_loopback(self.host):
            raise ConfigurationError(
                f"--allow-anonymous is only allowed on a loopback address, not {self.host!r}; "
                "set a secret and mint tokens with 'rtkit token'"
            )
        if self.ping_interval <= 0 or self.ping_timeout <= 0:
            raise ConfigurationError("ping_interval and ping_timeout must be positive")
        if self.presence_timeout is not None and self.presence_timeout <= 0:
            raise ConfigurationError("presence_timeout must be positive")
        if self.presence_batch_delay < 0 or self.doc_compact_every < 1:
            raise ConfigurationError("presence_batch_delay must be >= 0 and doc_compact_every >= 1")
        if self.connect_timeout <= 0 or self.max_pending_per_address < 0:
            raise ConfigurationError(
                "connect_timeout must be positive and max_pending_per_address >= 0"
            )
        if self.bridge_channel is not None and not CHANNEL_NAME_RE.fullmatch(
            f"{self.bridge_channel}.x"
        ):
            raise ConfigurationError(
                f"bridge_channel must be a channel name, got {self.bridge_channel!r}"
            )


#: A Limits with every default, for hosts that offer each cap as an option.
DEFAULT_LIMITS = Limits()


def hub_default(name: str) -> Any:
    """The default of HubConfig's field ``name`` (e.g. ``"ping_interval"``),
    for hosts that offer it as an option. A HubConfig cannot be built with
    only defaults (it needs a secret or anonymous mode), hence a field
    lookup rather than an instance."""
    return _field_default(HubConfig, name)


def webhook_default(name: str) -> Any:
    """The default of :class:`Webhooks`' field ``name`` (e.g. ``"max_queue"``)."""
    return _field_default(Webhooks, name)


def _field_default(cls: type[Any], name: str) -> Any:
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
