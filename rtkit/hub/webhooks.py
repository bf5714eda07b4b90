"""Lifecycle webhooks: the hub tells an HTTP endpoint what happens in it.

Events (each a JSON object with ``id``, ``type``, ``time`` and its fields):

========================  ==================================================
``channel.occupied``      ``channel``: the first subscriber *on this hub*
``channel.vacated``       ``channel``: the last subscriber on this hub left
``presence.join``         ``room``, ``member`` (``id``, ``user``, ``name``):
                          a user's first connection joined the room
``presence.leave``        ``room``, ``member``: its last connection left
                          (or lapsed)
``connection.closed``     ``sid``, ``user``, ``reason``, ``duration`` (s)
========================  ==================================================

Occupancy is per hub: with several hubs on one store each reports its own
first and last subscriber, and the body names the hub (``hub``), so a
receiver that wants cluster-wide occupancy counts the hubs that hold a
channel. A hub that restarts has a new ``hub`` id and no subscribers: a
receiver forgets what the old id held. Presence is per room across the
cluster: the hub that made a change (or expired a dead hub's member) sends
it, once.

Delivery: one ordered queue and one sender per hub, so events arrive in the
order the hub saw them (per channel, per room, overall). Each POST carries
a batch::

    {"hub": "3f2a9c1b7d4e", "host": "node-1", "pid": 4242,
     "events": [{"id": "3f2a9c1b7d4e-17", "type": "channel.occupied",
                 "time": 1764856800.123, "channel": "prices"}, ...]}

signed with HMAC-SHA256 under the webhook secret over ``timestamp + "." +
body`` (see :func:`sign`), the timestamp (unix seconds) in
``X-Rtkit-Timestamp``, the signature as ``X-Rtkit-Signature:
sha256=<hex>``. A receiver recomputes it over the raw body, compares in
constant time and refuses stale timestamps (:func:`verify`).

Any 2xx accepts a batch. No answer, a timeout, 5xx, 408 or 429 (honouring
``Retry-After``) retry the same batch with exponential backoff, for as long
as it takes; other answers (3xx, 4xx) drop it as rejected, logged. Delivery
is at least once: a batch whose answer was lost is sent again, so receivers
drop event ids they have seen. While the receiver is away events wait in a
queue of at most ``max_queue``; beyond that the oldest are dropped, counted
(``dropped`` in :meth:`WebhookSender.status`, which ``Hub.status()``
includes) and logged.

Queuing an event (:meth:`WebhookSender.emit`) is O(1) and never waits: the
hub's request handlers and the fan-out never block on the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from .. import __version__
from ..config import Webhooks
from ..storage.redact import redact_url

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "CHANNEL_OCCUPIED",
    "CHANNEL_VACATED",
    "CONNECTION_CLOSED",
    "PRESENCE_JOINED",
    "PRESENCE_LEFT",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookSender",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

CHANNEL_OCCUPIED = "channel.occupied"
CHANNEL_VACATED = "channel.vacated"
PRESENCE_JOINED = "presence.join"
PRESENCE_LEFT = "presence.leave"
CONNECTION_CLOSED = "connection.closed"

SIGNATURE_HEADER = "X-Rtkit-Signature"
TIMESTAMP_HEADER = "X-Rtkit-Timestamp"

# Answers worth retrying besides 5xx: the receiver asks to be called later.
_RETRY_STATUSES = frozenset({408, 429})
# How often a receiver that stays down, or a queue that keeps dropping, is
# logged again at WARNING (the first time is always logged).
_LOG_EVERY = 30.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Rtkit-Signature`` value of ``body`` sent at ``timestamp``.

    >>> sign("whsec-0123456789abcdef", "1764856800", b'{"events": []}')[:7]
    'sha256='
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """True if ``signature`` is :func:`sign`'s for this body and timestamp,
    and the timestamp is within ``tolerance`` seconds of ``now`` (a replayed
    old request is refused). For receivers written in Python."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    """The hub's webhook queue and its one sender task.

    >>> sender = WebhookSender(Webhooks(url, secret=key))
    >>> await sender.start()
    >>> sender.emit("channel.occupied", channel="prices")  # never waits
    >>> await sender.stop(drain_timeout=3)
    """

    def __init__(self, config: Webhooks) -> None:
        self.config = config
        # New on every start of a hub process: receivers tell a restarted
        # hub (whose channels are all vacated) from the one before.
        self.hub_id = uuid.uuid4().hex[:12]
        self._origin = {"hub": self.hub_id, "host": socket.gethostname(), "pid": os.getpid()}
        self._queue: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._next_id = 0
        self._in_flight = 0
        self._last_drop_log = -_LOG_EVERY
        self._drops_unlogged = 0
        self.sent = 0  # events the receiver accepted
        self.batches = 0  # POSTs it accepted
        self.failed_attempts = 0  # POSTs that failed and were retried
        self.dropped = 0  # events dropped from a full queue (oldest first) or at stop
        self.rejected = 0  # events in batches the receiver refused (3xx, 4xx)
        self.last_error: str | None = None

    # -- the hub's side ------------------------------------------------------

    def emit(self, event_type: str, **fields: Any) -> None:
        """Queue an event; O(1), never waits. Over ``max_queue`` the oldest
        queued event is dropped and counted."""
        self._next_id += 1
        event = {
            "id": f"{self.hub_id}-{self._next_id}",
            "type": event_type,
            "time": time.time(),
            **fields,
        }
        queue = self._queue
        if len(queue) >= self.config.max_queue:
            queue.popleft()
            self.dropped += 1
            self._drops_unlogged += 1
            now = time.monotonic()
            if now - self._last_drop_log >= _LOG_EVERY:
                log.warning(
                    "webhook queue full (%d events; receiver %s unreachable or slow): "
                    "dropped the oldest %d, %d in all",
                    self.config.max_queue,
                    redact_url(self.config.url),
                    self._drops_unlogged,
                    self.dropped,
                )
                self._last_drop_log = now
                self._drops_unlogged = 0
        queue.append(event)
        self._wakeup.set()
        if len(queue) >= self.config.max_batch:
            self._full.set()

    def status(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.config.url),
            "hub": self.hub_id,
            "sent": self.sent,
            "batches": self.batches,
            "failed_attempts": self.failed_attempts,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "queued": len(self._queue),
            "in_flight": self._in_flight,
            "last_error": self.last_error,
        }

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("WebhookSender.start() called twice")
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            headers={"User-Agent": f"rtkit/{__version__}"},
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="rtkit webhook sender"
        )
        log.info("webhooks to %s (hub id %s)", redact_url(self.config.url), self.hub_id)

    async def stop(self, drain_timeout: float = 3.0) -> None:
        """Send what is queued for up to ``drain_timeout`` seconds, then give
        up on the rest (counted as dropped)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        self._full.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), drain_timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = len(self._queue) + self._in_flight
        if left:
            self.dropped += left
            log.warning(
                "webhooks: %d events not delivered to %s at stop (%s)",
                left,
                redact_url(self.config.url),
                self.last_error or "no answer in time",
            )
        self._queue.clear()
        self._in_flight = 0
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the sender --------------------------------------------------------------

    async def _run(self) -> None:
        config = self.config
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < config.max_batch and not self._stopping:
                # Collect a batch: up to max_batch events or batch_delay seconds.
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), config.batch_delay)
            count = min(len(self._queue), config.max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_flight = count
            await self._deliver(batch)
            self._in_flight = 0

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """POST one batch until the receiver takes it (or refuses it)."""
        import aiohttp

        assert self._session is not None
        config = self.config
        body = orjson.dumps({**self._origin, "events": batch})
        backoff = config.retry_initial
        failing_since: float | None = None
        last_log = 0.0
        while True:
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(config.secret, timestamp, body),
            }
            retry_after: float | None = None
            try:
                async with self._session.post(
                    config.url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    if status == 429 or status == 503:
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    self.sent += len(batch)
                    self.batches += 1
                    if failing_since is not None:
                        log.info(
                            "webhooks: %s answers again after %.1f s",
                            redact_url(config.url),
                            time.monotonic() - failing_since,
                        )
                    return
                if status < 500 and status not in _RETRY_STATUSES:
                    self.rejected += len(batch)
                    self.last_error = f"HTTP {status}"
                    log.error(
                        "webhooks: %s refused a batch of %d events with HTTP %d; "
                        "they are not sent again",
                        redact_url(config.url),
                        len(batch),
                        status,
                    )
                    return
                error = f"HTTP {status}"
            self.failed_attempts += 1
            self.last_error = error
            now = time.monotonic()
            if failing_since is None or now - last_log >= _LOG_EVERY:
                log.warning(
                    "webhooks: POST to %s failed (%s); retrying in %.1f s, %d events queued",
                    redact_url(config.url),
                    error,
                    backoff,
                    len(self._queue) + len(batch),
                )
                last_log = now
            if failing_since is None:
                failing_since = now
            if self._stopping:
                # Stop's budget decides how long this goes on.
                backoff = min(backoff, config.retry_initial)
            await asyncio.sleep(min(retry_after, config.retry_max) if retry_after else backoff)
            backoff = min(backoff * 2, config.retry_max)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header in seconds (HTTP dates are
    ignored: the backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None
