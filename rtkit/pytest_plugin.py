"""pytest fixtures for code that uses rtkit: real hubs on free loopback ports.

Not loaded by installing rtkit (it would change other projects' test runs):
turn it on in a ``conftest.py`` with ``pytest_plugins = ["rtkit.pytest_plugin"]``
or with ``pytest -p rtkit.pytest_plugin``::

    def test_prices(rt_hub):
        with rtkit.connect(rt_hub.url) as hub:
            assert hub.channel("prices").publish({"px": 1}) == 1

Two kinds of hub, with the same arguments (``store``, ``secret``,
``extra_args`` as ``rtkit hub`` options) and the same ``url``, ``host``,
``port``, ``start()``, ``terminate()`` and ``running``:

- :class:`HubProcess` (``rt_hub``, ``rt_hub_factory``): a ``rtkit hub``
  subprocess, for tests that kill it (``kill()``), restart it, read its
  output (``log``) or need another web server (``--server``).
- :class:`InProcessHub` (``rt_hub_inprocess``, ``rt_hub_inprocess_factory``):
  the same hub on the aiohttp host, served by a thread of the test process
  with its own event loop. It starts in milliseconds, its logs are captured
  with the test's, and a debugger stops in it; sync and async clients alike
  can use it, since it never shares the test's loop.

Every hub a test starts is stopped after it (a process is killed if it does
not stop).

Under ``--nbval`` the plugin also gives notebooks what they expect to find:
a hub at ``RTKIT_URL`` (one is started for the session when it is unset)
and an MQTT broker at ``RTKIT_MQTT`` (a private ``mosquitto`` when nothing
answers there), both stopped when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from ._process import (
    OutputLines,
    find_program,
    kill_group,
    port_open,
    start_group,
    stop_group,
    wait_for_port,
)
from ._process import free_port as free_port  # for tests and benchmarks too
from .config import HubConfig

READY_TIMEOUT = 20.0


def _hub_args(
    host: str, port: int, store: str, secret: str | None, anonymous: bool, extra: Sequence[str]
) -> list[str]:
    """``rtkit hub``'s arguments, for a process or for the in-process parser."""
    args = ["hub", "--host", host, "--port", str(port), "--store", store]
    if secret:
        args += ["--secret", secret]
    if anonymous:
        args.append("--allow-anonymous")
    return args + list(extra)


class HubProcess:
    """A ``rtkit hub`` subprocess; ``url`` is where clients connect."""

    def __init__(
        self,
        *,
        port: int | None = None,
        store: str = "memory://",
        secret: str | None = None,
        anonymous: bool | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.store = store
        self.secret = secret
        self.anonymous = anonymous if anonymous is not None else secret is None
        self.extra_args = list(extra_args)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        args = _hub_args(
            self.host, self.port, self.store, self.secret, self.anonymous, self.extra_args
        )
        return [sys.executable, "-m", "rtkit", "--log-level", "INFO", *args]

    def start(self, timeout: float = READY_TIMEOUT) -> HubProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this hub is already running")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        env.pop("RTKIT_SECRET", None)
        env.pop("RTKIT_API_KEY", None)  # a hub has an API key only when told
        env.pop("RTKIT_METRICS_TOKEN", None)
        self.proc = start_group(
            self.command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # One log across restarts: a test reads what every run printed.
        output = OutputLines(self.proc, lines=self.log)
        try:
            output.wait_for("rtkit hub listening on", within=timeout)
        except TimeoutError:
            self.kill()
            raise TimeoutError(
                f"hub did not start in {timeout}s:\n" + "\n".join(self.log)
            ) from None
        except RuntimeError:
            raise RuntimeError("hub exited while starting:\n" + "\n".join(self.log)) from None
        return self

    def kill(self) -> None:
        """SIGKILL: the process dies with no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.proc is None:
            return 0
        return stop_group(self.proc, timeout)

    def restart(self) -> HubProcess:
        self.terminate()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class InProcessHub:
    """The hub ``rtkit hub`` would run, served from a thread of this process.

    The arguments mean what they mean for :class:`HubProcess`: ``extra_args``
    are ``rtkit hub`` options, parsed by the CLI's own parser into the same
    HubConfig (only the aiohttp web server is offered). Without a ``port`` it
    listens on one the OS picks when it starts.

    >>> hub = InProcessHub(secret=SECRET, extra_args=["--max-subscriptions", "3"]).start()
    >>> rtkit.connect(hub.url, token)
    >>> hub.terminate()
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        store: str = "memory://",
        secret: str | None = None,
        anonymous: bool | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or 0
        self.store = store
        self.secret = secret
        self.anonymous = anonymous if anonymous is not None else secret is None
        self.extra_args = list(extra_args)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self) -> HubConfig:
        """The HubConfig, built as ``rtkit hub`` builds it from its options."""
        from .cli import build_parser, hub_config

        args = build_parser().parse_args(
            _hub_args(
                self.host, self.port, self.store, self.secret, self.anonymous, self.extra_args
            )
        )
        if args.server != "aiohttp":
            raise ValueError("an in-process hub runs on aiohttp; use HubProcess for --server")
        if "--secret" not in self.extra_args:
            # The parser's default is $RTKIT_SECRET; a HubProcess drops it
            # from the environment, so this hub ignores it as well.
            args.secret = self.secret
        if "--api-key" not in self.extra_args:
            args.api_key = None  # as $RTKIT_API_KEY is dropped for a HubProcess
        if "--metrics-token" not in self.extra_args:
            args.metrics_token = None
        return hub_config(args)

    def start(self, timeout: float = READY_TIMEOUT) -> InProcessHub:
        if self.running:
            raise RuntimeError("this hub is already running")
        # Bound here, so the port is known before the hub starts: its
        # config and its log name the port clients reach it on.
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            self.port = listener.getsockname()[1]
            config = self.config()
        except BaseException:
            listener.close()
            raise
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(config, listener),),
            name=f"rtkit-hub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not self._started.wait(timeout):
            self.terminate()
            raise TimeoutError(f"hub did not start in {timeout}s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("hub failed to start") from self._error
        return self

    async def _serve(self, config: HubConfig, listener: socket.socket) -> None:
        from aiohttp import web

        from .hosts.aiohttp import create_app
        from .hub import Hub

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner: web.AppRunner | None = None
        try:
            # What rtkit.hosts.aiohttp.serve does, minus gc.freeze(): that is
            # for a process the hub owns, and this one belongs to the tests.
            runner = web.AppRunner(
                create_app(Hub(config, async_mode="aiohttp")),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=5.0,
            )
            await runner.setup()
            await web.SockSite(runner, listener).start()
        except Exception as exc:  # start() raises it, in the test's thread
            self._error = exc
        finally:
            self._started.set()
        try:
            if self._error is None:
                await self._stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            listener.close()

    def terminate(self, timeout: float = 15.0) -> int:
        """Stop the hub as SIGTERM stops ``rtkit hub`` (clients are told to
        go, the store is flushed) and wait for it; returns 0 as a clean exit
        of ``rtkit hub`` does."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return 0
        if loop is not None and stop is not None and thread.is_alive():
            # RuntimeError: the loop has closed, so the hub has stopped already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the in-process hub did not stop within {timeout}s")
        return 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


@pytest.fixture
def rt_hub_factory() -> Iterator[Any]:
    """Start hubs with ``rt_hub_factory(store=..., secret=..., extra_args=[...])``."""
    yield from _hubs_stopped_after(HubProcess, stop_timeout=5)


def _hubs_stopped_after(kind: Callable[..., Any], stop_timeout: float) -> Iterator[Any]:
    """A factory fixture's body: ``start(**kwargs)`` builds a hub of ``kind``
    and starts it; every hub started is stopped once the test is over."""
    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        hub = kind(**kwargs)
        started.append(hub)
        return hub.start()

    yield start
    for hub in started:
        hub.terminate(timeout=stop_timeout)


# The Redis that Redis-backed tests use; each test keeps to its own key prefix.
REDIS_URL = os.environ.get("RTKIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def rt_redis_prefix() -> Iterator[str]:
    """A fresh key prefix on ``REDIS_URL`` ($RTKIT_TEST_REDIS), its keys
    deleted after the test; skips the test when no Redis answers.

    >>> store = f"{REDIS_URL}?prefix={rt_redis_prefix}"
    """
    import uuid

    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        pytest.skip(f"no Redis at {REDIS_URL} ({exc})")
    prefix = f"rtkit-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def rt_hub(rt_hub_factory: Any) -> HubProcess:
    """An anonymous hub with the memory store, on a free loopback port."""
    hub: HubProcess = rt_hub_factory()
    return hub


@pytest.fixture
def rt_hub_inprocess_factory() -> Iterator[Any]:
    """Start in-process hubs with ``rt_hub_inprocess_factory(store=...,
    secret=..., extra_args=[...])``, the arguments of ``rt_hub_factory``."""
    yield from _hubs_stopped_after(InProcessHub, stop_timeout=10)


@pytest.fixture
def rt_hub_inprocess(rt_hub_inprocess_factory: Any) -> InProcessHub:
    """An anonymous in-process hub with the memory store on a loopback port."""
    hub: InProcessHub = rt_hub_inprocess_factory()
    return hub


# -- notebooks under nbval -----------------------------------------------------
#
# A notebook that says ``rtkit.connect()`` finds its hub in RTKIT_URL: inside
# Jupyter the server extension sets it for every kernel. Under nbval there is
# no jupyter server, so when a run collects notebook cells and RTKIT_URL is
# not set, this plugin starts a loopback hub for the session and exports its
# URL before nbval starts the first kernel (kernels inherit the environment).
# The same goes for the MQTT broker the bridge tutorial reads from
# (RTKIT_MQTT, else 127.0.0.1:1883): when nothing answers there, a private
# mosquitto on a free port stands in for the session.

_NOTEBOOK_HUB = pytest.StashKey[HubProcess]()
# The broker process, and RTKIT_MQTT as it was before (restored at the end).
_NOTEBOOK_BROKER = pytest.StashKey[tuple[subprocess.Popen[bytes], str | None]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(type(item).__module__.split(".")[0] == "nbval" for item in session.items):
        return
    _notebook_mqtt_broker(session.config)
    if os.environ.get("RTKIT_URL"):
        return
    hub = HubProcess().start()
    session.config.stash[_NOTEBOOK_HUB] = hub
    os.environ["RTKIT_URL"] = hub.url


def _notebook_mqtt_broker(config: pytest.Config) -> None:
    """Make sure an MQTT broker answers at RTKIT_MQTT (or 127.0.0.1:1883):
    else start mosquitto on a free port and point RTKIT_MQTT at it.

    Without mosquitto installed nothing is started; the notebooks that need
    a broker then say that none answers, and where they looked."""
    from .bridges.mqtt import broker_address
    from .errors import ConfigurationError

    try:
        host, port = broker_address()
    except ConfigurationError as exc:  # a malformed RTKIT_MQTT: say so, not a traceback
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    if port_open(host, port):
        return
    mosquitto = find_program("mosquitto")
    if mosquitto is None:
        return
    port = free_port()
    proc = start_group(
        [mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, within=READY_TIMEOUT)
    except BaseException:
        stop_group(proc, timeout=5)
        raise
    config.stash[_NOTEBOOK_BROKER] = (proc, os.environ.get("RTKIT_MQTT"))
    os.environ["RTKIT_MQTT"] = f"127.0.0.1:{port}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    hub = session.config.stash.get(_NOTEBOOK_HUB, None)
    if hub is not None:
        os.environ.pop("RTKIT_URL", None)
        hub.terminate(timeout=5)
    broker = session.config.stash.get(_NOTEBOOK_BROKER, None)
    if broker is not None:
        proc, before = broker
        if before is None:
            os.environ.pop("RTKIT_MQTT", None)
        else:
            os.environ["RTKIT_MQTT"] = before
        stop_group(proc, timeout=5)
