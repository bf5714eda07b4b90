"""pytest fixtures for code that uses rtkit: real hub processes on free ports.

Not loaded by installing rtkit (it would change other projects' test runs):
turn it on in a ``conftest.py`` with ``pytest_plugins = ["rtkit.pytest_plugin"]``
or with ``pytest -p rtkit.pytest_plugin``::

    def test_prices(rt_hub):
        with rtkit.connect(rt_hub.url) as hub:
            assert hub.channel("prices").publish({"px": 1}) == 1

``rt_hub_factory(...)`` starts more hubs (a secret, a SQLite store, ...);
every hub a test starts is stopped after it, killed if it does not stop.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from .deploy import free_port as free_port  # for tests and benchmarks too

READY_TIMEOUT = 20.0


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
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rtkit", "--log-level", "INFO", "hub"]
        cmd += ["--host", self.host, "--port", str(self.port), "--store", self.store]
        if self.secret:
            cmd += ["--secret", self.secret]
        if self.anonymous:
            cmd.append("--allow-anonymous")
        return cmd + self.extra_args

    def start(self, timeout: float = READY_TIMEOUT) -> HubProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this hub is already running")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        env.pop("RTKIT_SECRET", None)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc, self._lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise TimeoutError(f"hub did not start in {timeout}s:\n" + "\n".join(self.log))
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("hub exited while starting:\n" + "\n".join(self.log))
            if "rtkit hub listening on" in line:
                return self

    def _pump(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        # The pipe is closed here, once the hub has exited: left to the
        # garbage collector it is a ResourceWarning (an error in our tests).
        with proc.stdout:
            for line in proc.stdout:
                line = line.rstrip("\n")
                self.log.append(line)
                lines.put(line)
        lines.put(None)

    def kill(self) -> None:
        """SIGKILL: the process dies with no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def restart(self) -> HubProcess:
        self.terminate()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def rt_hub_factory() -> Iterator[Any]:
    """Start hubs with ``rt_hub_factory(store=..., secret=..., extra_args=[...])``."""
    started: list[HubProcess] = []

    def start(**kwargs: Any) -> HubProcess:
        hub = HubProcess(**kwargs)
        started.append(hub)
        return hub.start()

    yield start
    for hub in started:
        hub.terminate(timeout=5)


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


# -- notebooks under nbval -----------------------------------------------------
#
# A notebook that says ``rtkit.connect()`` finds its hub in RTKIT_URL: inside
# Jupyter the server extension sets it for every kernel. Under nbval there is
# no jupyter server, so when a run collects notebook cells and RTKIT_URL is
# not set, this plugin starts a loopback hub for the session and exports its
# URL before nbval starts the first kernel (kernels inherit the environment).

_NOTEBOOK_HUB = pytest.StashKey[HubProcess]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get("RTKIT_URL"):
        return
    if not any(type(item).__module__.split(".")[0] == "nbval" for item in session.items):
        return
    hub = HubProcess().start()
    session.config.stash[_NOTEBOOK_HUB] = hub
    os.environ["RTKIT_URL"] = hub.url


def pytest_sessionfinish(session: pytest.Session) -> None:
    hub = session.config.stash.get(_NOTEBOOK_HUB, None)
    if hub is not None:
        os.environ.pop("RTKIT_URL", None)
        hub.terminate(timeout=5)
