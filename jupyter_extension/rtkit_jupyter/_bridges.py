"""Bridges run by the Jupyter server itself (``c.RtkitExtension.bridges``).

Each configured bridge runs as a task of the server's event loop, connected
to the server's own hub over loopback with a token the server mints for it
(user ``bridge.<name>``, every channel; it dies with the server, whose key
signs it). A bridge that is misconfigured or fails is logged and shown in
the status (``failed``), and never stops the server or the other bridges.
The server stops its bridges first when it shuts down, so their last
publishes and their ``stopped`` report reach the hub before it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtkit.bridges import Bridge
from rtkit.bridges._cli import bridge_from_args, parse_bridge, source_from_args
from rtkit.bridges._report import report_status
from rtkit.errors import ConfigurationError

__all__ = ["ServerBridges"]

# A bridge's token outlives any server: the server's key dies with it.
_TOKEN_TTL = 10 * 365 * 24 * 3600.0


@dataclass
class _Running:
    bridge: Bridge
    task: asyncio.Task[None]


class ServerBridges:
    """The bridges of one server: started, listed in its status, stopped.

    >>> bridges = ServerBridges(["mqtt --map 'sensors/#'"], log, report_channel="bridges")
    >>> bridges.start("http://127.0.0.1:8888/rtkit", mint=lambda name: token)
    >>> await bridges.stop(grace=5)
    """

    def __init__(
        self,
        specs: Sequence[str | Mapping[str, Any]],
        log: logging.Logger,
        *,
        report_channel: str | None,
    ) -> None:
        self._specs = list(specs)
        self._log = log
        self._report_channel = report_channel
        self._running: dict[str, _Running] = {}
        self._failed: dict[str, str] = {}  # name (or bridges[i]) -> why
        self._stopping = False

    @property
    def names(self) -> list[str]:
        """The bridges configured, running or failed."""
        return sorted({*self._running, *self._failed})

    def start(self, url: str, mint: Callable[[str, float], str]) -> None:
        """Start every configured bridge against the hub at ``url``;
        ``mint(name, ttl)`` gives each its token."""
        for i, spec in enumerate(self._specs):
            label = f"bridges[{i}]"
            try:
                args = parse_bridge(spec)
                source = source_from_args(args)
                name = args.name or source.kind
                if name in self._running or name in self._failed:
                    raise ConfigurationError(
                        f"two bridges are named {name!r}: give each its own 'name'"
                    )
                label = name
                bridge = bridge_from_args(
                    args,
                    source,
                    url=url,
                    token=mint(name, _TOKEN_TTL),
                    name=name,
                    report_channel=self._report_channel,
                )
            except (ConfigurationError, ValueError) as exc:
                self._failed[label] = f"{type(exc).__name__}: {exc}"
                self._log.error("rtkit: bridge %s not started: %s", label, exc)
                continue
            task = asyncio.ensure_future(self._run(name, bridge))
            self._running[name] = _Running(bridge, task)
            self._log.info("rtkit: bridge %s (%s) started", name, source.kind)

    async def _run(self, name: str, bridge: Bridge) -> None:
        try:
            await bridge.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bridge's failure must never reach the server
            if self._stopping:
                self._log.debug("rtkit: bridge %s ended while stopping: %s", name, exc)
                return
            self._failed[name] = f"{type(exc).__name__}: {exc}"
            self._log.exception("rtkit: bridge %s failed and stopped", name)
        finally:
            self._running.pop(name, None)

    async def stop(self, grace: float) -> None:
        """Stop every bridge (each commits what the hub acked); those not
        done within ``grace`` seconds are cancelled."""
        self._stopping = True
        running = list(self._running.values())
        for one in running:
            one.bridge.stop()
        tasks = [one.task for one in running]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            self._log.warning("rtkit: a bridge did not stop within %.0f s; cancelled", grace)
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def status(self, reported: Mapping[str, Any]) -> dict[str, Any]:
        """The hub's bridges (``reported``) with this server's own added:
        those that failed, and those that have not reported yet."""
        out = dict(reported)
        for name, one in self._running.items():
            if name not in out:
                state = one.bridge.state
                out[name] = {
                    **state.as_dict(),
                    "bridge": name,
                    "status": report_status(state),
                    "age": None,
                    "reported": None,
                }
            out[name] = {**out[name], "server": True}
        for name, why in self._failed.items():
            out[name] = {
                "bridge": name,
                "status": "failed",
                "last_error": why,
                "age": None,
                "reported": None,
                "server": True,
            }
        return dict(sorted(out.items()))
