"""One client connection as the hub sees it: who it is, what it may still
publish, what it subscribes to, and how frames reach its socket. The core
creates it on connect; presence and shared documents take it as the caller
of a request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .auth import Identity
from .limits import UNLIMITED, TokenBucket
from .transport import FrameWriter


@dataclass(slots=True)
class Connection:
    sid: str
    eio_sid: str
    identity: Identity
    bucket: TokenBucket
    frame_writer: FrameWriter | None = None
    connected_at: float = field(default_factory=time.time)
    subscriptions: set[str] = field(default_factory=set)
    # Ends the connection when its credential does (token expiry); cancelled
    # on disconnect. One timer handle per connection, nothing else.
    expiry: asyncio.TimerHandle | None = None
    # Reads (history, subscribe, presence.list, doc.sync); the hub sets it at connect.
    reads: TokenBucket = UNLIMITED
    # Bytes of publishes and document updates (Limits.publish_bytes_rate).
    byte_bucket: TokenBucket = UNLIMITED
    # Requests being answered now (capped by Limits.max_requests_in_flight).
    in_flight: int = 0
    # Held by a request whose ack may be large, from its wait for the send
    # budget until its ack is queued: one such ack is built at a time.
    large_ack: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set while a publish batch starts its appends on a store that appends
    # only through coroutines: the connection's later publishes wait for it,
    # so they are numbered after the whole batch (see Hub._append_batch).
    publish_gate: asyncio.Future[None] | None = None
    # Why the hub ended the connection (slow_consumer, token_expired,
    # revoked, hub_stopping), for the connection.closed webhook; None when
    # the client or its transport ended it.
    close_reason: str | None = None
