"""The asyncio client: :class:`Client` and :func:`connect`.

This is the implementation; :mod:`rtkit.client.sync` wraps it for blocking
code and :mod:`rtkit.aio` re-exports it. :class:`Client` is a thin façade
over parts that each live in a module of their own:

- :mod:`._session`: the :class:`~rtkit.client._session.Session` (the
  Socket.IO transport, connect and reconnect supervision, request/ack,
  the hub-event registry, resume hooks, the callback dispatcher and task
  spawning), the one part that knows python-socketio;
- :mod:`.channel`: :class:`Channel`, the :class:`~rtkit.client.channel.Publisher`
  (the publish outbox and its pump) and the channel registry;
- :mod:`.presence`: :class:`Presence` and the room registry;
- :mod:`.docs`: :class:`SharedDoc` and the document registry.

The features register with the session (event handlers, and hooks to run
after a reconnect, when a connection drops and when the client stops) and
talk to the hub only through it, never through each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, Unpack

from ..errors import RtkitError
from ._session import (
    Session,
    SessionOptions,
    SocketIOTransport,
    StateEvent,
    TokenSource,
    TransportFactory,
    check_ack,
    resolve_target,
)
from ._types import ClientMetrics, GapInfo, Message
from .channel import (
    Channel,
    Channels,
    GapCallback,
    MessageCallback,
    Publisher,
    encoded_size,
)
from .docs import Docs, SharedChange, SharedDoc
from .presence import Presence, Rooms

__all__ = [
    "Channel",
    "Client",
    "ClientMetrics",
    "ConnectOptions",
    "GapCallback",
    "GapInfo",
    "Message",
    "MessageCallback",
    "Presence",
    "SharedChange",
    "SharedDoc",
    "connect",
]

# Also importable from here under their old names, which the unit tests
# of the ack and size rules use.
_check_ack = check_ack
_encoded_size = encoded_size


class ConnectOptions(TypedDict, total=False):
    """Keyword options of :func:`connect` and :class:`Client` (all optional)."""

    ack_timeout: float
    """Seconds to wait for the hub's answer to a request (default 10)."""
    connect_timeout: float
    """Seconds one connection attempt may take (default 10)."""
    max_offline_queue: int
    """Publishes that may wait while disconnected (default 10,000)."""
    reconnect_delay: float
    """Base of the reconnect backoff in seconds (default 0.25)."""
    reconnect_delay_max: float
    """Cap of the reconnect backoff in seconds (default 10)."""
    max_in_flight: int
    """Publish requests sent and not yet acked before the next waits its turn (default 256)."""
    max_publish_rate: float
    """Publish requests per second this client sends at most, after a burst of
    one second's worth (default 950, under the hub's default rate of 1000 and
    burst of 2000); publishes that come faster wait a moment and leave
    together as one batch request. 0: no pacing."""


class Client:
    """An asyncio connection to an rtkit hub that survives disconnects.

    Prefer :func:`connect`; the class is also an async context manager.
    Options are the keyword arguments listed in :class:`ConnectOptions`.

    >>> async with Client("http://127.0.0.1:8765") as hub:
    ...     await hub.channel("prices").publish({"px": 1.0})
    1
    """

    def __init__(
        self,
        url: str | None = None,
        token: TokenSource | None = None,
        *,
        _transport: TransportFactory = SocketIOTransport,
        **options: Unpack[ConnectOptions],
    ) -> None:
        # ``_transport`` is the seam unit tests use to run the client over a
        # fake connection; applications never pass it.
        url, token = resolve_target(url, token)
        session = self._session = Session(url, token, SessionOptions(**options), _transport)
        self._publisher = publisher = Publisher(session)
        # Each registry registers its hooks with the session; hooks run in
        # registration order. After a reconnect channels resubscribe, rooms
        # rejoin and documents resync before the publishes queued meanwhile
        # go out; a stopping client wakes flush() waiters, then fails publishes.
        self._channels = Channels(session, publisher, self)
        self._rooms = Rooms(session)
        self._docs = Docs(session)
        session.on_resume(publisher.wake)
        session.on_disconnect(publisher.rewind)
        session.on_failure(publisher.fail)

    def __repr__(self) -> str:
        session = self._session
        state = "connected" if session.connected else session.state
        return f"<rtkit.aio.Client {session.url} {state}>"

    async def __aenter__(self) -> Client:
        if self._session.state == "new":
            await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public -----------------------------------------------------------

    @property
    def url(self) -> str:
        return self._session.url

    @property
    def connected(self) -> bool:
        """True while a connection to the hub is up."""
        return self._session.connected

    @property
    def session(self) -> Session:
        """The connection underneath, shared by channels, presence and
        documents (package-internal: not part of the public API)."""
        return self._session

    @property
    def publisher(self) -> Publisher:
        """The publish outbox of every channel of this client
        (package-internal: not part of the public API)."""
        return self._publisher

    @property
    def metrics(self) -> ClientMetrics:
        """A snapshot of this client's counters."""
        channels = self._channels
        return ClientMetrics(
            connected=self._session.connected,
            messages_received=channels.received,
            duplicates_dropped=channels.duplicates,
            published=self._publisher.published,
            pending_publishes=len(self._publisher),
            publish_requests=self._publisher.requests,
            publish_failures=self._publisher.failures,
            reconnects=self._session.reconnects,
            gaps=channels.gaps,
            subscriptions=sum(1 for ch in channels if ch.subscribed),
            token_refreshes=self._session.token_refreshes,
        )

    async def open(self) -> Client:
        """Connect (once; later disconnects reconnect on their own) and return self.

        Raises :class:`~rtkit.errors.Unauthorized` when the hub refuses the
        token and :class:`~rtkit.errors.NotConnected` when it cannot be reached.
        """
        await self._session.open()
        self._publisher.start()
        self._session.start()
        return self

    async def close(self) -> None:
        """Disconnect and stop; idempotent. Unacked publishes fail with ClientClosed."""
        await self._session.close()

    async def flush(self) -> None:
        """Wait until every publish made so far is acked (or failed).

        Raises the first failure of a ``publish(..., wait=False)`` since the
        last flush, saying how many failed (each is also in its future).
        Waits through reconnects: bound it with ``asyncio.timeout``.
        """
        await self._publisher.flush()

    def channel(self, name: str) -> Channel:
        """The :class:`Channel` called ``name`` (one object per name)."""
        return self._channels.get(name)

    async def presence(self, room: str, state: dict[str, Any] | None = None) -> Presence:
        """Join the presence room ``room`` and return its :class:`Presence`.

        ``state`` (an object: status, cursor, selected cell...) is merged into
        this user's member state. One object per room and client; asking
        again returns it (merging ``state`` in). Connected, this returns once
        the hub confirmed the join (``.members`` is filled) and raises its
        refusal (e.g. :class:`~rtkit.errors.Forbidden`); offline, it returns
        at once and joins on reconnect.
        """
        return await self._rooms.join(room, state)

    async def shared(self, name: str) -> SharedDoc:
        """The shared document ``name``, as a :class:`SharedDoc` (one per name).

        Connected, this returns once the first sync with the hub is done (so
        it shows what others wrote) and raises the hub's refusal; offline,
        it returns at once, edits wait, and it syncs on reconnect.
        """
        return await self._docs.open(name)

    def on(self, event: StateEvent, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Call ``callback`` on a connection event; returns it (usable as a decorator).

        ``"connect"``: ``callback()`` after every successful (re)connection;
        ``"disconnect"``: ``callback(reason)`` when the connection drops;
        ``"reconnect"``: ``callback(attempts)`` after a reconnection (after
        ``"connect"``); ``"gap"``: ``callback(channel_name, info)`` when a
        channel could not be resumed without loss (see :meth:`Channel.on_gap`);
        ``"revoked"``: ``callback(kind, name, error)`` when the hub ended a
        subscription (``kind`` "channel"), room membership ("room") or
        document sync ("doc") because a refreshed token no longer grants it
        (its callbacks are dropped, the room left, the document closed);
        ``"auth_error"``: ``callback(error)`` each time renewing the token
        failed (the token provider's :class:`~rtkit.errors.TokenUnavailable`,
        or the hub refusing the new token); the client retries with backoff.
        """
        self._session.on_state(event, callback)
        return callback

    def off(self, event: StateEvent, callback: Callable[..., Any]) -> None:
        """Undo :meth:`on`."""
        self._session.off_state(event, callback)

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected now).

        Raises :class:`~rtkit.errors.ClientClosed` (or the reason the client
        stopped) instead of waiting forever. Bound it with ``asyncio.timeout``.
        """
        await self._session.wait_connected()

    # -- the handshake, as the session sends it ---------------------------

    @property
    def _origin(self) -> str:
        return self._session.origin

    @property
    def _path(self) -> str:
        return self._session.path

    def _auth(self) -> dict[str, str]:
        return self._session.auth()

    def _connect_failure(self, refusals: list[Any], exc: Exception) -> RtkitError:
        return self._session.connect_failure(refusals, exc)


async def connect(
    url: str | None = None, token: TokenSource | None = None, **options: Unpack[ConnectOptions]
) -> Client:
    """Connect to a hub and return an open :class:`Client`.

    ``url`` defaults to ``$RTKIT_URL`` and ``token`` to ``$RTKIT_TOKEN``.
    ``token`` may also be a token provider: a callable (plain or ``async``)
    that returns a fresh token string. The client calls it to connect,
    again before each token expires (80% of its lifetime or 30 s before,
    whichever is earlier), and hands the new token to the hub on the live
    connection: subscriptions, rooms and documents carry on, nothing is
    missed. Provider failures are retried with backoff (``"auth_error"``
    events); a connection whose token ran out meanwhile is closed by the
    hub, and the client reconnects with the provider's next token and
    resumes. A plain provider runs on a worker thread, so it may block.
    Options are listed in :class:`ConnectOptions`.

    >>> hub = await rtkit.aio.connect("http://127.0.0.1:8765")
    >>> await hub.channel("prices").publish({"px": 1.0})
    >>> hub = await rtkit.aio.connect(url, token=fetch_token)  # a token provider
    """
    client = Client(url, token, **options)
    await client.open()
    return client
