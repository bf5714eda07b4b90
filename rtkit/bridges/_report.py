"""A bridge's state as ordinary messages, so every hub and badge can show it.

A bridge reports on two channels (``bridges`` by default, configurable):

- ``bridges.<name>`` carries its reports: the :class:`BridgeState` fields
  plus ``bridge`` (its name), ``status`` (``connecting``, ``connected``,
  ``disconnected``, ``stopped``), ``every`` (seconds between reports at
  most) and ``last_message`` (when it last read a message, unix seconds).
  A report goes out when something an operator watches changes (the
  connections, errors, gaps, redeliveries, reconnects), coalesced to one a
  second at most, and every ``every`` seconds whatever happens: a report older than a
  few ``every`` means the bridge is gone or cut off from the hub (the hub
  calls it ``stale``).
- ``bridges`` is the index: a bridge announces its name there when it
  starts, unless the latest announcements already hold it.

Why messages on channels rather than a new wire event: a report then rides
the one delivery path every message takes, so it needs nothing new in the
protocol, the hub or the JavaScript client; it works the same when the bridge
runs in another process or talks to another hub of a cluster (the store is
shared); history keeps the last report of a bridge that stopped or died,
with its time; and a token's channel patterns decide who may report and who
may read, as for any channel. Why a channel per bridge plus an index rather
than one channel for all: a busy bridge's reports never push another
bridge's last one out of reach, so a bridge that died yesterday still shows
(as stale) instead of vanishing, and a bridge's token can be limited to
``bridges.<its name>`` and ``bridges``. Readers (``Hub.status()``,
``StatusBadge(bridges=True)``) read the index, then the last report of each
bridge it names, both bounded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_BRIDGE_CHANNEL
from ..errors import ConfigurationError, RtkitError
from ..protocol import CHANNEL_NAME_RE

if TYPE_CHECKING:
    from ._core import BridgeState

__all__ = ["REPORT_EVERY", "StateReporter", "report_status"]

log = logging.getLogger(__name__)

#: Seconds between two reports at most (a keep-alive when nothing changes).
REPORT_EVERY = 5.0
# Reports are coalesced to one per this many seconds at most.
_MIN_INTERVAL = 1.0
# Announcements of the index read to see whether a bridge is listed already.
_INDEX_SCAN = 200
# The budget of one report publish (the hub answers in milliseconds).
_PUBLISH_BUDGET = 5.0


def report_status(state: BridgeState) -> str:
    """``connected``, ``connecting`` (never connected yet, no error) or
    ``disconnected`` (the source connection is down)."""
    if state.connected:
        return "connected"
    if state.reconnects == 0 and state.last_error is None:
        return "connecting"
    return "disconnected"


class StateReporter:
    """Publishes a bridge's :class:`BridgeState` as it changes (see the module).

    >>> reporter = StateReporter("sensors", bridge.state)
    >>> task = asyncio.create_task(reporter.run(client))  # until cancelled
    >>> await reporter.final(client)  # "stopped"
    """

    def __init__(
        self,
        name: str,
        state: BridgeState,
        *,
        channel: str = DEFAULT_BRIDGE_CHANNEL,
        every: float = REPORT_EVERY,
    ) -> None:
        if not CHANNEL_NAME_RE.fullmatch(channel):
            raise ConfigurationError(f"the report channel must be a channel name: {channel!r}")
        if not CHANNEL_NAME_RE.fullmatch(f"{channel}.{name}") or not name:
            raise ConfigurationError(
                f"a bridge name must fit a channel name ({channel}.<name>: letters, digits "
                f"and _ . : @ / -), got {name!r}; or turn state reports off "
                "(--status-channel '', report_channel=None)"
            )
        if not math.isfinite(every) or every < _MIN_INTERVAL:
            raise ConfigurationError(f"report every must be >= {_MIN_INTERVAL} s, got {every!r}")
        self.name = name
        self.state = state
        self.index = channel
        self.channel = f"{channel}.{name}"
        self.every = every
        self._announced = False
        self._received = 0
        self._last_message: float | None = None
        self._failures: set[str] = set()  # kinds of failure already logged

    def report(self, status: str | None = None) -> dict[str, Any]:
        """The report now: the state, the name, the status, the cadence."""
        state = self.state
        self._track()
        return {
            **state.as_dict(),
            "bridge": self.name,
            "status": status or report_status(state),
            "every": self.every,
            "last_message": self._last_message,
        }

    def _track(self) -> None:
        """Note when the bridge last read a message (to a second)."""
        if self.state.received != self._received:
            self._received = self.state.received
            self._last_message = time.time()

    def _watched(self) -> tuple[Any, ...]:
        state = self.state
        return (
            state.connected,
            state.hub_connected,
            state.errors,
            state.last_error,
            state.gaps,
            state.redelivered,
            state.reconnects,
        )

    async def run(self, client: Any) -> None:
        """Report until cancelled: on change (at most once a second) and
        every ``every`` seconds. Never raises but CancelledError: a report
        that fails is logged once per kind of failure and tried again."""
        last: tuple[Any, ...] | None = None
        sent = -math.inf
        reconnects = client.metrics.reconnects
        while True:
            self._track()
            if client.metrics.reconnects != reconnects:
                # The hub may have lost its store (a memory hub restarted):
                # see again that the index names this bridge.
                reconnects = client.metrics.reconnects
                self._announced = False
            watched = self._watched()
            now = time.monotonic()
            if (watched != last or now - sent >= self.every) and client.connected:
                # Sent or not, the next try waits for the next change or
                # keep-alive: a refused report is not retried every second.
                last, sent = watched, now
                await self._send(client, self.report())
            await asyncio.sleep(_MIN_INTERVAL)

    async def final(self, client: Any) -> None:
        """The last report, ``stopped`` (when the hub is connected)."""
        if client.connected:
            await self._send(client, self.report("stopped"))

    async def _send(self, client: Any, report: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(_PUBLISH_BUDGET):
                if not self._announced:
                    await self._announce(client)
                await client.channel(self.channel).publish(report)
        except (RtkitError, TimeoutError) as exc:
            self._failed(exc)
        except Exception as exc:  # a report must never stop the bridge
            log.exception("bridge %s: state report failed", self.name)
            self._failed(exc)

    async def _announce(self, client: Any) -> None:
        index = client.channel(self.index)
        try:
            listed = {
                m.data.get("bridge")
                for m in await index.history(limit=_INDEX_SCAN)
                if isinstance(m.data, dict)
            }
        except RtkitError:
            listed = set()  # may publish but not read it: announce anyway
        if self.name not in listed:
            await index.publish({"bridge": self.name, "source": self.state.source})
        self._announced = True

    def _failed(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        if kind not in self._failures:
            self._failures.add(kind)
            log.warning(
                "bridge %s: cannot report its state on %r (%s: %s); the hub's status "
                "will not show it (a token needs publish rights on %r and %r)",
                self.name,
                self.channel,
                kind,
                exc,
                self.index,
                self.channel,
            )
