"""The websocket and server-sent events sources (on aiohttp, no extra needed).

- :class:`SseSource`: a ``text/event-stream`` URL. Each event is a message,
  its ``event:`` name (``message`` when it has none) the topic, unless
  ``topic_field`` names a field of its JSON data. An event's ``id:`` is its
  position: the publish id is ``sse:{name}:{id}``, and every reconnect sends
  the last id read as ``Last-Event-ID``, so a server that resumes after it
  (as the SSE specification asks) gives every event exactly once. ``retry:``
  sets the least delay before a reconnect. With a state file the last id the
  hub acked also survives a restart of the bridge.
- :class:`WebSocketSource`: a websocket URL; each text or binary message is a
  message. Websockets have no positions: what the server sends while the
  bridge is away is lost, and each reconnect counts in
  :attr:`BridgeState.gaps`.

Both bound what they hold (``max_size`` bytes for an SSE line or event and
for a websocket message): an SSE event over it is dropped with an error in
the state and the stream goes on; a websocket message over it closes the
connection (aiohttp, code 1009), which is an error and a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from ..errors import ConfigurationError
from ._core import (
    BridgeState,
    Position,
    SourceMessage,
    TopicMap,
    decode_payload,
    read_positions,
    short_key,
    write_positions,
)

__all__ = ["SseEvent", "SseParser", "SseSource", "WebSocketSource"]

log = logging.getLogger(__name__)

_DEFAULT_MAX_SIZE = 1 << 20
_EOL = re.compile(rb"\r\n|\r|\n")
# Publish ids are at most 128 characters (protocol.MAX_CLIENT_ID_LENGTH):
# a longer SSE id is replaced by its digest in the publish id.
_MAX_ID_IN_PUBLISH_ID = 64
_MAX_NAME = 48


def _topic_map(topics: TopicMap | str) -> TopicMap:
    """A template alone is one rule for every topic (``{topic}`` fills in)."""
    if isinstance(topics, TopicMap):
        return topics
    return TopicMap([("#", topics)], flavor="mqtt")


def _check_size(max_size: int) -> int:
    if max_size < 1:
        raise ConfigurationError(f"max_size must be at least 1 byte, got {max_size}")
    return max_size


def _check_payload(payload: str) -> str:
    if payload not in ("auto", "json", "text", "bytes"):
        raise ConfigurationError(f"payload is auto, json, text or bytes, got {payload!r}")
    return payload


def _topic_from_field(data: Any, field: str) -> str:
    """The field's value as a topic; "" (matches no rule) when it has none."""
    if isinstance(data, dict):
        value = data.get(field)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return ""


# -- the event stream format ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event of a ``text/event-stream``."""

    event: str
    """Its type: the ``event:`` field, ``message`` without one."""
    data: str
    """Its ``data:`` lines, joined by newlines."""
    id: str | None
    """Its own ``id:`` field (None without one, or an empty one)."""
    last_id: str
    """The stream's last event id once it is dispatched (what a reconnect sends)."""
    error: str | None = None
    """Why it was cut (a line or the data over the size bound): its data is incomplete."""


class SseParser:
    """The event stream format of the WHATWG HTML standard, fed bytes.

    Lines end in CRLF, LF or CR; a blank line dispatches the event; an
    incomplete event at the end of the stream is never dispatched. No line
    and no event's data may pass ``max_size`` bytes: the rest of such a
    line is skipped without being held, and the event comes out with
    ``error`` set.

    >>> parser = SseParser()
    >>> parser.feed(b"id: 7\\nevent: tick\\ndata: {\\"n\\": 1}\\n\\n")
    [SseEvent(event='tick', data='{"n": 1}', id='7', last_id='7', error=None)]
    """

    def __init__(self, max_size: int = _DEFAULT_MAX_SIZE, *, last_id: str = "") -> None:
        self.max_size = _check_size(max_size)
        self.last_id = last_id
        """The last event id string: the id of the last dispatched event that set one."""
        self.retry: float | None = None
        """The reconnection time the stream asked for (``retry:``), in seconds."""
        self._id_buffer = last_id
        self._line = bytearray()
        self._skip_lf = False  # a CR ended the last chunk: an LF next is the same line end
        self._skipping_line = False  # inside a line over max_size
        self._first_line = True
        self._reset_event()

    def _reset_event(self) -> None:
        self._type = ""
        self._data: list[str] = []
        self._data_size = 0
        self._own_id: str | None = None
        self._error: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events ``chunk`` completes, in order."""
        events: list[SseEvent] = []
        pos = 1 if self._skip_lf and chunk[:1] == b"\n" else 0
        self._skip_lf = False
        end = len(chunk)
        while pos < end:
            match = _EOL.search(chunk, pos)
            if match is None:
                if not self._skipping_line:
                    self._line += chunk[pos:]
                    if len(self._line) > self.max_size:
                        self._too_large("a line")
                        self._line.clear()
                        self._skipping_line = True
                break
            if self._skipping_line:
                self._skipping_line = False
            else:
                self._line += chunk[pos : match.start()]
                if len(self._line) > self.max_size:
                    self._too_large("a line")
                else:
                    event = self._process(bytes(self._line))
                    if event is not None:
                        events.append(event)
                self._line.clear()
            pos = match.end()
            if pos == end and match[0] == b"\r":
                self._skip_lf = True
        return events

    def _too_large(self, what: str) -> None:
        if self._error is None:
            self._error = f"{what} of an event is over {self.max_size} bytes: event dropped"
        self._data.clear()  # the event is lost: hold none of it

    def _process(self, raw: bytes) -> SseEvent | None:
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment (servers send them to keep the connection alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_size += len(value.encode()) + 1
            if self._data_size > self.max_size:
                self._too_large("the data")
            elif self._error is None:
                self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
                self._own_id = value or None
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> SseEvent | None:
        self.last_id = self._id_buffer
        event = None
        if self._data or self._error is not None:
            event = SseEvent(
                self._type or "message",
                "\n".join(self._data),
                self._own_id,
                self.last_id,
                self._error,
            )
        self._reset_event()
        return event


# -- sources ----------------------------------------------------------------------


class SseSource:
    """Events of a server-sent events URL, exactly once where the server
    resumes after ``Last-Event-ID``.

    ``topics`` is a channel template (``"sensors.{topic}"``; ``{topic}`` is
    the event name, or the ``topic_field`` of its JSON data) or a full
    :class:`TopicMap` over those topics. ``name`` (a digest of the URL by
    default) goes into publish ids and the state file; ``state_file`` keeps
    the last event id the hub acked, from which a restarted bridge resumes.
    ``connect_timeout`` bounds the request until the response starts;
    ``idle_timeout`` (off by default) reconnects when the stream is silent
    that long, for servers that send keep-alive comments.

    >>> source = SseSource("https://example.org/events", topics="feed.{topic}",
    ...     headers={"Authorization": "Bearer abc"}, state_file="bridge-feed.json")
    """

    kind = "sse"

    def __init__(
        self,
        url: str,
        *,
        topics: TopicMap | str,
        topic_field: str | None = None,
        headers: Mapping[str, str] | None = None,
        payload: str = "auto",
        max_size: int = _DEFAULT_MAX_SIZE,
        state_file: str | os.PathLike[str] | None = None,
        name: str | None = None,
        last_event_id: str | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.topics = _topic_map(topics)
        self.name = name or hashlib.sha256(url.encode()).hexdigest()[:12]
        if len(self.name) > _MAX_NAME or ":" in self.name:
            raise ConfigurationError(
                f"an SSE source's name is at most {_MAX_NAME} characters without ':' "
                f"(it goes into publish ids), got {self.name!r}"
            )
        self._topic_field = topic_field
        self._headers = dict(headers or {})
        self._payload = _check_payload(payload)
        self._max_size = _check_size(max_size)
        self._connect_timeout = connect_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=idle_timeout
        )
        self._path = Path(state_file) if state_file is not None else None
        saved = read_positions(self._path).get(self.name) if self._path else None
        self._committed: str | None = saved
        self._saved = saved
        # What the next connection sends as Last-Event-ID: the last id read,
        # which is at or after the last one the hub acked (the rest is in
        # flight in the client).
        self._read_id = saved or last_event_id or ""
        self._retry: float | None = None
        self._lost_at: float | None = None
        self._connections = 0

    async def checkpoint(self) -> str | None:
        if self._path is not None and self._committed not in (None, self._saved):
            snapshot = self._committed
            await anyio.to_thread.run_sync(write_positions, self._path, {self.name: snapshot})
            self._saved = snapshot
        return f"{self.name}:{self._committed}" if self._committed is not None else None

    def _committer(self, event_id: str) -> Callable[[], None]:
        def commit() -> None:
            self._committed = event_id

        return commit

    async def _wait_retry(self) -> None:
        """Wait out what is left of the server's ``retry:`` since the last connection ended."""
        if self._retry is None or self._lost_at is None:
            return
        left = self._retry - (time.monotonic() - self._lost_at)
        if left > 0:
            await asyncio.sleep(left)

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        await self._wait_retry()
        headers = {
            **self._headers,
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
        }
        resuming = bool(self._read_id)
        if resuming:
            headers["Last-Event-ID"] = self._read_id
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        resp = await session.get(self.url, headers=headers)
                except TimeoutError:
                    raise ConnectionError(
                        f"SSE {self.url}: no response within {self._connect_timeout} s"
                    ) from None
                async with resp, contextlib.aclosing(self._read(resp, state, resuming)) as events:
                    async for message in events:
                        yield message
        finally:
            self._lost_at = time.monotonic()

    async def _read(
        self, resp: aiohttp.ClientResponse, state: BridgeState, resuming: bool
    ) -> AsyncGenerator[SourceMessage, None]:
        """Check the response, then yield its events as messages."""
        if resp.status != 200:
            raise ConnectionError(f"SSE {self.url}: HTTP {resp.status} {resp.reason}")
        if resp.content_type != "text/event-stream":
            raise ConnectionError(
                f"SSE {self.url}: content type {resp.content_type!r}, not text/event-stream"
            )
        state.connected = True
        if self._connections and not resuming:
            # No id to resume from: what came meanwhile may be lost.
            state.gaps += 1
        self._connections += 1
        log.info("bridge sse: connected to %s (Last-Event-ID %r)", self.url, self._read_id)
        parser = SseParser(self._max_size, last_id=self._read_id)
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                self._read_id = event.last_id
                yield self._message(event, state)
            # Events without data still move the id a reconnect sends.
            self._read_id = parser.last_id
            self._retry = parser.retry if parser.retry is not None else self._retry

    def _message(self, event: SseEvent, state: BridgeState) -> SourceMessage:
        data: Any = None
        where = f"SSE event {event.event!r}" + (f" id {event.id!r}" if event.id else "")
        if event.error is not None:
            state.error(f"{where}: {event.error}")
        else:
            try:
                data = decode_payload(event.data.encode(), self._payload)
            except ValueError as exc:
                state.error(f"{where}: {exc}")
        topic = event.event
        if self._topic_field is not None and data is not None:
            topic = _topic_from_field(data, self._topic_field)
        if event.id is None:
            return SourceMessage(topic, data)
        key = short_key(event.id, _MAX_ID_IN_PUBLISH_ID)
        return SourceMessage(topic, data, Position(self.name, key), self._committer(event.id))


class WebSocketSource:
    """Messages of a websocket URL (no positions: reconnects count as gaps).

    ``topics`` is a channel template (``"sensors.{topic}"``; ``{topic}`` is
    the ``topic_field`` of a message's JSON data, else ``message``) or a
    full :class:`TopicMap` over those topics. ``heartbeat`` seconds between
    pings finds a dead connection that never closed.

    >>> source = WebSocketSource("wss://example.org/feed", topics="sensors.{topic}",
    ...     topic_field="sensor", headers={"Authorization": "Bearer abc"})
    """

    kind = "websocket"

    def __init__(
        self,
        url: str,
        *,
        topics: TopicMap | str,
        topic_field: str | None = None,
        headers: Mapping[str, str] | None = None,
        payload: str = "auto",
        max_size: int = _DEFAULT_MAX_SIZE,
        connect_timeout: float = 10.0,
        heartbeat: float | None = 30.0,
    ) -> None:
        self.url = url
        self.topics = _topic_map(topics)
        self._topic_field = topic_field
        self._headers = dict(headers or {})
        self._payload = _check_payload(payload)
        self._max_size = _check_size(max_size)
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._connections = 0

    async def checkpoint(self) -> str | None:
        return None  # no positions

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        # The timeout bounds the handshake; an open websocket waits as long as
        # the server is quiet (the heartbeat finds a dead peer).
        timeout = aiohttp.ClientTimeout(total=self._connect_timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(
                self.url,
                headers=self._headers,
                heartbeat=self._heartbeat,
                max_msg_size=self._max_size,
            ) as ws,
        ):
            state.connected = True
            if self._connections:
                state.gaps += 1  # what the server sent while we were away is lost
            self._connections += 1
            log.info("bridge websocket: connected to %s", self.url)
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    payload = frame.data.encode()
                elif frame.type == aiohttp.WSMsgType.BINARY:
                    payload = frame.data
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    exc = frame.data if isinstance(frame.data, BaseException) else ws.exception()
                    if (
                        isinstance(exc, aiohttp.WebSocketError)
                        and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                    ):
                        raise ConnectionError(
                            f"websocket {self.url}: a message over {self._max_size} bytes "
                            "closed the connection"
                        )
                    raise ConnectionError(f"websocket {self.url}: {exc}")
                else:
                    continue  # pings and pongs aiohttp answers itself
                try:
                    data = decode_payload(payload, self._payload)
                except ValueError as exc:
                    state.error(f"websocket: {exc}")
                    continue
                topic = "message"
                if self._topic_field is not None:
                    topic = _topic_from_field(data, self._topic_field)
                yield SourceMessage(topic, data)
            if ws.close_code not in (None, aiohttp.WSCloseCode.OK, aiohttp.WSCloseCode.GOING_AWAY):
                raise ConnectionError(f"websocket {self.url}: closed with code {ws.close_code}")
